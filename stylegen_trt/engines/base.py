"""The one engine protocol every backend honours, the options that choose a backend, and the small
base class backends share.

An engine runs one graph: named NumPy inputs -> named NumPy outputs (fresh arrays the
caller owns). It is opened by ``stylegen_trt.engines.open_engine`` (the registry of backends) and
closed explicitly (or as a context manager). Call sites never branch on the backend.

This module imports no backend: ``ort.py`` and ``trt.py`` import it, the registry in
``engines/__init__.py`` imports them lazily, so engines/ has no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Mapping, Protocol, runtime_checkable

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


def graph_files(onnx_path: Path, files: str | Mapping[str, str]) -> dict[str, str]:
    """File name -> SHA-256 of every file of a graph (``<graph>.onnx`` first, then its external data).

    ``files`` is the bundle's record of them; a bare hash means a graph in one file."""
    if isinstance(files, str):
        return {onnx_path.name: files}
    if onnx_path.name not in files:
        raise ValueError(f"the files of {onnx_path.name} must include it: got {sorted(files)}")
    return {onnx_path.name: files[onnx_path.name], **{k: v for k, v in sorted(files.items()) if k != onnx_path.name}}


class EngineBase:
    """What every backend shares: a name, its cache fields, and closing as a context manager.

    A backend subclasses it, sets ``name`` and implements ``cache_fields``, ``open``, ``run`` and
    ``close``; the registry in ``engines/__init__.py`` maps ``EngineOptions.backend`` to it."""

    name: ClassVar[str]
    spec: GraphSpec
    device: str

    @classmethod
    def cache_fields(cls, files: Mapping[str, str], spec: GraphSpec, options: EngineOptions) -> dict:
        """Everything a cached artefact of this backend depends on: its cache key is a hash of this."""
        raise NotImplementedError

    @classmethod
    def open(cls, onnx_path: Path, spec: GraphSpec, files: Mapping[str, str], cache_root: Path | None,
             options: EngineOptions) -> "EngineBase":
        raise NotImplementedError

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
