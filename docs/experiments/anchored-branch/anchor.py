"""Experiment: branch trained on textures at a fixed phase (a function of S).

usage: python anchor.py WORK_BASE OUT_DIR STEPS MODE [THREADS]
MODE 0: the branch as shipped; 1: + coordinate stem; 2: 1 + a global code of S in the time embedding;
3: 2 with an oracle code per (family, angle) instead of S (README.md in this folder)
"""
import sys, time, json, logging
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from torch import nn
from stylegen_trt.demo import data
from stylegen_trt.demo.train import DemoBatches
from stylegen_trt.models import loaders
from stylegen_trt.training.branch import BranchTrainer, TrainConfig, train_branch

work, out, steps, coords = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)
logging.basicConfig(level=logging.INFO)
out.mkdir(parents=True, exist_ok=True)

ANGLES = np.deg2rad([0, 45, 90, 135])
PERIOD = 7.5

def anchored_pattern(style, size, rng):
    scale = data.IMAGE_SIZE / size
    y, x = (np.mgrid[0:size, 0:size] + 0.5) * scale
    x, y = x - 16.0, y - 16.0   # anchored at the image centre
    p, a, ph = style.period, style.angle, 0.0
    u = x * np.cos(a) + y * np.sin(a)
    v = -x * np.sin(a) + y * np.cos(a)
    name = data.TEXTURES[style.texture]
    if name == "stripes":
        o = ((u / p + 0.5 - 0.175) % 1.0) < 0.35
    elif name == "dots":
        du, dv = (u / p + 0.5) % 1.0 - 0.5, (v / p + 0.5) % 1.0 - 0.5
        o = du * du + dv * dv < 0.09
    elif name == "grid":
        o = (((u / p + 0.11) % 1.0) < 0.22) | (((v / p + 0.11) % 1.0) < 0.22)
    elif name == "hatching":
        o = (((x + y) / p + 0.15) % 1.0 < 0.3) | (((x - y) / p + 0.15) % 1.0 < 0.3)
    elif name == "waves":
        o = ((u + 1.8 * np.sin(v * 2 * np.pi / (2.5 * p))) / p % 1.0 + 0.175) % 1.0 < 0.35
    elif name == "rings":
        o = ((np.hypot(x, y) / p) % 1.0) < 0.35
    else:
        xx, yy = x + 16, y + 16
        cells = np.floor(xx / data.GRAIN_CELL) * 7919 + np.floor(yy / data.GRAIN_CELL) * 104729
        o = (np.sin(cells) * 43758.5453 % 1.0) < 0.25
    return o.astype(np.float32)

def anchored_style(rng, palette=None):
    fg, bg = palette if palette is not None else data.random_palette(rng)
    return data.Style(int(rng.integers(len(data.TEXTURES))), fg, bg, PERIOD, float(ANGLES[rng.integers(4)]), 0.0)

data.pattern = anchored_pattern
data.random_style = anchored_style


class CoordStem(nn.Module):
    """S plus fixed image-space coordinate features (x, y and sin/cos at 1, 2, 4, 8 cycles) -> stem."""
    def __init__(self, stem, freqs=(1, 2, 4, 8)):
        super().__init__()
        self.stride, self.freqs = stem.stride, freqs
        first = stem.layers[0]
        n = 1 + 2 + 4 * len(freqs)
        conv = nn.Conv2d(n, first.out_channels, 3, padding=1)
        with torch.no_grad():
            conv.weight.zero_(); conv.weight[:, :1].copy_(first.weight); conv.bias.copy_(first.bias)
            conv.weight[:, 1:].normal_(0, 0.1)
        self.layers = nn.Sequential(conv, *list(stem.layers)[1:])

    def forward(self, s):
        b, _, h, w = s.shape
        ys = (torch.arange(h, dtype=s.dtype) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, dtype=s.dtype) + 0.5) / w * 2 - 1
        yy = ys[:, None].expand(h, w); xx = xs[None, :].expand(h, w)
        feats = [xx, yy]
        for f in self.freqs:
            feats += [torch.sin(np.pi * f * xx), torch.cos(np.pi * f * xx), torch.sin(np.pi * f * yy), torch.cos(np.pi * f * yy)]
        c = torch.stack(feats)[None].expand(b, -1, -1, -1)
        return self.layers(torch.cat([s, c], 1))


class StyleEmbed(nn.Module):
    """Global code of S (pooled to 32x32) added to the branch's time embedding: reaches every resnet."""
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1024, 256), nn.SiLU(), nn.Linear(256, dim))
        nn.init.zeros_(self.net[2].weight); nn.init.zeros_(self.net[2].bias)

    def forward(self, s):
        return self.net(F.adaptive_avg_pool2d(s, (32, 32)).flatten(1))


def branch_forward(self, style_map, timestep, style_scale):
    batch = style_map.shape[0]
    t_emb = self.time_proj(timestep.reshape(-1).expand(batch)).to(style_map.dtype)
    emb = self.time_embedding(t_emb) + self.style_embed(style_map)
    context = self.empty_context.to(style_map.dtype).expand(batch, -1, -1)
    sample = self.stem(style_map)
    skips = [sample]
    for block in self.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=context)
        else:
            sample, res = block(hidden_states=sample, temb=emb)
        skips += list(res)
    sample = self.mid_block(sample, emb, encoder_hidden_states=context)
    scale = style_scale.reshape(-1, 1, 1, 1).to(style_map.dtype)
    down = [proj(s) * scale for proj, s in zip(self.down_projections, skips)]
    return (*down, self.mid_projection(sample) * scale)


def upgrade(branch, coords):
    import types
    if coords >= 1:
        branch.stem = CoordStem(branch.stem)
    if coords >= 2:
        branch.style_embed = StyleEmbed(branch.time_embedding.linear_2.out_features)
        branch.forward = types.MethodType(branch_forward, branch)
    return branch


def ddpm_sample(branch, unet, scheduler, style_map, context, scale, noise, generator, guidance=4.0):
    """DDPM over scheduler.timesteps with CFG; context = [cond; uncond], residuals from (S, t) shared by both."""
    x = noise
    for t in scheduler.timesteps:
        res = branch(style_map, t.float().reshape(1), torch.tensor([scale]))
        v = unet(torch.cat([x, x]), t.float().reshape(1), context, *res)
        vc, vu = v.chunk(2)
        x = scheduler.step(vu + guidance * (vc - vu), t, x, generator=generator).prev_sample
    return x


base = loaders.load_base(work / "sd")
encoder = loaders.load_style_encoder(work / "vgg19.pth")
branch = loaders.new_branch(base, seed=0, stem_hidden=32)
upgrade(branch, min(coords, 2))
stream = DemoBatches(6, 32)
ORACLE = torch.randn((len(data.TEXTURES) * 4, 1, 64, 64), generator=torch.Generator().manual_seed(123))
def oracle_class(style):
    return style.texture * 4 + int(np.argmin(np.abs(ANGLES - style.angle)))
if coords == 3:  # oracle S: a fixed random map per (family, angle) class, no colour
    import stylegen_trt.training.branch as tb
    tb.style_maps = lambda enc, images, size, out: ORACLE[[oracle_class(s) for s in stream.last_styles]]
cfg = TrainConfig(steps=steps, batch_size=32, learning_rate=5e-4, caption_dropout=0.1, style_image_size=data.IMAGE_SIZE,
                  checkpoint_every=250, seed=5)
trainer = BranchTrainer(base, encoder, branch, cfg)
t0 = time.perf_counter(); losses = []
def on_step(step, loss):
    losses.append(loss)
    if step % 25 == 0:
        print(f"step {step} loss {np.mean(losses[-25:]):.4f} {time.perf_counter()-t0:.0f}s", flush=True)
train_branch(trainer, stream, out / "branch.safetensors", on_step)
# a sample sheet of training images, to look at
imgs = np.concatenate([np.concatenate([data.render(data.random_content(r), anchored_style(r)) for _ in range(8)], 1)
                       for r in [np.random.default_rng(k) for k in range(4)]], 0)
from PIL import Image; Image.fromarray(imgs).resize((imgs.shape[1]*3, imgs.shape[0]*3), Image.NEAREST).save(out / "train-samples.png")
print("done", time.perf_counter() - t0)
