"""The whole style-guided SD inference in NumPy, over five engines.

    prompt  -> tokenizer -> text_encoder -> c (uncond + cond)
    styles  -> style_encoder -> S_i -> S = sum w_i S_i -> resized to the latent
    x_T     -> sampler( denoise(x, t) ) -> x_0       (denoise: UNet + branch residuals + CFG)
    x_0     -> vae_decoder -> image

The style branch depends on (S, t) only, never on the latent: one call computes the residuals
of many timesteps at once (a row per timestep, within a memory budget), and each step's row
broadcasts inside the UNet graph over the images and both CFG halves.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from stylegen_trt.engines.base import Engine, EngineOptions
from stylegen_trt.errors import UserError
from stylegen_trt.runtime import schedulers
from stylegen_trt.runtime.bundle import GRAPH_NAMES, Bundle
from stylegen_trt.runtime.images import read_image_file, resize_rgb01, to_uint8
from stylegen_trt.runtime.style import StyleMapCache, blend, default_cache_dir, resize_style_map
from stylegen_trt.runtime.tokenizer import PromptTokenizer
from stylegen_trt.spec import resolve_shape

log = logging.getLogger(__name__)

Residuals = Mapping[str, np.ndarray]
RESIDUAL_BUDGET_BYTES = 64 * 2**20  # precomputed branch residuals held at once (SD 1.5, 512 px: 2 steps)
# Rows x latent pixels per branch call: the call's activations (self-attention grows with the square
# of the latent area) must stay near a UNet call's. 4096 = one SD 1.5 latent at 512 px: 1 row there,
# 4 for the small bench model (32x32), 16 for the demo (16x16). Measured: 45 rows at 32x32 took
# the small model's peak RSS from 0.7 to 2.4 GB.
BRANCH_LATENT_PIXELS = 4096


@dataclass(frozen=True)
class StyleRequest:
    images: tuple[Path, ...] = ()
    weights: tuple[float, ...] | None = None  # None: equal weights summing to 1
    scale: float = 1.0
    window: tuple[float, float] = (0.0, 1.0)  # fractions of the schedule where the branch runs


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    prompt: str | tuple[str, ...]  # several prompts: one batch, ``n`` images each (as diffusers)
    negative: str = ""
    style: StyleRequest = StyleRequest()
    scheduler: str = "ddpm"
    steps: int = 50
    guidance: float = 7.5
    seed: int | None = None
    n: int = 1
    height: int | None = None
    width: int | None = None
    latents: np.ndarray | None = None  # as diffusers' ``latents=``: x_T, shape (images, C, h, w)

    @property
    def prompts(self) -> tuple[str, ...]:
        """One prompt per image, prompt-major: each prompt's ``n`` images are consecutive."""
        prompts = (self.prompt,) if isinstance(self.prompt, str) else tuple(self.prompt)
        return tuple(p for p in prompts for _ in range(self.n))


@dataclass
class StageTimes:
    """Seconds and call counts per stage, for `bench` and logging."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds
        self.calls[stage] += 1


@dataclass
class GenerationResult:
    images: np.ndarray  # (n, H, W, 3) uint8
    seed: int
    times: StageTimes


class TimedEngine:
    """Forwards to an engine and books each run's wall time under the graph's name."""

    def __init__(self, engine: Engine, times: Callable[[], StageTimes]):
        self.engine, self.times, self.spec = engine, times, engine.spec

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.engine.run(inputs)
        self.times().add(self.spec.name, time.perf_counter() - start)
        return out


def make_denoiser(unet: TimedEngine, context: np.ndarray, guidance: float,
                  residuals_at: Callable[[int], Residuals]) -> schedulers.Denoiser:
    """Adapt the UNet once into ``denoise(x, t) -> eps`` with style residuals and CFG inside.

    With CFG, ``context`` is [uncond x n, cond x n] and eps = eps_u + g (eps_c - eps_u)
    (Ho & Salimans, classifier-free guidance).
    """
    def unet_eps(x: np.ndarray, t: int) -> np.ndarray:
        feeds = {"sample": x, "timestep": np.array([t], np.float32), "encoder_hidden_states": context}
        return unet.run({**feeds, **residuals_at(t)})["eps"]

    if guidance <= 1.0:  # diffusers' rule: no guidance at scale <= 1
        return unet_eps

    def guided(x: np.ndarray, t: int) -> np.ndarray:
        eps_u, eps_c = np.split(unet_eps(np.concatenate([x, x]), t), 2)
        return eps_u + np.float32(guidance) * (eps_c - eps_u)

    return guided


def make_residuals(branch: TimedEngine, zeros: Residuals, style_map: np.ndarray | None, scale: float,
                   active: list[int], chunk: int) -> Callable[[int], Residuals]:
    """t -> the branch's residuals for timesteps in ``active`` (in sampling order), zeros elsewhere.

    The branch sees S and t only, never the latent, so residuals for the next ``chunk`` active
    timesteps come from one call (one row per timestep) and are handed out one step at a time.
    """
    if style_map is None or not active:
        return lambda t: zeros
    scale_arr = np.array([scale], np.float32)
    position = {t: i for i, t in enumerate(active)}  # set lookups: this runs every step
    ready: dict[int, Residuals] = {}

    def residuals_at(t: int) -> Residuals:
        if t not in position:
            return zeros
        if t not in ready:
            ready.clear()
            batch = active[position[t]:position[t] + chunk]
            out = branch.run({"style_map": np.repeat(style_map, len(batch), axis=0),
                              "timestep": np.array(batch, np.float32), "style_scale": scale_arr})
            ready.update({step: {name: rows[i:i + 1] for name, rows in out.items()} for i, step in enumerate(batch)})
        return ready[t]

    return residuals_at


def branch_chunk(spec, latent_h: int, latent_w: int, budget_bytes: int | None = None) -> int:
    """How many timesteps one branch call takes: the graph's limit, a memory budget for the residuals
    held between calls, and one for the call's own activations."""
    budget_bytes = RESIDUAL_BUDGET_BYTES if budget_bytes is None else budget_bytes
    steps_axis = spec.axes.get("branch_steps")
    if steps_axis is None:  # a bundle exported before the branch took a batch of timesteps
        return 1
    axes = {"latent_h": latent_h, "latent_w": latent_w, "branch_steps": 1}
    per_step = sum(4 * int(np.prod(resolve_shape(o.dims, axes))) for o in spec.outputs)
    return max(1, min(steps_axis.max, budget_bytes // per_step, BRANCH_LATENT_PIXELS // (latent_h * latent_w)))


def style_map_size(branch_spec, latent_h: int, latent_w: int) -> tuple[int, int]:
    """(h, w) of the S the branch graph takes for this latent: the latent's size, or a multiple of it
    when the branch's stem downsamples S (its input's dims say which, e.g. ``latent_h*4``)."""
    dims = next(t.dims for t in branch_spec.inputs if t.name == "style_map")
    return resolve_shape(dims[2:], {"latent_h": latent_h, "latent_w": latent_w})


def active_timesteps(ts: np.ndarray, window: tuple[float, float]) -> list[int]:
    """Timesteps whose step index i satisfies start <= i / K < end, in sampling order."""
    k = len(ts)
    start, end = window
    return [int(t) for i, t in enumerate(ts) if start * k <= i < end * k]


class StylePipeline:
    """Opens a bundle's five engines; ``generate`` turns a request into images."""

    def __init__(self, bundle: Bundle, options: EngineOptions = EngineOptions(),
                 style_cache_dir: Path | None = None):
        self.bundle = bundle
        m = bundle.manifest
        self.tokenizer = PromptTokenizer.from_manifest(bundle.path, m["tokenizer"])
        self.scheduler_config = schedulers.SchedulerConfig.from_dict(m["scheduler"])
        self.times = StageTimes()
        self.engines: dict[str, TimedEngine] = {}
        try:
            for name in GRAPH_NAMES:
                self.engines[name] = TimedEngine(bundle.open_engine(name, options), lambda: self.times)
        except BaseException:
            self.close()
            raise
        encoder_sha = m["files"][m["graphs"]["style_encoder"]["file"]]["sha256"]
        cache_dir = style_cache_dir if style_cache_dir is not None else default_cache_dir()
        self.style_cache = StyleMapCache(cache_dir, encoder_sha, m["style"]["image_size"])
        self._contexts: dict[str, np.ndarray] = {}

    def close(self) -> None:
        for engine in self.engines.values():
            engine.engine.close()
        self.engines.clear()

    def __enter__(self) -> "StylePipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- stages -------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> np.ndarray:
        """(1, seq, dim) context for ``prompt``, cached in memory."""
        if prompt not in self._contexts:
            start = time.perf_counter()
            ids = self.tokenizer([prompt])
            self.times.add("tokenize", time.perf_counter() - start)
            self._contexts[prompt] = self.engines["text_encoder"].run({"input_ids": ids})["context"]
        return self._contexts[prompt]

    def style_map_of(self, path: Path) -> np.ndarray:
        """S (1, 1, 64, 64) of one style image, from the cache or the style encoder."""
        image, data = read_image_file(path)
        key = self.style_cache.key(data)
        cached = self.style_cache.get(key)
        if cached is not None:
            return cached
        size = self.bundle.manifest["style"]["image_size"]
        pixels = resize_rgb01(image, size)[None]
        style_map = self.engines["style_encoder"].run({"style_image": pixels})["style_map"]
        self.style_cache.put(key, style_map)
        return style_map

    def decode(self, latent: np.ndarray) -> np.ndarray:
        scale = np.float32(self.bundle.manifest["latent"]["scale"])
        images = [self.engines["vae_decoder"].run({"latent": latent[i:i + 1] / scale})["image"]
                  for i in range(latent.shape[0])]
        return to_uint8(np.concatenate(images))

    # --- generation -----------------------------------------------------------------

    def generate(self, request: GenerationRequest,
                 on_step: Callable[[int, int], None] | None = None) -> GenerationResult:
        """Generate ``request.n`` images per prompt; ``on_step(i, total)`` is called after each denoising step."""
        check_request(request, self.bundle.manifest)
        self.times = StageTimes()
        m = self.bundle.manifest
        height, width = resolve_size(request, m)
        f = m["latent"]["vae_scale_factor"]
        prompts = request.prompts
        latent_shape = (len(prompts), m["latent"]["channels"], height // f, width // f)
        seed = request.seed if request.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
        rng = np.random.default_rng(seed)

        style_map = None
        if request.style.images:
            weights = request.style.weights or (1.0 / len(request.style.images),) * len(request.style.images)
            maps = [self.style_map_of(Path(p)) for p in request.style.images]
            style_map = resize_style_map(blend(maps, list(weights)),
                                         *style_map_size(self.bundle.graphs["style_branch"], *latent_shape[2:]))

        cfg = request.guidance > 1.0
        cond = np.concatenate([self.encode_prompt(p) for p in prompts])
        uncond = np.repeat(self.encode_prompt(request.negative), len(prompts), axis=0)
        context = np.concatenate([uncond, cond]) if cfg else cond

        ts = schedulers.timesteps(request.scheduler, self.scheduler_config, request.steps)
        zeros = self._zero_residuals(latent_shape[2], latent_shape[3])
        branch = self.engines["style_branch"]
        residuals_at = make_residuals(branch, zeros, style_map, request.style.scale,
                                      active_timesteps(ts, request.style.window),
                                      branch_chunk(branch.spec, latent_shape[2], latent_shape[3]))
        denoise = make_denoiser(self.engines["unet"], context, request.guidance, residuals_at)

        x = request.latents.astype(np.float32) if request.latents is not None else \
            rng.standard_normal(latent_shape, dtype=np.float32)
        step_start = [time.perf_counter()]

        def callback(i: int, t: int, _x: np.ndarray) -> None:
            now = time.perf_counter()
            self.times.add("step", now - step_start[0])
            step_start[0] = now
            if on_step:
                on_step(i + 1, len(ts))

        x0 = schedulers.sample(request.scheduler, denoise, x, self.scheduler_config, request.steps, rng, callback)
        images = self.decode(x0)
        return GenerationResult(images, seed, self.times)

    def _zero_residuals(self, latent_h: int, latent_w: int) -> dict[str, np.ndarray]:
        residual_names = set(self.bundle.graphs["style_branch"].output_names)
        axes = {"latent_h": latent_h, "latent_w": latent_w}
        return {t.name: np.zeros(resolve_shape(t.dims, axes), np.float32)
                for t in self.bundle.graphs["unet"].inputs if t.name in residual_names}


def resolve_size(request: GenerationRequest, manifest: dict) -> tuple[int, int]:
    """(height, width): given, else from --latents, else the base model's native size."""
    f = manifest["latent"]["vae_scale_factor"]
    native = manifest["sizes"]["native"]
    from_latents = (request.latents.shape[2] * f, request.latents.shape[3] * f) if request.latents is not None else None
    height = request.height or (from_latents[0] if from_latents else native)
    width = request.width or (from_latents[1] if from_latents else native)
    return height, width


def check_request(request: GenerationRequest, manifest: dict) -> None:
    """Every user-facing check before any work starts; each failure is a one-line UserError."""
    sizes = manifest["sizes"]
    if not isinstance(request.prompt, str) and not request.prompt:
        raise UserError("no prompt given: pass one prompt, or a non-empty list of prompts")
    if not "".join(request.prompts).strip() and not request.style.images:
        log.info("empty prompt: generating unconditionally")
    if request.scheduler not in schedulers.SAMPLERS:
        raise UserError(f"unknown scheduler {request.scheduler!r}: choose one of {', '.join(schedulers.SAMPLERS)}")
    max_steps = manifest["scheduler"].get("num_train_timesteps", 1000)
    if not 1 <= request.steps <= max_steps:
        raise UserError(f"--steps must be between 1 and {max_steps}, got {request.steps}")
    if not np.isfinite(request.guidance) or request.guidance < 0:
        raise UserError(f"--guidance must be a finite number >= 0, got {request.guidance}")
    if not 1 <= request.n <= sizes["max_images"]:
        raise UserError(f"--n must be between 1 and {sizes['max_images']} for this bundle, got {request.n}")
    if len(request.prompts) > sizes["max_images"]:
        raise UserError(f"{len(request.prompts) // request.n} prompts x --n {request.n} = {len(request.prompts)} images: "
                        f"at most {sizes['max_images']} per batch for this bundle; split the prompts")
    height, width = resolve_size(request, manifest)
    for label, value in (("height", height), ("width", width)):
        if value % sizes["multiple"]:
            raise UserError(f"--{label} {value} is not a multiple of {sizes['multiple']}: round it, e.g. "
                            f"{value - value % sizes['multiple']}")
        if not sizes["min"] <= value <= sizes["max"]:
            raise UserError(f"--{label} {value} is outside this bundle's range {sizes['min']}..{sizes['max']}")
    style = request.style
    if len(style.images) > manifest["style"]["max_styles"] * 4:
        raise UserError(f"too many style images ({len(style.images)})")
    if style.weights is not None:
        if len(style.weights) != len(style.images):
            raise UserError(f"{len(style.weights)} --style-weight values for {len(style.images)} --style images: "
                            "give one weight per style image")
        if not all(np.isfinite(w) for w in style.weights):
            raise UserError("--style-weight values must be finite numbers")
    if not np.isfinite(style.scale):
        raise UserError(f"--style-scale must be a finite number, got {style.scale}")
    start, end = style.window
    if not 0.0 <= start < end <= 1.0:
        raise UserError(f"--style-window needs 0 <= START < END <= 1, got {start} {end}")
    if request.latents is not None:
        f = manifest["latent"]["vae_scale_factor"]
        expected = (len(request.prompts), manifest["latent"]["channels"], height // f, width // f)
        if tuple(request.latents.shape) != expected:
            raise UserError(f"--latents has shape {tuple(request.latents.shape)}, expected {expected} "
                            f"for {expected[0]} image(s) at {width}x{height}")
        if not np.issubdtype(request.latents.dtype, np.floating) or not np.isfinite(request.latents).all():
            raise UserError("--latents must hold finite floating-point values")
