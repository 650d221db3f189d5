"""Palette-blind texture measures (metrics/texture.py) and the demo's texture judge."""

import numpy as np
import pytest

from stylegen_trt.demo import data, texture_judge as tj
from stylegen_trt.metrics.texture import colour_distance, dominant_colours, spectrum_similarity, style_measures

LEMON_COBALT = ((240, 240, 80), (20, 90, 160))
RED_CREAM = data.NAMED_PALETTES["red-on-cream"]


def stripes(angle: float, period: float = 7.0, phase: float = 0.0, palette=LEMON_COBALT, size: int = 32):
    return tj.swatch(tj.Texture("stripes", period, angle, phase), *palette, size=size)


def test_spectrum_similarity_sees_orientation_and_period_not_palette_or_phase():
    a = stripes(0.4)
    assert spectrum_similarity(a, a) == pytest.approx(1.0)
    same = spectrum_similarity(a, stripes(0.4, phase=2.0, palette=RED_CREAM))
    turned = spectrum_similarity(a, stripes(0.4 + np.pi / 2))
    coarser = spectrum_similarity(a, stripes(0.4, period=12.0))
    assert same > 0.9 and turned < 0.3 and coarser < 0.5
    # a 128-px swatch compares with its 32-px rendering at one scale
    assert spectrum_similarity(stripes(0.4, size=128), a) > 0.9


def test_colour_distance_is_the_palette_and_ignores_the_texture():
    a = stripes(0.4)
    dots = tj.swatch(tj.Texture("dots", 7.0, 1.0, 0.0), *LEMON_COBALT, size=32)
    assert colour_distance(a, dots) < 5.0  # same two colours, other texture
    assert colour_distance(a, stripes(0.4, palette=RED_CREAM)) > 100.0
    centres = sorted(map(tuple, dominant_colours(a).round().astype(int)))
    assert centres == sorted(LEMON_COBALT)


def test_style_measures_report_per_image_values():
    reference = stripes(0.4, size=128)
    images = np.stack([stripes(0.4, phase=1.0), stripes(1.9, palette=RED_CREAM)])
    values = style_measures(lambda batch: np.zeros(len(batch), int))(images, reference)
    assert set(values) == {"spectrum", "colour_distance", "texture_match"}
    assert values["spectrum"][0] > values["spectrum"][1] and values["colour_distance"][0] < values["colour_distance"][1]
    assert list(values["texture_match"]) == [1.0, 1.0]
    assert not hasattr(style_measures(lambda batch: np.zeros(len(batch), int)), "family_name")


def test_eval_breaks_texture_match_and_content_down_by_style_family_and_prompt():
    from stylegen_trt.metrics.evaluate import EvalReport, EvalSettings

    named = style_measures(lambda batch: np.ones(len(batch), int), ("stripes", "dots"))
    assert named.family_name(stripes(0.4, size=128)) == "dots"
    report = EvalReport(EvalSettings())
    for family, guided, off, content, prompt in (("dots", 1.0, 0.0, 1.0, "b small"), ("dots", 0.0, 0.0, 0.0, "a large"),
                                                 ("grid", 1.0, 1.0, 1.0, "b small")):
        report.rows.append({"prompt": prompt, "stysim_guided": 1.0, "stysim_off": 2.0, "style_family": family,
                            "texture_match_guided": guided, "texture_match_off": off,
                            "content_guided": content, "content_off": 1.0})
    summary = report.summary()
    assert summary["texture_match_by_family"] == {"dots": {"guided": 0.5, "off": 0.0, "pairs": 2},
                                                  "grid": {"guided": 1.0, "off": 1.0, "pairs": 1}}
    assert summary["content_accuracy_by_family"] == {"dots": {"guided": 0.5, "off": 1.0, "pairs": 2},
                                                     "grid": {"guided": 1.0, "off": 1.0, "pairs": 1}}
    table = report.table()
    content_line = next(line for line in table.splitlines() if line.startswith("content by style family"))
    assert "dots 50%/0%" in table and "dots 50%/100%  grid 100%/100%" in content_line
    assert summary["content_accuracy_by_prompt"] == {"b small": {"guided": 1.0, "off": 1.0, "pairs": 2},
                                                     "a large": {"guided": 0.0, "off": 1.0, "pairs": 1}}  # as given
    lines = table.splitlines()
    at = lines.index("content by prompt (guided/off)")
    assert lines[at + 1:at + 3] == ["  b small   100%/100%", "  a large     0%/100%"]


@pytest.fixture(scope="module")
def judge():
    return tj.load()


def test_texture_judge_reads_every_family_in_unseen_palettes(judge):
    swatches = tj.eval_swatches(per_family=2, seed=11)
    predicted = tj.classify(judge, np.stack([s for _, s in swatches]))
    wanted = [tj.FAMILIES.index(name.split("-")[0]) for name, _ in swatches]
    assert np.mean(predicted == np.array(wanted)) >= 0.9


def test_texture_judge_is_palette_blind(judge):
    """The same texture in other colours, or with its luminance inverted, gets the same answer."""
    rng = np.random.default_rng(5)
    textures = [tj.random_texture(rng, family) for family in tj.FAMILIES for _ in range(3)]
    palettes = [LEMON_COBALT, RED_CREAM, LEMON_COBALT[::-1], ((0, 0, 0), (255, 255, 255))]
    answers = np.stack([tj.classify(judge, np.stack([tj.swatch(t, *p, size=32) for t in textures])) for p in palettes])
    agree = np.mean(answers == answers[0])
    assert agree >= 0.95


def test_texture_judge_reads_the_demo_training_renders(judge):
    images, _, _, styles = data.sample_batch(np.random.default_rng(31), 140)
    assert np.mean(tj.classify(judge, images) == np.array([s.texture for s in styles])) >= 0.9
