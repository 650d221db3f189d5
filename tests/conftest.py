"""Shared fixtures: the seeded tiny model (torch), and two bundles exported by the CLI from it.

- ``zero_bundle``: the untrained (zero-initialised) branch: must reproduce plain SD.
- ``styled_bundle``: a branch whose output projections are random, so residuals matter.
Both are exported once per session, in parallel subprocesses (the real CLI path).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from stylegen_trt.models import loaders
from stylegen_trt.models.style_branch import StyleBranch, randomise_projections

SEED = 0


def cli(*args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `stylegen-trt ARGS` in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-m", "stylegen_trt", *args], capture_output=True, text=True,
                          check=check, timeout=timeout)


@dataclass
class TinyModels:
    sd_dir: Path
    vgg_path: Path
    branch_path: Path
    base: loaders.BaseModel
    encoder: object
    zero_branch: StyleBranch
    styled_branch: StyleBranch


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyModels:
    root = tmp_path_factory.mktemp("tiny")
    sd_dir = loaders.make_tiny_sd(root / "sd", SEED)
    vgg_path = loaders.make_tiny_vgg(root / "vgg19.pth", SEED)
    base = loaders.load_base(sd_dir)
    encoder = loaders.load_style_encoder(vgg_path)
    zero_branch = loaders.load_branch(base, None, SEED)
    styled = randomise_projections(loaders.load_branch(base, None, SEED), seed=1)
    branch_path = root / "branch.safetensors"
    loaders.save_branch(styled, branch_path)
    return TinyModels(sd_dir, vgg_path, branch_path, base, encoder, zero_branch, styled)


@pytest.fixture(scope="session")
def bundles(tiny, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    common = ["export", "--base", str(tiny.sd_dir), "--vgg", str(tiny.vgg_path), "--style-image-size", "64"]
    jobs = {
        "zero": [*common, "--out", str(root / "zero")],
        "styled": [*common, "--branch", str(tiny.branch_path), "--out", str(root / "styled")],
    }
    procs = {k: subprocess.Popen([sys.executable, "-m", "stylegen_trt", *a], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for k, a in jobs.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"export {name} failed:\n{err[-3000:]}"
    return {"zero": root / "zero", "styled": root / "styled"}


@pytest.fixture(scope="session")
def zero_bundle(bundles) -> Path:
    return bundles["zero"]


@pytest.fixture(scope="session")
def styled_bundle(bundles) -> Path:
    return bundles["styled"]


@pytest.fixture(scope="session")
def style_images(tmp_path_factory) -> list[Path]:
    """Two procedural swatches (stripes, dots) as PNG files."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("styles")
    yy, xx = np.mgrid[0:96, 0:96]
    stripes = np.stack([(np.sin(xx / 3.0) > 0) * 220, np.full_like(xx, 40), (np.sin(xx / 3.0) <= 0) * 200], -1)
    dots = np.stack([np.full_like(xx, 250), ((xx % 12 - 6) ** 2 + (yy % 12 - 6) ** 2 < 12) * 255,
                     np.full_like(xx, 30)], -1)
    paths = []
    for name, arr in (("stripes", stripes), ("dots", dots)):
        path = root / f"{name}.png"
        Image.fromarray(arr.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def styled_pipe(styled_bundle, tmp_path_factory):
    """The runtime over ``styled_bundle`` on ONNX Runtime, with its own style-map cache."""
    from stylegen_trt.engines.base import EngineOptions
    from stylegen_trt.runtime.bundle import open_bundle
    from stylegen_trt.runtime.pipeline import StylePipeline

    pipe = StylePipeline(open_bundle(styled_bundle), EngineOptions(threads=2),
                         style_cache_dir=tmp_path_factory.mktemp("style-cache"))
    yield pipe
    pipe.close()
