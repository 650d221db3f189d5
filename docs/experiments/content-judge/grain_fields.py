"""How the fixed content judge reads shapes over grain (eighteenth session).

(1) Exact renders - every content with its 1.5-px outline (data.render) over data.py's grain in 6 random training
palettes - for the anchored grain field (the shipped model's training target) and for 40 other grain fields
(phases 0.000 ... 0.039), judged by the fixed and the any-outline content judges.
(2) The shipped demo model's style-guided images for the eval's 8 prompts on its three grain swatches (seed 0,
exactly as `stylegen-trt eval` makes them), each tile marked red where the fixed judge rejects it, blue where the
any-outline judge does; under each row the anchored grain exact renders, marked the same way, headed by the
anchored grain field itself in the swatch's colours.
usage: python grain_fields.py [OUT.png]   (~1 min on one core)"""
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from stylegen_trt.demo import classifier, data, texture_judge
from stylegen_trt.metrics.evaluate import EvalSettings, evaluate
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.images import save_png
from stylegen_trt.runtime.pipeline import StylePipeline

GRAIN = data.TEXTURES.index("grain")


def judged(images, prompts, judges):
    return [np.asarray(j(images, prompts), bool) for j in judges]


def tile(image, fixed_ok, any_ok, zoom=6):
    t = np.kron(image, np.ones((zoom, zoom, 1), np.uint8))
    if not fixed_ok:
        t[:4] = (255, 0, 0)
    if not any_ok:
        t[-4:] = (0, 0, 255)
    return np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255)


def main(out: Path) -> None:
    fixed = classifier.content_judge()
    anyo = classifier.content_judge(classifier.load(classifier.ANY_OUTLINE_WEIGHTS))
    rng = np.random.default_rng(123)
    palettes = [data.random_palette(rng) for _ in range(6)]
    contents = data.all_contents()
    prompts = [c.prompt for c in contents]
    fields = [("anchored", 0.0, True)] + [(f"phase {k / 1000:.3f}", k / 1000, False) for k in range(40)]
    scores = {}
    for name, phase, anchored in fields:
        ok = [judged(np.stack([data.render(c, data.Style(GRAIN, fg, bg, data.ANCHORED_PERIOD, 0.0, phase, anchored))
                               for c in contents]), prompts, (fixed, anyo)) for fg, bg in palettes]
        scores[name] = (np.mean([f for f, _ in ok]), np.mean([a for _, a in ok]))
    anchored_fixed, anchored_any = scores.pop("anchored")
    others = np.array(list(scores.values()))
    print(f"exact renders, 24 contents x 6 palettes: anchored grain field fixed {anchored_fixed:.1%} / any-outline "
          f"{anchored_any:.1%}; 40 other fields fixed mean {others[:, 0].mean():.1%} (min {others[:, 0].min():.1%}, "
          f"max {others[:, 0].max():.1%}), any-outline mean {others[:, 1].mean():.1%} (min {others[:, 1].min():.1%})")
    print("fixed judge by field, sorted:", " ".join(f"{v:.0%}" for v in np.sort(others[:, 0])))

    eval_prompts = [c.prompt for c in contents[::3]]
    bundle = open_bundle(Path(data.__file__).parent / "bundle")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, StylePipeline(bundle) as pipe:
        styles = []
        for name, swatch in texture_judge.eval_swatches():
            if name.startswith("grain"):
                save_png(swatch, Path(tmp) / f"{name}.png")
                styles.append(Path(tmp) / f"{name}.png")
        report = evaluate(pipe, eval_prompts, styles, stysim=lambda a, b: np.zeros(len(a)),
                          settings=EvalSettings(steps=50, guidance=1.75, style_scale=1.0, seed=0, seeds=1))
        images = np.stack(report.images["guided"])
        fixed_ok, any_ok = judged(images, report.image_prompts, (fixed, anyo))
        print(f"shipped model, 8 prompts x 3 grain swatches, seed 0: fixed {fixed_ok.mean():.1%}, "
              f"any-outline {any_ok.mean():.1%}")
        for s, style in enumerate(styles):
            swatch = np.asarray(Image.open(style).convert("RGB").resize((32, 32), Image.BICUBIC))
            k = slice(s * 8, (s + 1) * 8)
            rows.append(np.concatenate([tile(swatch, True, True)] + [tile(i, f, a) for i, f, a in
                                        zip(images[k], fixed_ok[k], any_ok[k])], 1))
            target = data.Style(GRAIN, *texture_judge_palette(swatch), data.ANCHORED_PERIOD, 0.0, 0.0, True)
            exact = np.stack([data.render(c, target) for c in contents[::3]])
            ef, ea = judged(exact, eval_prompts, (fixed, anyo))
            rows.append(np.concatenate([tile(data.render(None, target), True, True)] +
                                       [tile(i, f, a) for i, f, a in zip(exact, ef, ea)], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(out)
    print("wrote", out)


def texture_judge_palette(swatch):
    """The swatch's (pattern, ground) colours: its lightest and darkest pixels, the rarer one the pattern."""
    flat = swatch.reshape(-1, 3).astype(float)
    lum = flat @ [0.299, 0.587, 0.114]
    light, dark = flat[lum.argmax()], flat[lum.argmin()]
    light_share = np.mean(lum > (lum.max() + lum.min()) / 2)
    pattern, ground = (light, dark) if light_share < 0.5 else (dark, light)
    return tuple(int(v) for v in pattern), tuple(int(v) for v in ground)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("grain-judges.png"))
