"""Continue the co-training of docs/experiments/cotrain (S-fed anchored branch) for N more steps: the package's
base+style stage started from the co-trained base (sd/) and its branch (branch-init.safetensors), fresh optimiser,
another data seed (DemoConfig.seed = 1) so no batch repeats.
usage: python continue.py WORK STEPS"""
import json, logging, sys, time
from pathlib import Path
import torch
from stylegen_trt.demo import train as demo_train
from stylegen_trt.models import loaders

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
work, steps = Path(sys.argv[1]), int(sys.argv[2])
init = work / "branch-start.safetensors"
_new_branch = loaders.new_branch


def start_branch(base, **kw):  # the stage asks for a fresh branch: give it the co-trained one
    from safetensors.torch import load_file
    branch = _new_branch(base, **kw)
    branch.load_state_dict(load_file(str(init)))
    return branch


loaders.new_branch = start_branch
cfg = demo_train.DemoConfig(seed=1, base_style_steps=steps, branch_layout="anchored")
torch.set_num_threads(cfg.threads)
t0 = time.perf_counter()
demo_train.train_base_with_style(work, cfg)
(work / "seconds.json").write_text(json.dumps({"base_style_more": round(time.perf_counter() - t0, 1)}))
print("seconds", round(time.perf_counter() - t0, 1))
