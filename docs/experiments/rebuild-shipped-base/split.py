"""How much of the oracle branch's residuals depends on the (family, angle) code, and how much of that the
distilled S-fed branch reproduces (anchored training-distribution images, t = 300/500/700)."""
import sys, numpy as np, torch
from pathlib import Path
from safetensors.torch import load_file
from stylegen_trt.demo import data as _data
_o = (_data.pattern, _data.random_style)
sys.argv = ["x", "/work/w64", "/tmp/none", "0", "0"]
exec(open("/work/main/docs/experiments/anchored-branch/anchor.py").read().split("base = loaders.load_base")[0])
data.pattern, data.random_style = _o
from stylegen_trt.training.branch import style_maps
torch.set_num_threads(1)
base = loaders.load_base("/work/w64/sd"); enc = loaders.load_style_encoder("/work/vgg800/vgg19.pth")
teacher = upgrade(loaders.new_branch(base, seed=0, stem_hidden=32), 2)
teacher.load_state_dict(load_file("/work/exp/D-oracle/branch.safetensors")); teacher.eval()
student = loaders.load_branch(base, "/work/distill/run/branch.safetensors")
ORACLE = torch.randn((28, 1, 64, 64), generator=torch.Generator().manual_seed(123))
rng = np.random.default_rng(1234)
styles = [data.Style(f, *data.random_palette(rng), data.ANCHORED_PERIOD, a, 0.0, anchored=True)
          for f in range(7) for a in data.ANCHORED_ANGLES for _ in range(2)]
contents = [data.random_content(rng) for _ in styles]
images = torch.from_numpy(np.stack([data.render(c, s) for c, s in zip(contents, styles)])).permute(0, 3, 1, 2).float() / 255
cls = [s.texture * 4 + data.ANCHORED_ANGLES.index(s.angle) for s in styles]
with torch.no_grad():
    S = style_maps(enc, images, data.IMAGE_SIZE, student.style_map_size(16, 16))
    for t in (300, 500, 700):
        tt = torch.full((len(cls),), float(t)); one = torch.ones(len(cls))
        T = torch.cat([r.flatten(1) for r in teacher(ORACLE[cls], tt, one)], 1)
        P = torch.cat([r.flatten(1) for r in student(S, tt, one)], 1)
        mean = T.mean(0, keepdim=True)
        total, between = T.pow(2).sum(1).mean(), (T - mean).pow(2).sum(1).mean()
        err, err_between = (P - T).pow(2).sum(1).mean(), ((P - P.mean(0, keepdim=True)) - (T - mean)).pow(2).sum(1).mean()
        print(f"t={t}: code-dependent part of the oracle's residual energy {between / total:.1%}; "
              f"student error / total {err / total:.1%}; student error on the code-dependent part / that part "
              f"{err_between / between:.1%}")
