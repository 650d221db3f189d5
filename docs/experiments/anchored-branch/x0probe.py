import sys, numpy as np, torch
sys.argv = ["x", "/work/w64", "/tmp/none", "0", "0"]
exec(open(__import__("os").path.join(__import__("os").path.dirname(__file__), "anchor.py")).read().split("base = loaders.load_base")[0])
from safetensors.torch import load_file
from diffusers import DDPMScheduler
from stylegen_trt.models.style_branch import ResidualUNet
from stylegen_trt.training.branch import style_maps
from PIL import Image
base = loaders.load_base("/work/w64/sd"); enc = loaders.load_style_encoder("/work/w64/vgg19.pth")
import os; MODE = int(os.environ.get("MODE", "1")); BDIR = os.environ["BDIR"]
br = upgrade(loaders.new_branch(base, seed=0, stem_hidden=32), min(MODE, 2))
ORACLE = torch.randn((len(data.TEXTURES) * 4, 1, 64, 64), generator=torch.Generator().manual_seed(123))
br.load_state_dict(load_file(BDIR + "/branch.safetensors")); br.eval()
unet = ResidualUNet(base.unet); sch = DDPMScheduler.from_config(base.scheduler_config)
pal = ((230, 57, 70), (241, 250, 238)); rng = np.random.default_rng(0)
c = data.Content(0, 1, 1)
rows = []
with torch.no_grad():
    ctx = base.encode_prompts([c.prompt])
    for tex in ["stripes", "grid", "rings"]:
        st = data.Style(data.TEXTURES.index(tex), pal[0], pal[1], 7.5, 0.0, 0.0)
        img = torch.from_numpy(data.render(c, st)).permute(2, 0, 1)[None].float() / 255
        S = style_maps(enc, img, 32, br.style_map_size(16, 16))
        if MODE == 3:
            S = ORACLE[[data.TEXTURES.index(tex) * 4]]
        x0 = base.vae.encode(img * 2 - 1).latent_dist.mean * base.latent_scale
        row = [img[0]]
        lum = lambda im: (im * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
        target = lum(img[0]) - lum(img[0]).mean()
        decoded = {}
        for t in [900, 700, 500, 300]:
            tt = torch.tensor([t]); noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
            xt = sch.add_noise(x0, noise, tt)
            for on in (0, 1):
                res = br(S, tt.float(), torch.ones(1) * on)
                v = unet(xt, tt.float(), ctx, *res)
                a = sch.alphas_cumprod[t]
                x0p = a.sqrt() * xt - (1 - a).sqrt() * v
                d = base.vae.decode(x0p / base.latent_scale).sample
                row.append(((d[0] + 1) / 2).clamp(0, 1))
                decoded[on] = lum(row[-1])
            change = decoded[1] - decoded[0]
            corr = float((change * target).sum() / (change.norm() * target.norm() + 1e-12))
            print(f"{tex:8s} t={t}: corr(on - off, pattern) = {corr:+.3f}, |on - off| = {float(change.abs().mean()):.3f}")
        rows.append(torch.cat(row, 2))
im = (torch.cat(rows, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
Image.fromarray(im).resize((im.shape[1] * 4, im.shape[0] * 4), Image.NEAREST).save(BDIR + "/x0probe.png")
