"""Train the anchored branch over the shipped base with the package's own stage (export: export_ship.py).

WORK holds sd/ (the shipped base rebuilt as torch modules) and vgg19.pth + vgg.loss.json (the VGG stage's output).
usage: python ship_branch.py WORK OUT   (OUT unused; kept for the command line in README.md)
"""
import json, logging, sys, time
from dataclasses import asdict, replace
from pathlib import Path
import torch
from stylegen_trt.demo import train as demo_train

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
work, out = Path(sys.argv[1]), Path(sys.argv[2])
# the shipped base's recipe (commit 9a04195: no texture captions, decoder 6000 steps, base 7000) with
# the VGG stage (800 steps) and the anchored branch on top
cfg = demo_train.DemoConfig(vgg_steps=800, vae_decoder_steps=6000, base_steps=7000, texture_caption_rate=0.0,
                            branch_layout="anchored")
torch.set_num_threads(cfg.threads)
t0 = time.perf_counter()
demo_train.train_style_branch(work, cfg)
print("branch seconds", round(time.perf_counter() - t0, 1), flush=True)
