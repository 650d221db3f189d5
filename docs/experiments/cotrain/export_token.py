"""Export a co-trained snapshot (unet + token branch) with the shipped text encoder, VAE and the trained VGG.
usage: python export_token.py SNAP_DIR OUT_BUNDLE"""
import json, shutil, sys, tempfile
from pathlib import Path
import torch
sys.argv, argv = sys.argv[:1], sys.argv
from cotrain_tokens import TokenBranch
from stylegen_trt.demo import data
from stylegen_trt.export.bundle import export_bundle
from stylegen_trt.export.graphs import ExportLimits
from stylegen_trt.models import loaders
torch.set_num_threads(1)
snap, out = Path(argv[1]), Path(argv[2])
tmp = Path(tempfile.mkdtemp())
shutil.copytree("/work/ship/sd", tmp / "sd"); shutil.rmtree(tmp / "sd" / "unet"); shutil.copytree(snap / "unet", tmp / "sd" / "unet")
base = loaders.load_base(tmp / "sd")
encoder = loaders.load_style_encoder("/work/vgg800/vgg19.pth")
branch = TokenBranch(loaders.new_branch(base, seed=0, stem_hidden=32, layout="anchored"))
branch.load_state_dict(torch.load(snap / "token-branch.pt")); branch.eval()
limits = ExportLimits(min_size=16, max_size=64, native_size=data.IMAGE_SIZE, max_images=24,
                      style_image_size=data.IMAGE_SIZE, max_styles=4)
shipped = json.loads(Path("/work/cotrain/previous-manifest.json").read_text())["description"]
description = {"kind": "demo", "base": "experiment: shipped base co-trained with a token branch", "vgg": "trained VGG stage 800",
               "branch": "token branch (experiment)", "note": shipped["note"], "training": shipped["training"]}
export_bundle(base, encoder, branch, out, limits, description=description, defaults={"guidance": 4.0, "style_scale": 1.5})
print("exported", out)
