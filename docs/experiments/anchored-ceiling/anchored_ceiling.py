"""What a perfect anchored-texture model would score on the eval's pairs (8 prompts x 21 held-out swatches).

The co-trained model learns centre-anchored textures at one period (data.ANCHORED_PERIOD) and four angles
(data.ANCHORED_ANGLES). For each pair this draws, with data.render, the prompt's content (with its outline) over
the swatch's family in the swatch's palette as the model's training data draws it - anchored, period 7.5, the
anchored angle nearest the swatch's - and scores it as `stylegen-trt eval` scores a generated image. Beside it:
the same content over the swatch's own texture (texture_judge.coverage at its period, angle and phase), the
exact re-render. Also the texture judge on bare anchored swatches, by family.

    python anchored_ceiling.py
"""
from collections import Counter, defaultdict

import numpy as np

from stylegen_trt.demo import classifier, data
from stylegen_trt.demo import texture_judge as tj
from stylegen_trt.metrics.texture import style_measures


def eval_textures():
    """eval_swatches' draws, as Texture objects (same generator, same order)."""
    rng = np.random.default_rng([tj.SEED_SPACE, 99, 1])
    return [(family, index, fg, bg, tj.random_texture(rng, family))
            for index, (fg, bg) in enumerate(data.HELDOUT_PALETTES) for family in tj.FAMILIES]


def nearest_anchored(angle: float) -> float:
    # line families repeat every pi (stripes, waves) or pi/2 (dots, grid): nearest modulo pi
    return min(data.ANCHORED_ANGLES, key=lambda a: abs((angle - a + np.pi / 2) % np.pi - np.pi / 2))


def main() -> None:
    judge = tj.load()
    measure = style_measures(lambda images: tj.classify(judge, images), tj.FAMILIES)
    fixed, anyo = classifier.content_judge(), classifier.content_judge(classifier.load(classifier.ANY_OUTLINE_WEIGHTS))
    contents = data.all_contents()[::3]
    swatches = dict(tj.eval_swatches())
    rows = defaultdict(list)
    for family, index, fg, bg, texture in eval_textures():
        swatch = swatches[f"{family}-heldout{index}-0"]
        anchored = data.Style(data.TEXTURES.index(family), fg, bg, data.ANCHORED_PERIOD, nearest_anchored(texture.angle),
                              0.0, anchored=True)
        cover = tj.coverage(texture, 32).astype(np.float32)
        for content in contents:
            inside = data.shape_mask(content, 32)
            ring = np.clip(data.shape_mask(content, 32, grow=data.OUTLINE_WIDTH) - inside, 0, 1)
            exact = np.maximum(cover * (1 - ring), inside)[..., None]
            exact = np.clip(exact * np.float32(fg) + (1 - exact) * np.float32(bg), 0, 255).round().astype(np.uint8)
            for kind, image in (("anchored", data.render(content, anchored)), ("exact", exact)):
                m = measure(image[None], swatch)
                rows[kind].append({"family": family, "match": float(m["texture_match"][0]),
                                   "spectrum": float(m["spectrum"][0]), "colour": float(m["colour_distance"][0]),
                                   "fixed": float(fixed(image[None], [content.prompt])[0]),
                                   "any": float(anyo(image[None], [content.prompt])[0])})
    for kind, r in rows.items():
        by, spectrum_by = defaultdict(list), defaultdict(list)
        for x in r:
            by[x["family"]].append(x["match"])
            spectrum_by[x["family"]].append(x["spectrum"])
        print(f"{kind:9s} pairs {len(r)}: family match {np.mean([x['match'] for x in r]):.1%}, spectrum "
              f"{np.mean([x['spectrum'] for x in r]):.3f}, colour {np.mean([x['colour'] for x in r]):.1f} RGB, content "
              f"fixed {np.mean([x['fixed'] for x in r]):.1%} / any {np.mean([x['any'] for x in r]):.1%}; by family "
              + " ".join(f"{f} {np.mean(v):.0%}" for f, v in by.items()) + "; spectrum by family "
              + " ".join(f"{f} {np.mean(v):.3f}" for f, v in spectrum_by.items()))
    rng = np.random.default_rng(5)
    for family in tj.FAMILIES:
        images = [data.render(None, data.Style(data.TEXTURES.index(family), *data.random_palette(rng), data.ANCHORED_PERIOD,
                                               a, 0.0, anchored=True)) for a in data.ANCHORED_ANGLES for _ in range(3)]
        print(f"bare anchored {family:9s} read as", dict(Counter(tj.FAMILIES[int(p)] for p in tj.classify(judge, np.stack(images)))))


if __name__ == "__main__":
    main()
