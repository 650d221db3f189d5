"""The shipped co-training stage's hatching run (../anchored-hatching/hatch_stage.py) with the ground-colour ring
round each training shape drawn OUTLINE px wide instead of data.OUTLINE_WIDTH (1.5), and the shape's loss weight
grown with it. No random draw depends on the width, so with the same seed only the rings differ.
usage: OUTLINE=2.5 HATCH_PERIOD=6.5 SHAPE_WEIGHT=2 DEVICE=cpu PREFETCH=0 THREADS=2 python outline_stage.py WORK STEPS SEED"""
import functools
import os
import runpy
import sys
from pathlib import Path

from stylegen_trt.demo import data

width = float(os.environ.get("OUTLINE", "2.5"))
data.OUTLINE_WIDTH = width  # read at call time by the co-training loss's shape weights
data.render = functools.partial(data.render, outline_width=width)  # sample_batch looks render up at call time
here = Path(__file__).resolve().parent
sys.argv = [str(here.parent / "anchored-hatching" / "hatch_stage.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
