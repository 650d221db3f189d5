"""Co-train the shipped base (rebuilt as torch modules) with an anchored S-fed branch, then the frozen-base
branch stage: the package's own stages (DemoConfig.base_style_steps + branch_layout="anchored").

WORK holds sd/ (a copy of the rebuilt shipped base: the stage overwrites sd/unet) and vgg19.pth (VGG stage).
usage: python run.py WORK BASE_STYLE_STEPS BRANCH_STEPS
"""
import json, logging, sys, time
from pathlib import Path
import torch
from stylegen_trt.demo import train as demo_train

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
work, co_steps, branch_steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = demo_train.DemoConfig(vgg_steps=800, vae_decoder_steps=6000, base_steps=7000, texture_caption_rate=0.0,
                            base_style_steps=co_steps, branch_steps=branch_steps, branch_layout="anchored")
torch.set_num_threads(cfg.threads)
seconds = {}
t0 = time.perf_counter()
demo_train.train_base_with_style(work, cfg)
seconds["base_style"] = round(time.perf_counter() - t0, 1)
print("base+style seconds", seconds["base_style"], flush=True)
t0 = time.perf_counter()
demo_train.train_style_branch(work, cfg)
seconds["branch"] = round(time.perf_counter() - t0, 1)
print("branch seconds", seconds["branch"], flush=True)
(work / "seconds.json").write_text(json.dumps(seconds))
