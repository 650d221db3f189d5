"""The command line's contract with its user.

Bad input: exit code 2, exactly one non-empty stderr line starting with ``error:``, no
traceback, and nothing new in the output directory. Good input: a PNG of the right size.

Most cases run in-process through typer's CliRunner (fast); a few run the real
``python -m stylegen_trt`` in a subprocess to prove the same holds in a fresh process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from stylegen_trt.cli import app
from conftest import cli

runner = CliRunner()
STEPS = ["--steps", "2"]


# --- helpers ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def private_style_cache(tmp_path_factory, monkeypatch):
    """Keep the style-map cache out of the user's home (in-process and in subprocesses)."""
    monkeypatch.setenv("STYLEGEN_TRT_CACHE", str(tmp_path_factory.getbasetemp() / "style-cache"))


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def inputs(tmp_path) -> Path:
    d = tmp_path / "inputs"
    d.mkdir()
    return d


def run(*args) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_user_error(result, out_dir: Path | None, match: str | None = None, before: set[str] = frozenset()):
    """Exit 2, one ``error:`` line on stderr, no traceback, nothing new in ``out_dir``."""
    detail = f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}\nexception: {result.exception!r}"
    assert result.exit_code == 2, detail
    assert result.exception is None or isinstance(result.exception, SystemExit), detail  # not a crash
    lines = result.stderr.splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("error: ") and lines[0][len("error: "):].strip(), detail
    assert "Traceback" not in result.output, detail
    if match is not None:
        assert re.search(match, lines[0], re.IGNORECASE), detail
    if out_dir is not None:
        assert {p.name for p in out_dir.iterdir()} == set(before), detail


def assert_user_error_process(proc, out_dir: Path | None, match: str | None = None) -> None:
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert proc.returncode == 2, detail
    assert "Traceback" not in proc.stdout + proc.stderr, detail
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip(), detail
    if match is not None:
        assert re.search(match, lines[0], re.IGNORECASE), detail
    if out_dir is not None:
        assert list(out_dir.iterdir()) == [], detail


def generate_args(bundle: Path, out: Path, *extra) -> list:
    return ["generate", "--bundle", bundle, "--prompt", "a red square", "--out", out, *STEPS, "--threads", "2", *extra]


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_bomb_png(path: Path, width: int, height: int, palette: bool = False) -> Path:
    """A genuine, valid 1-bit PNG of width x height (all zeros), streamed so it never exists in memory."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed 1-bit pixels
    comp = zlib.compressobj(9)
    idat, left = [], height
    while left:
        k = min(left, 1000)
        idat.append(comp.compress(row * k))
        left -= k
    idat.append(comp.flush())
    color_type = 3 if palette else 0
    chunks = [png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, color_type, 0, 0, 0))]
    if palette:
        chunks.append(png_chunk(b"PLTE", bytes([0, 0, 0, 255, 255, 255])))
    chunks += [png_chunk(b"IDAT", b"".join(idat)), png_chunk(b"IEND", b"")]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))
    return path


def copy_bundle(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst, ignore=shutil.ignore_patterns("engines")))


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and img.mode == "RGB"
        return img.size


# --- bad style images -----------------------------------------------------------------


def bad_style(kind: str, inputs: Path, good: Path) -> Path:
    path = inputs / f"{kind}.png"
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_an_image":
        path.write_text("this is a text file, not a PNG\n")
    elif kind == "bomb_1bit":
        write_bomb_png(path, 20000, 20000)
    elif kind == "bomb_palette":
        write_bomb_png(path, 20000, 20000, palette=True)
    elif kind == "over_our_limit":  # 81 MP: below Pillow's own bomb threshold, above the tool's 64 MP
        write_bomb_png(path, 9000, 9000)
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind, match", [
    ("missing", "not found"),
    ("empty", "empty"),
    ("truncated", "truncated or corrupt"),
    ("not_an_image", "not an image"),
    ("bomb_1bit", "decompression bomb"),
    ("bomb_palette", "decompression bomb"),
    ("over_our_limit", "decompression bomb"),
    ("directory", "not found"),
])
def test_bad_style_image(zero_bundle, style_images, inputs, out_dir, kind, match):
    path = bad_style(kind, inputs, style_images[0])
    if kind.startswith("bomb"):
        assert path.stat().st_size < 200_000  # a few KB that would decode to 400 MP
    result = run(*generate_args(zero_bundle, out_dir / "img.png", "--style", style_images[1], "--style", path))
    assert_user_error(result, out_dir, match)
    assert str(path) in result.stderr


def test_unreadable_style_image_is_a_user_error(zero_bundle, style_images, out_dir, monkeypatch):
    """A style file we may not read (EACCES; as root chmod cannot show it, so fake the read)."""
    real = Path.read_bytes

    def read_bytes(self):
        if self == style_images[0]:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = run(*generate_args(zero_bundle, out_dir / "img.png", "--style", style_images[0]))
    assert_user_error(result, out_dir, "cannot be read")


def test_truncated_style_image_in_a_real_process(zero_bundle, style_images, inputs, out_dir):
    path = bad_style("truncated", inputs, style_images[0])
    proc = cli(*map(str, generate_args(zero_bundle, out_dir / "img.png", "--style", path)), check=False)
    assert_user_error_process(proc, out_dir, "truncated or corrupt")


def test_decompression_bomb_in_a_real_process(zero_bundle, inputs, out_dir):
    path = write_bomb_png(inputs / "bomb.png", 20000, 20000, palette=True)
    proc = cli(*map(str, generate_args(zero_bundle, out_dir / "img.png", "--style", path)), check=False, timeout=120)
    assert_user_error_process(proc, out_dir, "decompression bomb")


# --- bad generation options -----------------------------------------------------------


@pytest.mark.parametrize("extra, match", [
    (["--height", "60"], r"--height 60 is not a multiple of 8"),
    (["--width", "60", "--height", "64"], r"--width 60 is not a multiple of 8"),
    (["--width", "512"], r"--width 512 is outside this bundle's range 32\.\.128"),
    (["--height", "16"], r"outside this bundle's range"),
    (["--steps", "0"], r"--steps must be between 1"),
    (["--steps", "-3"], r"--steps must be between 1"),
    (["--steps", "100000"], r"--steps must be between 1"),
    (["--guidance", "-1"], r"--guidance"),
    (["--guidance", "nan"], r"--guidance"),
    (["--style-weight", "0.5", "--style-weight", "0.5"], r"2 --style-weight values for 1 --style"),
    (["--style-weight", "inf"], r"--style-weight values must be finite"),
    (["--style-scale", "nan"], r"--style-scale"),
    (["--scheduler", "euler"], r"unknown scheduler 'euler'"),
    (["--n", "0"], r"--n must be between 1 and"),
    (["--n", "99"], r"--n must be between 1 and"),
    (["--style-window", "0.8", "0.2"], r"--style-window needs 0 <= START < END <= 1"),
    (["--style-window", "-0.5", "0.5"], r"--style-window"),
    (["--threads", "0"], r"--threads"),
    (["--device", "tpu"], r"unknown --device"),
    (["--memory", "tiny"], r"unknown --memory 'tiny': choose fast .* or lean"),
    # command-line usage errors are one line too (not click's multi-line usage box)
    (["--steps", "abc"], r"--steps"),
    (["--style-window", "0.8"], r"--style-window.*requires 2 arguments"),
    (["--no-such-option"], r"no such option"),
])
def test_bad_generate_option(zero_bundle, style_images, out_dir, extra, match):
    result = run(*generate_args(zero_bundle, out_dir / "img.png", "--style", style_images[0], *extra))
    assert_user_error(result, out_dir, match)


def test_missing_prompt_and_unknown_command_are_one_line(zero_bundle, out_dir):
    assert_user_error(run("generate", "--bundle", zero_bundle, "--out", out_dir / "img.png"), out_dir, "--prompt")
    assert_user_error(run("generat", "--prompt", "x"), out_dir, r"no such command 'generat'.*generate")


@pytest.mark.parametrize("name", ["img.jpg", "img"])
def test_out_must_be_png(zero_bundle, out_dir, name):
    assert_user_error(run(*generate_args(zero_bundle, out_dir / name)), out_dir, r"must end in \.png")


def test_out_is_a_directory(zero_bundle, out_dir):
    (out_dir / "d.png").mkdir()
    result = run(*generate_args(zero_bundle, out_dir / "d.png"))
    assert_user_error(result, out_dir, "is a directory", before={"d.png"})
    assert list((out_dir / "d.png").iterdir()) == []


def test_out_below_a_file_fails_before_generating(zero_bundle, out_dir):
    (out_dir / "file").write_text("x")
    result = run(*generate_args(zero_bundle, out_dir / "file" / "sub" / "img.png"))
    assert_user_error(result, out_dir, r"is a file, not a directory", before={"file"})
    assert (out_dir / "file").read_text() == "x"


# --- bad bundles ------------------------------------------------------------------------


def break_bundle(kind: str, src: Path, tmp_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "no-such-bundle"
    if kind == "no_manifest":
        d = tmp_path / "not-a-bundle"
        d.mkdir()
        (d / "unet.onnx").write_bytes(b"\x08\x07")
        return d
    b = copy_bundle(src, tmp_path / f"bundle-{kind}")
    manifest = b / "manifest.json"
    if kind == "incomplete":
        (b / "unet.onnx").unlink()
    elif kind == "hash_mismatch":
        onnx = b / "vae_decoder.onnx"
        data = bytearray(onnx.read_bytes())
        for i in range(len(data) // 2, len(data) // 2 + 16):
            data[i] ^= 0xFF
        onnx.write_bytes(bytes(data))
        assert onnx.stat().st_size == (src / "vae_decoder.onnx").stat().st_size
    elif kind == "manifest_truncated":
        text = manifest.read_text()
        manifest.write_text(text[: len(text) // 2])
    elif kind == "manifest_binary":
        manifest.write_bytes(b"\xff\xfe\x00garbage\x00")
    elif kind == "manifest_not_object":
        manifest.write_text("[1, 2, 3]")
    elif kind == "manifest_lacks_section":
        m = json.loads(manifest.read_text())
        del m["sizes"]
        manifest.write_text(json.dumps(m))
    elif kind == "manifest_unlisted_file":
        m = json.loads(manifest.read_text())
        del m["files"]["unet.onnx"]
        manifest.write_text(json.dumps(m))
    elif kind == "manifest_wrong_schema":
        m = json.loads(manifest.read_text())
        m["schema_version"] = 99
        manifest.write_text(json.dumps(m))
    return b


BUNDLE_BREAKS = [
    ("missing", "does not exist"),
    ("no_manifest", r"not a bundle \(no manifest\.json\)"),
    ("incomplete", r"incomplete: unet\.onnx missing"),
    ("hash_mismatch", r"vae_decoder\.onnx does not match its SHA-256"),
    ("manifest_truncated", "not valid JSON"),
    ("manifest_binary", "not valid JSON"),
    ("manifest_not_object", "schema"),
    ("manifest_lacks_section", r"corrupt: no valid sizes section"),
    ("manifest_unlisted_file", r"corrupt: the files of unet have no SHA-256"),
    ("manifest_wrong_schema", "schema 99"),
]


@pytest.mark.parametrize("kind, match", BUNDLE_BREAKS)
def test_bad_bundle_generate(zero_bundle, tmp_path, out_dir, kind, match):
    bundle = break_bundle(kind, zero_bundle, tmp_path)
    assert_user_error(run(*generate_args(bundle, out_dir / "img.png")), out_dir, match)


@pytest.mark.parametrize("kind, match", BUNDLE_BREAKS)
def test_bad_bundle_info(zero_bundle, tmp_path, out_dir, kind, match):
    bundle = break_bundle(kind, zero_bundle, tmp_path)
    assert_user_error(run("info", bundle), out_dir, match)


def test_hash_mismatch_after_a_verified_run(zero_bundle, tmp_path, out_dir):
    """The skip-rehash stamp must not hide a file changed after a good run."""
    bundle = copy_bundle(zero_bundle, tmp_path / "bundle")
    assert run("info", bundle).exit_code == 0  # verifies and stamps
    onnx = bundle / "unet.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 3] ^= 0x01
    onnx.write_bytes(bytes(data))
    assert_user_error(run(*generate_args(bundle, out_dir / "img.png")), out_dir, "does not match its SHA-256")


def test_info_on_missing_bundle_in_a_real_process(tmp_path):
    proc = cli("info", str(tmp_path / "nowhere"), check=False)
    assert_user_error_process(proc, None, "does not exist")


def test_bad_bundle_in_a_real_process(zero_bundle, tmp_path, out_dir):
    bundle = break_bundle("hash_mismatch", zero_bundle, tmp_path)
    proc = cli(*map(str, generate_args(bundle, out_dir / "img.png")), check=False)
    assert_user_error_process(proc, out_dir, "does not match its SHA-256")


# --- --latents ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, extra, match", [
    ("channels", [], r"--latents has shape \(1, 3, 8, 8\), expected \(1, 4, 8, 8\)"),
    ("batch", [], r"--latents has shape \(2, 4, 8, 8\), expected \(1, 4, 8, 8\)"),
    ("size", ["--height", "32"], r"--latents has shape \(1, 4, 8, 8\), expected \(1, 4, 4, 8\)"),
    ("odd_size", [], r"outside this bundle's range"),
    ("one_d", [], r"needs 4 dimensions"),
    ("integers", [], r"finite floating-point"),
    ("nan", [], r"finite floating-point"),
    ("npz", [], r"\.npz archive"),
    ("text", [], r"not a readable \.npy"),
    ("empty", [], r"not a readable \.npy"),
    ("missing", [], r"not a readable \.npy"),
])
def test_bad_latents(zero_bundle, inputs, out_dir, kind, extra, match):
    path = inputs / "x_t.npy"
    arrays = {"channels": np.zeros((1, 3, 8, 8), np.float32), "batch": np.zeros((2, 4, 8, 8), np.float32),
              "size": np.zeros((1, 4, 8, 8), np.float32), "odd_size": np.zeros((1, 4, 1, 8), np.float32),
              "one_d": np.zeros(16, np.float32), "integers": np.zeros((1, 4, 8, 8), np.int64),
              "nan": np.full((1, 4, 8, 8), np.nan, np.float32)}
    if kind in arrays:
        np.save(path, arrays[kind])
    elif kind == "npz":
        path = inputs / "x_t.npz"
        np.savez(path, x=np.zeros((1, 4, 8, 8), np.float32))
    elif kind == "text":
        path = inputs / "x_t.txt"
        path.write_text("0 0 0 0\n")
    elif kind == "empty":
        path.write_bytes(b"")
    result = run(*generate_args(zero_bundle, out_dir / "img.png", "--latents", path, *extra))
    assert_user_error(result, out_dir, match)


# --- bad export input ---------------------------------------------------------------------


def test_export_bad_input(tiny, inputs, out_dir, style_images):
    target = out_dir / "bundle"
    base = ["export", "--out", target]
    assert_user_error(run(*base), out_dir, "exactly one of --base SD_DIR or --tiny")
    assert_user_error(run(*base, "--tiny", "--base", tiny.sd_dir), out_dir, "exactly one of")
    assert_user_error(run(*base, "--base", inputs / "no-sd"), out_dir, "does not exist")
    assert_user_error(run(*base, "--base", inputs), out_dir, "not an SD 1.x diffusers directory")
    assert_user_error(run(*base, "--tiny", "--external-data-mb", "-1"), out_dir, "--external-data-mb")
    assert_user_error(run(*base, "--tiny", "--style-image-size", "8"), out_dir, "--style-image-size")
    assert_user_error(run(*base, "--base", tiny.sd_dir, "--vgg", inputs / "nope.pth"), out_dir, "--vgg .* not found")
    assert_user_error(run(*base, "--base", tiny.sd_dir, "--branch", inputs / "nope.st"), out_dir, "--branch .* not found")
    (out_dir / "a-file").write_text("x")
    assert_user_error(run("export", "--out", out_dir / "a-file", "--tiny"), out_dir, "not a directory", before={"a-file"})


def test_export_corrupt_weights_leave_nothing(tiny, out_dir, style_images):
    """Errors found after loading the base: still one line (no progress bars), no partial bundle."""
    target = out_dir / "bundle"
    assert_user_error(run("export", "--out", target, "--base", tiny.sd_dir, "--vgg", style_images[0]),
                      out_dir, "not a readable torch checkpoint")
    assert_user_error(run("export", "--out", target, "--base", tiny.sd_dir, "--vgg", tiny.vgg_path,
                          "--branch", style_images[0]), out_dir, "not a readable safetensors file")
    stuff = out_dir / "stuff"
    stuff.mkdir()
    (stuff / "keep.txt").write_text("mine")
    assert_user_error(run("export", "--out", stuff, "--base", tiny.sd_dir, "--vgg", tiny.vgg_path),
                      out_dir, "non-empty directory that is not a bundle", before={"stuff"})
    assert [p.name for p in stuff.iterdir()] == ["keep.txt"]


def test_export_corrupt_vgg_in_a_real_process(tiny, out_dir, style_images):
    proc = cli("export", "--out", str(out_dir / "bundle"), "--base", str(tiny.sd_dir), "--vgg", str(style_images[0]),
               check=False)
    assert_user_error_process(proc, out_dir, "not a readable torch checkpoint")


# --- accepted input -------------------------------------------------------------------------


def style_in_mode(mode: str, path: Path) -> Path:
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8))
    if mode == "L":
        img, kw = rgb.convert("L"), {}
    elif mode == "RGBA":
        img = rgb.convert("RGBA")
        img.putalpha(Image.fromarray(rng.integers(0, 256, (72, 80), dtype=np.uint8)))
        kw = {}
    elif mode == "P":
        img, kw = rgb.convert("P"), {}
    elif mode == "P_transparent":
        img, kw = rgb.convert("P"), {"transparency": 0}
    elif mode == "P_alpha_table":
        img, kw = rgb.convert("P"), {"transparency": bytes(range(0, 256))}
    elif mode == "I;16":
        img, kw = Image.fromarray(rng.integers(0, 65536, (72, 80)).astype(np.uint16)), {}
    img.save(path, **kw)
    with Image.open(path) as check:
        assert check.mode == ("P" if mode.startswith("P") else mode)
        assert ("transparency" in check.info) == (mode in ("P_transparent", "P_alpha_table"))
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "P_transparent", "P_alpha_table", "I;16"])
def test_style_image_modes_accepted(styled_bundle, inputs, out_dir, mode):
    style = style_in_mode(mode, inputs / f"style-{mode.replace(';', '')}.png")
    out = out_dir / "img.png"
    result = run(*generate_args(styled_bundle, out, "--style", style, "--seed", "1", "--height", "64", "--width", "48"))
    assert result.exit_code == 0, result.output
    assert [p.name for p in out_dir.iterdir()] == ["img.png"]
    assert png_size(out) == (48, 64)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # a normal file, not the temp file's 0600


def test_numbered_outputs_and_same_seed_same_bytes(styled_bundle, style_images, out_dir):
    args = ["--style", style_images[0], "--style", style_images[1], "--style-weight", "0.7", "--style-weight", "0.3",
            "--seed", "7", "--n", "2"]
    first = run(*generate_args(styled_bundle, out_dir / "a.png", *args))
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["a-0.png", "a-1.png"]
    assert "seed 7" in first.stdout
    second = run(*generate_args(styled_bundle, out_dir / "b.png", *args))
    assert second.exit_code == 0, second.output
    for i in range(2):
        assert png_size(out_dir / f"a-{i}.png") == (64, 64)
        assert (out_dir / f"a-{i}.png").read_bytes() == (out_dir / f"b-{i}.png").read_bytes()
    assert (out_dir / "a-0.png").read_bytes() != (out_dir / "a-1.png").read_bytes()


def test_latents_set_the_size(zero_bundle, inputs, out_dir):
    path = inputs / "x_t.npy"
    np.save(path, np.random.default_rng(0).standard_normal((1, 4, 6, 4)).astype(np.float32))
    result = run(*generate_args(zero_bundle, out_dir / "img.png", "--latents", path))
    assert result.exit_code == 0, result.output
    assert png_size(out_dir / "img.png") == (32, 48)


def test_info_prints_graphs_and_axes(styled_bundle):
    result = run("info", styled_bundle)
    assert result.exit_code == 0, result.output
    text = result.stdout
    for name in ("text_encoder", "style_encoder", "style_branch", "unet", "vae_decoder"):
        assert f"graph {name}:" in text
    assert re.search(r"axis latent_h: min 4 opt \d+ max 16", text)
    assert re.search(r"axis unet_batch: min 1 opt \d+ max \d+", text)
    assert "sizes: native 64, 32..128 in multiples of 8" in text
    assert result.stderr == ""
