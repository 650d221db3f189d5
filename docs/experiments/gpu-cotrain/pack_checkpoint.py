"""A co-training stage stopped before its end (sweep.sh's deadline), packed as a finished stage leaves WORK: the
EMA weights of its last checkpoint in sd/unet and branch-init.safetensors, its losses, and seconds.json with
the step it stopped at. The stage has no LR schedule, so this is exactly what a run of that many steps ends with.
usage: python pack_checkpoint.py WORK"""
import json, sys
from pathlib import Path

import torch

from stylegen_trt.models import loaders

if __name__ == "__main__":
    work = Path(sys.argv[1])
    state = torch.load(work / "base-style.ckpt", map_location="cpu", weights_only=False)
    base = loaders.load_base(work / "sd")
    branch = loaders.new_branch(base, seed=0, stem_hidden=32, layout="anchored")  # the weights are replaced
    params = list(base.unet.parameters()) + list(branch.parameters())
    ema = state["parts"]["ema"]["tensors"]
    assert len(ema) == len(params) and all(e.shape == p.shape for e, p in zip(ema, params)), "not this stage's EMA"
    with torch.no_grad():
        torch._foreach_copy_(params, ema)
    base.unet.save_pretrained(work / "sd" / "unet")
    loaders.save_branch(branch, work / "branch-init.safetensors")
    (work / "base-style.loss.json").write_text(json.dumps(state["losses"]))
    seconds = work / "seconds.json"
    (seconds).write_text(json.dumps({**(json.loads(seconds.read_text()) if seconds.is_file() else {}),
                                     "stopped_at": state["step"]}))
    print("packed", work, "at step", state["step"])
