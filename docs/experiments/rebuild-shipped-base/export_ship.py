"""Export WORK (sd/, vgg19.pth, branch.safetensors) as the demo bundle OUT, described as what it is.

usage: python export_ship.py WORK OUT PREVIOUS_MANIFEST   (the manifest of the bundle whose base WORK holds,
       e.g. `git show 68a3d2c:stylegen_trt/demo/bundle/manifest.json`)"""
import json, sys
from dataclasses import asdict
from pathlib import Path
from stylegen_trt.demo import data
from stylegen_trt.demo.train import DemoConfig
from stylegen_trt.export.bundle import export_bundle
from stylegen_trt.export.graphs import ExportLimits
from stylegen_trt.models import loaders

work, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = DemoConfig(vgg_steps=800, vae_decoder_steps=6000, base_steps=7000, texture_caption_rate=0.0, branch_layout="anchored")
base = loaders.load_base(work / "sd")
encoder = loaders.load_style_encoder(work / "vgg19.pth")
branch = loaders.load_branch(base, work / "branch.safetensors")
assert branch.layout == "anchored"
shipped = json.loads(Path(sys.argv[3]).read_text())["description"]
limits = ExportLimits(min_size=16, max_size=64, native_size=data.IMAGE_SIZE, max_images=24,
                      style_image_size=data.IMAGE_SIZE, max_styles=4)
description = {
    "kind": "demo",
    "base": shipped["base"] + "; the base of commit 9a04195's recipe (see training.base_config), unchanged",
    "vgg": f"VGG19 blocks 1-3 trained on the demo's procedural images through S ({cfg.vgg_steps} steps; block 4 "
           f"seeded random, seed {cfg.seed}), not ImageNet weights",
    "branch": "trained on procedural textures fixed to the image centre (self-style), base frozen; coordinates at "
              "its stem and a global code of S in its time embedding (branch_layout 'anchored')",
    "note": shipped["note"],
    "training": {"config": asdict(cfg), "base_config": shipped["training"]["config"],
                 "seconds": {**shipped["training"]["seconds"], **json.loads((work / "seconds.json").read_text())}},
}
export_bundle(base, encoder, branch, out, limits, description=description,
              defaults={"guidance": cfg.guidance, "style_scale": cfg.style_scale})
print("exported", out)
