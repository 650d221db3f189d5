"""A demo VAE (train.train_vae's recipe) with optional regularisers, then the decoder fine-tune.
usage: vae_variant.py WORK [kl_weight=1e-6] [eq_weight=0] [noise_sigma=0] [vae_steps=600] [dec_steps=1000]
eq: EQ-VAE's scale equivariance, decode(avgpool2(z)) ~ avgpool2(x); noise: decoder sees z + sigma*n."""
import json, logging, sys, time
from dataclasses import replace
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from stylegen_trt.demo import data, train as T
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
torch.set_num_threads(2)
work = Path(sys.argv[1]); a = sys.argv[2:] + [None] * 5
kl = float(a[0] or 1e-6); eq = float(a[1] or 0); sig = float(a[2] or 0)
cfg = replace(T.DemoConfig(), vae_steps=int(a[3] or 600), vae_decoder_steps=int(a[4] or 1000))
from diffusers import AutoencoderKL
out = work / "sd" / "vae"
torch.manual_seed(cfg.seed)
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                    norm_num_groups=16, sample_size=32, down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2)
opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=cfg.vae_steps, pct_start=0.05)
stream = T.batches(cfg.seed + 1, cfg.vae_batch)
g = torch.Generator().manual_seed(5)
losses = []; t0 = time.perf_counter()
for step in range(1, cfg.vae_steps + 1):
    images, _ = next(stream)
    x = images * 2 - 1
    post = vae.encode(x).latent_dist
    z = post.sample()
    zd = z + sig * z.detach().std() * torch.randn(z.shape, generator=g) if sig else z
    recon = vae.decode(zd).sample
    loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + kl * post.kl().mean()
    if eq:
        small = vae.decode(F.avg_pool2d(z, 2)).sample
        loss = loss + eq * (F.l1_loss(small, F.avg_pool2d(x, 2)) + F.mse_loss(small, F.avg_pool2d(x, 2)))
    opt.zero_grad(set_to_none=True); loss.backward(); torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
    opt.step(); sched.step(); losses.append(loss.item())
    if step % 100 == 0:
        logging.info("vae step %d loss %.4f (%.2f s/step)", step, np.mean(losses[-100:]), (time.perf_counter() - t0) / step)
vae.eval()
with torch.no_grad():
    images, _ = next(T.batches(cfg.seed + 99, 256))
    std = vae.encode(images * 2 - 1).latent_dist.mean.std().item()
vae.register_to_config(scaling_factor=1.0 / std)
vae.save_pretrained(out)
if cfg.vae_decoder_steps:
    T.finetune_vae_decoder(work, cfg, vae)
logging.info("done")
