"""usage: python export_exp.py WORK_BASE BRANCH_DIR MODE  -> BRANCH_DIR/bundle"""
import sys
from pathlib import Path
_argv = list(sys.argv)
sys.argv = ["x", _argv[1], "/tmp/none", "0", "0"]
exec(open(__import__("os").path.join(__import__("os").path.dirname(__file__), "anchor.py")).read().split("base = loaders.load_base")[0])
from safetensors.torch import load_file
from stylegen_trt.export.bundle import export_bundle
from stylegen_trt.export.graphs import ExportLimits
work, bdir, mode = Path(_argv[1]), Path(_argv[2]), int(_argv[3])
base = loaders.load_base(work / "sd")
encoder = loaders.load_style_encoder(work / "vgg19.pth")
branch = upgrade(loaders.new_branch(base, seed=0, stem_hidden=32), mode)
branch.load_state_dict(load_file(str(bdir / "branch.safetensors")))
branch.eval()
limits = ExportLimits(min_size=16, max_size=64, native_size=data.IMAGE_SIZE, max_images=24,
                      style_image_size=data.IMAGE_SIZE, max_styles=4)
export_bundle(base, encoder, branch, bdir / "bundle", limits, description={"kind": "demo", "note": "experiment"},
              defaults={"guidance": 4.0, "style_scale": 1.5})
print("exported", bdir / "bundle")
