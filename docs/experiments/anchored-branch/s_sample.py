"""Sample a MODE-2 branch (S from a style image): DDPM-50, CFG 4, 2 prompts x 2 seeds per style, judged.
Styles: SET=anchored (the training distribution: each family x 4 angles, random training palettes) or
SET=heldout (texture_judge.eval_swatches: every family in each held-out palette, random period/angle/phase).
usage: BDIR=... SET=heldout python s_sample.py"""
import os, sys, numpy as np, torch
sys.argv = ["x", "/work/w64", "/tmp/none", "0", "0"]
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "anchor.py")).read().split("base = loaders.load_base")[0])
from safetensors.torch import load_file
from diffusers import DDPMScheduler
from stylegen_trt.models.style_branch import ResidualUNet
from stylegen_trt.training.branch import style_maps
from stylegen_trt.metrics.texture import colour_distance
from stylegen_trt.demo import texture_judge
from PIL import Image
BDIR, SET = os.environ["BDIR"], os.environ.get("SET", "heldout")
SCALE = float(os.environ.get("SCALE", "1.5"))
base = loaders.load_base("/work/w64/sd"); enc = loaders.load_style_encoder("/work/w64/vgg19.pth")
br = upgrade(loaders.new_branch(base, seed=0, stem_hidden=32), 2)
br.load_state_dict(load_file(BDIR + "/branch.safetensors")); br.eval()
if SET == "anchored":
    rng = np.random.default_rng(77)
    styles = [(f, data.render(None, data.Style(f, *data.random_palette(rng), PERIOD, float(a), 0.0)))
              for f in range(len(data.TEXTURES)) for a in ANGLES]
else:
    styles = [(data.TEXTURES.index(n.split("-")[0]), im) for n, im in texture_judge.eval_swatches()]
unet = ResidualUNet(base.unet); sch = DDPMScheduler.from_config(base.scheduler_config); sch.set_timesteps(50)
prompts = ["a large circle in the center", "a small square on the left"]
judge = texture_judge.load()
with torch.no_grad():
    cond, unc = base.encode_prompts(prompts), base.encode_prompts([""] * 2)
    ctx = torch.cat([cond.repeat(2, 1, 1), unc.repeat(2, 1, 1)])
    for on in (1, 0):
        images = []
        for fam, sw in styles:
            img = torch.from_numpy(np.asarray(Image.fromarray(sw).resize((32, 32), Image.BICUBIC))).permute(2, 0, 1)[None].float() / 255
            S = style_maps(enc, img, 32, br.style_map_size(16, 16))
            g = torch.Generator().manual_seed(0)
            x = ddpm_sample(br, unet, sch, S, ctx, SCALE * on, torch.randn((4, 4, 16, 16), generator=g), g)
            d = base.vae.decode(x / base.latent_scale).sample
            images.append(((d.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8))
        fam = np.array([f for f, _ in styles]).repeat(4)
        pred = texture_judge.classify(judge, np.concatenate(images))
        colour = np.mean([colour_distance(im, sw) for (f, sw), ims in zip(styles, images) for im in ims])
        per = {data.TEXTURES[f]: round(float((pred[fam == f] == f).mean()), 2) for f in range(len(data.TEXTURES))}
        print(SET, "branch", "on" if on else "off", f"family match {(pred == fam).mean():.1%} colour {colour:.0f} RGB", per, flush=True)
        if on:
            sheet = np.concatenate([np.concatenate([np.asarray(Image.fromarray(sw).resize((32, 32), Image.NEAREST)), *ims], 1)
                                    for (f, sw), ims in zip(styles, images)], 0)
            Image.fromarray(sheet).save(f"{BDIR}/samples-{SET}.png")
