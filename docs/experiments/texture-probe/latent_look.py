import sys, numpy as np, torch
from pathlib import Path
from diffusers import AutoencoderKL
from stylegen_trt.demo import data, train as T
from PIL import Image
torch.set_num_threads(1)
vae = AutoencoderKL.from_pretrained(sys.argv[1]).eval()
out = Path(sys.argv[2])
orig = data.random_style
data.random_style = lambda rng, palette=None: (lambda s: data.Style(0, s.fg, s.bg, s.period, s.angle, s.phase))(orig(rng, palette))
imgs, _ = next(T.batches(5, 6))
with torch.no_grad():
    z = vae.encode(imgs * 2 - 1).latent_dist.mean
    rec = vae.decode(z).sample
    rows = []
    for sig in (0.1, 0.3):
        rows.append(vae.decode(z + sig * z.std() * torch.randn_like(z)).sample)
# latent channels as grey images, normalised per channel
zz = z.numpy(); zn = (zz - zz.min(axis=(2, 3), keepdims=True)) / (np.ptp(zz, axis=(2, 3), keepdims=True) + 1e-8)
lat = np.concatenate([np.concatenate([np.kron(zn[i, c], np.ones((2, 2))) for c in range(4)], 1) for i in range(6)], 0)
to8 = lambda t: ((t / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
pic = np.concatenate([np.concatenate(list(to8(t)), 0) for t in (imgs * 2 - 1, rec, *rows)], 1)
lat8 = (np.repeat(lat[..., None], 3, 2) * 255).astype(np.uint8)
full = np.concatenate([pic, lat8], 1)
Image.fromarray(full).resize((full.shape[1] * 3, full.shape[0] * 3), Image.NEAREST).save(out)
# spectrum: share of latent power above half-Nyquist vs image luminance
def hf(a):
    f = np.abs(np.fft.fft2(a - a.mean(axis=(-2, -1), keepdims=True))) ** 2
    n = a.shape[-1]; k = np.fft.fftfreq(n); r = np.sqrt(k[:, None] ** 2 + k[None] ** 2)
    return float(f[..., r > 0.25].sum() / f.sum())
lum = (imgs.mean(1)).numpy()
print("hf share latent", hf(zz), "image(at 16px)", hf(lum.reshape(6, 16, 2, 16, 2).mean((2, 4))), "image 32", hf(lum))
