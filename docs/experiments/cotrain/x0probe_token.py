"""x0 probe: for anchored training images, the one-step x0 prediction with the branch on / off at several t.
usage: python x0probe_token.py SNAP_DIR OUT.png"""
import sys, numpy as np, torch
from pathlib import Path
from diffusers import DDPMScheduler
from PIL import Image
from stylegen_trt.demo import data
from stylegen_trt.models import loaders
from stylegen_trt.models.style_branch import ResidualUNet
from stylegen_trt.training.branch import style_maps
torch.set_num_threads(1)
snap, out = Path(sys.argv[1]), sys.argv[2]
sys.argv = sys.argv[:1]
from cotrain_tokens import TokenBranch
import shutil, tempfile
tmp = Path(tempfile.mkdtemp())
shutil.copytree("/work/ship/sd", tmp / "sd"); shutil.rmtree(tmp / "sd" / "unet"); shutil.copytree(snap / "unet", tmp / "sd" / "unet")
base = loaders.load_base(tmp / "sd"); enc = loaders.load_style_encoder("/work/vgg800/vgg19.pth")
br = TokenBranch(loaders.new_branch(base, seed=0, stem_hidden=32, layout="anchored"))
br.load_state_dict(torch.load(snap / "token-branch.pt")); br.eval()
unet = ResidualUNet(base.unet); sch = DDPMScheduler.from_config(base.scheduler_config)
pal = ((230, 57, 70), (241, 250, 238))
c = data.Content(0, 1, 1)
lum = lambda im: (im * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
rows = []
with torch.no_grad():
    ctx = base.encode_prompts([c.prompt])
    for tex in ["stripes", "grid", "rings", "hatching"]:
        st = data.Style(data.TEXTURES.index(tex), pal[0], pal[1], data.ANCHORED_PERIOD, data.ANCHORED_ANGLES[1] if tex == "stripes" else 0.0, 0.0, anchored=True)
        img = torch.from_numpy(data.render(c, st)).permute(2, 0, 1)[None].float() / 255
        S = style_maps(enc, img, 32, br.style_map_size(16, 16))
        x0 = base.vae.encode(img * 2 - 1).latent_dist.mean * base.latent_scale
        row = [img[0]]
        target = lum(img[0]) - lum(img[0]).mean()
        for t in [900, 700, 500, 300]:
            tt = torch.tensor([t]); noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
            xt = sch.add_noise(x0, noise, tt)
            dec, err = {}, {}
            for on in (0, 1):
                res = br(S, tt.float(), torch.ones(1) * on)
                v = unet(xt, tt.float(), ctx, *res)
                a = sch.alphas_cumprod[t]
                x0p = a.sqrt() * xt - (1 - a).sqrt() * v
                err[on] = float(((x0p - x0) ** 2).mean())
                d = ((base.vae.decode(x0p / base.latent_scale).sample[0] + 1) / 2).clamp(0, 1)
                row.append(d); dec[on] = lum(d)
            change = dec[1] - dec[0]
            corr = float((change * target).sum() / (change.norm() * target.norm() + 1e-12))
            pat = float(((dec[1] - dec[1].mean()) * target).sum() / ((dec[1] - dec[1].mean()).norm() * target.norm() + 1e-12))
            print(f"{tex:8s} t={t}: x0 err off {err[0]:.3f} on {err[1]:.3f}  corr(on-off, pattern) {corr:+.2f}  corr(on, pattern) {pat:+.2f}", flush=True)
        rows.append(torch.cat(row, 2))
im = (torch.cat(rows, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
Image.fromarray(im).resize((im.shape[1] * 4, im.shape[0] * 4), Image.NEAREST).save(out)
