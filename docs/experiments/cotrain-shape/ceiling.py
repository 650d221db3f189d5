"""Content judge on perfect renders: every family x anchored angle x held-out palette x 24 contents, anchored vs random phase."""
import numpy as np
from stylegen_trt.demo import data, classifier
judge = classifier.content_judge()
rng = np.random.default_rng(0)
for phase in ("anchored", "random"):
    res = {t: [] for t in data.TEXTURES}
    for fam in range(7):
        for ai, a in enumerate(data.ANCHORED_ANGLES):
            for pal in data.HELDOUT_PALETTES:
                if phase == "anchored":
                    st = data.Style(fam, pal[0], pal[1], data.ANCHORED_PERIOD, a, 0.0, anchored=True)
                else:
                    st = data.Style(fam, pal[0], pal[1], float(rng.uniform(6, 9)), float(rng.uniform(0, np.pi)), float(rng.uniform(0, 6.28)))
                cs = data.all_contents()
                imgs = np.stack([data.render(c, st) for c in cs])
                ok = judge(imgs, [c.prompt for c in cs])
                res[data.TEXTURES[fam]] += list(ok)
    print(phase, {k: round(100*np.mean(v)) for k, v in res.items()}, round(100*np.mean(sum(res.values(), [])),1))
