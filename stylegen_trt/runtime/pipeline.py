"""The whole style-guided SD inference in NumPy, over five engines.

    prompt  -> tokenizer -> text_encoder -> c (uncond + cond)
    styles  -> style_encoder -> S_i -> S = sum w_i S_i -> resized to the latent
    x_T     -> sampler( denoise(x, t) ) -> x_0       (denoise: UNet + branch residuals + CFG)
    x_0     -> vae_decoder -> image

The style branch depends on (S, t) only, never on the latent: one call computes the residuals
of many timesteps at once (a row per timestep, within a memory budget), and each step's row
broadcasts inside the UNet graph over the images and both CFG halves.

Values that do not change on the host stay on the engines' device (``Engine.run_device``): the
branch's residuals go from its outputs straight into the UNet's inputs, the zero residuals and the
text context are uploaded once per generation; the latent goes up and eps comes down every step
(the NumPy sampler needs eps), and eps is checked for NaN/Inf there. On a backend without device
memory the same calls pass host arrays.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping

import numpy as np

from stylegen_trt.engines import link_engines
from stylegen_trt.engines.base import DeviceValue, Engine, EngineOptions, Value, concat_rows
from stylegen_trt.errors import UserError
from stylegen_trt.runtime import schedulers
from stylegen_trt.runtime.bundle import GRAPH_NAMES, Bundle
from stylegen_trt.runtime.images import decode_image, read_style_file, resize_rgb01, to_uint8
from stylegen_trt.runtime.style import StyleMapCache, blend, default_cache_dir, resize_style_map
from stylegen_trt.runtime.tokenizer import PromptTokenizer
from stylegen_trt.spec import BRANCH_LATENT_PIXELS, RESIDUAL_BUDGET_BYTES, resolve_shape
from stylegen_trt.spec import branch_chunk as _branch_chunk

log = logging.getLogger(__name__)

Residuals = Mapping[str, Value]  # NumPy arrays or DeviceValues of the UNet's backend
# RESIDUAL_BUDGET_BYTES and BRANCH_LATENT_PIXELS (spec.py) are re-bound here: tests and tools adjust them here.


# A style image: a file (the CLI) or an image's encoded bytes (a server request).
StyleImage = Path | bytes
PROMPT_CACHE_SIZE = 256  # prompt encodings kept in memory (a server sees many prompts)


@dataclass(frozen=True)
class StyleRequest:
    images: tuple[StyleImage, ...] = ()
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

    @property
    def precision(self) -> str:
        return getattr(self.engine, "precision", "fp32")

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.engine.run(inputs)
        self.times().add(self.spec.name, time.perf_counter() - start)
        return out

    def run_device(self, inputs: Mapping[str, Value], keep=()) -> dict[str, Value]:
        start = time.perf_counter()
        out = self.engine.run_device(inputs, keep)
        self.times().add(self.spec.name, time.perf_counter() - start)
        return out

    def to_device(self, array: np.ndarray) -> DeviceValue:
        return self.engine.to_device(array)


def check_finite(engine, array: np.ndarray, where: str = "") -> np.ndarray:
    """``array`` if it is all finite, else the one-line UserError of the classic fp16 failure (black
    images): never written out as an image."""
    if not np.isfinite(array).all():
        precision = engine.precision
        hint = "try --precision fp32" if precision == "fp16" else "check the bundle's weights and inputs"
        raise UserError(f"the {engine.spec.name} produced NaN/Inf{where} in {precision}: {hint}")
    return array


def make_denoiser(unet: TimedEngine, context: Value, guidance: np.ndarray | None,
                  residuals_at: Callable[[int], Residuals]) -> schedulers.Denoiser:
    """Adapt the UNet once into ``denoise(x, t) -> eps`` with style residuals and CFG inside.

    With CFG (``guidance`` given: one scale per image, shape (B, 1, 1, 1)), ``context`` is
    [uncond x B, cond x B] and eps = eps_u + g (eps_c - eps_u) (Ho & Salimans, classifier-free guidance).
    ``context`` and the residuals may be DeviceValues of the UNet's backend; a non-finite eps is a UserError.
    """
    step = [0]

    def unet_eps(x: np.ndarray, t: int) -> np.ndarray:
        feeds = {"sample": x, "timestep": np.array([t], np.float32), "encoder_hidden_states": context}
        eps = unet.run_device({**feeds, **residuals_at(t)})["eps"]
        step[0] += 1
        return check_finite(unet, eps, f" at step {step[0]}")  # eps is on the host anyway: cheap

    if guidance is None:
        return unet_eps

    def guided(x: np.ndarray, t: int) -> np.ndarray:
        eps_u, eps_c = np.split(unet_eps(np.concatenate([x, x]), t), 2)
        return eps_u + guidance * (eps_c - eps_u)

    return guided


class ResidualCache:
    """Branch residuals per (style key, timestep), least recently used dropped beyond a byte budget.

    The branch sees (S, t) only, so one style's residuals at a timestep serve every request, image
    and schedule that uses that style at that size and scale.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[tuple, Residuals] = OrderedDict()

    def get(self, key: tuple) -> Residuals | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return value

    def put(self, key: tuple, value: Residuals) -> None:
        size = sum(a.nbytes for a in value.values())
        if size > self.budget_bytes or key in self._items:
            return
        self._items[key] = value
        self.bytes += size
        while self.bytes > self.budget_bytes:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in dropped.values())

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


def make_residuals(branch: TimedEngine, zeros: Residuals, style_map: np.ndarray | None, scale: float,
                   active: list[int], chunk: int, cache: ResidualCache | None = None,
                   style_key: tuple = ()) -> Callable[[int], Residuals]:
    """t -> the branch's residuals for timesteps in ``active`` (in sampling order), zeros elsewhere.

    The branch sees S and t only, never the latent, so residuals for the next ``chunk`` active
    timesteps come from one call (one row per timestep) and are handed out one step at a time.
    With a ``cache``, rows are looked up there first (under ``style_key``) and kept there after.
    """
    if style_map is None or not active:
        return lambda t: zeros
    scale_arr = np.array([scale], np.float32)
    # one S per call (its stem runs once); bundles exported before 2026-12-05 take S once per timestep row
    s_per_row = isinstance(next(t.dims[0] for t in branch.spec.inputs if t.name == "style_map"), str)
    position = {t: i for i, t in enumerate(active)}  # set lookups: this runs every step
    ready: dict[int, Residuals] = {}

    def residuals_at(t: int) -> Residuals:
        if t not in position:
            return zeros
        if t in ready:
            return ready[t]
        if cache is not None and (hit := cache.get((style_key, t))) is not None:
            return hit
        ready.clear()
        batch = active[position[t]:position[t] + chunk]
        # the residuals stay where the branch computed them: the UNet binds them there
        out = branch.run_device({"style_map": np.repeat(style_map, len(batch), axis=0) if s_per_row else style_map,
                                 "timestep": np.array(batch, np.float32), "style_scale": scale_arr},
                                keep=branch.spec.output_names)
        copy = cache is not None  # a cached row must not keep the whole call's output alive
        ready.update({step: {name: _row(rows, i, copy) for name, rows in out.items()} for i, step in enumerate(batch)})
        if cache is not None:
            for step, value in ready.items():
                cache.put((style_key, step), value)
        return ready[t]

    return residuals_at


def _row(rows: Value, i: int, copy: bool) -> Value:
    if isinstance(rows, DeviceValue):
        return rows.rows(i, i + 1).copy() if copy else rows.rows(i, i + 1)
    return rows[i:i + 1].copy() if copy else rows[i:i + 1]


def _concat(parts: list[Value]) -> Value:
    """Rows joined on the first axis: on the device for DeviceValues, else in NumPy."""
    if all(isinstance(p, DeviceValue) for p in parts) and len({p.memory.kind for p in parts}) == 1:
        return concat_rows(parts)
    return np.concatenate([p.numpy() if isinstance(p, DeviceValue) else p for p in parts])


def per_image_residuals(sources: list[Callable[[int], Residuals]], keys: list[tuple | None],
                        cfg: bool) -> Callable[[int], Residuals]:
    """The UNet's residual inputs for a batch whose images may differ in style.

    ``sources[i]`` gives image i's residuals (batch 1); images with equal ``keys`` share a source.
    One style for all: that source's rows, which broadcast in the graph. Otherwise one row per
    UNet batch item (both CFG halves of an image take its row).
    """
    distinct = list(dict.fromkeys(keys))
    if len(distinct) == 1:
        return sources[0]
    first = {key: sources[keys.index(key)] for key in distinct}
    index = [distinct.index(k) for k in keys] * (2 if cfg else 1)

    def residuals_at(t: int) -> Residuals:
        rows = [first[k](t) for k in distinct]
        return {name: _concat([rows[i][name] for i in index]) for name in rows[0]}

    return residuals_at


class StackedNoise:
    """``standard_normal`` for a batch of several requests' images: each request's rows come from its
    own generator, so an image's noise (x_T and DDPM's per-step noise) never depends on its batch-mates."""

    def __init__(self, rngs: list[np.random.Generator], counts: list[int]):
        self.rngs, self.counts = rngs, counts

    def standard_normal(self, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        return np.concatenate([rng.standard_normal((n, *shape[1:]), dtype=dtype)
                               for rng, n in zip(self.rngs, self.counts)])


def branch_chunk(spec, latent_h: int, latent_w: int, budget_bytes: int | None = None) -> int:
    """How many timesteps one branch call takes (``spec.branch_chunk``, with this module's budgets)."""
    return _branch_chunk(spec, latent_h, latent_w, RESIDUAL_BUDGET_BYTES if budget_bytes is None else budget_bytes,
                         BRANCH_LATENT_PIXELS)


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


@dataclass(frozen=True)
class PreparedRequest:
    """One request after its checks, with what it brings to a batch: its noise, size and style."""

    request: GenerationRequest
    seed: int
    rng: np.random.Generator
    latent_shape: tuple[int, int, int, int]  # (images, C, h, w)
    style_map: np.ndarray | None  # blended, at the size the branch takes
    style_key: tuple | None  # what its residuals depend on besides t: (S hash, scale, h, w)

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share UNet calls."""
        r = self.request
        return (self.latent_shape[1:], r.scheduler, r.steps, r.guidance > 1.0)


class StylePipeline:
    """Opens a bundle's five engines; ``generate`` turns a request into images, ``generate_many``
    serves several requests, denoising compatible ones together."""

    def __init__(self, bundle: Bundle, options: EngineOptions = EngineOptions(),
                 style_cache_dir: Path | None | Literal[False] = None, residual_cache_bytes: int = 0):
        self.bundle = bundle
        m = bundle.manifest
        self.tokenizer = PromptTokenizer.from_manifest(bundle.path, m["tokenizer"])
        self.scheduler_config = schedulers.SchedulerConfig.from_dict(m["scheduler"])
        self.times = StageTimes()
        self.engines: dict[str, TimedEngine] = {}
        try:
            for name in GRAPH_NAMES:
                self.engines[name] = TimedEngine(bundle.open_engine(name, options), lambda: self.times)
            link_engines([e.engine for e in self.engines.values()])  # e.g. one TensorRT activation block
        except BaseException:
            self.close()
            raise
        encoder_sha = m["files"][m["graphs"]["style_encoder"]["file"]]["sha256"]
        # None: the user's cache directory; False: no S on disk (the benchmark: every cold run encodes S)
        cache_dir = None if style_cache_dir is False else style_cache_dir if style_cache_dir is not None else default_cache_dir()
        self.style_cache = StyleMapCache(cache_dir, encoder_sha, m["style"]["image_size"])
        self.residual_cache = ResidualCache(residual_cache_bytes) if residual_cache_bytes > 0 else None
        self._contexts: OrderedDict[str, np.ndarray] = OrderedDict()
        # Bundles exported before per-image residuals take one style per UNet call.
        residual_names = set(bundle.graphs["style_branch"].output_names)
        self.styles_per_batch = "many" if all(isinstance(t.dims[0], str) for t in bundle.graphs["unet"].inputs
                                              if t.name in residual_names) else "one"

    def close(self) -> None:
        for engine in self.engines.values():
            engine.engine.close()
        self.engines.clear()

    def clear_caches(self) -> None:
        """Forget prompt encodings, style maps and residuals held in memory, so the next generation
        does every stage's work (S still comes from the on-disk cache if it has a directory)."""
        self._contexts.clear()
        self.style_cache.memory.clear()
        if self.residual_cache is not None:
            self.residual_cache.clear()

    def __enter__(self) -> "StylePipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- stages -------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> np.ndarray:
        """(1, seq, dim) context for ``prompt``, cached in memory (the most recent PROMPT_CACHE_SIZE)."""
        if prompt in self._contexts:
            self._contexts.move_to_end(prompt)
            return self._contexts[prompt]
        start = time.perf_counter()
        ids = self.tokenizer([prompt])
        self.times.add("tokenize", time.perf_counter() - start)
        encoder = self.engines["text_encoder"]
        context = self._contexts[prompt] = check_finite(encoder, encoder.run({"input_ids": ids})["context"])
        while len(self._contexts) > PROMPT_CACHE_SIZE:
            self._contexts.popitem(last=False)
        return context

    def style_map_of(self, image: StyleImage, label: str = "style image") -> np.ndarray:
        """S (1, 1, 64, 64) of one style image (a file, or encoded bytes), from the cache or the style encoder."""
        if isinstance(image, bytes):
            data = image
        else:
            data, label = read_style_file(image), f"style image {image}"
        key = self.style_cache.key(data)
        cached = self.style_cache.get(key)
        if cached is not None:
            return cached
        size = self.bundle.manifest["style"]["image_size"]
        pixels = resize_rgb01(decode_image(data, label), size)[None]
        style_map = check_finite(self.engines["style_encoder"],
                                 self.engines["style_encoder"].run({"style_image": pixels})["style_map"])
        self.style_cache.put(key, style_map)
        return style_map

    def decode(self, latent: np.ndarray) -> np.ndarray:
        scale = np.float32(self.bundle.manifest["latent"]["scale"])
        decoder = self.engines["vae_decoder"]
        check_finite(self.engines["unet"], latent, " (the final latent)")
        images = [check_finite(decoder, decoder.run({"latent": latent[i:i + 1] / scale})["image"])
                  for i in range(latent.shape[0])]
        return to_uint8(np.concatenate(images))

    # --- generation -----------------------------------------------------------------

    def generate(self, request: GenerationRequest,
                 on_step: Callable[[int, int], None] | None = None) -> GenerationResult:
        """Generate ``request.n`` images per prompt; ``on_step(i, total)`` is called after each denoising step."""
        result = self.generate_many([request], on_step)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def generate_many(self, requests: list[GenerationRequest],
                      on_step: Callable[[int, int], None] | None = None) -> list[GenerationResult | UserError]:
        """Serve several requests: one result per request, in order, or the UserError that request alone
        failed with. Requests that share size, scheduler, steps and whether they use CFG are denoised
        together in UNet calls of up to the bundle's ``max_images`` images, each with its own prompts,
        seed, guidance and style (an image's result does not depend on its batch-mates)."""
        self.times = StageTimes()
        results: list[GenerationResult | UserError | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, PreparedRequest]]] = defaultdict(list)
        for i, request in enumerate(requests):
            try:
                prepared = self.prepare(request)
            except UserError as exc:
                results[i] = exc
                continue
            key = prepared.batch_key + ((prepared.style_key, request.style.window)
                                        if self.styles_per_batch == "one" else ())
            groups[key].append((i, prepared))
        limit = self.bundle.manifest["sizes"]["max_images"]
        for members in groups.values():
            for batch in _batches(members, limit):
                images = self._denoise([p for _, p in batch], on_step)
                start = 0
                for i, p in batch:
                    count = p.latent_shape[0]
                    results[i] = GenerationResult(images[start:start + count], p.seed, self.times)
                    start += count
        return results

    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        """Check a request and do its per-request work (seed, style map); UserError if it is bad."""
        m = self.bundle.manifest
        check_request(request, m)
        height, width = resolve_size(request, m)
        f = m["latent"]["vae_scale_factor"]
        latent_shape = (len(request.prompts), m["latent"]["channels"], height // f, width // f)
        seed = request.seed if request.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
        style_map = style_key = None
        style = request.style
        if style.images:
            weights = style.weights or (1.0 / len(style.images),) * len(style.images)
            maps = [self.style_map_of(image, f"style image {k + 1}") for k, image in enumerate(style.images)]
            style_map = resize_style_map(blend(maps, list(weights)),
                                         *style_map_size(self.bundle.graphs["style_branch"], *latent_shape[2:]))
            digest = hashlib.blake2b(style_map.tobytes(), digest_size=16).hexdigest()
            style_key = (digest, float(style.scale), *latent_shape[2:])
        return PreparedRequest(request, seed, np.random.default_rng(seed), latent_shape, style_map, style_key)

    def _denoise(self, members: list[PreparedRequest],
                 on_step: Callable[[int, int], None] | None) -> np.ndarray:
        """Denoise and decode compatible requests in one batch: (images, H, W, 3) uint8, request-major."""
        first = members[0].request
        counts = [p.latent_shape[0] for p in members]
        _, channels, h, w = members[0].latent_shape
        cfg = first.guidance > 1.0
        cond = np.concatenate([self.encode_prompt(prompt) for p in members for prompt in p.request.prompts])
        context, guidance = cond, None
        if cfg:
            uncond = np.concatenate([np.repeat(self.encode_prompt(p.request.negative), n, axis=0)
                                     for p, n in zip(members, counts)])
            context = np.concatenate([uncond, cond])
            guidance = np.repeat(np.array([p.request.guidance for p in members], np.float32), counts)[:, None, None, None]

        ts = schedulers.timesteps(first.scheduler, self.scheduler_config, first.steps)
        unet = self.engines["unet"]
        # uploaded once per generation: unchanged at every step
        zeros = {name: unet.to_device(value) for name, value in self._zero_residuals(h, w).items()}
        context = unet.to_device(context)
        branch = self.engines["style_branch"]
        chunk = branch_chunk(branch.spec, h, w)
        sources: dict[tuple | None, Callable[[int], Residuals]] = {None: lambda t: zeros}
        keys: list[tuple | None] = []
        for p, n in zip(members, counts):
            active = active_timesteps(ts, p.request.style.window) if p.style_map is not None else []
            key = (p.style_key, tuple(active)) if active else None
            if key not in sources:
                sources[key] = make_residuals(branch, zeros, p.style_map, p.request.style.scale, active, chunk,
                                              self.residual_cache, p.style_key)
            keys += [key] * n
        residuals_at = per_image_residuals([sources[k] for k in keys], keys, cfg)
        denoise = make_denoiser(unet, context, guidance, residuals_at)

        x = np.concatenate([p.request.latents.astype(np.float32) if p.request.latents is not None else
                            p.rng.standard_normal(p.latent_shape, dtype=np.float32) for p in members])
        noise = members[0].rng if len(members) == 1 else StackedNoise([p.rng for p in members], counts)
        step_start = [time.perf_counter()]

        def callback(i: int, t: int, _x: np.ndarray) -> None:
            now = time.perf_counter()
            self.times.add("step", now - step_start[0])
            step_start[0] = now
            if on_step:
                on_step(i + 1, len(ts))

        x0 = schedulers.sample(first.scheduler, denoise, x, self.scheduler_config, first.steps, noise, callback)
        return self.decode(x0)

    def _zero_residuals(self, latent_h: int, latent_w: int) -> dict[str, np.ndarray]:
        residual_names = set(self.bundle.graphs["style_branch"].output_names)
        axes = {"latent_h": latent_h, "latent_w": latent_w, "residual_batch": 1}
        return {t.name: np.zeros(resolve_shape(t.dims, axes), np.float32)
                for t in self.bundle.graphs["unet"].inputs if t.name in residual_names}


def _batches(members: list, limit: int) -> list[list]:
    """Consecutive runs of ``(index, PreparedRequest)`` holding at most ``limit`` images each."""
    batches: list[list] = []
    count = limit
    for item in members:
        n = item[1].latent_shape[0]
        if count + n > limit:
            batches.append([])
            count = 0
        batches[-1].append(item)
        count += n
    return batches


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
    if request.seed is not None and request.seed < 0:
        raise UserError(f"--seed must be >= 0, got {request.seed}")
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
    check_style_window(style.window)
    if request.latents is not None:
        f = manifest["latent"]["vae_scale_factor"]
        expected = (len(request.prompts), manifest["latent"]["channels"], height // f, width // f)
        if tuple(request.latents.shape) != expected:
            raise UserError(f"--latents has shape {tuple(request.latents.shape)}, expected {expected} "
                            f"for {expected[0]} image(s) at {width}x{height}")
        if not np.issubdtype(request.latents.dtype, np.floating) or not np.isfinite(request.latents).all():
            raise UserError("--latents must hold finite floating-point values")


def check_style_window(window: tuple[float, float]) -> None:
    start, end = window
    if not 0.0 <= start < end <= 1.0:
        raise UserError(f"--style-window needs 0 <= START < END <= 1, got {start:g} {end:g}")
