"""NumPy-only samplers for Stable Diffusion 1.x: DDPM, DDIM (eta=0) and DPM-Solver++(2M).

Each sampler means exactly what diffusers' ``DDPMScheduler``, ``DDIMScheduler`` and
``DPMSolverMultistepScheduler`` (their defaults, built ``.from_config`` of an SD config) do, but
as plain functions over arrays in the style of k-diffusion: the schedule is computed up front by
small functions returning arrays, and the sampler loop keeps its history in local variables.
Every quantity is computed in float32 in the same order as diffusers does it, so trajectories
agree with diffusers to float32 rounding.

This module must not import torch or diffusers: it is part of the deployment runtime.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "SAMPLERS",
    "Callback",
    "Denoiser",
    "SamplerName",
    "SchedulerConfig",
    "alphas_cumprod",
    "betas",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "timesteps",
]

SamplerName = Literal["ddpm", "ddim", "dpmpp"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmpp")

Denoiser = Callable[[np.ndarray, int], np.ndarray]
Callback = Callable[[int, int, np.ndarray], None] | None

_BETA_SCHEDULES = ("linear", "scaled_linear")
_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_SPACINGS = ("leading", "trailing", "linspace")
# diffusers' default timestep_spacing per scheduler class.
_DEFAULT_SPACING = {"ddpm": "leading", "ddim": "leading", "dpmpp": "linspace"}

# Keys of the three diffusers schedulers that SchedulerConfig does not model, with the values
# under which our maths is still exact. Any other value would change the result, so from_dict
# refuses it rather than ignore it. (lower_order_final / euler_at_final are absent on purpose:
# with solver_order 2 and final_sigmas_type "zero" diffusers already takes a first-order last
# step, so neither flag changes anything. dynamic_thresholding_ratio, sample_max_value and
# flow_shift only matter when a refused flag is on.)
_FIXED_KEYS: dict[str, tuple[Any, ...]] = {
    "trained_betas": (None,),
    "thresholding": (False,),
    "rescale_betas_zero_snr": (False,),
    "variance_type": (None, "fixed_small"),
    "algorithm_type": ("dpmsolver++",),
    "solver_order": (2,),
    "solver_type": ("midpoint",),
    "final_sigmas_type": ("zero",),
    "lambda_min_clipped": (-math.inf,),
    "use_karras_sigmas": (False,),
    "use_exponential_sigmas": (False,),
    "use_beta_sigmas": (False,),
    "use_lu_lambdas": (False,),
    "use_flow_sigmas": (False,),
    "use_dynamic_shifting": (False,),
}


def _same(value: Any, allowed: Any) -> bool:
    # Type-strict equality, so that 0 does not pass for False or 1.0 for True.
    return value is allowed or (type(value) is type(allowed) and value == allowed)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class SchedulerConfig:
    """The scheduler config fields SD-family checkpoints use. Defaults are SD 1.x's.

    ``timestep_spacing=None`` means each sampler's diffusers default ("leading" for DDPM and
    DDIM, "linspace" for DPM-Solver++). Values are validated on construction.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # "linear" | "scaled_linear"
    steps_offset: int = 1
    set_alpha_to_one: bool = False
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    prediction_type: str = "epsilon"  # "epsilon" | "v_prediction" | "sample"
    timestep_spacing: str | None = None  # None -> each sampler's diffusers default

    def __post_init__(self) -> None:
        if not _is_int(self.num_train_timesteps) or self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be an int >= 2, got {self.num_train_timesteps!r}")
        for name in ("beta_start", "beta_end", "clip_sample_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if not 0.0 <= self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                f"need 0 <= beta_start <= beta_end < 1, got beta_start={self.beta_start!r}, beta_end={self.beta_end!r}"
            )
        if self.clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be > 0, got {self.clip_sample_range!r}")
        if self.beta_schedule not in _BETA_SCHEDULES:
            raise ValueError(f"beta_schedule {self.beta_schedule!r} is not supported; expected one of {_BETA_SCHEDULES}")
        if not _is_int(self.steps_offset) or self.steps_offset < 0:
            raise ValueError(f"steps_offset must be an int >= 0, got {self.steps_offset!r}")
        for name in ("set_alpha_to_one", "clip_sample"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.prediction_type not in _PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type {self.prediction_type!r} is not supported; expected one of {_PREDICTION_TYPES}"
            )
        if self.timestep_spacing is not None and self.timestep_spacing not in _SPACINGS:
            raise ValueError(
                f"timestep_spacing {self.timestep_spacing!r} is not supported; expected None or one of {_SPACINGS}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SchedulerConfig:
        """Build from a diffusers scheduler config (e.g. ``scheduler_config.json``).

        Like diffusers' ``from_config``, keys that no supported scheduler uses (``_class_name``,
        ``skip_prk_steps``, ...) are ignored. Keys that diffusers understands but that we do not
        implement must carry their neutral value (``trained_betas`` null, ``thresholding`` false,
        ...), otherwise ValueError. Missing keys take this class's (SD 1.x) defaults.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"expected a mapping, got {type(d).__name__}")
        for key, allowed in _FIXED_KEYS.items():
            if key in d and not any(_same(d[key], a) for a in allowed):
                raise ValueError(
                    f"scheduler config {key}={d[key]!r} is not supported (supported: {', '.join(map(repr, allowed))})"
                )
        known = {f.name for f in fields(cls)}
        ignored = sorted(k for k in d if k not in known and k not in _FIXED_KEYS)
        if ignored:
            logger.debug("SchedulerConfig.from_dict ignores keys %s", ignored)
        return cls(**{k: d[k] for k in known if k in d})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_config(config: SchedulerConfig | Mapping[str, Any]) -> SchedulerConfig:
    if isinstance(config, SchedulerConfig):
        return config
    if isinstance(config, Mapping):
        return SchedulerConfig.from_dict(config)
    raise ValueError(f"config must be a SchedulerConfig or a dict, got {type(config).__name__}")


# --------------------------------------------------------------------------- schedules


def _linspace_f32(start: float, end: float, n: int) -> np.ndarray:
    """``torch.linspace(start, end, n, dtype=torch.float32)`` bit for bit.

    torch fills the first half forwards from ``start`` and the second half backwards from
    ``end`` in float32, and its CPU kernel compiles ``start + step * i`` to a fused
    multiply-add. The float64 products below are exact (24-bit x 11-bit), so each element is
    rounded to float32 once, as with an FMA.
    """
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(n - 1))
    i = np.arange(n, dtype=np.float64)
    half = n // 2
    head = i[:half] * step + np.float64(start32)
    tail = np.float64(end32) - (n - 1 - i[half:]) * step
    return np.concatenate([head, tail]).astype(np.float32)


def betas(config: SchedulerConfig | Mapping[str, Any]) -> np.ndarray:
    """Training betas, float32, as diffusers builds them (``linear`` or ``scaled_linear``)."""
    config = _as_config(config)
    n = config.num_train_timesteps
    if config.beta_schedule == "linear":
        return _linspace_f32(config.beta_start, config.beta_end, n)
    # scaled_linear: linear in sqrt(beta), the LDM / SD schedule.
    return _linspace_f32(config.beta_start**0.5, config.beta_end**0.5, n) ** 2


def alphas_cumprod(config: SchedulerConfig | Mapping[str, Any]) -> np.ndarray:
    """``prod_{s<=t} (1 - beta_s)`` (alpha-bar_t of DDPM), float32.

    torch's CPU cumprod accumulates float32 inputs in float64 and rounds each output, so we
    do the same; a float32 running product drifts by a few ulp over 1000 steps.
    """
    alphas = 1.0 - betas(config)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def _check_steps(config: SchedulerConfig, steps: Any) -> int:
    if not _is_int(steps):
        raise ValueError(f"steps must be an int, got {steps!r}")
    if not 1 <= steps <= config.num_train_timesteps:
        raise ValueError(f"steps must be in [1, num_train_timesteps={config.num_train_timesteps}], got {steps}")
    return int(steps)


def _check_name(name: Any) -> str:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    return name


def timesteps(name: SamplerName, config: SchedulerConfig | Mapping[str, Any], steps: int) -> np.ndarray:
    """The int64 timesteps of diffusers' ``set_timesteps(steps)`` for sampler ``name``.

    This is a faithful copy, quirks included: with "trailing" spacing and some step counts
    (61, 103, 121, ... for 1000 train steps) float rounding in ``np.arange`` yields
    ``steps + 1`` timesteps ending in -1, and "leading" plus ``steps_offset`` can reach
    ``num_train_timesteps`` (e.g. 1000 steps). The samplers refuse such schedules.
    """
    config = _as_config(config)
    name = _check_name(name)
    steps = _check_steps(config, steps)
    spacing = config.timestep_spacing or _DEFAULT_SPACING[name]
    n_train = config.num_train_timesteps

    if name == "dpmpp":
        # DPM-Solver++ spaces steps + 1 points and drops the last one (t=0), whose sigma is
        # replaced by 0 (final_sigmas_type "zero"). lambda_min_clipped=-inf keeps all of T.
        if spacing == "linspace":
            ts = np.linspace(0, n_train - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
        elif spacing == "leading":
            ratio = n_train // (steps + 1)
            ts = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64)
            ts += config.steps_offset
        else:  # trailing
            ts = np.arange(n_train, 0, -n_train / steps).round().copy().astype(np.int64)
            ts -= 1
        return ts

    # DDPM and DDIM share set_timesteps.
    if spacing == "linspace":
        ts = np.linspace(0, n_train - 1, steps).round()[::-1].copy().astype(np.int64)
    elif spacing == "leading":
        ratio = n_train // steps
        ts = (np.arange(0, steps) * ratio).round()[::-1].copy().astype(np.int64)
        ts += config.steps_offset
    else:  # trailing
        ts = np.round(np.arange(n_train, 0, -n_train / steps)).astype(np.int64)
        ts -= 1
    return ts


def _sampling_timesteps(name: SamplerName, config: SchedulerConfig, steps: int) -> np.ndarray:
    ts = timesteps(name, config, steps)
    bad = ts[(ts < 0) | (ts >= config.num_train_timesteps)]
    if bad.size:
        # diffusers would index alphas_cumprod with these (wrapping -1 to t=999, or failing).
        raise ValueError(
            f"{name} with timestep_spacing={config.timestep_spacing or _DEFAULT_SPACING[name]!r}, "
            f"steps_offset={config.steps_offset} and steps={steps} gives timesteps {bad.tolist()} outside "
            f"[0, {config.num_train_timesteps}); choose another step count or spacing"
        )
    return ts


def _predict_x0(config: SchedulerConfig, out: np.ndarray, x: np.ndarray, alpha, sigma) -> np.ndarray:
    """x0 from the model output at x_t = alpha * x0 + sigma * eps (alpha, sigma float32)."""
    if config.prediction_type == "epsilon":
        return (x - sigma * out) / alpha
    if config.prediction_type == "v_prediction":  # v = alpha * eps - sigma * x0 (Imagen Video, 2.4)
        return alpha * x - sigma * out
    return out  # "sample"


def _predict_eps(config: SchedulerConfig, out: np.ndarray, x: np.ndarray, x0: np.ndarray, alpha, sigma):
    if config.prediction_type == "epsilon":
        return out
    if config.prediction_type == "v_prediction":
        return alpha * out + sigma * x
    return (x - alpha * x0) / sigma


def _clip(config: SchedulerConfig, x0: np.ndarray) -> np.ndarray:
    if config.clip_sample:
        r = config.clip_sample_range
        return np.clip(x0, np.float32(-r), np.float32(r))
    return x0


def _start(x: np.ndarray) -> np.ndarray:
    # A private float32 copy: the caller's array is never handed on or written.
    x = np.array(x, dtype=np.float32, copy=True)
    if x.ndim < 1:
        raise ValueError(f"x must be an array (B, C, H, W), got shape {x.shape}")
    return x


def _model(denoise: Denoiser, x: np.ndarray, t: np.integer) -> np.ndarray:
    out = np.asarray(denoise(x, int(t)))
    if out.shape != x.shape:
        raise ValueError(f"denoiser returned shape {out.shape} for input shape {x.shape} at t={int(t)}")
    return out.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- samplers


def sample_ddpm(
    denoise: Denoiser,
    x: np.ndarray,
    config: SchedulerConfig | Mapping[str, Any],
    steps: int,
    rng: np.random.Generator,
    callback: Callback = None,
) -> np.ndarray:
    """Ancestral DDPM sampling (Ho et al. 2020), variance "fixed_small".

    Each step takes the posterior mean of q(x_{t'} | x_t, x0) (DDPM eq. 7), with t' the next
    timestep of the schedule (alpha-bar = 1 after the last), and adds ``sqrt(beta~) * z`` with
    beta~ = (1 - abar_t') / (1 - abar_t) * beta_t. z is drawn from ``rng`` only where t > 0,
    exactly where diffusers' DDPMScheduler.step draws it.
    """
    config = _as_config(config)
    if not callable(getattr(rng, "standard_normal", None)):  # a Generator, or one per image (runtime.pipeline)
        raise ValueError(f"sample_ddpm needs an np.random.Generator, got {type(rng).__name__}")
    ts = _sampling_timesteps("ddpm", config, _check_steps(config, steps))
    ac = alphas_cumprod(config)
    a_t = ac[ts]
    a_prev = np.append(ac[ts[1:]], np.float32(1.0))
    b_t, b_prev = 1 - a_t, 1 - a_prev
    alpha = a_t / a_prev  # per-jump alpha_t and beta_t: the schedule may skip timesteps
    beta = 1 - alpha
    c_x0 = np.sqrt(a_prev) * beta / b_t
    c_xt = np.sqrt(alpha) * b_prev / b_t
    std = np.sqrt(np.maximum(b_prev / b_t * beta, np.float32(1e-20)))
    sqrt_a, sqrt_b = np.sqrt(a_t), np.sqrt(b_t)
    logger.debug("ddpm: %d steps, t=%s", len(ts), ts.tolist())

    x = _start(x)
    for i, t in enumerate(ts):
        x0 = _clip(config, _predict_x0(config, _model(denoise, x, t), x, sqrt_a[i], sqrt_b[i]))
        x = c_x0[i] * x0 + c_xt[i] * x
        if t > 0:
            x = x + std[i] * rng.standard_normal(x.shape, dtype=np.float32)
        if callback is not None:
            callback(i, int(t), x)
    return x


def sample_ddim(
    denoise: Denoiser,
    x: np.ndarray,
    config: SchedulerConfig | Mapping[str, Any],
    steps: int,
    rng: np.random.Generator | None = None,
    callback: Callback = None,
) -> np.ndarray:
    """Deterministic DDIM (Song et al. 2021, eq. 12 with sigma_t = 0, i.e. eta = 0).

    x_prev = sqrt(abar_prev) * x0 + sqrt(1 - abar_prev) * eps. As in diffusers, the target
    timestep is ``t - T // steps`` rather than the next entry of the schedule (the two differ
    for "trailing" / "linspace" spacing), and below 0 it is ``abar_0`` unless
    ``set_alpha_to_one``. Clipping x0 does not feed back into eps. ``rng`` is unused.
    """
    config = _as_config(config)
    steps = _check_steps(config, steps)
    ts = _sampling_timesteps("ddim", config, steps)
    ac = alphas_cumprod(config)
    final = np.float32(1.0) if config.set_alpha_to_one else ac[0]
    prev = ts - config.num_train_timesteps // steps
    a_t = ac[ts]
    a_prev = np.where(prev >= 0, ac[np.maximum(prev, 0)], final).astype(np.float32)
    sqrt_a, sqrt_b = np.sqrt(a_t), np.sqrt(1 - a_t)
    sqrt_a_prev, sqrt_b_prev = np.sqrt(a_prev), np.sqrt(1 - a_prev)
    logger.debug("ddim: %d steps, t=%s", len(ts), ts.tolist())

    x = _start(x)
    for i, t in enumerate(ts):
        out = _model(denoise, x, t)
        x0 = _predict_x0(config, out, x, sqrt_a[i], sqrt_b[i])
        eps = _predict_eps(config, out, x, x0, sqrt_a[i], sqrt_b[i])
        x = sqrt_a_prev[i] * _clip(config, x0) + sqrt_b_prev[i] * eps
        if callback is not None:
            callback(i, int(t), x)
    return x


def _dpmpp_sigmas(config: SchedulerConfig, ts: np.ndarray) -> np.ndarray:
    """VE sigmas sqrt((1 - abar) / abar) at ``ts`` and a final 0 (final_sigmas_type "zero")."""
    ac = alphas_cumprod(config)
    return np.append(np.sqrt((1 - ac) / ac)[ts], np.float32(0.0))


def sample_dpmpp_2m(
    denoise: Denoiser,
    x: np.ndarray,
    config: SchedulerConfig | Mapping[str, Any],
    steps: int,
    rng: np.random.Generator | None = None,
    callback: Callback = None,
) -> np.ndarray:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), data prediction, midpoint.

    With lambda = log(alpha / sigma) and h = lambda_next - lambda:
    x_next = sigma_next / sigma * x - alpha_next * (e^-h - 1) * (D0 + D1 / 2), D0 = x0 and
    D1 = (x0 - x0_prev) / r, r = h_prev / h. The first step has no history and the last one goes
    to sigma = 0, so both are first order (= DDIM), as diffusers does. ``rng`` is unused.
    diffusers' DPMSolverMultistepScheduler has no ``clip_sample``; like it, we do not clip, but
    say so in the log.
    """
    config = _as_config(config)
    if config.clip_sample:
        logger.warning("dpmpp: clip_sample=True has no effect (DPMSolverMultistepScheduler never clips x0)")
    ts = _sampling_timesteps("dpmpp", config, _check_steps(config, steps))
    sig = _dpmpp_sigmas(config, ts)
    alpha = 1 / np.sqrt(sig**2 + 1)  # VP alpha_t, sigma_t recovered from the VE sigma
    sigma = sig * alpha
    with np.errstate(divide="ignore"):
        # sigma = 0 at the end gives lambda = +inf, h = inf, e^-h = 0: the last step lands on x0.
        lam = np.log(alpha) - np.log(sigma)
        h = lam[1:] - lam[:-1]
        ratio = sigma[1:] / sigma[:-1]
        phi = alpha[1:] * (np.exp(-h) - 1)
        inv_r = 1 / (h[:-1] / h[1:])  # for step i >= 1: h_prev / h = h[i-1] / h[i]
    logger.debug("dpmpp_2m: %d steps, t=%s", len(ts), ts.tolist())

    x = _start(x)
    x0_prev = None
    for i, t in enumerate(ts):
        x0 = _predict_x0(config, _model(denoise, x, t), x, alpha[i], sigma[i])
        if x0_prev is None or i == len(ts) - 1:
            x = ratio[i] * x - phi[i] * x0
        else:
            d1 = inv_r[i - 1] * (x0 - x0_prev)
            x = ratio[i] * x - phi[i] * x0 - (np.float32(0.5) * phi[i]) * d1
        x0_prev = x0
        if callback is not None:
            callback(i, int(t), x)
    return x


_SAMPLER_FNS: dict[str, Callable[..., np.ndarray]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp": sample_dpmpp_2m,
}


def sample(
    name: SamplerName,
    denoise: Denoiser,
    x: np.ndarray,
    config: SchedulerConfig | Mapping[str, Any],
    steps: int,
    rng: np.random.Generator | None,
    callback: Callback = None,
) -> np.ndarray:
    """Run sampler ``name`` ("ddpm", "ddim" or "dpmpp") from latent ``x`` (init_noise_sigma 1)."""
    fn = _SAMPLER_FNS[_check_name(name)]  # _check_name raises ValueError listing SAMPLERS
    return fn(denoise, x, config, steps, rng, callback)
