"""usage: CUT=3 python zero_cut.py BRANCH.safetensors -- zero the cut projections' weights (see hold_without.py)."""
import os, sys
import torch
from safetensors.torch import load_file, save_file

CUT = [c for c in os.environ.get("CUT", "").split(",") if c]
path = sys.argv[1]
state = load_file(path)
for c in CUT:
    prefix = "mid_projection." if c == "mid" else f"down_projections.{c}."
    for key in [k for k in state if k.startswith(prefix)]:
        state[key] = torch.zeros_like(state[key])
        print("zeroed", key)
save_file(state, path)
