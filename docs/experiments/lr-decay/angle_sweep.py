"""Stripes swatches in the README example's palette (lemon on cobalt) every 15 degrees at periods 6.2 and 7.5, written
to DIR for `stylegen-trt eval --prompt "a small circle on the right" --style DIR/*.png --seeds 2`.
usage: python angle_sweep.py DIR"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from stylegen_trt.demo import data

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
fg, bg = data.HELDOUT_PALETTES[1]
for period in (6.2, 7.5):
    for deg in range(0, 180, 15):
        style = data.Style(data.TEXTURES.index("stripes"), fg, bg, period=period, angle=float(np.deg2rad(deg)), phase=1.0)
        Image.fromarray(data.render(None, style, size=128)).save(out / f"stripes-p{period}-a{deg:03d}.png")
