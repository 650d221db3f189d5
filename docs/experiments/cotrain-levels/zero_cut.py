"""usage: CUT=3 python zero_cut.py BRANCH.safetensors -- zero the cut projections' weights (see cut.py), keeping the
file's metadata (format, layout, stem sizes), which the branch loader needs."""
import os, sys
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

CUT = [c for c in os.environ.get("CUT", "").split(",") if c]
path = sys.argv[1]
with safe_open(path, "pt") as f:
    metadata = f.metadata()
state = load_file(path)
for c in CUT:
    prefix = "mid_projection." if c == "mid" else f"down_projections.{c}."
    for key in [k for k in state if k.startswith(prefix)]:
        state[key] = torch.zeros_like(state[key])
        print("zeroed", key)
save_file(state, path, metadata=metadata)
