"""Stand-ins that let the TensorRT backend run on a machine without TensorRT or a GPU, with polygraphy's
REAL code (CreateConfig, Profile, NetworkFromOnnxPath, EngineBytesFromNetwork, cuda.DeviceArray/Stream)
in the loop:

- ``make_tensorrt(major)``: a ``tensorrt`` module with the API surface polygraphy 0.53.6 and
  stylegen_trt.engines.trt touch, in TensorRT 10's shape (BuilderFlag.FP16, weak typing) or TensorRT 11's
  (no FP16/INT8/... builder flags; STRONGLY_TYPED kept as a deprecated flag; no EXPLICIT_BATCH; no
  int8_calibrator). Enum members follow NVIDIA's 10.x / 11.x API references. Contexts are created without
  activation memory (``ExecutionContextAllocationStrategy.USER_MANAGED``; 10's
  ``create_execution_context_without_device_memory`` too) and refuse to execute until one of at least
  ``device_memory_size_v2`` bytes is set (``set_device_memory``; 10 also the ``device_memory`` setter). The "builder" parses the
  real ONNX file (onnx), checks the profile covers every input within min <= opt <= max, and
  serialises what it was asked for as JSON: the "plan". The "runtime" reads that plan back into an
  engine with an I/O tensor table, and a strict execution context: output shapes are -1 until every
  input shape is set, execution fails with an unset shape or an unbound tensor.
- ``make_tensorrt(..., memory=CudartMemory(lib), compute=factory)``: the engine's execution reaches its bound
  tensors only through a CUDA runtime (stream sync, cudaMemcpyAsync device -> host, compute on the host,
  host -> device, sync) instead of by address: so the stub runs on real device memory (tests/test_real_cuda.py,
  with polygraphy's real libcudart) and, the very same code, on ``HostCudart``, whose copies check that every
  bound address is a device allocation. ``compute(plan) -> callable | None`` gives each new context its compute
  (e.g. ONNX Runtime on the plan's source graph).
- ``HostCudart``: libcudart's functions that polygraphy's ``Cuda`` wrapper and the backend call, on host
  memory (cudaMalloc / cudaMallocHost = a ctypes buffer, cudaMemcpy = memmove), counting copies by
  direction and by stream; CUDA graphs: an execution enqueued on a capturing stream is recorded with
  the addresses bound at that moment and re-run by cudaGraphLaunch (as a real graph replays them).

Nothing here says anything about TensorRT's kernels or numerics: that needs a GPU.
"""

from __future__ import annotations

import ctypes
import enum
import json
import os
import re
import sys
import types

import numpy as np

VERSIONS = {10: "10.13.3.9", 11: "11.4.1.2"}

_BUILDER_FLAGS = {
    10: ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS",
         "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO",
         "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8", "ERROR_ON_TIMING_CACHE_MISS",
         "BF16", "DISABLE_COMPILATION_CACHE", "STRIP_PLAN", "REFIT_IDENTICAL", "WEIGHT_STREAMING", "INT4",
         "REFIT_INDIVIDUAL", "STRICT_NANS", "MONITOR_MEMORY", "FP4", "EDITABLE_TIMING_CACHE"],
    11: ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS", "SAFETY_SCOPE",
         "DIRECT_IO", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "ERROR_ON_TIMING_CACHE_MISS",
         "DISABLE_COMPILATION_CACHE", "STRIP_PLAN", "REFIT_IDENTICAL", "WEIGHT_STREAMING", "REFIT_INDIVIDUAL",
         "STRICT_NANS", "MONITOR_MEMORY", "EDITABLE_TIMING_CACHE", "DISTRIBUTIVE_INDEPENDENCE",
         "REQUIRE_USER_ALLOCATION"],
}
_NETWORK_FLAGS = {10: ["EXPLICIT_BATCH", "STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"],
                  11: ["STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"]}
# ONNX TensorProto element types -> TensorRT DataType member names
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 6: "INT32", 7: "INT64", 9: "BOOL", 3: "INT8", 2: "UINT8", 16: "BF16"}
_TRT_TO_NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_,
                 "INT8": np.int8, "UINT8": np.uint8}


def _enum(name, members):
    return enum.IntEnum(name, {m: i for i, m in enumerate(members)})


class _HostMemory(bytes):
    """IHostMemory: a buffer, also usable as a context manager (polygraphy does `with cache.serialize() as b`)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def make_tensorrt(major: int, *, fail_build: str | None = None, memory: "CudartMemory | None" = None,
                  compute=None) -> types.ModuleType:
    """A ``tensorrt`` module of TensorRT ``major``'s API shape. ``fail_build``: the builder logs this as an
    error and returns None (TensorRT's way of failing a build). ``memory``: how executions reach their bound
    tensors (None: as host addresses; a ``CudartMemory``: through a CUDA runtime's copies). ``compute``:
    plan record -> the compute of each new execution context (None: the default fill)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSIONS[major]
    trt.__file__ = __file__
    trt.BuilderFlag = _enum("BuilderFlag", _BUILDER_FLAGS[major])
    trt.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", _NETWORK_FLAGS[major])
    trt.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                                  "DLA_GLOBAL_DRAM", "TACTIC_DRAM", "TACTIC_SHARED_MEMORY"])
    trt.OnnxParserFlag = _enum("OnnxParserFlag", ["NATIVE_INSTANCENORM", "ENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA"])
    trt.DeviceType = _enum("DeviceType", ["GPU", "DLA"])
    trt.ProfilingVerbosity = _enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
    trt.LayerType = _enum("LayerType", ["CONVOLUTION", "SHAPE"])
    trt.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    trt.DataType = _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64"])
    trt.EngineCapability = _enum("EngineCapability", ["STANDARD", "SAFETY", "DLA_STANDALONE"])
    trt.ExecutionContextAllocationStrategy = _enum("ExecutionContextAllocationStrategy",
                                                   ["STATIC", "ON_PROFILE_CHANGE", "USER_MANAGED"])
    built: list[dict] = []  # every plan built, for the tests to inspect
    trt.built = built

    class ILogger:
        def __init__(self):
            pass

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity=2):
            self.min_severity = min_severity

        def log(self, severity, msg):
            pass

    trt.ILogger, trt.Logger = ILogger, Logger
    trt.init_libnvinfer_plugins = lambda logger, namespace: True

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype, self.is_shape_tensor = name, tuple(shape), dtype, False

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs, self.source, self.source_fp16_weights = flags, [], [], None, 0

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(flag)))

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, index):
            return self.inputs[index]

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_output(self, index):
            return self.outputs[index]

        def __iter__(self):  # layers: none that polygraphy needs to look at
            return iter(())

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self.flags, self.errors = network, logger, 1, []

        def clear_flag(self, flag):
            self.flags &= ~(1 << int(flag))

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

        def parse_from_file(self, path):
            import onnx

            try:
                model = onnx.load(path, load_external_data=False)
            except Exception as exc:  # noqa: BLE001 - the real parser reports, never raises
                self.errors.append(f"ModelImporter.cpp:121 In function parseFromFile: [6] Failed to parse ONNX ({exc})")
                return False
            net = self.network
            net.source = path
            net.source_fp16_weights = sum(1 for t in model.graph.initializer if t.data_type == 10)
            initializers = {t.name for t in model.graph.initializer}

            def tensors(values):
                out = []
                for v in values:
                    if v.name in initializers:
                        continue
                    tt = v.type.tensor_type
                    dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else -1)
                            for d in tt.shape.dim]
                    out.append(Tensor(v.name, dims, getattr(trt.DataType, _ONNX_TO_TRT[tt.elem_type])))
                return out

            net.inputs, net.outputs = tensors(model.graph.input), tensors(model.graph.output)
            return True

    class OptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's names
            self.shapes[name] = [list(min), list(opt), list(max)]

        def set_shape_input(self, name, min, opt, max):  # noqa: A002
            self.shapes[name] = [list(min), list(opt), list(max)]

        def __bool__(self):
            return True

    class TimingCache:
        def __init__(self, data=b""):
            self.data = bytes(data)

        def combine(self, other, ignore_mismatch):
            self.data = max(self.data, other.data)
            return True

        def serialize(self):
            return _HostMemory(self.data or b"stub-timing-cache")

    class BuilderConfig:
        def __init__(self):
            self.flags = {trt.BuilderFlag.TF32}  # TensorRT enables TF32 by default
            self.profiles, self.pools, self.timing_cache = [], {}, None
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            self.DLA_core, self.default_device_type = -1, trt.DeviceType.GPU
            self.engine_capability = trt.EngineCapability.STANDARD
            self.builder_optimization_level = 3
            if major < 11:
                self.int8_calibrator = None  # removed in 11

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        @property
        def num_optimization_profiles(self):
            return len(self.profiles)

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def get_memory_pool_limit(self, pool):
            return self.pools.get(pool, 0)

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            def fail(message):
                self.logger.log(Logger.ERROR, message)
                return None

            if fail_build:
                return fail(fail_build)
            if len(config.profiles) != 1:
                return fail(f"expected one optimization profile, got {len(config.profiles)}")
            profile = config.profiles[0].shapes
            for t in network.inputs:
                if t.name not in profile:
                    return fail(f"{t.name}: no shapes in the optimization profile")
                lo, opt, hi = profile[t.name]
                if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)) or len(lo) != len(t.shape):
                    return fail(f"{t.name}: invalid profile {profile[t.name]}")
            plan = {
                "stub": "tensorrt", "version": trt.__version__, "source": network.source,
                "source_fp16_weights": network.source_fp16_weights,
                "network_flags": sorted(f.name for f in trt.NetworkDefinitionCreationFlag if network.get_flag(f)),
                "builder_flags": sorted(f.name for f in config.flags),
                "pools": {p.name: size for p, size in config.pools.items()},
                "builder_optimization_level": config.builder_optimization_level,
                "profile": profile,
                "io": [[t.name, "input", t.dtype.name, list(t.shape)] for t in network.inputs]
                + [[t.name, "output", t.dtype.name, list(t.shape)] for t in network.outputs],
            }
            built.append(plan)
            return _HostMemory(json.dumps(plan).encode())

    trt.Builder, trt.OnnxParser = Builder, OnnxParser

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, plan):
            try:
                record = json.loads(bytes(plan))
            except ValueError:
                self.logger.log(Logger.ERROR, "deserializeCudaEngine: invalid plan")
                return None
            return Engine(record)

    trt.Runtime = Runtime

    class Engine:
        """ICudaEngine's I/O tensor API over a stub plan."""

        def __init__(self, record):
            self.record = record
            self.io = [(name, getattr(trt.TensorIOMode, kind.upper()), getattr(trt.DataType, dtype), dims)
                       for name, kind, dtype, dims in record["io"]]

        @property
        def num_io_tensors(self):
            return len(self.io)

        def get_tensor_name(self, index):
            return self.io[index][0]

        def _find(self, name):
            return next(t for t in self.io if t[0] == name)

        def get_tensor_mode(self, name):
            return self._find(name)[1]

        def get_tensor_dtype(self, name):
            return self._find(name)[2]

        device_memory_size_v2 = ACTIVATION_BYTES

        def create_execution_context(self, strategy=None):
            context = ExecutionContext(self)
            if compute is not None:
                context.compute = compute(self.record)
            context.user_managed = strategy == trt.ExecutionContextAllocationStrategy.USER_MANAGED
            return context

        if major < 11:
            device_memory_size = ACTIVATION_BYTES

            def create_execution_context_without_device_memory(self):
                return self.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)

    trt.ExecutionContext = None  # set below

    class ExecutionContext:
        """Strict: output shapes resolve (by the ONNX dims' names) only once every input shape is set;
        execute_async_v3 fails if a shape or an address is missing. ``compute``: inputs -> outputs (NumPy),
        default each output filled with the sum of the inputs' means."""

        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}
            self.compute = None
            self.executions = 0
            self.user_managed = False
            self.activation = None  # (address, bytes) of the activation memory set

        def set_device_memory(self, ptr, size):
            if not ptr or size < self.engine.device_memory_size_v2:
                raise ValueError(f"set_device_memory: {size} bytes < {self.engine.device_memory_size_v2}")
            self.activation = (int(ptr), int(size))

        if major < 11:
            device_memory = property(lambda self: self.activation and self.activation[0],
                                     lambda self, ptr: self.set_device_memory(ptr, self.engine.device_memory_size_v2))

        def _inputs(self):
            return [t for t in self.engine.io if t[1] == trt.TensorIOMode.INPUT]

        def set_input_shape(self, name, shape):
            if name not in {t[0] for t in self._inputs()}:
                return False
            lo, _, hi = self.engine.record["profile"][name]
            if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(int(s) for s in shape)
            return True

        def get_tensor_shape(self, name):
            _, mode, _, dims = self.engine._find(name)
            if mode == trt.TensorIOMode.INPUT:
                return self.shapes.get(name, tuple(d if isinstance(d, int) else -1 for d in dims))
            if any(t[0] not in self.shapes for t in self._inputs()):
                return tuple(d if isinstance(d, int) else -1 for d in dims)
            bound = {}  # axis names as the exporter writes them: "h", "hx4" (h*4), "h_2" (ceil(h/2))
            for t in self._inputs():
                for d, s in zip(t[3], self.shapes[t[0]]):
                    if isinstance(d, str):
                        times = re.fullmatch(r"(.+)x(\d+)", d)
                        bound[d] = s
                        if times:
                            bound.setdefault(times[1], s // int(times[2]))

            bound.update(KNOWN_DIMS)
            for image, latent in (("image_h", "latent_h"), ("image_w", "latent_w")):  # the VAE's upsampling
                if latent in bound:
                    bound.setdefault(image, bound[latent] * VAE_FACTOR)

            def resolve(d):
                if isinstance(d, int) or d in bound:
                    return bound.get(d, d)
                split = re.fullmatch(r"(.+)_(\d+)", d)
                if split and split[1] in bound:
                    return -(-bound[split[1]] // int(split[2]))
                return -1

            return tuple(resolve(d) for d in dims)

        def set_tensor_address(self, name, ptr):
            if name not in {t[0] for t in self.engine.io} or not ptr:
                return False
            self.addresses[name] = int(ptr)
            return True

        def _array(self, name, shape, dtype):
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            raw = (ctypes.c_char * max(n, 1)).from_address(self.addresses[name])
            return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

        def execute_async_v3(self, stream_handle):
            if self.user_managed and self.activation is None:
                return False  # TensorRT: no device memory set for a user-managed context
            capture = CAPTURING.get(int(stream_handle or 0))
            if capture is not None:  # recorded with today's addresses; replayed by cudaGraphLaunch
                addresses, shapes = dict(self.addresses), dict(self.shapes)

                def replay():
                    saved = self.addresses, self.shapes
                    self.addresses, self.shapes = addresses, shapes
                    try:
                        return self._execute(stream_handle)
                    finally:
                        self.addresses, self.shapes = saved
                capture.append(replay)
                return True
            return self._execute(stream_handle)

        def _execute(self, stream_handle=0):
            for name, mode, dtype, _ in self.engine.io:
                if name not in self.addresses:
                    return False
                if mode == trt.TensorIOMode.INPUT and name not in self.shapes:
                    return False
            outs = [(name, self.get_tensor_shape(name), _TRT_TO_NUMPY[dtype.name])
                    for name, mode, dtype, _ in self.engine.io if mode == trt.TensorIOMode.OUTPUT]
            if any(-1 in shape for _, shape, _ in outs):
                return False
            stream = int(stream_handle or 0)
            if memory is not None:
                memory.synchronize(stream)  # the inputs' uploads, enqueued on this stream before us
            inputs = {name: (memory.read(self.addresses[name], self.shapes[name], _TRT_TO_NUMPY[dtype.name], stream)
                             if memory is not None else
                             self._array(name, self.shapes[name], _TRT_TO_NUMPY[dtype.name]).copy())
                      for name, mode, dtype, _ in self.engine.io if mode == trt.TensorIOMode.INPUT}
            if self.compute is not None:
                values = self.compute(inputs)
            else:
                level = sum(float(np.mean(v)) for v in inputs.values())
                values = {name: np.full(shape, np.nan if name in NAN_OUTPUTS else level, dtype)
                          for name, shape, dtype in outs}
            staged = []  # host sources of the writes: alive until the stream is synchronised
            for name, shape, dtype in outs:
                value = np.asarray(values[name], dtype)
                if value.shape != tuple(shape):  # never broadcast: a wrong shape is a wrong result
                    return False
                if memory is not None:
                    staged.append(memory.write(self.addresses[name], value, stream))
                else:
                    self._array(name, shape, dtype)[...] = value
            if memory is not None:
                memory.synchronize(stream)
            del staged
            self.executions += 1
            return True

    trt.ExecutionContext = ExecutionContext
    return trt


NAN_OUTPUTS = set(filter(None, os.environ.get("STUB_NAN", "").split(",")))  # outputs to fill with NaN
VAE_FACTOR = 2  # image_h = latent_h x this (the demo bundle's VAE)
# Output dims the exporter left symbolic but TensorRT's shape analysis resolves to constants: the demo style
# encoder's S, resized to 64x64 inside the graph.
KNOWN_DIMS = {"Unsqueezestyle_map_dim_2": 64, "Unsqueezestyle_map_dim_3": 64}
ACTIVATION_BYTES = 4096  # what every stub engine says its context needs
CAPTURING: dict[int, list] = {}  # stream handle -> executions recorded while it captures


class CudartMemory:
    """The stub engine's way to its bound tensors when they may be real device memory: only through the
    CUDA runtime ``lib`` (libcudart via ctypes, or ``HostCudart``: the same calls, so this code runs without
    a GPU too), never by address. Signatures (CUDA runtime API): cudaMemcpyAsync(void* dst, const void* src,
    size_t count, cudaMemcpyKind kind, cudaStream_t stream), kind 1 = host -> device, 2 = device -> host;
    cudaStreamSynchronize(cudaStream_t). Host buffers are ordinary (pageable) NumPy arrays, and no assumption is
    made about when a copy to or from pageable memory completes: ``read`` synchronises the stream before it
    returns; ``write`` returns its host source, to be kept alive until the caller synchronises the stream (the
    stub does, before execute_async_v3 returns)."""

    H2D, D2H = 1, 2

    def __init__(self, lib):
        self.lib = lib
        self.copies = {"h2d": 0, "d2h": 0}  # made by the stub's executions (not the backend's)

    @staticmethod
    def _check(status, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"stub engine: {what} failed with CUDA error {status}")

    def synchronize(self, stream: int) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream or None)), "cudaStreamSynchronize")

    def _copy(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self._check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                                             ctypes.c_int(kind), ctypes.c_void_p(stream or None)),
                    f"cudaMemcpyAsync(kind {kind}, {nbytes} bytes)")
        self.copies["h2d" if kind == self.H2D else "d2h"] += 1

    def read(self, ptr: int, shape, dtype, stream: int = 0) -> np.ndarray:
        """A new host array with the device tensor at ``ptr`` (after the work enqueued on ``stream`` so far)."""
        host = np.empty(tuple(shape), dtype)
        if host.nbytes:
            self._copy(host.ctypes.data, int(ptr), host.nbytes, self.D2H, stream)
            self.synchronize(stream)
        return host

    def write(self, ptr: int, array: np.ndarray, stream: int = 0) -> np.ndarray:
        """Enqueue ``array`` into the device tensor at ``ptr``; returns the host source: keep it until ``stream``
        is synchronised."""
        host = np.ascontiguousarray(array)
        if host.nbytes:
            self._copy(int(ptr), host.ctypes.data, host.nbytes, self.H2D, stream)
        return host


class HostCudart:
    """The libcudart functions polygraphy's ``Cuda`` wrapper and the backend call, on host memory."""

    def __init__(self, device_name: str = "NVIDIA Stub GPU", compute_capability=(8, 9)):
        self.blocks: dict[int, ctypes.Array] = {}
        self.pinned: dict[int, ctypes.Array] = {}
        self.copies = {"h2d": 0, "d2h": 0, "d2d": 0}
        self.by_stream: dict[int, dict[str, int]] = {}  # stream handle (0: synchronous copies) -> copies
        self.log: list[tuple[str, int, int]] = []  # (direction, bytes, stream) of every copy
        self.streams = 0
        self.device_name = device_name
        self.cc = compute_capability
        self.graphs: dict[int, list] = {}
        self.execs: dict[int, list] = {}
        self.launches = 0

    def _inside(self, ptr: int, n: int) -> bool:
        return any(base <= ptr and ptr + n <= base + len(buf) for base, buf in self.blocks.items())

    def cudaMalloc(self, ref, nbytes):  # noqa: N802 - CUDA's names
        buf = ctypes.create_string_buffer(max(nbytes.value, 1))
        ref._obj.value = ctypes.addressof(buf)
        self.blocks[ctypes.addressof(buf)] = buf
        return 0

    def cudaFree(self, ptr):  # noqa: N802
        if ptr.value and self.blocks.pop(ptr.value, None) is None:
            return 1  # cudaErrorInvalidValue: not an allocation
        return 0

    def cudaMemcpy(self, dst, src, nbytes, kind, stream=None):  # noqa: N802
        n, kind = nbytes.value, kind.value
        if kind in (1, 3) and not self._inside(dst.value, n) or kind in (2, 3) and not self._inside(src.value, n):
            return 1
        ctypes.memmove(dst.value, src.value, n)
        direction = {1: "h2d", 2: "d2h", 3: "d2d"}.get(kind, "d2d")
        self.copies[direction] += 1
        handle = int(stream.value or 0) if stream is not None else 0
        self.by_stream.setdefault(handle, {"h2d": 0, "d2h": 0, "d2d": 0})[direction] += 1
        self.log.append((direction, n, handle))
        return 0

    def cudaMallocHost(self, ref, nbytes):  # noqa: N802
        buf = ctypes.create_string_buffer(max(nbytes.value, 1))
        ref._obj.value = ctypes.addressof(buf)
        self.pinned[ctypes.addressof(buf)] = buf
        return 0

    def cudaFreeHost(self, ptr):  # noqa: N802
        return 0 if self.pinned.pop(ptr.value, None) is not None else 1

    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        CAPTURING[int(stream.value)] = []
        return 0

    def cudaStreamEndCapture(self, stream, ref_graph):  # noqa: N802
        ops = CAPTURING.pop(int(stream.value), None)
        if ops is None:
            return 1
        handle = 0x9000 + len(self.graphs) + 1
        self.graphs[handle] = ops
        ref_graph._obj.value = handle
        return 0

    def cudaGraphInstantiateWithFlags(self, ref_exec, graph, flags):  # noqa: N802
        handle = 0xA000 + len(self.execs) + 1
        self.execs[handle] = self.graphs[graph.value]
        ref_exec._obj.value = handle
        return 0

    def cudaGraphLaunch(self, exec_, stream):  # noqa: N802
        ops = self.execs.get(exec_.value)
        if ops is None:
            return 1
        self.launches += 1
        return 0 if all(op() for op in ops) else 1

    def cudaGraphExecDestroy(self, exec_):  # noqa: N802
        return 0 if self.execs.pop(exec_.value, None) is not None else 1

    def cudaGraphDestroy(self, graph):  # noqa: N802
        return 0 if self.graphs.pop(graph.value, None) is not None else 1

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        return self.cudaMemcpy(dst, src, nbytes, kind, stream)

    def cudaStreamCreate(self, ref):  # noqa: N802
        self.streams += 1
        ref._obj.value = 0x1000 + self.streams
        return 0

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return 0

    def cudaStreamDestroy(self, stream):  # noqa: N802
        self.streams -= 1
        return 0

    def cudaDeviceGetAttribute(self, ref, attr, index):  # noqa: N802
        ref._obj.value = {75: self.cc[0], 76: self.cc[1]}[attr]
        return 0

    def cudaGetDeviceProperties(self, props, index):  # noqa: N802
        name = self.device_name.encode() + b"\0"
        ctypes.memmove(props, name, len(name))
        return 0


def reset_polygraphy_tensorrt() -> None:
    """Forget the tensorrt module polygraphy's lazy imports cached (so another stub can take its place)."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("polygraphy") or module is None:
            continue
        for value in vars(module).values():
            if type(value).__name__ == "LazyModule":
                cached = object.__getattribute__(value, "module")
                if cached is not None and getattr(cached, "__name__", "") == "tensorrt":
                    object.__setattr__(value, "module", None)
    util = sys.modules.get("polygraphy.backend.trt.util")
    if util is not None:
        util.TRT_LOGGER = None


def install(major: int, cudart: HostCudart | None = None, **kwargs):
    """Put a stub tensorrt and a host-memory CUDA runtime in place (for a subprocess: no undo)."""
    import polygraphy.cuda.cuda as pcuda

    trt = make_tensorrt(major, **kwargs)
    sys.modules["tensorrt"] = trt
    reset_polygraphy_tensorrt()
    wrapper = pcuda.Cuda.__new__(pcuda.Cuda)
    wrapper.handle = cudart or HostCudart()
    pcuda.G_CUDA = wrapper
    return trt, wrapper.handle


def install_for_test(monkeypatch, tmp_path, major: int = 10, **kwargs):
    """Put a stub ``tensorrt`` (TensorRT ``major``'s API) and a host-memory libcudart under polygraphy for
    one test, with the user cache in ``tmp_path``; returns (tensorrt stub, cudart)."""
    import polygraphy.cuda.cuda as pcuda

    from stylegen_trt.engines import trt as trt_backend

    trt = make_tensorrt(major, **kwargs)
    cudart = HostCudart()
    wrapper = pcuda.Cuda.__new__(pcuda.Cuda)
    wrapper.handle = cudart
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(pcuda, "G_CUDA", wrapper)
    monkeypatch.setenv("STYLEGEN_TRT_CACHE", str(tmp_path / "user-cache"))
    reset_polygraphy_tensorrt()
    trt_backend.cuda_device.cache_clear()
    return trt, cudart
