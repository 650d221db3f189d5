"""Is a stripe still in x_t? For stripes-only latents: the strongest non-DC Fourier peak of x_t (summed over channels)
at the clean latent's own peak frequency (+-1 bin, either sign), by t."""
import sys, numpy as np, torch
from diffusers import AutoencoderKL, DDPMScheduler
from stylegen_trt.demo import data, train as T
from stylegen_trt.models import loaders
torch.set_num_threads(1)
vae = AutoencoderKL.from_pretrained(sys.argv[1]).eval()
orig = data.random_style
data.random_style = lambda rng, palette=None: (lambda s: data.Style(0, s.fg, s.bg, s.period, s.angle, s.phase))(orig(rng, palette))
imgs, _ = next(T.batches(11, 64))
with torch.no_grad():
    z = vae.encode(imgs * 2 - 1).latent_dist.mean
z = (z - z.mean()) / z.std()
sc = {**loaders.SD15_SCHEDULER_CONFIG, "beta_schedule": __import__("os").environ.get("SCHEDULE", "linear"), "beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "v_prediction"}
ns = DDPMScheduler.from_config(sc)
def peaks(x):
    f = (np.abs(np.fft.fft2(x.numpy() - x.numpy().mean(axis=(2, 3), keepdims=True))) ** 2).sum(1)
    f[:, 0, 0] = 0
    # ignore the lowest ring (shape / blob power): |k| <= 1 bin
    k = np.fft.fftfreq(16) * 16; r = np.sqrt(k[:, None] ** 2 + k[None] ** 2); f[:, r <= 1.5] = 0
    return f.reshape(len(x), -1).argmax(1)
clean = peaks(z)
g = torch.Generator().manual_seed(0)
for t in (100, 300, 500, 600, 700, 800, 850, 900, 950):
    xt = ns.add_noise(z, torch.randn(z.shape, generator=g), torch.full((len(z),), t))
    p = peaks(xt)
    ci, cj = np.unravel_index(clean, (16, 16)); pi, pj = np.unravel_index(p, (16, 16))
    d = lambda a, b: np.minimum(np.abs(a - b) % 16, 16 - np.abs(a - b) % 16)
    same = ((d(ci, pi) <= 1) & (d(cj, pj) <= 1)) | ((d(ci, -pi) <= 1) & (d(cj, -pj) <= 1))
    print(t, "alpha_bar %.3f" % ns.alphas_cumprod[t], "peak found %.0f%%" % (100 * same.mean()))
