"""Residual distillation: a branch fed the real S (trained VGG) regresses the residuals of the oracle branch
(anchor.py MODE 3: a fixed code per (family, angle), which paints the family at 50.9%) - a target that names
the texture directly instead of the colour-dominated v-MSE. No UNet in the loop.

usage: python distill.py WORK_BASE ORACLE_BRANCH_DIR VGG OUT_DIR STEPS
"""
import sys, time, json, os, types
from pathlib import Path
import numpy as np, torch
from safetensors.torch import load_file
_argv = list(sys.argv)
from stylegen_trt.demo import data as _data
_orig_pattern, _orig_style = _data.pattern, _data.random_style
sys.argv = ["x", _argv[1], "/tmp/none", "0", "0"]
exec(open("/work/main/docs/experiments/anchored-branch/anchor.py").read().split("base = loaders.load_base")[0])
data.pattern, data.random_style = _orig_pattern, _orig_style
# anchor.py's header set work/out/steps from the argv above: ours come after it
work, oracle_dir, vgg, out, steps = Path(_argv[1]), Path(_argv[2]), Path(_argv[3]), Path(_argv[4]), int(_argv[5])
torch.set_num_threads(2); out.mkdir(parents=True, exist_ok=True)
from stylegen_trt.demo.train import DemoBatches
from stylegen_trt.training.branch import style_maps
base = loaders.load_base(work / "sd")
encoder = loaders.load_style_encoder(vgg).requires_grad_(False)
teacher = upgrade(loaders.new_branch(base, seed=0, stem_hidden=32), 2)
teacher.load_state_dict(load_file(str(oracle_dir / "branch.safetensors"))); teacher.eval().requires_grad_(False)
ORACLE = torch.randn((len(data.TEXTURES) * 4, 1, 64, 64), generator=torch.Generator().manual_seed(123))
student = loaders.new_branch(base, seed=0, stem_hidden=32, layout="anchored").train().requires_grad_(True)
opt = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=1e-2)
stream = DemoBatches(6, 32, texture_phase="anchored")
size = student.style_map_size(16, 16)
gen = torch.Generator().manual_seed(5)
t0 = time.perf_counter(); losses = []
for step in range(1, steps + 1):
    images, _ = next(stream)
    cls = [s.texture * 4 + data.ANCHORED_ANGLES.index(s.angle) for s in stream.last_styles]
    t = torch.randint(0, 1000, (len(cls),), generator=gen).float()
    one = torch.ones(len(cls))
    with torch.no_grad():
        S = style_maps(encoder, images, data.IMAGE_SIZE, size)
        target = teacher(ORACLE[cls], t, one)
    pred = student(S, t, one)
    loss = sum(((p - q) ** 2).mean() / (q.pow(2).mean() + 1e-6) for p, q in zip(pred, target)) / len(pred)
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0); opt.step()
    losses.append(loss.item())
    if step % 50 == 0:
        print(f"step {step} loss {np.mean(losses[-50:]):.4f} {time.perf_counter() - t0:.0f}s", flush=True)
student.eval().requires_grad_(False)
loaders.save_branch(student, out / "branch.safetensors")
(out / "loss.json").write_text(json.dumps(losses))
print("done", round(time.perf_counter() - t0, 1))
