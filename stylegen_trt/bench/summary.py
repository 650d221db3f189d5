"""Pure arithmetic of the benchmark: medians, ratios, image agreement, targets. No timing here."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Iterable, Literal, Sequence

import numpy as np

# ORT and torch differ by ~1e-5 per fp32 graph call (kernel summation order); through the
# denoising loop and the VAE that moves a uint8 pixel by a unit or two (as in tests/test_runtime.py).
MAX_PIXEL_DIFF = 2

# The project's goals for the runtime on CPU, as ratios measured in one run (benchmarks/README.md).
SMALL_SPEEDUP = 2.0  # demo/small/tiny: end-to-end, runtime vs PyTorch eager
SD15_SPEEDUP = 1.15  # SD-1.5-size: end-to-end
SD15_GEMM_SHARE = 0.85  # SD-1.5-size: UNet step's achieved FLOP/s over the measured fp32 GEMM rate
COLD_START_SPEEDUP = 4.0
READY_RATIO = 0.25  # a fresh process until its models are loaded (engines compiled or imported), runtime / torch
PEAK_RSS_RATIO = 0.5
STYLE_OVERHEAD_RATIO = 1.15  # style-guided / plain at CFG batch 2 (n=1 with guidance)
# Against optimum-intel's OVStableDiffusionPipeline (what CPU users pick instead), per image, same work:
OPTIMUM_STYLED_RATIO = 1.15  # the runtime with the style branch / optimum-intel's plain SD
OPTIMUM_PLAIN_RATIO = 1.0  # the runtime without a style / optimum-intel


def median(values: Iterable[float]) -> float:
    values = list(values)
    return float(statistics.median(values)) if values else float("nan")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or not denominator > 0:
        return None
    return float(numerator) / float(denominator)


def speedup(runtime_s: float | None, torch_s: float | None) -> float | None:
    """How many times faster the runtime is than the reference: torch seconds / runtime seconds."""
    return ratio(torch_s, runtime_s)


@dataclass(frozen=True)
class Agreement:
    max_abs_diff: int
    mean_abs_diff: float
    tolerance: int
    agree: bool
    shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self) | {"shape": list(self.shape),
                               "rule": f"uint8 images, max |runtime - torch| <= {self.tolerance}"}


def compare_images(a: np.ndarray, b: np.ndarray, tolerance: int = MAX_PIXEL_DIFF) -> Agreement:
    """Agreement of two uint8 image batches; different shapes never agree."""
    if a.shape != b.shape:
        return Agreement(255, 255.0, tolerance, False, tuple(a.shape))
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    worst = int(diff.max()) if diff.size else 0
    return Agreement(worst, float(diff.mean()) if diff.size else 0.0, tolerance, worst <= tolerance, tuple(a.shape))


def worst_agreement(agreements: Sequence[Agreement]) -> Agreement:
    return max(agreements, key=lambda g: (not g.agree, g.max_abs_diff, g.mean_abs_diff))


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    threshold: float
    op: Literal[">=", "<="]
    met: bool | None  # None: not measured
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def check(name: str, value: float | None, op: Literal[">=", "<="], threshold: float, note: str = "",
          valid: bool = True) -> Target:
    """A target is met only if measured, on the right side of the threshold, and ``valid`` (outputs agree)."""
    if value is None:
        return Target(name, None, threshold, op, None, note or "not measured")
    ok = value >= threshold if op == ">=" else value <= threshold
    if not valid:
        return Target(name, value, threshold, op, False, "outputs disagree: a faster wrong answer does not count")
    return Target(name, value, threshold, op, ok, note)


def ready_ratio(cold: dict) -> float | None:
    """Median seconds from a fresh process's start until its models are loaded, runtime over torch."""
    def ready(side: str) -> float | None:
        values = [r["ready_s"] for r in cold.get(side) or [] if isinstance(r, dict) and r.get("ready_s") is not None]
        return median(values) if values else None

    return ratio(ready("runtime"), ready("torch"))


def profile_of(config: str, native_size: int) -> Literal["small", "sd15"]:
    """Which targets apply: SD-1.5-size ones for sd15 and for user models at >= 512 px, else demo/small's."""
    if config == "sd15" or (config == "custom" and native_size >= 512):
        return "sd15"
    return "small"


def targets(results: dict) -> list[Target]:
    """Every one of the project's goals against ``results`` (the bench's JSON dict); missing sections -> not measured."""
    profile = results.get("targets_profile", "small")
    e2e = results.get("end_to_end") or {}
    agree = bool((e2e.get("agreement") or {}).get("agree", False))
    out = []
    if profile == "sd15":
        out.append(check("end-to-end speedup (SD-1.5-size)", e2e.get("speedup"), ">=", SD15_SPEEDUP, valid=agree))
        share = (results.get("unet") or {}).get("gemm_share")
        out.append(check("UNet step / measured GEMM rate", share, ">=", SD15_GEMM_SHARE, valid=agree))
    else:
        out.append(check("end-to-end speedup (demo/small)", e2e.get("speedup"), ">=", SMALL_SPEEDUP, valid=agree))
    cold = results.get("cold_start") or {}
    cold_agree = bool((cold.get("agreement") or {}).get("agree", agree))
    out.append(check("cold-start speedup", cold.get("speedup"), ">=", COLD_START_SPEEDUP, valid=cold_agree))
    out.append(check("time to ready runtime / torch (fresh process)", ready_ratio(cold), "<=", READY_RATIO,
                     valid=cold_agree))
    out.append(check("peak RSS runtime / torch", (results.get("peak_rss") or {}).get("ratio"), "<=", PEAK_RSS_RATIO))
    out.append(check("style-guided / plain (CFG batch 2)", (results.get("style_overhead") or {}).get("ratio"),
                     "<=", STYLE_OVERHEAD_RATIO))
    optimum = results.get("optimum")
    if optimum:
        valid = bool((optimum.get("agreement") or {}).get("agree", True))
        note = optimum.get("reason", "") if optimum.get("skipped") else ""
        out.append(check("styled runtime / optimum-intel plain, per image", optimum.get("styled_ratio"), "<=",
                         OPTIMUM_STYLED_RATIO, note=note, valid=valid))
        out.append(check("plain runtime / optimum-intel plain, per image", optimum.get("plain_ratio"), "<=",
                         OPTIMUM_PLAIN_RATIO, note=note, valid=valid))
    return out
