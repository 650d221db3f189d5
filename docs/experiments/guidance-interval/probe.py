"""Probe: classifier-free guidance applied only on an interval of timesteps (Kynkaanniemi et al. 2024,
"Applying guidance in a limited interval improves sample and distribution quality"), scale LO elsewhere.
Record of an experiment, not part of the package: patches the runtime's denoiser, then runs `stylegen-trt eval`.
usage: HI=4 LO=1.75 TMIN=600 TMAX=1000 python probe.py [eval args ... --guidance G>1 to keep the CFG batch]"""
import os
import sys

import numpy as np

from stylegen_trt.runtime import pipeline
from stylegen_trt import cli

HI, LO = float(os.environ["HI"]), float(os.environ["LO"])
TMIN, TMAX = float(os.environ["TMIN"]), float(os.environ["TMAX"])
_make = pipeline.make_denoiser


def make_denoiser(unet, context, guidance, residuals_at):
    inner = _make(unet, context, None, residuals_at)  # unguided: eps for whatever batch it is given
    if guidance is None:
        return inner

    def guided(x: np.ndarray, t: int) -> np.ndarray:
        eps_u, eps_c = np.split(inner(np.concatenate([x, x]), t), 2)
        g = HI if TMIN <= t < TMAX else LO
        return eps_u + np.float32(g) * (eps_c - eps_u)

    return guided


pipeline.make_denoiser = make_denoiser
sys.argv = ["stylegen-trt", "eval", *sys.argv[1:]]
cli.main()
