"""Fit the re-run VAE encoder to the shipped decoder (frozen): 200 steps of L1+MSE reconstruction."""
import sys, json, torch, torch.nn.functional as F, numpy as np
sys.path.insert(0, "/work/old")
from diffusers import AutoencoderKL
from stylegen_trt.demo.train import batches
torch.set_num_threads(2); torch.manual_seed(0)
vae = AutoencoderKL.from_pretrained("/work/ship/sd/vae")
vae.decoder.requires_grad_(False); vae.post_quant_conv.requires_grad_(False)
params = list(vae.encoder.parameters()) + list(vae.quant_conv.parameters())
opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
stream = batches(123, 32)
def evaluate():
    images, _ = next(batches(99, 64)); x = images * 2 - 1
    with torch.no_grad():
        r = vae.decode(vae.encode(x).latent_dist.mean).sample
    return float(F.l1_loss(r, x) + F.mse_loss(r, x)), float(vae.encode(x).latent_dist.mean.std())
print("before", evaluate(), flush=True)
for step in range(1, 201):
    images, _ = next(stream); x = images * 2 - 1
    r = vae.decode(vae.encode(x).latent_dist.mean).sample
    loss = F.l1_loss(r, x) + F.mse_loss(r, x)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 50 == 0: print(step, loss.item(), flush=True)
print("after", evaluate(), flush=True)
vae.register_to_config(scaling_factor=0.7018985615887663)
vae.save_pretrained("/work/ship/sd/vae")
