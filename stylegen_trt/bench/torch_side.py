"""The PyTorch side of the benchmark: ``TorchReference`` (diffusers modules and schedulers), eager, fp32.

Its stages are timed by thin proxies around the modules it calls (tokenizer, text encoder,
style encoder, branch, UNet, VAE decode, the scheduler's ``step``), so the reference's code runs
unchanged; the proxies add a few microseconds per call.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import numpy as np
import torch

from stylegen_trt.bench.configs import BenchModel
from stylegen_trt.bench.workload import Run, Workload, stage_table
from stylegen_trt.models import loaders
from stylegen_trt.models.reference import TorchReference, diffusers_scheduler
from stylegen_trt.runtime.images import read_image_file, resize_rgb01
from stylegen_trt.runtime.pipeline import StageTimes

log = logging.getLogger(__name__)

class TimedCall:
    """Calls ``target`` and books the wall time under ``stage``; other attributes pass through."""

    def __init__(self, target, stage: str, times: Callable[[], StageTimes], sync: Callable[[], None] | None = None):
        self._target, self._stage, self._times, self._sync = target, stage, times, sync

    def __call__(self, *args, **kwargs):
        # on CUDA kernels run asynchronously: without a sync on both sides the stage would book only the launches
        if self._sync:
            self._sync()
        start = time.perf_counter()
        out = self._target(*args, **kwargs)
        if self._sync:
            self._sync()
        self._times().add(self._stage, time.perf_counter() - start)
        return out

    def __getattr__(self, name):
        return getattr(self._target, name)


class TimedMethod:
    """Proxy whose ``method`` is timed under ``stage``; every other attribute is the target's."""

    def __init__(self, target, method: str, stage: str, times: Callable[[], StageTimes],
                 sync: Callable[[], None] | None = None):
        self._target = target
        self._timed = {method: TimedCall(getattr(target, method), stage, times, sync)}

    def __getattr__(self, name):
        return self._timed.get(name) or getattr(self._target, name)


def load_torch_models(model: BenchModel, seed: int = 0):
    """(base, style encoder, branch) from the model's PyTorch files."""
    base = loaders.load_base(model.base)
    encoder = loaders.load_style_encoder(model.vgg)
    branch = loaders.load_branch(base, model.branch, seed)
    return base, encoder, branch


class TorchSide:
    """The reference, eager; ``device``/``dtype``: where it runs (the bench runs it on CUDA in fp16 when the
    runtime's backend is on a GPU - written for GPU machines, not run on this project's)."""

    def __init__(self, model: BenchModel, threads: int, style_image_size: int, device: str = "cpu",
                 dtype: str = "float32"):
        torch.set_num_threads(threads)
        base, encoder, branch = load_torch_models(model)
        torch_dtype = getattr(torch, dtype)
        if device != "cpu" or torch_dtype != torch.float32:
            if device.startswith("cuda") and not torch.cuda.is_available():
                from stylegen_trt.errors import UserError

                raise UserError("the PyTorch reference on CUDA needs a torch built with CUDA and a visible GPU")
            for module in (base.text_encoder, base.unet, base.vae, encoder, branch):
                module.to(device, torch_dtype)
        self.device, self.dtype = device, torch_dtype
        self._sync = torch.cuda.synchronize if device.startswith("cuda") else None
        sync = self._sync
        self.times = StageTimes()
        self.style_image_size = style_image_size

        def times() -> StageTimes:
            return self.times

        timed_base = dataclasses.replace(
            base, tokenizer=TimedCall(base.tokenizer, "tokenize", times),
            text_encoder=TimedCall(base.text_encoder, "text_encoder", times, sync),
            vae=TimedMethod(base.vae, "decode", "vae_decoder", times, sync))
        # TorchReference wraps base.unet (left untimed here) in a ResidualUNet; that one is timed below.
        self.reference = TorchReference(timed_base, TimedCall(encoder, "style_encoder", times, sync),
                                        TimedCall(branch, "style_branch", times, sync), device=device, dtype=torch_dtype,
                                        scheduler_factory=self._timed_scheduler)
        self.reference.unet = TimedCall(self.reference.unet, "unet", times, sync)
        self._times = times

    def _timed_scheduler(self, name: str, config: dict):
        return TimedMethod(diffusers_scheduler(name, config), "step", "scheduler", self._times, self._sync)

    def run(self, work: Workload) -> Run:
        self.times = StageTimes()
        latents = work.latents()
        start = time.perf_counter()
        pixels = [resize_rgb01(read_image_file(work.style)[0], self.style_image_size)] if work.style else []
        images = self.reference.generate(
            work.prompt, latents, negative=work.negative, style_images=pixels, scheduler=work.scheduler,
            steps=work.steps, guidance=work.guidance, rng=np.random.default_rng(work.seed))
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return Run(images, seconds, stage_table(self.times.seconds, self.times.calls, seconds))
