"""End to end: the NumPy runtime on ONNX Runtime against PyTorch and against diffusers' pipeline."""

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from stylegen_trt.engines.base import EngineOptions
from stylegen_trt.models.reference import TorchReference, numpy_ddpm_noise
from stylegen_trt.runtime import pipeline
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.images import read_image_file, resize_rgb01
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline, StyleRequest
from stylegen_trt.runtime.tokenizer import PromptTokenizer
from stylegen_trt.spec import resolve_shape

# Images are compared as uint8. ORT and torch differ by ~1e-5 per graph call (fp32 kernel
# order); through 8 denoising steps and the VAE that moves a pixel by at most a unit or two.
MAX_PIXEL_DIFF = 2
MEAN_PIXEL_DIFF = 0.05


@pytest.fixture(scope="module")
def zero_pipe(zero_bundle, tmp_path_factory):
    pipe = StylePipeline(open_bundle(zero_bundle), EngineOptions(threads=2),
                         style_cache_dir=tmp_path_factory.mktemp("style-cache0"))
    yield pipe
    pipe.close()


def latents(n=2, seed=7, size=8):
    return np.random.default_rng(seed).standard_normal((n, 4, size, size), dtype=np.float32)


def assert_images_close(a: np.ndarray, b: np.ndarray):
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= MAX_PIXEL_DIFF and diff.mean() <= MEAN_PIXEL_DIFF, (diff.max(), diff.mean())


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpmpp"])
def test_runtime_matches_torch_reference_with_style(tiny, styled_pipe, style_images, scheduler):
    x_t = latents()
    request = GenerationRequest(
        "a red circle", negative="blue", scheduler=scheduler, steps=8, guidance=6.0, seed=3, n=2, latents=x_t,
        style=StyleRequest(tuple(style_images), (0.7, 0.3), scale=1.0, window=(0.0, 0.75)))
    ours = styled_pipe.generate(request).images
    size = styled_pipe.bundle.manifest["style"]["image_size"]
    pixels = [resize_rgb01(read_image_file(p)[0], size) for p in style_images]
    reference = TorchReference(tiny.base, tiny.encoder, tiny.styled_branch)
    theirs = reference.generate("a red circle", x_t, negative="blue", style_images=pixels, weights=[0.7, 0.3],
                                window=(0.0, 0.75), scheduler=scheduler, steps=8, guidance=6.0,
                                rng=np.random.default_rng(3))
    assert_images_close(ours, theirs)


def test_style_changes_the_image(styled_pipe, style_images):
    base = GenerationRequest("a red circle", steps=4, seed=1, scheduler="ddim")
    plain = styled_pipe.generate(base).images
    styled = styled_pipe.generate(GenerationRequest("a red circle", steps=4, seed=1, scheduler="ddim",
                                                    style=StyleRequest((style_images[0],)))).images
    assert np.abs(plain.astype(int) - styled.astype(int)).mean() > 1.0


def _diffusers_pipeline(tiny):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmpp": DPMSolverMultistepScheduler}
    def build(name):
        return StableDiffusionPipeline(
            vae=tiny.base.vae, text_encoder=tiny.base.text_encoder, tokenizer=tiny.base.tokenizer,
            unet=tiny.base.unet, scheduler=classes[name].from_config(tiny.base.scheduler_config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return build


@pytest.mark.parametrize("scheduler", ["ddpm", "dpmpp"])
def test_zero_branch_reproduces_diffusers_pipeline(tiny, zero_pipe, style_images, scheduler):
    """Untrained branch + a style image == plain StableDiffusionPipeline, same latents."""
    x_t = latents(n=1, seed=11)
    ours = zero_pipe.generate(GenerationRequest(
        "a green square", negative="photo", scheduler=scheduler, steps=6, guidance=7.5, seed=5, latents=x_t,
        style=StyleRequest((style_images[1],)))).images
    pipe = _diffusers_pipeline(tiny)(scheduler)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad(), numpy_ddpm_noise(np.random.default_rng(5)):
        out = pipe("a green square", negative_prompt="photo", num_inference_steps=6, guidance_scale=7.5,
                   latents=torch.from_numpy(x_t), output_type="np", height=64, width=64).images
    theirs = (out * 255).round().astype(np.uint8)
    assert_images_close(ours, theirs)


def test_same_seed_same_bytes(styled_pipe, style_images):
    request = GenerationRequest("a cat", steps=5, seed=42, n=2, style=StyleRequest((style_images[0],)))
    first = styled_pipe.generate(request)
    second = styled_pipe.generate(request)
    assert first.seed == 42 and first.images.tobytes() == second.images.tobytes()
    other = styled_pipe.generate(GenerationRequest("a cat", steps=5, seed=43, n=2, style=StyleRequest((style_images[0],))))
    assert other.images.tobytes() != first.images.tobytes()


def test_a_batch_of_prompts_equals_each_prompt_alone(styled_pipe, style_images):
    """Several prompts in one batch (n images each, prompt-major, as diffusers): same images as
    generating each prompt by itself from the same x_T (DDIM: no sampler noise)."""
    x_t = latents(n=4)
    common = dict(scheduler="ddim", steps=4, guidance=5.0, n=2, style=StyleRequest((style_images[0],)))
    batch = styled_pipe.generate(GenerationRequest(("a red circle", "a blue square"), latents=x_t, **common))
    assert batch.images.shape[0] == 4 and batch.times.calls["unet"] == 4 and batch.times.calls["style_branch"] == 1
    alone = [styled_pipe.generate(GenerationRequest(p, latents=x_t[2 * i:2 * i + 2], **common)).images
             for i, p in enumerate(("a red circle", "a blue square"))]
    assert_images_close(batch.images, np.concatenate(alone))
    assert np.abs(alone[0].astype(int) - alone[1].astype(int)).mean() > 1.0  # the prompts do differ


def test_branch_runs_once_for_all_steps_images_and_cfg(styled_pipe, style_images):
    result = styled_pipe.generate(GenerationRequest("a dog", steps=6, seed=0, n=3, guidance=5.0,
                                                    style=StyleRequest((style_images[0],))))
    assert result.times.calls["style_branch"] == 1  # six timesteps in one call
    assert result.times.calls["unet"] == 6
    assert result.times.calls["vae_decoder"] == 3


@pytest.mark.parametrize("scheduler", ["ddpm", "dpmpp"])
def test_batched_branch_equals_one_call_per_step(styled_pipe, style_images, monkeypatch, scheduler):
    request = GenerationRequest("a dog", steps=7, seed=4, n=2, scheduler=scheduler, style=StyleRequest((style_images[0],)))
    batched = styled_pipe.generate(request)
    monkeypatch.setattr(pipeline, "RESIDUAL_BUDGET_BYTES", 1)  # budget for less than one step: one call per step
    per_step = styled_pipe.generate(request)
    assert per_step.times.calls["style_branch"] == 7 and batched.times.calls["style_branch"] == 1
    assert np.abs(batched.images.astype(int) - per_step.images.astype(int)).max() <= 1


def test_branch_chunks_follow_the_memory_budget(styled_pipe, style_images, monkeypatch):
    spec = styled_pipe.bundle.graphs["style_branch"]
    one_step = 4 * sum(int(np.prod(resolve_shape(o.dims, {"latent_h": 8, "latent_w": 8, "branch_steps": 1})))
                       for o in spec.outputs)
    monkeypatch.setattr(pipeline, "RESIDUAL_BUDGET_BYTES", 3 * one_step)
    result = styled_pipe.generate(GenerationRequest("a dog", steps=7, seed=0, height=64, width=64,
                                                    style=StyleRequest((style_images[0],))))
    assert result.times.calls["style_branch"] == 3  # 3 + 3 + 1 timesteps


def test_style_window_limits_branch_calls(styled_pipe, style_images, monkeypatch):
    request = GenerationRequest("a dog", steps=10, seed=0, scheduler="ddim",
                                style=StyleRequest((style_images[0],), window=(0.2, 0.5)))
    assert styled_pipe.generate(request).times.calls["style_branch"] == 1
    monkeypatch.setattr(pipeline, "RESIDUAL_BUDGET_BYTES", 1)
    assert styled_pipe.generate(request).times.calls["style_branch"] == 3  # steps 2, 3, 4 of 10
    none = styled_pipe.generate(GenerationRequest("a dog", steps=4, seed=0))
    assert none.times.calls.get("style_branch", 0) == 0


def test_style_scale_zero_equals_no_style(styled_pipe, style_images):
    plain = styled_pipe.generate(GenerationRequest("a dog", steps=4, seed=2)).images
    zero = styled_pipe.generate(GenerationRequest("a dog", steps=4, seed=2,
                                                  style=StyleRequest((style_images[0],), scale=0.0))).images
    assert plain.tobytes() == zero.tobytes()


def test_style_blend_is_linear_in_s(styled_pipe, style_images):
    s_a, s_b = (styled_pipe.style_map_of(p) for p in style_images)
    from stylegen_trt.runtime.style import blend
    np.testing.assert_allclose(blend([s_a, s_b], [0.25, 0.75]), 0.25 * s_a + 0.75 * s_b, rtol=1e-6)


def test_style_maps_cached_on_disk_by_content(styled_bundle, style_images, tmp_path):
    cache = tmp_path / "cache"
    with StylePipeline(open_bundle(styled_bundle), style_cache_dir=cache) as pipe:
        first = pipe.style_map_of(style_images[0])
        assert pipe.times.calls["style_encoder"] == 1
        assert len(list(cache.rglob("*.npy"))) == 1
    copy = tmp_path / "renamed.png"
    copy.write_bytes(style_images[0].read_bytes())
    with StylePipeline(open_bundle(styled_bundle), style_cache_dir=cache) as pipe:
        again = pipe.style_map_of(copy)  # same bytes, other name: a cache hit, no encoder run
        assert pipe.times.calls.get("style_encoder", 0) == 0
    np.testing.assert_array_equal(first, again)


def test_height_width_and_odd_latent_sizes(styled_pipe, style_images):
    result = styled_pipe.generate(GenerationRequest("a cat", steps=2, seed=0, height=40, width=104,
                                                    style=StyleRequest((style_images[0],))))
    assert result.images.shape == (1, 40, 104, 3)


def test_tokenizer_matches_clip_tokenizer_and_truncates(tiny, styled_bundle, caplog):
    bundle = open_bundle(styled_bundle)
    ours = PromptTokenizer.from_manifest(bundle.path, bundle.manifest["tokenizer"])
    prompts = ["a red cat", "", "A  Blue, SQUARE!! on the dog", "zebra" * 3]
    expected = tiny.base.tokenizer(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    np.testing.assert_array_equal(ours(prompts), np.array(expected))
    long = " ".join(["cat"] * 100)
    with caplog.at_level(logging.WARNING):
        ids = ours([long])
    assert "only the first 75 are used" in caplog.text
    np.testing.assert_array_equal(ids, np.array(tiny.base.tokenizer([long], padding="max_length", max_length=77,
                                                                    truncation=True).input_ids))


def test_runtime_imports_no_torch():
    code = ("import sys; import stylegen_trt.runtime.pipeline, stylegen_trt.engines.ort, stylegen_trt.cli; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generate_command_imports_no_torch(styled_bundle, style_images, tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from stylegen_trt.cli import app\n"
        f"r = CliRunner().invoke(app, ['generate', '--bundle', {str(styled_bundle)!r}, '--prompt', 'a cat',"
        f" '--style', {str(style_images[0])!r}, '--steps', '2', '--out', {str(tmp_path / 'o.png')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "o.png").is_file()


@pytest.mark.parametrize("prompt, n, message", [
    ((), 1, "no prompt given"),
    (("a", "b", "c"), 2, r"3 prompts x --n 2 = 6 images: at most 4"),
])
def test_prompt_batches_beyond_the_bundle_are_refused(styled_pipe, prompt, n, message):
    from stylegen_trt.errors import UserError

    with pytest.raises(UserError, match=message):
        styled_pipe.generate(GenerationRequest(prompt, n=n, steps=2))
