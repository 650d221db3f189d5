"""Sample the oracle branch (MODE 3): DDPM-50, CFG 4, scale 1.5, each (family, angle) code, 2 prompts x 2 seeds;
judge the texture family. usage: BDIR=... python oracle_sample.py"""
import os, sys, numpy as np, torch
sys.argv = ["x", "/work/w64", "/tmp/none", "0", "0"]
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "anchor.py")).read().split("base = loaders.load_base")[0])
from safetensors.torch import load_file
from diffusers import DDPMScheduler
from stylegen_trt.models.style_branch import ResidualUNet
from stylegen_trt.demo import texture_judge
from PIL import Image
BDIR = os.environ["BDIR"]; SCALE = float(os.environ.get("SCALE", "1.5"))
base = loaders.load_base("/work/w64/sd")
br = upgrade(loaders.new_branch(base, seed=0, stem_hidden=32), 2)
br.load_state_dict(load_file(BDIR + "/branch.safetensors")); br.eval()
ORACLE = torch.randn((len(data.TEXTURES) * 4, 1, 64, 64), generator=torch.Generator().manual_seed(123))
unet = ResidualUNet(base.unet); sch = DDPMScheduler.from_config(base.scheduler_config); sch.set_timesteps(50)
prompts = ["a large circle in the center", "a small square on the left"]
classes = list(range(len(data.TEXTURES) * 4))
judge = texture_judge.load()
rows, hits, hits_off = [], 0, 0
with torch.no_grad():
    cond, unc = base.encode_prompts(prompts), base.encode_prompts([""] * 2)
    for on in (1, 0):
        images = []
        for k in classes:
            S = ORACLE[[k]]
            g = torch.Generator().manual_seed(0)
            noise = torch.randn((4, 4, 16, 16), generator=g)  # 2 prompts x 2 seeds
            ctx = torch.cat([cond.repeat(2, 1, 1), unc.repeat(2, 1, 1)])
            x = ddpm_sample(br, unet, sch, S, ctx, SCALE * on, noise, g)
            d = base.vae.decode(x / base.latent_scale).sample
            im = ((d.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
            images.append(im)
        fam = np.array([k // 4 for k in classes]).repeat(4)
        pred = texture_judge.classify(judge, np.concatenate(images))
        acc = (pred == fam).mean()
        per = {data.TEXTURES[f]: float((pred[fam == f] == f).mean()) for f in range(len(data.TEXTURES))}
        print("branch", "on" if on else "off", f"family match {acc:.1%}", {k: round(v, 2) for k, v in per.items()}, flush=True)
        if on:
            sheet = np.concatenate([np.concatenate(list(images[k]), 1) for k in range(0, len(classes))], 0)
            Image.fromarray(sheet).save(BDIR + "/oracle-samples.png")
