"""What both sides of the benchmark compute, and one timed run's result. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

# Canonical stage order of the breakdown. "scheduler" is the sampler's own arithmetic per step
# (step time minus the UNet and branch calls in it); "other" is the rest of the wall time
# (reading and resizing the style image, blending S, CFG arithmetic, array copies, glue).
STAGES = ("tokenize", "text_encoder", "style_encoder", "style_branch", "unet", "scheduler", "vae_decoder", "other")


@dataclass(frozen=True)
class Workload:
    prompt: str
    negative: str
    style: Path | None  # one style image, or None for plain generation
    scheduler: str
    steps: int
    guidance: float
    seed: int
    size: int  # square images, pixels
    n: int = 1
    latent_factor: int = 8  # the VAE's downsampling (the bundle's latent.vae_scale_factor)

    def latents(self, channels: int = 4) -> np.ndarray:
        """x_T for both sides: seeded apart from the sampler's own noise stream (which is ``seed``)."""
        rng = np.random.default_rng((self.seed, 0x5EED))
        side = self.size // self.latent_factor
        return rng.standard_normal((self.n, channels, side, side), dtype=np.float32)

    def but(self, **changes) -> "Workload":
        return replace(self, **changes)


@dataclass(frozen=True)
class Run:
    images: np.ndarray  # (n, H, W, 3) uint8
    seconds: float  # wall time of the whole generation
    stages: dict[str, dict[str, float]]  # stage -> {"seconds": s, "calls": c}


def stage_table(seconds: dict[str, float], calls: dict[str, int], total: float,
                in_steps: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    """Per-stage seconds and calls in STAGES order; "other" is ``total`` minus every timed stage.

    ``seconds["step"]`` (the runtime's per-step wall time) includes the UNet and branch calls;
    when present, "scheduler" is what remains of it. ``in_steps`` names the stages inside it.
    """
    table = {name: {"seconds": float(seconds.get(name, 0.0)), "calls": int(calls.get(name, 0))}
             for name in STAGES if name not in ("scheduler", "other")}
    if "step" in seconds:
        inner = sum(table[name]["seconds"] for name in in_steps)
        table["scheduler"] = {"seconds": max(float(seconds["step"]) - inner, 0.0), "calls": int(calls.get("step", 0))}
    else:
        table["scheduler"] = {"seconds": float(seconds.get("scheduler", 0.0)), "calls": int(calls.get("scheduler", 0))}
    timed = sum(v["seconds"] for v in table.values())
    table["other"] = {"seconds": max(total - timed, 0.0), "calls": 0}
    return {name: table[name] for name in STAGES}
