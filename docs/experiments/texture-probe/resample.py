"""Re-sample a space_probe model: guidance sweep + one-step x0 check."""
import os
import sys, numpy as np, torch, torch.nn.functional as F
from pathlib import Path
import importlib.util
out = Path(sys.argv[1]); space = sys.argv[2]; mult = sys.argv[3] if len(sys.argv) > 3 else '32,64,64,64'
CHANNELS = tuple(int(c) for c in mult.split(','))
LAYERS = int(sys.argv[4]) if len(sys.argv) > 4 else 1
from stylegen_trt.demo import data, texture_judge, train as T
from stylegen_trt.models import loaders
from diffusers import DDPMScheduler, UNet2DConditionModel, AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
torch.set_num_threads(1)
ck = torch.load(out / "model.pt")
tok = CLIPTokenizer.from_pretrained(out / "sd" / "tokenizer")
cfg = T.DemoConfig()
te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=T.MAX_TOKENS, projection_dim=64, bos_token_id=tok.bos_token_id,
    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)); te.load_state_dict(ck["te"])
ch = 12 if space == "pix" else 4
down = tuple("CrossAttnDownBlock2D" if l in cfg.base_attention_levels else "DownBlock2D" for l in range(4))
unet = UNet2DConditionModel(sample_size=16, in_channels=ch, out_channels=ch, layers_per_block=LAYERS,
    block_out_channels=CHANNELS, norm_num_groups=16, cross_attention_dim=64,
    attention_head_dim=8, down_block_types=down, up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)))
unet.load_state_dict(ck["unet"]); unet.eval(); te.eval()
if space == "pix":
    enc = lambda x: F.pixel_unshuffle(x, 2); dec = lambda z: F.pixel_shuffle(z, 2)
else:
    vae = AutoencoderKL.from_pretrained(space).eval()
    enc = lambda x: vae.encode(x).latent_dist.mean; dec = lambda z: vae.decode(z).sample
mean, std = ck["mean"], ck["std"]
sc = {**loaders.SD15_SCHEDULER_CONFIG, "beta_schedule": os.environ.get("SCHEDULE", "linear"), "beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "v_prediction"}
ns = DDPMScheduler.from_config(sc)
def emb(p): return te(tok(p, padding="max_length", max_length=T.MAX_TOKENS, return_tensors="pt").input_ids)[0]
to8 = lambda img: ((img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
orig = data.random_style
data.random_style = lambda rng, palette=None: (lambda s: data.Style(0, s.fg, s.bg, s.period, s.angle, s.phase))(orig(rng, palette))
with torch.no_grad():
    images, prompts = next(T.batches(77, 8))
    x0 = (enc(images * 2 - 1) - mean) / std
    g = torch.Generator().manual_seed(0)
    rows = [to8(images * 2 - 1)]
    for tt in (100, 300, 500, 700):
        t = torch.full((8,), tt); n = torch.randn(x0.shape, generator=g)
        xt = ns.add_noise(x0, n, t); v = unet(xt, t, emb(prompts)).sample
        a = ns.alphas_cumprod[tt] ** 0.5; s = (1 - ns.alphas_cumprod[tt]) ** 0.5
        x0p = a * xt - s * v
        print(tt, "x0 mse", F.mse_loss(x0p, x0).item(), "trivial", F.mse_loss(a * xt, x0).item())
        rows.append(to8(dec(x0p * std + mean)))
    def sample(prompts, seed, guidance):
        g = torch.Generator().manual_seed(seed); s = DDPMScheduler.from_config(sc); s.set_timesteps(50)
        n = len(prompts); x = torch.randn((n, ch, 16, 16), generator=g)
        ctx = torch.cat([emb([""] * n), emb(prompts)])
        for t in s.timesteps:
            v = unet(torch.cat([x, x]), t, ctx).sample; vu, vc = v.chunk(2)
            x = s.step(vu + guidance * (vc - vu), t, x, generator=g).prev_sample
        return to8(dec(x * std + mean))
    judge = texture_judge.load()
    for gd in (1.0, 4.0):
        im = sample([c.prompt for c in data.all_contents()[:8]], 5, gd)
        print("guidance", gd, np.bincount(texture_judge.classify(judge, im), minlength=7))
        rows.append(im)
from PIL import Image
grid = np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)
Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(out / "check.png")
