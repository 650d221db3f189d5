"""The `stylegen` model's work, free of Triton: a batch of requests (dicts of NumPy inputs, as the
model's contract names them) -> one PNG or one UserError each, through the same request building
and pipeline as `stylegen-trt generate`. Engines load once, in the constructor, and stay warm;
S, prompt encodings and style residuals are cached across requests.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

import numpy as np

from stylegen_trt.engines.base import EngineOptions
from stylegen_trt.errors import UserError
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.images import png_bytes
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline
from stylegen_trt.runtime.requests import build_request, demo_bundle_path
from stylegen_trt.serve.contract import ServeSettings

log = logging.getLogger(__name__)


def _text(inputs: Mapping[str, np.ndarray], name: str) -> str | None:
    if name not in inputs:
        return None
    value = inputs[name].reshape(-1)[0]
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"input {name!r} is not UTF-8 text") from None
    return str(value)


def _number(inputs: Mapping[str, np.ndarray], name: str, kind: type) -> float | int | None:
    if name not in inputs:
        return None
    value = inputs[name].reshape(-1)
    if value.size != 1:
        raise UserError(f"input {name!r} must hold one value, got {value.size}")
    if kind is int and not np.issubdtype(value.dtype, np.integer):
        raise UserError(f"input {name!r} must be an integer, got {value.dtype}")
    return kind(value[0])


def decode_request(inputs: Mapping[str, np.ndarray], manifest: dict) -> GenerationRequest:
    """A GenerationRequest from one request's inputs (no batch dimension); the bundle's defaults fill
    what is absent, as for `generate`. Every problem is a one-line UserError."""
    prompt = _text(inputs, "prompt")
    if prompt is None:
        raise UserError("missing input 'prompt': send the prompt as BYTES [1]")
    styles = tuple(bytes(v) for v in inputs["style_image"].reshape(-1)) if "style_image" in inputs else ()
    weights = tuple(float(w) for w in inputs["style_weight"].reshape(-1)) if "style_weight" in inputs else None
    return build_request(
        manifest, prompt, negative=_text(inputs, "negative") or "", styles=styles, style_weights=weights,
        style_scale=_number(inputs, "style_scale", float), scheduler=_text(inputs, "scheduler"),
        steps=_number(inputs, "steps", int), guidance=_number(inputs, "guidance", float),
        seed=_number(inputs, "seed", int), height=_number(inputs, "height", int), width=_number(inputs, "width", int))


class StylegenHandler:
    """One model instance: the pipeline over the bundle, opened once."""

    def __init__(self, settings: ServeSettings):
        bundle = open_bundle(settings.bundle or demo_bundle_path())
        options = EngineOptions(backend=settings.backend, device=settings.device, threads=settings.threads,
                                precision=settings.precision)
        start = time.perf_counter()
        self.pipe = StylePipeline(bundle, options, residual_cache_bytes=settings.residual_cache_mb * 2**20)
        log.info("bundle %s open on %s in %.1f s", bundle.path, settings.backend, time.perf_counter() - start)

    def infer(self, batch: list[Mapping[str, np.ndarray]]) -> list[bytes | Exception]:
        answers: list[bytes | Exception | None] = [None] * len(batch)
        requests, where = [], []
        for i, inputs in enumerate(batch):
            try:
                requests.append(decode_request(inputs, self.pipe.bundle.manifest))
                where.append(i)
            except UserError as exc:
                answers[i] = exc
        start = time.perf_counter()
        for i, result in zip(where, self.pipe.generate_many(requests)):
            answers[i] = result if isinstance(result, Exception) else png_bytes(result.images[0])
        if requests:
            cache = self.pipe.residual_cache
            refused = sum(isinstance(a, Exception) for a in answers)
            log.info("%d requests (%d refused) in %.2f s, %d UNet calls%s", len(batch), refused,
                     time.perf_counter() - start, self.pipe.times.calls.get("unet", 0),
                     f", residual cache {cache.hits} hits / {cache.misses} misses so far" if cache else "")
        return answers

    def close(self) -> None:
        self.pipe.close()
