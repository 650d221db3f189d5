"""Continue the co-trained pair (docs/experiments/cotrain, 2500 steps) with the base's content held: the package's
base+style stage with DemoConfig.base_style_content_hold, the teacher being the shipped base (placed as
WORK/base-style.teacher before the run), from the co-trained base (WORK/sd) and branch (WORK/branch-start.safetensors).
usage: python hold.py WORK STEPS HOLD SEED [SOURCE [SHAPE_WEIGHT [SHAPE_MARGIN]]]
(SOURCE: DemoConfig.base_style_source, "image" by default; SHAPE_WEIGHT, SHAPE_MARGIN: DemoConfig.base_style_shape_*)"""
import json, logging, sys, time
from pathlib import Path
import torch
from stylegen_trt.demo import train as demo_train
from stylegen_trt.models import loaders

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
work, steps, hold, seed = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
init = work / "branch-start.safetensors"
_new_branch = loaders.new_branch


def start_branch(base, **kw):  # the stage asks for a fresh branch: give it the co-trained one
    from safetensors.torch import load_file
    branch = _new_branch(base, **kw)
    branch.load_state_dict(load_file(str(init)))
    return branch


loaders.new_branch = start_branch
cfg = demo_train.DemoConfig(seed=seed, base_style_steps=steps, branch_layout="anchored", base_style_content_hold=hold,
                            base_style_source=sys.argv[5] if len(sys.argv) > 5 else "image",
                            base_style_shape_weight=float(sys.argv[6]) if len(sys.argv) > 6 else 1.0,
                            base_style_shape_margin=float(sys.argv[7]) if len(sys.argv) > 7 else 0.0)
torch.set_num_threads(cfg.threads)
t0 = time.perf_counter()
demo_train.train_base_with_style(work, cfg)
(work / "seconds.json").write_text(json.dumps({"base_style_hold": round(time.perf_counter() - t0, 1)}))
print("seconds", round(time.perf_counter() - t0, 1))
