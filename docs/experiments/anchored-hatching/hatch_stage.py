"""The shipped co-training stage (../gpu-cotrain/stage.py) with anchored hatching drawn at period HATCH_PERIOD
instead of data.ANCHORED_PERIOD (7.5), the other six families as before. The random draws are the same (the
period is not drawn), so with the same seed this is the shipped stage's run with only hatching changed. Resumed
from a checkpoint of the 7.5-px stage, this is the shipped recipe's switch (F0: B0's checkpoint at 10500, run to
12500). Since the nineteenth session it sets DemoConfig.anchored_hatching_periods to ((0, HATCH_PERIOD),); before,
it replaced data.anchored_style with a wrapper that drew the same styles (tests/test_anchored.py checks the two agree).
usage: HATCH_PERIOD=6.5 SHAPE_WEIGHT=2 DEVICE=cpu PREFETCH=0 THREADS=1 python hatch_stage.py WORK STEPS SEED"""
import os
import runpy
import sys
from pathlib import Path

os.environ["HATCH_PERIODS"] = f"0:{float(os.environ.get('HATCH_PERIOD', '6.5'))}"
here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parent / "gpu-cotrain"))
sys.argv = [str(here.parent / "gpu-cotrain" / "stage.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
