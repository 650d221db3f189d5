"""Acceptance of the shipped demo model, and the demo's procedural data, classifier and StySim."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stylegen_trt.demo import classifier, data, texture_judge
from stylegen_trt.metrics.texture import style_measures
from stylegen_trt.engines.base import EngineOptions
from stylegen_trt.metrics.evaluate import EvalSettings, evaluate
from stylegen_trt.metrics.stysim import StySim
from stylegen_trt.models.style_encoder import gram, random_vgg19_state
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.images import save_png
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline, StyleRequest

DEMO = Path(__file__).parent.parent / "stylegen_trt" / "demo" / "bundle"
# every shape, position and size, 8 prompts x 21 swatches (7 families x 3 held-out palettes) x 2 seeds
ACCEPTANCE_PROMPTS = [c.prompt for c in data.all_contents()[::3]]


def test_procedural_data_is_reproducible_and_independent():
    a = data.sample_batch(np.random.default_rng(5), 8)
    b = data.sample_batch(np.random.default_rng(5), 8)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    content, style = data.Content(1, 2, 0), data.random_style(np.random.default_rng(0))
    img = data.render(content, style)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours == {style.fg, style.bg}  # only the style's colours, both visible
    other_style = data.render(content, data.Style(3, (0, 0, 0), (255, 255, 255), 5.0, 0.3, 1.0))
    assert not np.array_equal(img, other_style)
    assert data.parse_prompt(content.prompt) == content


def test_training_palettes_never_come_near_the_heldout_ones():
    rng = np.random.default_rng(0)
    palettes = [data.random_palette(rng) for _ in range(3000)]
    assert not any(data.is_heldout_region(fg, bg) for fg, bg in palettes)
    assert all(np.linalg.norm(np.subtract(fg, bg)) >= data.MIN_CONTRAST for fg, bg in palettes)
    assert len(set(palettes)) > 2900  # a continuum, not a list
    assert all(data.is_heldout_region(fg, bg) for fg, bg in data.HELDOUT_PALETTES)
    heldout_colours = {c for pair in data.HELDOUT_PALETTES for c in pair}
    for _, swatch in data.heldout_swatches():
        assert {tuple(c) for c in swatch.reshape(-1, 3)} <= heldout_colours


def test_stysim_matches_patent_definition():
    stysim = StySim(random_vgg19_state(0), image_size=32)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 1, 32, 32, 3), dtype=np.uint8)
    value = stysim(a, b)[0]
    x = [torch.from_numpy(i).permute(0, 3, 1, 2).float() / 255 for i in (a, b)]
    feats = [stysim.vgg(i) for i in x]
    expected = sum(((gram(fa) - gram(fb)) ** 2).mean().item() for fa, fb in zip(*feats))
    assert value == pytest.approx(expected, rel=1e-4)
    assert stysim(a, a)[0] == 0.0
    red, teal = data.NAMED_PALETTES["red-on-cream"], ((46, 196, 182), (1, 22, 39))
    swatch = data.render(None, data.Style(0, *red, 5.0, 0.0, 0.0))
    same_style = data.render(data.Content(0, 1, 1), data.Style(0, *red, 5.0, 0.0, 0.0))
    other = data.render(data.Content(0, 1, 1), data.Style(1, *teal, 5.0, 0.0, 0.0))
    assert stysim(same_style[None], swatch[None])[0] < stysim(other[None], swatch[None])[0]


def test_content_classifier_is_accurate_on_unseen_palettes():
    model = classifier.load()
    images, _, contents, _ = data.sample_batch(np.random.default_rng(99), 256, heldout=True)
    predicted = classifier.predict(model, images)
    assert np.mean([classifier.matches(p, c) for p, c in zip(predicted, contents)]) >= 0.95



def _heldout_renders(outline_width: float, count: int = 240):
    """Exact renders of random contents in held-out palettes, the same ones at every outline width."""
    rng = np.random.default_rng(321)
    contents = [data.random_content(rng) for _ in range(count)]
    styles = [data.random_style(rng, data.HELDOUT_PALETTES[i % len(data.HELDOUT_PALETTES)]) for i in range(count)]
    images = np.stack([data.render(c, s, seed=i, outline_width=outline_width)
                       for i, (c, s) in enumerate(zip(contents, styles))])
    return images, contents


def test_content_judges_with_and_without_the_outline():
    """The fixed judge needs the ground-colour outline round the shape; the any-outline judge reads the shape
    either way and still rejects the right shape at the wrong place (README "The demo model")."""
    fixed, any_outline = classifier.load(), classifier.load(classifier.ANY_OUTLINE_WEIGHTS)
    accuracy = lambda model, images, contents: np.mean(  # noqa: E731
        [classifier.matches(p, c) for p, c in zip(classifier.predict(model, images), contents)])
    outlined, contents = _heldout_renders(data.OUTLINE_WIDTH)
    bare, _ = _heldout_renders(0.0)
    assert accuracy(fixed, outlined, contents) >= 0.95
    assert accuracy(any_outline, outlined, contents) >= 0.97
    assert accuracy(any_outline, bare, contents) >= 0.93
    assert accuracy(fixed, bare, contents) < 0.85  # what the fixed judge cannot read (measured 0.73 on 672)
    moved = [data.Content(c.shape, (c.position + 1) % len(data.POSITIONS), c.size) for c in contents]
    assert accuracy(any_outline, bare, moved) <= 0.03
    assert not np.array_equal(bare, outlined)

@pytest.fixture(scope="module")
def demo_pipe(tmp_path_factory):
    bundle = open_bundle(DEMO)
    assert bundle.is_demo
    pipe = StylePipeline(bundle, EngineOptions(threads=2), style_cache_dir=tmp_path_factory.mktemp("demo-styles"))
    yield pipe
    pipe.close()


@pytest.fixture(scope="module")
def heldout_styles(tmp_path_factory):
    """Every texture family in each held-out palette, drawn by the texture judge's code (not demo.data)."""
    root = tmp_path_factory.mktemp("heldout")
    paths = []
    for name, swatch in texture_judge.eval_swatches():
        save_png(swatch, root / f"{name}.png")
        paths.append(root / f"{name}.png")
    return paths


def test_demo_acceptance_on_heldout_swatches(demo_pipe, heldout_styles):
    """Issue 12's measures on swatches the model never saw (palettes never drawn in training, rendered by
    other code), at the bundle's defaults (DDPM-50, CFG 1.75, style scale 1), pooled over seeds 0 and 1:
    the palette-blind judge's family match, spectrum similarity and colour distance, with the branch
    on vs off; StySim ratio; content accuracy by both judges. Figures and bars: README, "The demo model"."""
    from stylegen_trt.demo.train import DemoConfig

    d = demo_pipe.bundle.manifest["defaults"]
    assert (d["scheduler"], d["steps"], d["guidance"], d["style_scale"]) == ("ddpm", 50, DemoConfig.guidance,
                                                                          DemoConfig.style_scale)
    family_model = texture_judge.load()
    report = evaluate(demo_pipe, ACCEPTANCE_PROMPTS, heldout_styles, StySim(random_vgg19_state(0), 32),
                      EvalSettings(scheduler="ddpm", steps=50, guidance=d["guidance"], style_scale=d["style_scale"],
                                   seed=0, seeds=2), classifier.content_judge(),
                      measures=style_measures(lambda images: texture_judge.classify(family_model, images)),
                      extra_judges={"any_outline": classifier.content_judge(classifier.load(classifier.ANY_OUTLINE_WEIGHTS))})
    s = report.summary()
    print(json.dumps(s, indent=2))
    assert s["pairs"] == 2 * 8 * 21
    # What the shipped demo does (measured on this machine: family match 86.6%, spectrum 0.329, colour 49.1 RGB,
    # content 90.8% / any outline 98.5%): issue 12's texture, colour and content bars; its spectrum bar (0.7) is
    # above what an exact re-render scores (0.596). Bars with room for another CPU's rounding (a pair is 0.3 points).
    assert s["texture_match_guided"] >= 0.8 and s["texture_match_off"] <= 0.3, s
    assert s["colour_distance_guided"] <= 60 and s["colour_distance_guided"] < s["colour_distance_off"] - 50, s
    assert s["spectrum_guided"] > s["spectrum_off"] + 0.05, s
    assert s["stysim_ratio"] <= 0.6, s
    assert s["content_accuracy_any_outline_guided"] >= 0.95, s
    assert s["content_accuracy_guided"] >= 0.88, s


def test_demo_same_seed_same_bytes(demo_pipe, heldout_styles):
    request = GenerationRequest("a large circle on the left", seed=3, style=StyleRequest((heldout_styles[0],)))
    assert demo_pipe.generate(request).images.tobytes() == demo_pipe.generate(request).images.tobytes()


def test_demo_bundle_is_small_and_says_it_is_the_demo():
    size = sum(f.stat().st_size for f in DEMO.iterdir() if f.is_file())
    assert size < 25 * 2**20  # 23 MiB today (the fp32 VGG19_f3 alone is 9 MiB)
    manifest = json.loads((DEMO / "manifest.json").read_text())
    assert manifest["description"]["kind"] == "demo"
