"""TensorRT backend: an engine per graph, built from the bundle's ONNX with polygraphy, run on a
CUDA stream with the TensorRT 10 tensor API (set_input_shape / set_tensor_address / execute_async_v3).

The optimisation profile is the graph contract's own min/opt/max shapes (``GraphSpec.shapes``),
so an engine accepts exactly what the manifest promises and nothing the runtime's input checks
would refuse. Engines are cached under <bundle>/engines/trt/<key>/; the key covers the ONNX hash,
the TensorRT version, the GPU (name, compute capability), the precision and the profile - an
engine built elsewhere is rebuilt, never loaded (TensorRT plans are specific to all of these).

Verified on this project's CI only as far as it can go without a GPU: profiles, keys and the
missing-TensorRT path are unit-tested; building and running need TensorRT and CUDA.
"""

from __future__ import annotations

import ctypes
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from stylegen_trt.engines import cache
from stylegen_trt.engines.base import NUMPY_DTYPES, EngineOptions, Precision, check_inputs
from stylegen_trt.errors import UserError
from stylegen_trt.spec import GraphSpec

log = logging.getLogger(__name__)

ENGINE_FILE = "model.plan"
WORKSPACE_BYTES = 4 << 30  # TensorRT's scratch memory while choosing tactics (SD 1.5's UNet needs ~2-3 GB)
# cudaDeviceGetAttribute attributes (CUDA runtime API, cudaDeviceAttr)
_COMPUTE_MAJOR, _COMPUTE_MINOR = 75, 76

Shapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def require_tensorrt():
    """The ``tensorrt`` module, or a UserError that says how to get it."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the bindings are there but libnvinfer is not
        raise UserError(f"--backend trt needs TensorRT ({exc}): install stylegen-trt[trt] with NVIDIA's "
                        "libraries on a CUDA machine (pip install --extra-index-url https://pypi.nvidia.com "
                        "tensorrt), or use --backend ort") from exc
    return tensorrt


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: str  # "8.6"


def cuda_device(index: int = 0) -> CudaDevice:
    """Name and compute capability of a GPU, through the CUDA runtime that polygraphy loads."""
    from polygraphy import cuda

    lib = cuda.wrapper().handle
    major, minor = ctypes.c_int(), ctypes.c_int()
    for attr, out in ((_COMPUTE_MAJOR, major), (_COMPUTE_MINOR, minor)):
        status = lib.cudaDeviceGetAttribute(ctypes.byref(out), attr, index)
        if status != 0:
            raise UserError(f"no usable CUDA device {index} (cudaDeviceGetAttribute error {status}): "
                            "check the driver, or use --backend ort")
    # cudaDeviceProp starts with char name[256]; the struct is ~1 KB, so 4 KB is ample
    props = ctypes.create_string_buffer(4096)
    getter = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties  # CUDA 12 renamed it
    name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace") if getter(props, index) == 0 else "unknown"
    return CudaDevice(index, name, f"{major.value}.{minor.value}")


_LOGGER = None


def _trt_logger():
    """One TensorRT logger for the process (it must outlive every builder and runtime using it)."""
    global _LOGGER
    if _LOGGER is None:
        trt = require_tensorrt()
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def timing_cache_name(fields: dict) -> str:
    """Tactic timings are only valid for one TensorRT version on one GPU model: one cache file each,
    shared by every graph of the bundle (later builds skip the timings already measured)."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{fields['tensorrt']}-{fields['device']}-sm{fields['compute_capability']}")
    return f"timing-{slug}.cache"


def profile_shapes(spec: GraphSpec) -> dict[str, Shapes]:
    """Input name -> (min, opt, max) shapes: one TensorRT optimisation profile from the contract."""
    points = [spec.shapes(p) for p in ("min", "opt", "max")]
    return {name: (points[0][name], points[1][name], points[2][name]) for name in spec.input_names}


def engine_fields(onnx_sha256: str, spec: GraphSpec, precision: Precision, tensorrt_version: str,
                  device: CudaDevice) -> dict:
    """Everything a built engine depends on: the cache key is a hash of this."""
    return {
        "onnx_sha256": onnx_sha256,
        "tensorrt": tensorrt_version,
        "device": device.name,
        "compute_capability": device.compute_capability,
        "precision": precision,
        "profile": {name: [list(s) for s in shapes] for name, shapes in profile_shapes(spec).items()},
    }


def cache_fields(onnx_sha256: str, spec: GraphSpec, options: EngineOptions, device: CudaDevice | None = None) -> dict:
    precision: Precision = "fp16" if options.precision == "auto" else options.precision
    if options.device == "cpu":
        raise UserError("--backend trt runs on a CUDA GPU: drop --device cpu, or use --backend ort")
    return engine_fields(onnx_sha256, spec, precision, require_tensorrt().__version__, device or cuda_device(0))


def build_engine_bytes(onnx_path: Path, spec: GraphSpec, precision: Precision, timing_cache: Path | None) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine for the contract's profile."""
    trt = require_tensorrt()
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    profile = Profile()
    for name, (lo, opt, hi) in profile_shapes(spec).items():
        profile.add(name, min=lo, opt=opt, max=hi)
    config = CreateConfig(
        fp16=precision == "fp16",
        profiles=[profile],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: WORKSPACE_BYTES},
        load_timing_cache=str(timing_cache) if timing_cache and timing_cache.is_file() else None,
    )
    # NATIVE_INSTANCENORM: GroupNorm exported as InstanceNorm runs natively instead of as a plugin
    network = NetworkFromOnnxPath(str(onnx_path), flags=[trt.OnnxParserFlag.NATIVE_INSTANCENORM])
    built = EngineBytesFromNetwork(network, config, save_timing_cache=str(timing_cache) if timing_cache else None)()
    if built is None:
        raise RuntimeError(f"TensorRT could not build {onnx_path.name}; run with -v for the builder's log")
    return bytes(built)


class TrtEngine:
    """One TensorRT engine and its execution context; device buffers are kept and grown between runs,
    host outputs are fresh arrays every run (never views of buffers the next run overwrites)."""

    def __init__(self, engine, spec: GraphSpec, device: CudaDevice, runtime=None, cuda=None):
        if cuda is None:  # polygraphy's CUDA runtime wrapper (ctypes; no torch, no cuda-python)
            from polygraphy import cuda

        self._cuda = cuda
        self.spec = spec
        self.device = f"cuda:{device.index}"
        self._runtime = runtime  # TensorRT wants the runtime to outlive the engines it deserialised
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise RuntimeError(f"{spec.name}: TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = cuda.Stream()
        self._buffers: dict[str, object] = {}
        self._dtypes = {t.name: np.dtype(NUMPY_DTYPES[t.dtype]) for t in (*spec.inputs, *spec.outputs)}

    @classmethod
    def open(cls, onnx_path: Path, spec: GraphSpec, onnx_sha256: str, cache_root: Path | None,
             options: EngineOptions) -> "TrtEngine":
        trt = require_tensorrt()
        device = cuda_device(0)
        fields = cache_fields(onnx_sha256, spec, options, device)
        precision = fields["precision"]
        if cache_root is None:
            plan = build_engine_bytes(onnx_path, spec, precision, None)
        else:
            entry = cache.entry_dir(cache_root, "trt", fields)
            with cache.build_lock(entry):
                if not cache.is_valid(entry, fields):
                    build_into(entry, onnx_path, spec, precision, fields, cache_root / "trt" / timing_cache_name(fields))
                plan = (entry / ENGINE_FILE).read_bytes()
        runtime = trt.Runtime(_trt_logger())
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError(f"{spec.name}: TensorRT could not deserialize its engine; delete "
                               f"{cache_root / 'trt' if cache_root else 'the engine cache'} and rebuild")
        return cls(engine, spec, device, runtime)

    def _device_buffer(self, name: str, shape: tuple[int, ...]):
        from polygraphy.datatype import DataType

        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = self._buffers[name] = self._cuda.DeviceArray(shape, DataType.from_dtype(self._dtypes[name]))
        return buffer.resize(tuple(shape))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.spec, inputs)
        staged = []  # host inputs must outlive their asynchronous copies
        for name in self.spec.input_names:
            host = np.ascontiguousarray(inputs[name])
            staged.append(host)
            if not self._context.set_input_shape(name, host.shape):
                raise ValueError(f"{self.spec.name}: TensorRT refused shape {host.shape} for {name}")
            buffer = self._device_buffer(name, host.shape)
            buffer.copy_from(host, self._stream)
            self._context.set_tensor_address(name, buffer.ptr)
        outputs = {}
        for name in self.spec.output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            buffer = self._device_buffer(name, shape)
            self._context.set_tensor_address(name, buffer.ptr)
            outputs[name] = (np.empty(shape, self._dtypes[name]), buffer)
        if not self._context.execute_async_v3(self._stream.ptr):
            raise RuntimeError(f"{self.spec.name}: TensorRT execution failed (see the log above)")
        for host, buffer in outputs.values():
            buffer.copy_to(host, self._stream)
        self._stream.synchronize()
        return {name: host for name, (host, _) in outputs.items()}

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()
        if self._stream is not None:
            self._stream.free()
            self._stream = None
        self._context = self._engine = self._runtime = None

    def __enter__(self) -> "TrtEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_into(entry: Path, onnx_path: Path, spec: GraphSpec, precision: Precision, fields: dict,
               timing_cache: Path) -> None:
    """Build one engine into a cache entry (caller holds the entry's lock); the record is written last."""
    from stylegen_trt.files import atomic_write_bytes

    log.info("building the %s TensorRT engine of %s (%s) into %s", precision, spec.name, onnx_path.name, entry)
    (entry / cache.RECORD).unlink(missing_ok=True)
    start = time.perf_counter()
    plan = build_engine_bytes(onnx_path, spec, precision, timing_cache)
    atomic_write_bytes(entry / ENGINE_FILE, plan)
    cache.commit(entry, fields, [ENGINE_FILE])
    log.info("%s: engine %.1f MiB built in %.0f s", spec.name, len(plan) / 2**20, time.perf_counter() - start)


def describe_fields(fields: dict) -> str:
    """One line for logs and `build`'s report."""
    return (f"TensorRT {fields['tensorrt']}, {fields['device']} (sm {fields['compute_capability']}), "
            f"{fields['precision']}")

