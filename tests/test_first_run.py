"""What a new user meets first, on the shipped demo model (32 px, seconds): unknown words named,
`generate --help` complete, clean stdout, `grid` without the repository's examples folder."""

from __future__ import annotations

import os
import re
from itertools import takewhile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from stylegen_trt.cli import app
from conftest import cli

REPO = Path(__file__).resolve().parent.parent
DEMO_TOKENIZER = REPO / "stylegen_trt" / "demo" / "bundle" / "tokenizer.json"
runner = CliRunner()


@pytest.fixture(autouse=True)
def private_style_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STYLEGEN_TRT_CACHE", str(tmp_path_factory.getbasetemp() / "style-cache"))


def demo_tokenizer():
    from stylegen_trt.runtime.tokenizer import PromptTokenizer

    return PromptTokenizer(DEMO_TOKENIZER, 16, 557, 558, 558)


def test_unknown_words_of_the_demo():
    from stylegen_trt.demo.data import all_contents

    tok = demo_tokenizer()
    assert tok.unknown_words("a lighthouse") == ["lighthouse"]
    assert tok.unknown_words("A Lighthouse near a tree, on the left!") == ["Lighthouse", "near", "tree"]
    for content in all_contents():  # every prompt the demo was trained on, "triangle" (7 tokens) included
        assert tok.unknown_words(content.prompt) == [], content.prompt
    assert tok.unknown_words("a LARGE circle, on the left!!") == []
    tok.small_vocabulary = False  # a real CLIP vocabulary: rare words are split into known pieces
    assert tok.unknown_words("a lighthouse") == []


def test_unknown_word_is_one_warning_line_in_a_real_process(tmp_path):
    out = tmp_path / "lh.png"
    proc = cli("generate", "--prompt", "a lighthouse", "--steps", "2", "--seed", "0", "--out", str(out), check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {out} (32x32 px; seed 0)\n"  # nothing else on stdout: no blank line from the progress bar
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'lighthouse'" in lines[0] and "WARNING" in lines[0], proc.stderr
    assert out.is_file()


def test_known_prompt_prints_only_the_result(tmp_path):
    out = tmp_path / "c.png"
    proc = cli("generate", "--prompt", "a large triangle on the right", "--steps", "2", "--seed", "3",
               "--out", str(out), check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {out} (32x32 px; seed 3)\n" and proc.stderr == ""


def test_default_seed_repeats_the_image_and_upscale_writes_blocks(tmp_path):
    """The README's first command: no --seed gives seed 0 every time; --upscale 8 writes 256x256 of 8x8 blocks."""
    from PIL import Image

    args = ["generate", "--prompt", "a large circle on the left", "--steps", "3", "--style",
            str(REPO / "examples" / "styles" / "stripes-heldout.png")]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "a.png")])
    second = runner.invoke(app, [*args, "--upscale", "8", "--out", str(tmp_path / "b.png")])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert first.stdout.strip().endswith("(32x32 px; seed 0)")
    assert second.stdout.strip().endswith("(32x32 px, written at 256x256 (--upscale 8); seed 0)")
    small, big = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png"))
    assert big.shape == (256, 256, 3) and np.array_equal(big[::8, ::8], small)
    assert np.array_equal(big, small.repeat(8, 0).repeat(8, 1))
    bad = runner.invoke(app, [*args, "--upscale", "0", "--out", str(tmp_path / "c.png")])
    assert bad.exit_code == 2 and not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("command", [[], *([name] for name in (
    "export", "generate", "build", "verify", "info", "train", "eval", "grid", "bench", "serve", "triton-repo",
    "bench-serve"))])
def test_every_help_is_plain_text_without_bool_types(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout and "--help" in result.stdout
    assert "<bool>" not in result.stdout and "╭" not in result.stdout  # no rich boxes


def test_generate_help_describes_every_option():
    result = runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    lines = text.splitlines()
    assert "<bool>" not in text
    options = [line for line in text.splitlines() if re.match(r" {2}(-\w, )?--", line)]
    assert len(options) >= 25
    for line in options:
        assert re.match(r" {2}(-\w, )?--[\w-]+( [^ ]+)*? {2,}\S", line), f"no description: {line!r}"
    for option in ("--style-scale", "--scheduler", "--steps", "--guidance"):
        i = next(i for i, line in enumerate(lines) if re.match(rf" {{2}}{option} ", line))
        entry = " ".join([lines[i], *(l.strip() for l in takewhile(lambda l: not re.match(r" {2}-", l), lines[i + 1:]))])
        assert "[default: the bundle's]" in entry, entry
    assert "(n, C, H/f, W/f)" in text and "VAE factor" in text
    assert "the same command gives the same image" in text and "--upscale" in text


def test_latents_line_says_where_x_t_came_from(tmp_path):
    path = tmp_path / "x_t.npy"
    np.save(path, np.random.default_rng(0).standard_normal((1, 4, 16, 16)).astype(np.float32))
    ddpm = runner.invoke(app, ["generate", "-p", "a large circle on the left", "--latents", str(path), "--steps", "2",
                               "--seed", "5", "--out", str(tmp_path / "a.png")])
    assert ddpm.exit_code == 0, ddpm.output
    assert ddpm.stdout.strip().endswith(f"(32x32 px; x_T from {path}, seed 5 for DDPM's per-step noise)")
    ddim = runner.invoke(app, ["generate", "-p", "a large circle on the left", "--latents", str(path), "--steps", "2",
                               "--scheduler", "ddim", "--out", str(tmp_path / "b.png")])
    assert ddim.exit_code == 0, ddim.output
    assert ddim.stdout.strip().endswith(f"(32x32 px; x_T from {path}; ddim draws no noise, so no seed was used)")


def test_info_gives_the_latent_shape():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "latents: 4 channels, VAE factor 2 (generate --latents: x_T of shape (n, 4, H/2, W/2))" in result.stdout


def test_example_styles_are_the_files_in_examples():
    from stylegen_trt.demo.data import example_styles

    rendered = dict(example_styles())
    files = sorted((REPO / "examples" / "styles").glob("*.png"))
    assert sorted(rendered) == [f.stem for f in files]
    for f in files:
        assert np.array_equal(np.asarray(Image.open(f).convert("RGB")), rendered[f.stem]), f.name


def test_grid_without_styles_needs_no_examples_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as from an installed wheel: examples/ is nowhere near
    common = ["--steps", "2", "--cell", "8", "--prompt", "a large circle in the center"]
    plain = runner.invoke(app, ["grid", "--out", "grid.png", *common])
    assert plain.exit_code == 0, plain.output
    assert "7 rows (no style + 6 styles) x 1 prompts" in plain.stdout
    files = sorted((REPO / "examples" / "styles").glob("*.png"))
    explicit = runner.invoke(app, ["grid", "--out", "files.png", *common, *(a for f in files for a in ("--style", str(f)))])
    assert explicit.exit_code == 0, explicit.output
    assert (tmp_path / "grid.png").read_bytes() == (tmp_path / "files.png").read_bytes()


def test_progress_is_drawn_on_a_terminal_only():
    from stylegen_trt.cli import progress_display

    with progress_display() as progress:
        assert progress.console.stderr
        assert progress.disable == (not os.isatty(2))
