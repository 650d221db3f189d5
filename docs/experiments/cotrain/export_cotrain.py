"""Export WORK (sd/, vgg19.pth, BRANCH) as the demo bundle OUT, described as what it is (co-trained base).

usage: python export_cotrain.py WORK OUT [BRANCH_FILE]
WORK/steps.json holds the DemoConfig fields of the run, and optionally "note": how the run departed from them.
"""
import json, sys
from dataclasses import asdict
from pathlib import Path
from stylegen_trt.demo import data
from stylegen_trt.demo.train import DemoConfig
from stylegen_trt.export.bundle import export_bundle
from stylegen_trt.export.graphs import ExportLimits
from stylegen_trt.models import loaders

work, out = Path(sys.argv[1]), Path(sys.argv[2])
steps = json.loads((work / "steps.json").read_text())
note = steps.pop("note", "")
for schedule in ("anchored_hatching_periods", "outline_widths"):  # JSON lists -> the config's tuples
    if schedule in steps:
        steps[schedule] = tuple(map(tuple, steps[schedule]))
cfg = DemoConfig(vgg_steps=800, vae_decoder_steps=6000, base_steps=7000, texture_caption_rate=0.0, branch_layout="anchored",
                 **steps)
base = loaders.load_base(work / "sd")
encoder = loaders.load_style_encoder(work / "vgg19.pth")
branch = loaders.load_branch(base, Path(sys.argv[3]) if len(sys.argv) > 3 else work / "branch.safetensors")
assert branch.layout == "anchored"
shipped = json.loads((Path(__file__).resolve().parents[0] / "previous-manifest.json").read_text())["description"]
limits = ExportLimits(min_size=16, max_size=64, native_size=data.IMAGE_SIZE, max_images=24,
                      style_image_size=data.IMAGE_SIZE, max_styles=4)
description = {
    "kind": "demo",
    "base": shipped["base"] + f"; the base of commit 9a04195's recipe (see training.base_config), then co-trained "
            f"{cfg.base_style_steps} steps with the anchored branch on centre-anchored textures (base+style stage)"
            + (f"; {note}" if note else ""),
    "vgg": f"VGG19 blocks 1-3 trained on the demo's procedural images through S ({cfg.vgg_steps} steps; block 4 "
           f"seeded random, seed {cfg.seed}), not ImageNet weights",
    "branch": ("trained on procedural textures fixed to the image centre (self-style), base frozen" if cfg.branch_steps else
               f"trained together with the base in the base+style stage ({cfg.base_style_steps} steps, S from the "
               f"texture without the shape, shape weight {cfg.base_style_shape_weight:g}), not after it")
              + "; coordinates at its stem and a global code of S in its time embedding (branch_layout 'anchored')",
    "note": shipped["note"],
    "training": {"config": asdict(cfg), "base_config": shipped["training"]["config"],
                 "seconds": {**{k: v for k, v in shipped["training"]["seconds"].items() if cfg.branch_steps or k != "branch"},
                             **json.loads((work / "seconds.json").read_text())}},
}
export_bundle(base, encoder, branch, out, limits, description=description,
              defaults={"guidance": cfg.guidance, "style_scale": cfg.style_scale})
print("exported", out)
