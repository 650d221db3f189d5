"""The one engine protocol every backend honours, the options that choose a backend, and the small
base class backends share.

An engine runs one graph: named NumPy inputs -> named NumPy outputs (fresh arrays the
caller owns). It is opened by ``stylegen_trt.engines.open_engine`` (the registry of backends) and
closed explicitly (or as a context manager). Call sites never branch on the backend.

Device-resident values: ``run_device(inputs, keep=names)`` leaves the outputs named in ``keep``
where the backend computed them, as ``DeviceValue``s (TensorRT: device memory; ONNX Runtime: an
OrtValue, on the GPU with the CUDA provider, in host memory on CPU), and accepts DeviceValues as
inputs beside NumPy arrays: engines of one backend hand each other values without a host round
trip. ``to_device(array)`` uploads a value once (e.g. a text context used by every step),
``concat_rows`` joins values along their first axis on the device. A backend without device
memory inherits ``EngineBase``'s versions, whose DeviceValues are host arrays (``HostMemory``), so
the same call sites work on every backend.

This module imports no backend: ``ort.py`` and ``trt.py`` import it, the registry in
``engines/__init__.py`` imports them lazily, so engines/ has no import cycle.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Collection, Literal, Mapping, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from stylegen_trt.spec import GraphSpec, bind_axes

Backend = Literal["ort", "trt", "openvino"]
BACKENDS: tuple[Backend, ...] = ("ort", "trt", "openvino")
Device = Literal["auto", "cpu", "cuda"]
OptLevel = Literal["disable", "basic", "extended", "all"]
# fast: the backend keeps what it allocated for reuse (ORT's CPU arena); lean: it frees per call.
# On the small config lean measured 510 vs 854 MiB peak at 13% more time (benchmarks/analysis.md).
Memory = Literal["fast", "lean"]
# auto: the backend's natural precision - fp16 engines on TensorRT, the fp32 graphs on ONNX Runtime, bf16 on
# OpenVINO where the CPU has AVX512-BF16 or AMX (fp32 elsewhere). bf16 is OpenVINO's, fp16 TensorRT's.
Precision = Literal["auto", "fp32", "fp16", "bf16"]
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


@dataclass(frozen=True)
class StaticShapes:
    """What static-shape engines are built for (``build --static``): one latent size and ``images``
    images per generation with classifier-free guidance (UNet batch 2 x images), one style per call."""

    latent_h: int
    latent_w: int
    images: int = 1


@dataclass(frozen=True)
class EngineOptions:
    backend: Backend = "ort"
    device: Device = "auto"
    threads: int | None = None  # intra-op threads; None lets the backend choose (all cores)
    opt_level: OptLevel = "all"
    cache: bool = True  # keep optimised models / engines under <bundle>/engines/
    memory: Memory = "fast"
    precision: Precision = "auto"
    static: StaticShapes | None = None  # TensorRT: engines whose profile is exactly these shapes; OpenVINO: compiled at open
    cuda_graph: bool = False  # TensorRT, static engines: replay the UNet's step as a captured CUDA graph


class DeviceMemory(Protocol):
    """A backend's memory for DeviceValues: uploads, downloads, and copies that stay in it."""

    kind: str  # "host", "ort:cpu", "ort:cuda", "trt:cuda": values of one kind bind to each other directly

    def upload(self, array: np.ndarray) -> "DeviceValue": ...

    def download(self, value: "DeviceValue") -> np.ndarray: ...

    def concat(self, values: Sequence["DeviceValue"]) -> "DeviceValue": ...


@dataclass(frozen=True, eq=False)
class DeviceValue:
    """A tensor left where an engine computed it. ``ptr`` is its first element's address, ``owner`` what
    keeps the memory alive (a device buffer, an OrtValue, an array). Treated as immutable once made."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    owner: object
    memory: DeviceMemory

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def rows(self, start: int, stop: int) -> "DeviceValue":
        """Rows ``start:stop`` of the first axis: a view, no copy."""
        row = self.nbytes // self.shape[0] if self.shape and self.shape[0] else 0
        return DeviceValue(self.ptr + start * row, (stop - start, *self.shape[1:]), self.dtype, self.owner, self.memory)

    def numpy(self) -> np.ndarray:
        """A host copy (for a host value: the array itself, read-only use)."""
        return self.memory.download(self)

    def copy(self) -> "DeviceValue":
        """A value with its own memory (a view no longer keeps its whole parent alive)."""
        return self.memory.concat([self])


Value = Union[np.ndarray, DeviceValue]


def concat_rows(values: Sequence[DeviceValue]) -> DeviceValue:
    """``values`` joined along the first axis, in the memory of the first."""
    return values[0].memory.concat(values)


class HostMemory:
    """DeviceValues that are host arrays: what backends without device memory hand out."""

    kind = "host"

    def wrap(self, array: np.ndarray) -> DeviceValue:
        array = np.ascontiguousarray(array)
        return DeviceValue(array.ctypes.data, tuple(array.shape), array.dtype, array, self)

    def upload(self, array: np.ndarray) -> DeviceValue:
        return self.wrap(np.array(array, copy=True))

    def download(self, value: DeviceValue) -> np.ndarray:
        owner = value.owner
        if isinstance(owner, np.ndarray) and value.ptr == owner.ctypes.data and value.nbytes == owner.nbytes:
            return owner.reshape(value.shape)
        return host_view(value).copy()

    def concat(self, values: Sequence[DeviceValue]) -> DeviceValue:
        return self.wrap(np.concatenate([host_view(v) for v in values]))


HOST = HostMemory()


def host_view(value: DeviceValue) -> np.ndarray:
    """A NumPy view of a value in host memory (host arrays, CPU OrtValues): no copy; never for GPU memory."""
    count = int(np.prod(value.shape, dtype=np.int64))
    if count == 0:
        return np.empty(value.shape, value.dtype)
    raw = (ctypes.c_char * value.nbytes).from_address(value.ptr)
    return np.frombuffer(raw, dtype=value.dtype, count=count).reshape(value.shape)


@runtime_checkable
class Engine(Protocol):
    spec: GraphSpec
    device: str  # what it actually runs on, e.g. "cpu", "cuda:0"

    precision: str  # what it computes in: "fp32", "fp16"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def run_device(self, inputs: Mapping[str, Value], keep: Collection[str] = ()) -> dict[str, Value]: ...

    def to_device(self, array: np.ndarray) -> DeviceValue: ...

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
        array = inputs[t.name]  # an array or a DeviceValue: both have dtype and shape
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
    """What every backend shares: a name, its cache fields, closing as a context manager, and
    host-memory versions of the device-value methods.

    A backend subclasses it, sets ``name`` and implements ``cache_fields``, ``open``, ``run`` and
    ``close`` (and, to keep values on its device, ``run_device``, ``to_device`` and ``link``); the
    registry in ``engines/__init__.py`` maps ``EngineOptions.backend`` to it."""

    name: ClassVar[str]
    spec: GraphSpec
    device: str
    precision: str = "fp32"

    @classmethod
    def natural_precision(cls) -> str:
        """What ``precision="auto"`` computes in on this machine (most graphs)."""
        return "fp32"

    @classmethod
    def link(cls, engines: Sequence["EngineBase"]) -> None:
        """Called once with all the engines of one pipeline (same backend, run one at a time), so a
        backend can share resources between them (TensorRT: one activation memory block)."""

    def to_device(self, array: np.ndarray) -> DeviceValue:
        return HOST.upload(array)

    def run_device(self, inputs: Mapping[str, Value], keep: Collection[str] = ()) -> dict[str, Value]:
        """``run``, with DeviceValues accepted as inputs and the outputs in ``keep`` left as DeviceValues."""
        host = {k: v.numpy() if isinstance(v, DeviceValue) else v for k, v in inputs.items()}
        return {k: HOST.wrap(v) if k in keep else v for k, v in self.run(host).items()}

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
