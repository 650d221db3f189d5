"""The runtime side of the benchmark: StylePipeline on ONNX Runtime or TensorRT. Must not import torch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from stylegen_trt.bench.workload import Run, Workload, stage_table
from stylegen_trt.engines.base import EngineOptions, StaticShapes
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline, StyleRequest

log = logging.getLogger(__name__)


def request_of(work: Workload) -> GenerationRequest:
    """The pipeline request for ``work``, with its x_T (the reference gets the same)."""
    style = StyleRequest((work.style,)) if work.style is not None else StyleRequest()
    return GenerationRequest(work.prompt, negative=work.negative, style=style, scheduler=work.scheduler,
                             steps=work.steps, guidance=work.guidance, seed=work.seed, n=work.n,
                             height=work.size, width=work.size,
                             latents=work.latents())


class RuntimeSide:
    """An open pipeline; ``run`` times one generation and books its stages."""

    def __init__(self, bundle: Path, threads: int, memory: str = "fast", backend: str = "ort", device: str = "auto",
                 precision: str = "auto", static: bool = False, cuda_graph: bool = False, size: int | None = None):
        b = open_bundle(bundle)
        shapes = None
        if static or cuda_graph:  # static engines at the run's size, 1 image
            latent = (size or b.manifest["sizes"]["native"]) // b.manifest["latent"]["vae_scale_factor"]
            shapes = StaticShapes(latent, latent, 1)
        options = EngineOptions(backend=backend, device=device, threads=threads, memory=memory, precision=precision,
                                static=shapes, cuda_graph=cuda_graph)
        # No on-disk S cache: with caches cleared, every run computes S with the style encoder.
        self.pipe = StylePipeline(b, options, style_cache_dir=False)
        self.native_size = self.pipe.bundle.manifest["sizes"]["native"]
        self.device = self.pipe.engines["unet"].engine.device  # "cpu", "cuda", "cuda:0"

    def run(self, work: Workload, cold: bool = True) -> Run:
        """One generation; ``cold`` drops the S and prompt caches first (end-to-end timing)."""
        if cold:
            self.pipe.clear_caches()  # the reference re-encodes S and the prompt on every call
        request = request_of(work)
        start = time.perf_counter()
        result = self.pipe.generate(request)
        seconds = time.perf_counter() - start
        times = result.times
        stages = stage_table(times.seconds, times.calls, seconds, in_steps=("unet", "style_branch"))
        return Run(result.images, seconds, stages)

    def close(self) -> None:
        self.pipe.close()
