"""Several requests served together (what a server's dynamic batcher hands the pipeline): each image
equals its solo rendering, a bad request fails alone, incompatible requests split, residuals cached."""

import numpy as np
import pytest

from stylegen_trt.engines.base import EngineOptions
from stylegen_trt.errors import UserError
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline, StyleRequest

STEPS = 6


@pytest.fixture(scope="module")
def pipe(styled_pipe):
    return styled_pipe


def mixed_requests(style_images, scheduler="ddpm"):
    stripes, dots = style_images
    common = dict(scheduler=scheduler, steps=STEPS)
    return [
        GenerationRequest("a red circle", seed=1, guidance=5.0, style=StyleRequest((stripes,)), **common),
        GenerationRequest("a blue square", seed=2, guidance=7.0, negative="green", **common),  # no style
        GenerationRequest("a cat", seed=3, guidance=4.0, n=2, style=StyleRequest((dots,), scale=0.5), **common),
        GenerationRequest("a dog", seed=4, guidance=6.0, style=StyleRequest((stripes,), window=(0.0, 0.5)), **common),
        GenerationRequest("a tree", seed=5, guidance=5.0, style=StyleRequest((stripes.read_bytes(), dots), (0.3, 0.7)),
                          **common),
    ]


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize("scheduler", ["ddpm", "dpmpp"])
def test_each_image_of_a_mixed_batch_equals_its_solo_rendering(pipe, style_images, scheduler):
    """Own prompt, seed (x_T and DDPM's per-step noise), guidance, negative and style per request, in one
    UNet batch: every image within 1/255 of generating that request alone."""
    requests = mixed_requests(style_images, scheduler)
    together = pipe.generate_many(requests)
    assert pipe.bundle.manifest["sizes"]["max_images"] == 4  # the tiny bundle's: images 1+1+2 | 1+1
    assert pipe.times.calls["unet"] == 2 * STEPS
    # branch: stripes (whole schedule) and dots at scale 0.5 | stripes on half the steps, the blend
    assert pipe.times.calls["style_branch"] == 4
    solo = [pipe.generate(r) for r in requests]
    for request, batched, alone in zip(requests, together, solo):
        assert batched.seed == alone.seed == request.seed
        assert max_diff(batched.images, alone.images) <= 1, request.prompt
    # and the images do differ from one another (the batch did not hand everyone the same thing)
    assert max_diff(together[0].images, together[3].images) > 10


def test_a_bad_request_fails_alone(pipe, style_images):
    good = GenerationRequest("a red circle", seed=1, steps=3, style=StyleRequest((style_images[0],)))
    bad = [
        GenerationRequest("x", steps=0),
        GenerationRequest("x", steps=3, style=StyleRequest((b"not an image",))),
        GenerationRequest("x", steps=3, scheduler="euler"),
        GenerationRequest("x", steps=3, height=1000),
    ]
    results = pipe.generate_many([bad[0], good, bad[1], bad[2], good, bad[3]])
    errors = [results[i] for i in (0, 2, 3, 5)]
    assert all(isinstance(e, UserError) for e in errors)
    assert "--steps must be between" in str(errors[0])
    assert "style image 1 is not an image" in str(errors[1])
    assert "unknown scheduler 'euler'" in str(errors[2])
    assert all("\n" not in str(e) for e in errors)
    assert results[1].images.tobytes() == results[4].images.tobytes() == pipe.generate(good).images.tobytes()


def test_incompatible_requests_split_into_groups_never_refused(pipe, style_images):
    requests = [
        GenerationRequest("a", seed=1, steps=3, height=64, width=64),
        GenerationRequest("b", seed=2, steps=3, height=64, width=64, scheduler="ddim"),
        GenerationRequest("c", seed=3, steps=4, height=64, width=64),
        GenerationRequest("d", seed=4, steps=3, height=32, width=64),
        GenerationRequest("e", seed=5, steps=3, height=64, width=64, guidance=1.0),  # no CFG: its own group
        GenerationRequest("f", seed=6, steps=3, height=64, width=64),  # joins the first
    ]
    results = pipe.generate_many(requests)
    assert [r.images.shape[1:3] for r in results] == [(64, 64)] * 3 + [(32, 64)] + [(64, 64)] * 2
    assert pipe.times.calls["unet"] == 3 + 3 + 4 + 3 + 3
    assert max_diff(results[5].images, pipe.generate(requests[5]).images) <= 1


def test_batches_hold_at_most_the_bundles_max_images(pipe):
    limit = pipe.bundle.manifest["sizes"]["max_images"]
    requests = [GenerationRequest(f"p{i}", seed=i, steps=2, n=2) for i in range(limit // 2 + 1)]
    results = pipe.generate_many(requests)
    assert all(r.images.shape[0] == 2 for r in results)
    assert pipe.times.calls["unet"] == 2 * 2  # two batches: limit images, then 2


def test_a_popular_style_costs_no_branch_call_once_cached(styled_bundle, style_images, tmp_path):
    with StylePipeline(open_bundle(styled_bundle), EngineOptions(threads=2), style_cache_dir=tmp_path,
                       residual_cache_bytes=64 * 2**20) as cached:
        request = GenerationRequest("a red circle", seed=1, steps=STEPS, style=StyleRequest((style_images[0],)))
        first = cached.generate(request)
        assert first.times.calls["style_branch"] == 1
        again = cached.generate_many([request, GenerationRequest("a dog", seed=2, steps=STEPS,
                                                                 style=StyleRequest((style_images[0],)))])
        assert cached.times.calls.get("style_branch", 0) == 0
        assert again[0].images.tobytes() == first.images.tobytes()
        assert cached.residual_cache.hits == STEPS  # both requests share one source: one look-up a step
        # another scale is another set of residuals
        cached.generate(GenerationRequest("a red circle", seed=1, steps=STEPS,
                                          style=StyleRequest((style_images[0],), scale=0.5)))
        assert cached.times.calls["style_branch"] == 1
    with StylePipeline(open_bundle(styled_bundle), EngineOptions(threads=2), style_cache_dir=tmp_path,
                       residual_cache_bytes=1024) as tiny_budget:  # smaller than one step's residuals
        tiny_budget.generate(request)
        tiny_budget.generate(request)
        assert tiny_budget.times.calls["style_branch"] == 1 and tiny_budget.residual_cache.bytes == 0


def test_bundles_with_batch_one_residuals_group_by_style(pipe, style_images, monkeypatch):
    """A UNet graph exported before per-image residuals takes one style per call: such requests still
    all complete, in one group per style."""
    monkeypatch.setattr(pipe, "styles_per_batch", "one")
    requests = mixed_requests(style_images)
    results = pipe.generate_many(requests)
    assert pipe.times.calls["unet"] == 5 * STEPS
    assert max_diff(results[2].images, pipe.generate(requests[2]).images) <= 1


def test_demo_bundle_takes_per_image_residuals():
    from stylegen_trt.cli import _demo_bundle_path

    with StylePipeline(open_bundle(_demo_bundle_path()), style_cache_dir=None) as demo:
        assert demo.styles_per_batch == "many"


def test_style_grid_rows_are_batched_and_equal_solo_renderings(pipe, style_images):
    from PIL import Image

    from stylegen_trt.runtime.requests import build_request, style_grid

    prompts = ["a red circle", "a blue square"]
    grid = style_grid(pipe, prompts, style_images, cell=16, seed=5, steps=2)
    assert grid.shape == (3 * 16, 3 * 16, 3)
    assert (grid[:16, :16] == 255).all()  # the no-style row's head is blank
    for row, style in enumerate([None, *style_images]):
        for col, prompt in enumerate(prompts):
            alone = pipe.generate(build_request(pipe.bundle.manifest, prompt, styles=(style,) if style else (),
                                                steps=2, seed=5 + col)).images[0]
            expected = np.asarray(Image.fromarray(alone).resize((16, 16), Image.NEAREST))
            cell = grid[row * 16:(row + 1) * 16, (col + 1) * 16:(col + 2) * 16]
            assert max_diff(cell, expected) <= 1, (row, col)


def test_style_grid_style_scale_reaches_every_row(pipe, style_images):
    """At style scale 0 every style row is the no-style row (the heads aside)."""
    from stylegen_trt.runtime.requests import style_grid

    grid = style_grid(pipe, ["a red circle"], style_images, cell=16, seed=5, steps=2, style_scale=0.0)
    plain = style_grid(pipe, ["a red circle"], style_images, cell=16, seed=5, steps=2)
    for row in (1, 2):
        assert max_diff(grid[row * 16:(row + 1) * 16, 16:], grid[:16, 16:]) <= 1
        assert max_diff(plain[row * 16:(row + 1) * 16, 16:], plain[:16, 16:]) > 1  # the style shows at its default


def test_a_branch_taking_s_once_per_timestep_row_still_runs(styled_bundle, style_images, tmp_path):
    """Bundles exported before 2026-12-05 take S once per timestep row (style_map dims [branch_steps, 1, ...]);
    the runtime repeats S for them and they give the same images as the one-S graph."""
    import json
    import shutil

    import onnx

    from stylegen_trt.files import sha256_file

    old = tmp_path / "per-row"
    shutil.copytree(styled_bundle, old, ignore=shutil.ignore_patterns("engines", ".verified*"))
    model = onnx.load(str(old / "style_branch.onnx"))
    dim = next(i for i in model.graph.input if i.name == "style_map").type.tensor_type.shape.dim[0]
    assert dim.dim_value == 1  # the current contract: one S per call
    dim.dim_param = "branch_steps"
    onnx.save(model, str(old / "style_branch.onnx"))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["graphs"]["style_branch"]["inputs"][0]["dims"][0] = "branch_steps"
    manifest["files"]["style_branch.onnx"] = {"sha256": sha256_file(old / "style_branch.onnx"),
                                               "bytes": (old / "style_branch.onnx").stat().st_size}
    (old / "manifest.json").write_text(json.dumps(manifest))

    request = GenerationRequest("a red circle", seed=1, steps=STEPS, guidance=5.0, style=StyleRequest((style_images[0],)))
    images = {}
    for path in (styled_bundle, old):
        with StylePipeline(open_bundle(path), EngineOptions(threads=2), style_cache_dir=False) as p:
            images[path] = p.generate(request).images
            assert p.times.calls["style_branch"] == 1  # all STEPS rows in one call either way
    assert max_diff(images[styled_bundle], images[old]) <= 1
