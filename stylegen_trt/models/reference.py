"""PyTorch eager reference of the style-guided pipeline: the oracle for tests and the baseline for `bench`.

It runs the torch modules with diffusers' own schedulers (``DDPMScheduler``,
``DDIMScheduler``, ``DPMSolverMultistepScheduler`` from the base model's config), so it
checks the ONNX graphs and the NumPy runtime independently. DDPM's per-step noise is
drawn from the same NumPy Generator the runtime uses, so both consume one noise stream.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from stylegen_trt.models.loaders import BaseModel
from stylegen_trt.models.style_branch import ResidualUNet, StyleBranch, resize_style_map
from stylegen_trt.models.style_encoder import StyleEncoder

SCHEDULER_CLASSES = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpmpp": "DPMSolverMultistepScheduler"}


def diffusers_scheduler(name: str, config: dict):
    import diffusers

    return getattr(diffusers, SCHEDULER_CLASSES[name]).from_config(config)


@contextmanager
def numpy_ddpm_noise(rng: np.random.Generator) -> Iterator[None]:
    """Make diffusers' DDPM step draw its variance noise from ``rng`` (float32 standard normal)."""
    from diffusers.schedulers import scheduling_ddpm

    original = scheduling_ddpm.randn_tensor

    def from_rng(shape, generator=None, device=None, dtype=None, **_):
        noise = torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))
        return noise.to(device=device or "cpu", dtype=dtype or torch.float32)

    scheduling_ddpm.randn_tensor = from_rng
    try:
        yield
    finally:
        scheduling_ddpm.randn_tensor = original


@dataclass
class TorchReference:
    base: BaseModel
    style_encoder: StyleEncoder
    branch: StyleBranch
    device: str = "cpu"  # the modules must already be there (the bench's GPU side: cuda, float16)
    dtype: torch.dtype = torch.float32
    # (name, scheduler config) -> a diffusers scheduler; the bench passes one whose step it times
    scheduler_factory: Callable[[str, dict], object] = diffusers_scheduler

    def __post_init__(self):
        self.unet = ResidualUNet(self.base.unet).eval()

    def _tensor(self, value) -> torch.Tensor:
        tensor = torch.from_numpy(value) if isinstance(value, np.ndarray) else torch.as_tensor(value)
        return tensor.to(self.device, self.dtype)

    @torch.no_grad()
    def style_map(self, style_images: list[np.ndarray], weights: list[float]) -> torch.Tensor:
        """S = sum w_i S_i from preprocessed (3, size, size) [0, 1] images."""
        maps = [self.style_encoder(self._tensor(img)[None]) for img in style_images]
        return sum(w * s for w, s in zip(weights, maps))

    @torch.no_grad()
    def generate(self, prompt: str, latents: np.ndarray, *, negative: str = "", style_images=(), weights=None,
                 style_scale: float = 1.0, window=(0.0, 1.0), scheduler: str = "ddpm", steps: int = 50,
                 guidance: float = 7.5, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n, H, W, 3) uint8 from x_T = ``latents`` (n, C, h, w)."""
        n, _, h, w = latents.shape
        sched = self.scheduler_factory(scheduler, self.base.scheduler_config)
        sched.set_timesteps(steps)
        ts = sched.timesteps
        cfg = guidance > 1.0
        cond = self.base.encode_prompts([prompt]).to(self.dtype).repeat(n, 1, 1)
        context = torch.cat([self.base.encode_prompts([negative]).to(self.dtype).repeat(n, 1, 1), cond]) if cfg else cond
        zeros = None
        style = None
        if style_images:
            weights = weights or [1.0 / len(style_images)] * len(style_images)
            style = resize_style_map(self.style_map(list(style_images), list(weights)), *self.branch.style_map_size(h, w))
            style = style.to(self.device, self.dtype)
        active = {int(t) for i, t in enumerate(ts) if window[0] * len(ts) <= i < window[1] * len(ts)}
        x = self._tensor(latents.astype(np.float32)) * sched.init_noise_sigma
        with numpy_ddpm_noise(rng or np.random.default_rng(0)):
            for t in ts:
                t_in = self._tensor([float(t)])
                if style is not None and int(t) in active:
                    residuals = self.branch(style, t_in, self._tensor([style_scale]))
                else:
                    if zeros is None:
                        probe = self.branch(self._tensor(np.zeros((1, 1, *self.branch.style_map_size(h, w)), np.float32)),
                                            t_in, self._tensor([0.0]))
                        zeros = tuple(torch.zeros_like(r) for r in probe)
                    residuals = zeros
                x_in = torch.cat([x, x]) if cfg else x
                eps = self.unet(x_in, t_in, context, *residuals)
                if cfg:
                    eps_u, eps_c = eps.chunk(2)
                    eps = eps_u + guidance * (eps_c - eps_u)
                x = sched.step(eps, t, x).prev_sample
        image = self.base.vae.decode(x / self.base.latent_scale).sample
        image = (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return (image * 255).round().astype(np.uint8)
