"""Diagnostic: run a stylegen-trt command (eval, grid, generate) with some of the branch's residuals zeroed or scaled.
usage: ZERO=down_res_0,down_res_1 SCALE=down_res_3:0.5 python zero_levels.py eval ARGS...
Only for this experiment: scaling copies the residuals to the host each step."""
import os, sys
from stylegen_trt.runtime import pipeline
import numpy as np
ZERO = [n for n in os.environ.get("ZERO", "").split(",") if n]
SCALE = {kv.split(":")[0]: float(kv.split(":")[1]) for kv in os.environ.get("SCALE", "").split(",") if kv}
_orig = pipeline.make_residuals
def patched(branch, zeros, *a, **k):
    inner = _orig(branch, zeros, *a, **k)
    def residuals_at(t):
        r = inner(t)
        out = {n: (zeros[n] if n in ZERO else v) for n, v in r.items()}
        for n, f in SCALE.items():
            v = out[n]; v = v.numpy() if hasattr(v, "numpy") and not isinstance(v, np.ndarray) else v
            out[n] = (np.asarray(v) * np.float32(f)).astype(np.float32)
        return out
    return residuals_at
pipeline.make_residuals = patched
from stylegen_trt.cli import app
sys.argv = ["stylegen-trt"] + sys.argv[1:]
app()
