"""Co-train the shipped base (rebuilt as torch modules) with a *token* branch on centre-anchored textures.

The token branch is the package's anchored branch whose stem reads a code map instead of S:
code = softmax(head(S)) @ tokens (K = 28 learned 64x64 maps, one per (family, angle) of the anchored data,
initialised like the oracle's random maps), while S itself still feeds the global code (colour). Losses: the
v-MSE of the base+style stage + LAMBDA x cross-entropy of head(S) on the image's (family, angle) class - the
demo's labels, as the VGG stage uses them. Why: an S-fed branch learned colour and never the pattern, an
oracle code per class painted; the head makes the code oracle-like as soon as it classifies S.

usage: python cotrain_tokens.py WORK STEPS [LAMBDA]
"""
import json, sys, time, logging
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from torch import nn
from diffusers import DDPMScheduler
from stylegen_trt.demo import data
from stylegen_trt.demo.train import DemoConfig, batches
from stylegen_trt.models import loaders
from stylegen_trt.models.style_branch import ResidualUNet
from stylegen_trt.training.branch import encode_latents, style_maps

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
K = len(data.TEXTURES) * len(data.ANCHORED_ANGLES)


class TokenBranch(nn.Module):
    """(S, t, scale) -> residuals; the stem sees softmax(head(S)) @ tokens, the global code sees S."""

    def __init__(self, branch, k=K, seed=123):
        super().__init__()
        self.branch = branch
        self.head = nn.Sequential(nn.Linear(1024, 256), nn.SiLU(), nn.Linear(256, k))
        self.tokens = nn.Parameter(torch.randn((k, 64 * 64), generator=torch.Generator().manual_seed(seed)))

    @property
    def stem(self):  # what the exporter reads (stride) and the runtime's S size
        return self.branch.stem

    def style_map_size(self, h, w):
        return self.branch.style_map_size(h, w)

    def logits(self, s):
        return self.head(F.interpolate(s, size=(32, 32), mode="bilinear", align_corners=False).flatten(1))

    def forward(self, s, timestep, style_scale, return_logits=False):
        b = self.branch
        logits = self.logits(s)
        code = (logits.softmax(-1) @ self.tokens).reshape(-1, 1, 64, 64)
        code = F.interpolate(code, size=s.shape[-2:], mode="bilinear", align_corners=False)
        batch = s.shape[0]
        emb = b.time_embedding(b.time_proj(timestep.reshape(-1).expand(batch)).to(s.dtype)) + b.style_code(s)
        context = b.empty_context.to(s.dtype).expand(batch, -1, -1)
        sample = b.stem(code)
        skips = [sample]
        for block in b.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=context)
            else:
                sample, res = block(hidden_states=sample, temb=emb)
            skips += list(res)
        sample = b.mid_block(sample, emb, encoder_hidden_states=context)
        scale = style_scale.reshape(-1, 1, 1, 1).to(s.dtype)
        out = (*[p(x) * scale for p, x in zip(b.down_projections, skips)], b.mid_projection(sample) * scale)
        return (out, logits) if return_logits else out


if __name__ == "__main__":
    work, steps = Path(sys.argv[1]), int(sys.argv[2])
    lam = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
    torch.set_num_threads(2)
    cfg = DemoConfig()
    base = loaders.load_base(work / "sd")
    encoder = loaders.load_style_encoder(work / "vgg19.pth").requires_grad_(False)
    branch = TokenBranch(loaders.new_branch(base, seed=cfg.seed, stem_hidden=32, layout="anchored"))
    base.unet.requires_grad_(True).train(); branch.requires_grad_(True).train()
    unet = ResidualUNet(base.unet)
    sched = DDPMScheduler.from_config(base.scheduler_config)
    unet_params, branch_params = list(base.unet.parameters()), list(branch.parameters())
    params = unet_params + branch_params
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW([{"params": unet_params, "lr": cfg.base_style_learning_rate},
                             {"params": branch_params, "lr": cfg.base_style_branch_learning_rate}], weight_decay=1e-2)
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    stream = batches(cfg.seed + 12, cfg.base_batch, texture_phase="anchored")
    size = branch.branch.style_map_size(16, 16)
    t0 = time.perf_counter(); log = []
    for step in range(1, steps + 1):
        images, prompts = next(stream)
        cls = torch.tensor([s.texture * 4 + data.ANCHORED_ANGLES.index(s.angle) for s in stream.last_styles])
        with torch.no_grad():
            x0 = encode_latents(base, images, gen)
            s = style_maps(encoder, images, data.IMAGE_SIZE, size)
            drop = (torch.rand(len(prompts), generator=gen) < 0.1).tolist()
            context = base.encode_prompts(["" if d else p for p, d in zip(prompts, drop)])
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
            on = (torch.rand(len(prompts), generator=gen) >= cfg.style_dropout).float()
        residuals, logits = branch(s, t.float(), on, return_logits=True)
        pred = unet(sched.add_noise(x0, noise, t), t.float(), context, *residuals)
        mse = F.mse_loss(pred, sched.get_velocity(x0, noise, t))
        ce = F.cross_entropy(logits, cls)
        loss = mse + lam * ce
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - min(cfg.ema_decay, (1 + step) / (10 + step)))
        acc = float((logits.argmax(-1) == cls).float().mean())
        log.append((mse.item(), ce.item(), acc))
        if step % 50 == 0:
            m = np.mean(log[-50:], 0)
            print(f"step {step} mse {m[0]:.4f} ce {m[1]:.3f} acc {m[2]:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if step % 500 == 0 or step == steps:
            snap = work / f"snap-{step}"
            snap.mkdir(exist_ok=True)
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                torch._foreach_copy_(params, ema)
            base.unet.save_pretrained(snap / "unet")
            torch.save(branch.state_dict(), snap / "token-branch.pt")
            with torch.no_grad():
                torch._foreach_copy_(params, saved)
    (work / "loss.json").write_text(json.dumps(log))
    print("done", round(time.perf_counter() - t0, 1))
