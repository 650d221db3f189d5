"""The content judge on the training data's own images before and after the demo VAE (encode the posterior mean,
decode): how much of the fixed judge's content ceiling the 2x-downsampling latent itself costs. Images as
../anchored-ceiling/ draws them (each eval pair: the prompt's content over the swatch's family, anchored, in its
palette), hatching at the shipped stage's 6.5 px.  usage: python vae_ceiling.py SD_DIR"""
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from stylegen_trt.demo import classifier, data
from stylegen_trt.models import loaders

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "anchored-ceiling"))
from anchored_ceiling import eval_textures, nearest_anchored  # noqa: E402

base = loaders.load_base(Path(sys.argv[1]))
fixed, anyo = classifier.content_judge(), classifier.content_judge(classifier.load(classifier.ANY_OUTLINE_WEIGHTS))
contents = data.all_contents()[::3]
images, prompts, families = [], [], []
for family, index, fg, bg, texture in eval_textures():
    period = 6.5 if family == "hatching" else data.ANCHORED_PERIOD
    style = data.Style(data.TEXTURES.index(family), fg, bg, period, nearest_anchored(texture.angle), 0.0, anchored=True)
    for content in contents:
        images.append(data.render(content, style)); prompts.append(content.prompt); families.append(family)
x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
with torch.no_grad():
    z = base.vae.encode(x * 2 - 1).latent_dist.mean
    y = ((base.vae.decode(z).sample + 1) / 2).clamp(0, 1)
round_trip = (y.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
for name, batch in (("rendered", np.stack(images)), ("through the VAE", round_trip)):
    f, a = np.asarray(fixed(batch, prompts), float), np.asarray(anyo(batch, prompts), float)
    by_prompt, by_family = defaultdict(list), defaultdict(list)
    for p, fam, v in zip(prompts, families, f):
        by_prompt[p].append(v); by_family[fam].append(v)
    print(f"{name:16s} {len(f)} images: content fixed {f.mean():.1%} / any-outline {a.mean():.1%}")
    print("   by prompt: " + ", ".join(f"{p.replace('a ', '', 1)[:18]} {np.mean(v):.0%}" for p, v in by_prompt.items()))
    print("   by family: " + ", ".join(f"{k} {np.mean(v):.0%}" for k, v in by_family.items()))
print(f"mean abs pixel change through the VAE: {np.abs(round_trip.astype(float) - np.stack(images)).mean():.1f} / 255")
