"""The shipped co-training stage (../gpu-cotrain/stage.py) with anchored hatching drawn at period HATCH_PERIOD
instead of data.ANCHORED_PERIOD (7.5), the other six families as before. The random draws are the same (the
period is not drawn), so with the same seed this is the shipped stage's run with only hatching changed.
usage: HATCH_PERIOD=6.5 SHAPE_WEIGHT=2 DEVICE=cpu PREFETCH=0 THREADS=1 python hatch_stage.py WORK STEPS SEED"""
import dataclasses
import os
import runpy
import sys
from pathlib import Path

from stylegen_trt.demo import data

HATCHING = data.TEXTURES.index("hatching")
period = float(os.environ.get("HATCH_PERIOD", "6.5"))
anchored_style = data.anchored_style


def hatching_at_period(rng, palette=None):
    style = anchored_style(rng, palette)
    return dataclasses.replace(style, period=period) if style.texture == HATCHING else style


data.anchored_style = hatching_at_period  # sample_batch looks it up at call time
here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parent / "gpu-cotrain"))
sys.argv = [str(here.parent / "gpu-cotrain" / "stage.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
