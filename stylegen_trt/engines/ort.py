"""ONNX Runtime backend: CPU execution provider by default, CUDA when present.

The graph optimised by ORT is cached under <cache root>/ort/<key>/ (the cache root is <bundle>/engines,
or a directory under the user cache root for a read-only or embedded bundle: see engines/cache.py) so
later opens skip the optimisation passes; the key covers the hash of every file of the graph, the
onnxruntime version, the execution provider, the optimisation level and the machine (ORT's fully
optimised CPU graphs may use layouts specific to the processor).
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Collection, Mapping

import numpy as np
import onnxruntime as ort

from stylegen_trt.engines import cache
from stylegen_trt.engines.base import DeviceValue, EngineBase, EngineOptions, Value, check_inputs, host_view
from stylegen_trt.errors import UserError
from stylegen_trt.spec import GraphSpec

log = logging.getLogger(__name__)

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
CACHED_MODEL = "model.onnx"
CACHED_DATA = "model.onnx.data"
# The optimised copy keeps its weights in CACHED_DATA, which ONNX Runtime maps instead of parsing them out of
# the protobuf: the sd15 branch (1.4 GB) opened in 4.1 s from one file (part of the key: old entries rebuild).
CACHED_LAYOUT = "external-initializers"


def choose_providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise UserError("--device cuda asked for, but this onnxruntime has no CUDA provider: "
                        "install stylegen-trt[gpu] (onnxruntime-gpu) or use --device cpu")
    return ["CPUExecutionProvider"]


def _session_options(options: EngineOptions, level: str) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = OPT_LEVELS[level]
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = options.memory == "fast"
    # Pre-packing re-lays constant GEMM weights at session creation: on the sd15 UNet it took 2.0-2.2 s of a
    # 2.3 s open and changed neither the step time (15.2-17.7 vs 15.4-17.2 s per CFG call) nor the peak RSS,
    # as on `small` (benchmarks/analysis.md): off, so a fresh process is ready sooner.
    so.add_session_config_entry("session.disable_prepacking", "1")
    if options.threads:
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
    return so


class OrtMemory:
    """DeviceValues as OrtValues, on the device the session runs on (the CUDA provider's GPU, or the
    CPU: the same code path, tested here). Views (``DeviceValue.rows``) are bound by address."""

    def __init__(self, device: str):
        self.device = device  # "cpu" | "cuda"
        self.kind = f"ort:{device}"

    def value(self, ortvalue: "ort.OrtValue") -> DeviceValue:
        return DeviceValue(int(ortvalue.data_ptr()), tuple(ortvalue.shape()), np.dtype(_NUMPY_OF[ortvalue.data_type()]),
                           ortvalue, self)

    def upload(self, array: np.ndarray) -> DeviceValue:
        return self.value(ort.OrtValue.ortvalue_from_numpy(np.array(array, copy=True, order="C"), self.device, 0))

    def download(self, value: DeviceValue) -> np.ndarray:
        if self.device == "cpu":
            return host_view(value).copy()
        # onnxruntime's Python API copies a GPU OrtValue out whole: take the view's rows from that
        whole = value.owner.numpy()
        if not value.shape:
            return whole.reshape(value.shape)
        row = value.nbytes // value.shape[0] if value.shape[0] else 1
        start = (value.ptr - int(value.owner.data_ptr())) // row
        return np.ascontiguousarray(whole.reshape(-1, *value.shape[1:])[start:start + value.shape[0]])

    def concat(self, values) -> DeviceValue:
        if self.device == "cpu":
            return self.value(ort.OrtValue.ortvalue_from_numpy(np.concatenate([host_view(v) for v in values]), "cpu", 0))
        # onnxruntime's Python API has no device-to-device copy: through the host. Only where values of
        # several styles are joined (a mixed-style batch) or a residual row is cached - never per step
        # for one style.
        return self.upload(np.concatenate([v.numpy() for v in values]))


_NUMPY_OF = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


class OrtEngine(EngineBase):
    name = "ort"

    @classmethod
    def cache_fields(cls, files: Mapping[str, str], spec: GraphSpec, options: EngineOptions) -> dict:
        """What an optimised model depends on: its cache key is a hash of this."""
        return {
            "graph_files": dict(files),
            "onnxruntime": ort.__version__,
            "providers": choose_providers(options.device),
            "opt_level": options.opt_level,
            "machine": platform.machine(),
            "processor": cache.processor_name(),
            "layout": CACHED_LAYOUT,
        }

    def __init__(self, session: ort.InferenceSession, spec: GraphSpec):
        self.session = session
        self.spec = spec
        self.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._outputs = spec.output_names
        self.memory = OrtMemory(self.device)

    @classmethod
    def open(cls, onnx_path: Path, spec: GraphSpec, files: Mapping[str, str], cache_root: Path | None,
             options: EngineOptions) -> "OrtEngine":
        if options.precision == "fp16":
            raise UserError("--precision fp16 needs --backend trt: ONNX Runtime runs the bundle's fp32 graphs")
        if options.precision == "bf16":
            raise UserError("--precision bf16 needs --backend openvino: ONNX Runtime runs the bundle's fp32 graphs")
        if options.static is not None or options.cuda_graph:
            raise UserError("--static and --cuda-graph are TensorRT options: add --backend trt")
        providers = choose_providers(options.device)
        fields = cls.cache_fields(files, spec, options)
        if cache_root is None or options.opt_level == "disable":
            return cls(ort.InferenceSession(str(onnx_path), _session_options(options, options.opt_level),
                                            providers=providers), spec)
        entry = cache.entry_dir(cache_root, "ort", fields)
        try:
            with cache.build_lock(entry):
                if not cache.is_valid(entry, fields):
                    cls._build(onnx_path, entry, fields, options, providers)
        except OSError as exc:  # e.g. a read-only bundle: run uncached rather than fail
            log.warning("ORT cache at %s unusable (%s); optimising in memory", entry, exc)
            return cls(ort.InferenceSession(str(onnx_path), _session_options(options, options.opt_level),
                                            providers=providers), spec)
        # Already optimised offline: load without re-running the passes.
        session = ort.InferenceSession(str(entry / CACHED_MODEL), _session_options(options, "disable"),
                                       providers=providers)
        return cls(session, spec)

    @staticmethod
    def _build(onnx_path: Path, entry: Path, fields: dict, options: EngineOptions, providers: list[str]) -> None:
        log.info("optimising %s with onnxruntime into %s", onnx_path.name, entry)
        for name in (cache.RECORD, CACHED_MODEL, CACHED_DATA):
            (entry / name).unlink(missing_ok=True)
        so = _session_options(options, options.opt_level)
        tmp_model = entry / f".{CACHED_MODEL}.{os.getpid()}.tmp"
        so.optimized_model_filepath = str(tmp_model)
        # weights apart (CACHED_LAYOUT; and protobuf's 2 GB limit applies to the optimised copy too)
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", CACHED_DATA)
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(onnx_path), so, providers=providers)
        os.replace(tmp_model, entry / CACHED_MODEL)
        files = [CACHED_MODEL] + ([CACHED_DATA] if (entry / CACHED_DATA).is_file() else [])  # none: no weight >= 1 KB
        cache.commit(entry, fields, files)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.spec, inputs)
        values = self.session.run(self._outputs, dict(inputs))
        return dict(zip(self._outputs, values))

    def to_device(self, array: np.ndarray) -> DeviceValue:
        return self.memory.upload(array)

    def run_device(self, inputs: Mapping[str, Value], keep: Collection[str] = ()) -> dict[str, Value]:
        """One run through an IOBinding: DeviceValues of this engine's memory kind (OrtValues, or views
        of them) are bound by address, host arrays and values of other kinds are copied in; outputs in
        ``keep`` stay OrtValues on the session's device, the rest come back as NumPy arrays."""
        check_inputs(self.spec, inputs)
        binding = self.session.io_binding()
        device = self.memory.device
        held = []  # host arrays and foreign values must outlive the run
        for name, value in inputs.items():
            if isinstance(value, DeviceValue) and value.memory.kind == self.memory.kind:
                binding.bind_input(name, device, 0, value.dtype.type, list(value.shape), value.ptr)
                continue
            if isinstance(value, DeviceValue):
                value = value.numpy()
            host = np.ascontiguousarray(value)
            held.append(host)
            binding.bind_cpu_input(name, host)
        for name in self._outputs:
            binding.bind_output(name, device if name in keep else "cpu")
        self.session.run_with_iobinding(binding)
        out: dict[str, Value] = {}
        for name, ortvalue in zip(self._outputs, binding.get_outputs()):
            out[name] = self.memory.value(ortvalue) if name in keep else ortvalue.numpy()
        return out

    def close(self) -> None:
        self.session = None

