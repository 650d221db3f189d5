"""The one engine protocol every backend honours, and the options that choose a backend.

An engine runs one graph: named NumPy inputs -> named NumPy outputs (fresh arrays the
caller owns). It is opened by ``open_engine`` and closed explicitly (or as a context
manager). Call sites never branch on the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Protocol, runtime_checkable

import numpy as np

from stylegen_trt.spec import GraphSpec, bind_axes

Backend = Literal["ort", "trt"]
BACKENDS: tuple[Backend, ...] = ("ort", "trt")
Device = Literal["auto", "cpu", "cuda"]
OptLevel = Literal["disable", "basic", "extended", "all"]
# fast: the backend keeps what it allocated for reuse (ORT's CPU arena); lean: it frees per call.
# On the small config lean measured 510 vs 854 MiB peak at 13% more time (benchmarks/analysis.md).
Memory = Literal["fast", "lean"]
# auto: the backend's natural precision - fp16 engines on TensorRT, the fp32 graphs on ONNX Runtime
Precision = Literal["auto", "fp32", "fp16"]
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


@dataclass(frozen=True)
class EngineOptions:
    backend: Backend = "ort"
    device: Device = "auto"
    threads: int | None = None  # intra-op threads; None lets the backend choose (all cores)
    opt_level: OptLevel = "all"
    cache: bool = True  # keep optimised models / engines under <bundle>/engines/
    memory: Memory = "fast"
    precision: Precision = "auto"


@runtime_checkable
class Engine(Protocol):
    spec: GraphSpec
    device: str  # what it actually runs on, e.g. "cpu", "cuda:0"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc) -> None: ...


def check_inputs(spec: GraphSpec, inputs: Mapping[str, np.ndarray]) -> None:
    """Raise ValueError unless ``inputs`` are exactly the graph's inputs with the right dtypes and shapes."""
    if set(inputs) != set(spec.input_names):
        missing = sorted(set(spec.input_names) - set(inputs))
        extra = sorted(set(inputs) - set(spec.input_names))
        raise ValueError(f"{spec.name}: missing inputs {missing}, unexpected inputs {extra}")
    axes: dict[str, int] = {}
    for t in spec.inputs:
        array = inputs[t.name]
        if array.dtype != NUMPY_DTYPES[t.dtype]:
            raise ValueError(f"{spec.name}: {t.name} is {array.dtype}, expected {t.dtype}")
        error = bind_axes(t, array.shape, axes)
        if error:
            raise ValueError(f"{spec.name}: {error}")
    for name, value in axes.items():
        r = spec.axes.get(name)
        if r is not None and not r.min <= value <= r.max:
            raise ValueError(f"{spec.name}: axis {name}={value} is outside [{r.min}, {r.max}]")


def open_engine(onnx_path: Path, spec: GraphSpec, onnx_sha256: str, cache_root: Path | None,
                options: EngineOptions) -> Engine:
    """Open ``onnx_path`` on the backend ``options`` names; ``cache_root`` is <bundle>/engines or None."""
    cache_root = cache_root if options.cache else None
    if options.backend == "ort":
        from stylegen_trt.engines.ort import OrtEngine

        return OrtEngine.open(onnx_path, spec, onnx_sha256, cache_root, options)
    if options.backend == "trt":
        from stylegen_trt.engines.trt import TrtEngine

        return TrtEngine.open(onnx_path, spec, onnx_sha256, cache_root, options)
    raise ValueError(f"unknown backend {options.backend!r}: choose one of {', '.join(BACKENDS)}")


def cache_fields(onnx_sha256: str, spec: GraphSpec, options: EngineOptions) -> dict:
    """The fields whose hash keys this backend's cache entry for a graph (see engines/cache.py)."""
    if options.backend == "trt":
        from stylegen_trt.engines import trt as backend
    else:
        from stylegen_trt.engines import ort as backend
    return backend.cache_fields(onnx_sha256, spec, options)
