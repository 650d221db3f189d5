"""CUT=3,mid: comma-separated indices of StyleBranch.down_projections ("mid" for the mid projection) whose outputs a
forward hook multiplies by 0, so a pair trains without those residuals (and their weights get no gradient).
Importing this module wraps loaders.new_branch; zero_cut.py zeroes the same weights before export."""
import os
from stylegen_trt.models import loaders

CUT = [c for c in os.environ.get("CUT", "").split(",") if c]
_new_branch = loaders.new_branch


def cut_branch(base, **kw):
    branch = _new_branch(base, **kw)
    for c in CUT:
        module = branch.mid_projection if c == "mid" else branch.down_projections[int(c)]
        module.register_forward_hook(lambda mod, args, out: out * 0)
    return branch


loaders.new_branch = cut_branch
