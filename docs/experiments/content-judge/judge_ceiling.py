"""How well does a content judge read exact renderings of each content, drawn with and without the ground-colour
outline that the demo's training renders put round each shape (data.OUTLINE_WIDTH)? Held-out palettes, all 24
contents x 28 random styles each. usage: python judge_ceiling.py [JUDGE.safetensors]  (default: the shipped judge)"""
import collections
import sys
from pathlib import Path

import numpy as np

from stylegen_trt.demo import classifier, data

judge = classifier.content_judge(classifier.load(Path(sys.argv[1])) if len(sys.argv) > 1 else None)
for outline in (data.OUTLINE_WIDTH, 0.75, 0.0):
    rng = np.random.default_rng(123)  # the same contents, styles and phases at each outline width
    images, prompts, families = [], [], []
    for c in data.all_contents():
        for k in range(28):
            style = data.random_style(rng, data.HELDOUT_PALETTES[k % len(data.HELDOUT_PALETTES)])
            images.append(data.render(c, style, seed=int(rng.integers(1 << 30)), outline_width=outline))
            prompts.append(c.prompt)
            families.append(style.texture)
    ok = judge(np.stack(images), prompts)
    by_prompt, by_family = collections.defaultdict(list), collections.defaultdict(list)
    for p, f, o in zip(prompts, families, ok):
        by_prompt[p].append(o)
        by_family[f].append(o)
    print(f"outline {outline:g} px: {np.mean(ok):.3f} of {len(ok)}; the eval's 8 prompts "
          f"{np.mean([o for p, o in zip(prompts, ok) if p in {c.prompt for c in data.all_contents()[::3]}]):.3f}")
    print("  small, left:", {p.split(' on')[0][2:]: round(float(np.mean(v)), 2) for p, v in by_prompt.items() if "small" in p and "left" in p})
    print("  by family:", {f: round(float(np.mean(v)), 2) for f, v in by_family.items()})
