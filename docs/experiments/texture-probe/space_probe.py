"""Stripes-only (or any family set) base in a chosen latent space: 'pix' = pixel-unshuffle x2 (a perfect,
linear 'VAE': 12x16x16), or a VAE dir (AutoencoderKL). Same UNet recipe as demo.train.new_base_unet
(in/out channels changed), same loop as train_base. Then samples with DDPM-50, CFG 4, judged.
usage: space_probe.py OUT_DIR SPACE(pix|VAE_DIR) STEPS [families csv] [width_mult]"""
import os
import json, logging, sys, time
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from stylegen_trt.demo import data, texture_judge, train as T
from stylegen_trt.models import loaders

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
out, space, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
fams = [data.TEXTURES.index(f) for f in (sys.argv[4] if len(sys.argv) > 4 else "stripes").split(",")]
mult = sys.argv[5] if len(sys.argv) > 5 else '32,64,64,64'
CHANNELS = tuple(int(c) for c in mult.split(','))
LAYERS = int(sys.argv[6]) if len(sys.argv) > 6 else 1
out.mkdir(parents=True, exist_ok=True)
orig = data.random_style
def forced(rng, palette=None):
    s = orig(rng, palette)
    k = fams[int(rng.integers(len(fams)))]
    return data.Style(k, s.fg, s.bg, s.period, s.angle, s.phase)
data.random_style = forced

from diffusers import DDPMScheduler, UNet2DConditionModel, AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel
cfg = T.DemoConfig()
if space == "pix":
    ch = 12
    enc = lambda x: F.pixel_unshuffle(x, 2)
    dec = lambda z: F.pixel_shuffle(z, 2)
    scale = None
else:
    vae = AutoencoderKL.from_pretrained(space).eval().requires_grad_(False)
    ch = 4
    enc = lambda x: vae.encode(x).latent_dist.mean
    dec = lambda z: vae.decode(z).sample
imgs, _ = next(T.batches(99, 256))
with torch.no_grad():
    z = enc(imgs * 2 - 1)
    mean = z.mean(); std = z.std()
    log_ch = z.std(dim=(0, 2, 3))
logging.info("latent std %.4f per-channel %s", std, log_ch.numpy().round(3))
tok = T.write_tokenizer(out)
torch.manual_seed(2)
te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=T.MAX_TOKENS, projection_dim=64, bos_token_id=tok.bos_token_id,
    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
down = tuple("CrossAttnDownBlock2D" if l in cfg.base_attention_levels else "DownBlock2D" for l in range(4))
unet = UNet2DConditionModel(sample_size=16, in_channels=ch, out_channels=ch, layers_per_block=LAYERS,
    block_out_channels=CHANNELS, norm_num_groups=16, cross_attention_dim=64,
    attention_head_dim=8, down_block_types=down, up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)))
logging.info("unet params %.2fM", sum(p.numel() for p in unet.parameters()) / 1e6)
sc = {**loaders.SD15_SCHEDULER_CONFIG, "beta_schedule": os.environ.get("SCHEDULE", "linear"), "beta_start": 0.0001, "beta_end": 0.02,
      "prediction_type": "v_prediction"}
ns = DDPMScheduler.from_config(sc)
params = list(unet.parameters()) + list(te.parameters())
ema = [p.detach().clone() for p in params]
opt = torch.optim.AdamW(params, lr=cfg.base_learning_rate, weight_decay=1e-2)
sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.base_learning_rate, total_steps=steps, pct_start=0.03)
gen = torch.Generator().manual_seed(3)
stream = T.batches(4, 32)
losses = []; t0 = time.perf_counter()
for step in range(1, steps + 1):
    images, prompts = next(stream)
    with torch.no_grad():
        x0 = (enc(images * 2 - 1) - mean) / std
    drop = torch.rand(len(prompts), generator=gen) < 0.1
    ids = tok(["" if d else p for p, d in zip(prompts, drop.tolist())], padding="max_length", max_length=T.MAX_TOKENS,
              truncation=True, return_tensors="pt").input_ids
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
    pred = unet(ns.add_noise(x0, noise, t), t, te(ids)[0]).sample
    loss = F.mse_loss(pred, ns.get_velocity(x0, noise, t))
    opt.zero_grad(set_to_none=True); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sch.step()
    with torch.no_grad():
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - min(cfg.ema_decay, (1 + step) / (10 + step)))
    losses.append(loss.item())
    if step % 100 == 0:
        logging.info("step %d loss %.4f (%.2f s/step)", step, np.mean(losses[-100:]), (time.perf_counter() - t0) / step)
with torch.no_grad():
    torch._foreach_copy_(params, ema)
torch.save({"unet": unet.state_dict(), "te": te.state_dict(), "mean": mean, "std": std}, out / "model.pt")

@torch.no_grad()
def sample(prompts, seed, guidance=4.0):
    g = torch.Generator().manual_seed(seed)
    s = DDPMScheduler.from_config(sc); s.set_timesteps(50)
    n = len(prompts)
    x = torch.randn((n, ch, 16, 16), generator=g)
    ctx = torch.cat([te(tok([""] * n, padding="max_length", max_length=T.MAX_TOKENS, return_tensors="pt").input_ids)[0],
                     te(tok(prompts, padding="max_length", max_length=T.MAX_TOKENS, return_tensors="pt").input_ids)[0]])
    for t in s.timesteps:
        v = unet(torch.cat([x, x]), t, ctx).sample
        vu, vc = v.chunk(2)
        x = s.step(vu + guidance * (vc - vu), t, x, generator=g).prev_sample
    img = dec(x * std + mean)
    return ((img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)

contents = [data.Content(0, 1, 1), data.Content(1, 0, 0), data.Content(2, 2, 1), data.Content(3, 1, 0)]
imgs = np.concatenate([sample([c.prompt] * 4, 100 + k) for k, c in enumerate(contents)])
judge = texture_judge.load()
pred = texture_judge.classify(judge, imgs)
hist = dict(zip(data.TEXTURES, np.bincount(pred, minlength=7).tolist()))
match = float(np.mean(np.isin(pred, fams)))
# reference: what training images look like to the judge
rimgs, _ = next(T.batches(123, 16))
rpred = texture_judge.classify(judge, (rimgs.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
from PIL import Image
grid = imgs.reshape(4, 4, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(128, 128, 3)
Image.fromarray(grid).resize((512, 512), Image.NEAREST).save(out / "samples.png")
res = {"space": space, "steps": steps, "families": fams, "mult": mult, "final_loss": float(np.mean(losses[-100:])),
       "judge_hist": hist, "match": match, "train_images_match": float(np.mean(np.isin(rpred, fams))),
       "s_per_step": (time.perf_counter() - t0) / steps}
logging.info("%s", res)
(out / "result.json").write_text(json.dumps(res, indent=1))
