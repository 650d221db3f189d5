"""TensorRT backend: an engine per graph, built from the bundle's ONNX with polygraphy, run on a
CUDA stream with the I/O tensor API (set_input_shape / set_tensor_address / execute_async_v3).

TensorRT 10.x and 11.x are supported (``SUPPORTED_TENSORRT``), told apart at run time by the
module's major version:

- 10.x: a weakly typed network from the fp32 ONNX; fp16 is the builder's FP16 flag.
- 11.x: weak typing is gone (no ``BuilderFlag.FP16``; every network is strongly typed), so fp16
  means an fp16 ONNX: the graph is converted first (``onnxruntime.transformers.float16``, graph
  inputs/outputs kept fp32, fp32 kept where fp16 overflows or loses accuracy: ``FP16_KEEP_FP32_OPS``
  and everything that feeds the time embedding's Sin/Cos), cached as an intermediate stage, and
  built with the STRONGLY_TYPED network flag.

Sources for the TensorRT API used here (never run on this project's machines - no GPU): NVIDIA's
"Migrating from TensorRT 10.x to 11.x" pages (BuilderFlag.FP16 removed; strongly typed networks
required; NetworkDefinitionCreationFlag.STRONGLY_TYPED kept in 11.0 as a deprecated, ignored flag)
and the 10.x Python API reference (ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode /
get_tensor_dtype, TensorIOMode, IExecutionContext.set_input_shape / get_tensor_shape /
set_tensor_address / execute_async_v3). polygraphy's side was read from its 0.53.6 source.

The optimisation profile is the graph contract's min/max shapes (``GraphSpec.shapes``), so an engine
accepts exactly what the manifest promises, with opt shapes at what the runtime sends (the text
encoder one prompt per call, the branch its chunk of timesteps at the native size:
``runtime_axes``); ``build --static`` makes min = opt = max at one size (``EngineOptions.static``).
Engines are cached under
<cache root>/trt/<key>/; the key covers the hash of every file of the graph, the build recipe
(precision, strong typing, fp16 conversion, TF32, workspace, builder optimisation level, parser
flags), the TensorRT and polygraphy versions, the GPU (name, compute capability) and the profile.

polygraphy logs through Python logging (logger ``stylegen_trt.polygraphy``: INFO and below, so quiet
unless -v) instead of printing to stdout, and its failures (``PolygraphyException``), a missing
polygraphy and a missing CUDA runtime are one-line ``UserError``s.

The data path (``TrtEngine.run_device``): DeviceValues of this backend (``TrtMemory``: device buffers)
are bound by address - the branch's output buffers become the UNet's residual inputs; host inputs go
through page-locked host buffers reused across runs (cudaMallocHost through libcudart, as polygraphy's
wrapper has no pinned allocation; pageable NumPy memory if that fails) and asynchronous copies; each
run ends with one stream synchronisation, so engines on separate streams never race. Execution
contexts are created without activation memory (``USER_MANAGED``); each engine gets its own block, and
``TrtEngine.link`` gives all engines of one pipeline one block of the largest size. With
``EngineOptions.cuda_graph`` a static UNet engine is captured as a CUDA graph on its second run
(cudaStreamBeginCapture / EndCapture / GraphInstantiate; the first run is the warm-up, as in NVIDIA's
demo/Diffusion) and replayed with cudaGraphLaunch, every input copied into fixed buffers first.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import logging
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from stylegen_trt.engines import cache
from stylegen_trt.engines.base import (
    NUMPY_DTYPES, DeviceValue, EngineBase, EngineOptions, Precision, StaticShapes, Value, check_inputs,
)
from stylegen_trt.errors import UserError
from stylegen_trt.files import atomic_write_bytes
from stylegen_trt.spec import AxisRange, GraphSpec, bind_axes, branch_chunk, resolve_shape

log = logging.getLogger(__name__)
polygraphy_log = logging.getLogger("stylegen_trt.polygraphy")

ENGINE_FILE = "model.plan"
SUPPORTED_TENSORRT = (10, 11)  # major versions; pyproject's [trt] extra pins tensorrt>=10,<12
WORKSPACE_BYTES = 4 << 30  # TensorRT's scratch memory while choosing tactics (SD 1.5's UNet needs ~2-3 GB)
TF32 = False  # polygraphy's default (it clears TensorRT's on-by-default TF32): fp32 engines stay fp32
BUILDER_OPTIMIZATION_LEVEL = 3  # TensorRT's default, set explicitly so that the cache key records it
PARSER_FLAGS = ("NATIVE_INSTANCENORM",)  # GroupNorm exported as InstanceNorm runs natively, not as a plugin
# Graphs built fp32 when the precision is "auto": the style encoder's Gram matrices sum products over
# every pixel (overflow in fp16), and it runs once per style image (its output is cached).
AUTO_FP32_GRAPHS = frozenset({"style_encoder"})
# TensorRT 11's fp16: ops kept fp32 in the converted graph - normalisation statistics, reductions, powers
# and roots, softmax, exp/log, the time embedding's sin/cos (plus, by node, all that feeds sin/cos: the
# timestep times its frequencies loses ~0.5 rad in fp16 at t ~ 1000).
FP16_KEEP_FP32_OPS = (
    "BatchNormalization", "CumSum", "Cos", "Exp", "GroupNormalization", "InstanceNormalization",
    "LayerNormalization", "Log", "LogSoftmax", "Pow", "Range", "Reciprocal", "ReduceL2", "ReduceLogSumExp",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "Sin", "Softmax", "Sqrt",
)
FP16_KEEP_FP32_ANCESTORS_OF = ("Sin", "Cos")
FP16_CONVERTER_VERSION = 1  # bump when the conversion below changes: it is part of every key that uses it
EXTERNAL_DATA_BYTES = 1 << 30  # converted graphs with more weights than this keep them in <file>.data
# cudaDeviceGetAttribute attributes (CUDA runtime API, cudaDeviceAttr)
_COMPUTE_MAJOR, _COMPUTE_MINOR = 75, 76
_MEMCPY_D2D = ctypes.c_int(3)  # cudaMemcpyDeviceToDevice
_CAPTURE_MODE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal: other threads' CUDA calls are not affected
CUDA_GRAPH_GRAPHS = frozenset({"unet"})  # --cuda-graph captures the UNet step (the call made every step)

Shapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def require_tensorrt():
    """The ``tensorrt`` module of a supported major version, or a UserError that says how to get one."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the bindings are there but libnvinfer is not
        raise UserError(f"--backend trt needs TensorRT ({_one_line(exc)}): install stylegen-trt[trt] with NVIDIA's "
                        "libraries on a CUDA machine (pip install --extra-index-url https://pypi.nvidia.com "
                        "'tensorrt>=10,<12'), or use --backend ort") from exc
    if tensorrt_major(tensorrt.__version__) not in SUPPORTED_TENSORRT:
        raise UserError(f"TensorRT {tensorrt.__version__} is not supported (this stylegen-trt supports "
                        f"{', '.join(f'{m}.x' for m in SUPPORTED_TENSORRT)}): pip install 'tensorrt>=10,<12'")
    return tensorrt


def tensorrt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return -1


class _PolygraphyLog:
    """What polygraphy's G_LOGGER writes to once ``use_python_logging_system`` is on (it calls
    ``.log(level=, msg=)``): everything goes to ``stylegen_trt.polygraphy`` at INFO (DEBUG for its verbose
    levels), and error messages are kept, so that a failure can say what the parser or builder said."""

    def __init__(self):
        self.errors: collections.deque[str] = collections.deque(maxlen=8)

    def log(self, level: int, msg: str) -> None:
        if level >= 40:  # polygraphy's ERROR and CRITICAL, without its "[E] " / "[!] " prefix
            self.errors.append(re.sub(r"^\[[A-Z!]\]\s*", "", _one_line(msg)))
        polygraphy_log.log(logging.DEBUG if level <= 10 else logging.INFO, "%s", msg)


_POLYGRAPHY_LOG = _PolygraphyLog()


def require_polygraphy():
    """Import polygraphy with its logging routed through Python logging (never stdout)."""
    try:
        import polygraphy
        from polygraphy.logger import G_LOGGER
    except ImportError as exc:
        raise UserError(f"--backend trt needs polygraphy ({_one_line(exc)}): pip install 'stylegen-trt[trt]', "
                        "or use --backend ort") from exc
    G_LOGGER.colors = False  # else its first message may print a hint about the 'colored' module
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.python_logger = _POLYGRAPHY_LOG
    G_LOGGER.module_severity = G_LOGGER.VERBOSE if polygraphy_log.isEnabledFor(logging.DEBUG) else G_LOGGER.INFO
    return polygraphy


@contextmanager
def polygraphy_errors(what: str) -> Iterator[None]:
    """Turn a PolygraphyException raised inside into one UserError line that names ``what`` failed."""
    from polygraphy.exception import PolygraphyException

    _POLYGRAPHY_LOG.errors.clear()
    try:
        yield
    except PolygraphyException as exc:
        said = [e for e in _POLYGRAPHY_LOG.errors if e and e not in _one_line(exc)]
        detail = _one_line(exc) + (f" ({'; '.join(said[-3:])})" if said else "")
        raise UserError(f"{what}: {detail}; run with -v for TensorRT's log") from exc


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: str  # "8.6"


@functools.lru_cache(maxsize=None)
def cuda_device(index: int = 0) -> CudaDevice:
    """Name and compute capability of a GPU, through the CUDA runtime that polygraphy loads (asked once
    per process)."""
    require_polygraphy()
    from polygraphy import cuda
    from polygraphy.exception import PolygraphyException

    try:
        lib = cuda.wrapper().handle
    except (OSError, PolygraphyException) as exc:  # ctypes.CDLL("libcudart.so") failed
        lib = _load_pip_cudart()
        if lib is None:
            raise UserError(f"--backend trt needs the CUDA runtime library libcudart.so ({_one_line(exc)}): install "
                            "the NVIDIA driver and CUDA runtime (e.g. pip install nvidia-cuda-runtime) or put it "
                            "on LD_LIBRARY_PATH, or use --backend ort") from exc
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


def _load_pip_cudart():
    """libcudart from NVIDIA's pip wheels, for polygraphy's wrapper: polygraphy 0.53 searches
    ``nvidia/cuda_runtime/lib`` (CUDA 12's wheel) but CUDA 13's wheel installs ``nvidia/cu13/lib/libcudart.so.13``,
    and the loader's default name ``libcudart.so`` exists in neither (the layout torch+cu130 installs)."""
    import glob
    import os
    import sys

    from polygraphy.cuda import cuda as pcuda

    for root in (p for p in sys.path if p and os.path.isdir(p)):
        for sub in ("cu13", "cu12", "cuda_runtime"):
            for path in sorted(glob.glob(os.path.join(root, "nvidia", sub, "lib", "libcudart.so*")), reverse=True):
                try:
                    handle = ctypes.CDLL(path)
                except OSError:
                    continue
                log.info("CUDA runtime: %s (polygraphy's search missed it)", path)
                wrapper = pcuda.Cuda.__new__(pcuda.Cuda)  # its __init__ would search again; the handle is all it keeps
                wrapper.handle = handle
                pcuda.G_CUDA = wrapper
                return handle
    return None


def timing_cache_name(fields: dict) -> str:
    """Tactic timings are only valid for one TensorRT version on one GPU model: one cache file each,
    shared by every graph of the bundle (later builds skip the timings already measured)."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{fields['tensorrt']}-{fields['device']}-sm{fields['compute_capability']}")
    return f"timing-{slug}.cache"


def runtime_axes(spec: GraphSpec, static: StaticShapes | None = None) -> dict[str, AxisRange]:
    """The contract's axis ranges with opt at what the runtime sends: the text encoder one prompt per
    call (``text_batch`` 1), the branch its chunk of timesteps at the opt latent size
    (``spec.branch_chunk``). ``static``: min = opt = max at one size (images with CFG, one style), except
    ``branch_steps`` whose last chunk may be shorter (1 .. chunk, opt = chunk)."""
    axes = dict(spec.axes)

    def fix(name: str, lo: int, opt: int, hi: int) -> None:
        r = spec.axes.get(name)
        if r is None:
            return
        if not r.min <= lo <= hi <= r.max:
            raise UserError(f"--static: {name} {lo if lo == hi else f'{lo}..{hi}'} is outside the {spec.name} graph's "
                            f"range {r.min}..{r.max}: choose another --height/--width/--n")
        axes[name] = AxisRange(lo, min(max(opt, lo), hi), hi)

    if "text_batch" in axes:
        fix("text_batch", axes["text_batch"].min, 1, axes["text_batch"].max)
    if static is not None:
        for name, value in (("latent_h", static.latent_h), ("latent_w", static.latent_w),
                            ("unet_batch", 2 * static.images), ("residual_batch", 1), ("text_batch", 1),
                            ("image_batch", 1), ("style_batch", 1)):
            fix(name, value, value, value)
    if "branch_steps" in axes:
        h, w = (axes[a].opt if a in axes else 1 for a in ("latent_h", "latent_w"))
        chunk = branch_chunk(spec, h, w)
        r = axes["branch_steps"]
        fix("branch_steps", 1 if static else r.min, chunk, chunk if static else r.max)
    return axes


def profile_shapes(spec: GraphSpec, static: StaticShapes | None = None) -> dict[str, Shapes]:
    """Input name -> (min, opt, max) shapes: one TensorRT optimisation profile (``runtime_axes``)."""
    import dataclasses

    spec = dataclasses.replace(spec, axes=runtime_axes(spec, static))
    points = [spec.shapes(p) for p in ("min", "opt", "max")]
    return {name: (points[0][name], points[1][name], points[2][name]) for name in spec.input_names}


def is_static(profile: Mapping[str, Shapes]) -> bool:
    return all(lo == hi for lo, _, hi in profile.values())


def graph_precision(spec: GraphSpec, precision: Precision) -> str:
    """What "auto" means for one graph: fp16, except the graphs in AUTO_FP32_GRAPHS."""
    if precision == "auto":
        return "fp32" if spec.name in AUTO_FP32_GRAPHS else "fp16"
    return precision


def fp16_onnx_recipe() -> dict:
    import onnxruntime

    return {"converter": "onnxruntime.transformers.float16", "onnxruntime": onnxruntime.__version__,
            "version": FP16_CONVERTER_VERSION, "keep_io_types": True, "keep_fp32_ops": list(FP16_KEEP_FP32_OPS),
            "keep_fp32_ancestors_of": list(FP16_KEEP_FP32_ANCESTORS_OF)}


def build_recipe(precision: str, tensorrt_version: str) -> dict:
    """How an engine is built, by TensorRT major version: every field is part of the cache key."""
    strongly_typed = tensorrt_major(tensorrt_version) >= 11
    fp16 = precision == "fp16"
    return {
        "precision": precision,
        "strongly_typed": strongly_typed,
        "fp16_flag": fp16 and not strongly_typed,  # TensorRT 10: weakly typed, the builder picks fp16 kernels
        "fp16_onnx": fp16_onnx_recipe() if fp16 and strongly_typed else None,  # TensorRT 11: fp16 in the graph
        "tf32": TF32,
        "workspace_bytes": WORKSPACE_BYTES,
        "builder_optimization_level": BUILDER_OPTIMIZATION_LEVEL,
        "parser_flags": list(PARSER_FLAGS),
    }


def engine_fields(files: Mapping[str, str], spec: GraphSpec, recipe: dict, tensorrt_version: str,
                  device: CudaDevice, polygraphy_version: str, static: StaticShapes | None = None) -> dict:
    """Everything a built engine depends on: the cache key is a hash of this (the profile covers
    ``static``; it is recorded as well)."""
    return {
        "graph_files": dict(files),
        "tensorrt": tensorrt_version,
        "polygraphy": polygraphy_version,
        "device": device.name,
        "compute_capability": device.compute_capability,
        "precision": recipe["precision"],
        "recipe": recipe,
        "profile": {name: [list(s) for s in shapes] for name, shapes in profile_shapes(spec, static).items()},
        "static": None if static is None else [static.latent_h, static.latent_w, static.images],
    }


# ---------------------------------------------------------------------------------------------------
# TensorRT 11's fp16: the ONNX graph converted to fp16 (an intermediate stage, cached with its own key)


def fp16_keep_nodes(graph) -> list[str]:
    """Names of the nodes that compute the inputs of Sin/Cos (the time embedding): kept fp32. Unnamed
    nodes are named first (the converter blocks nodes by name)."""
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"stylegen_trt_node_{i}"
    producers = {out: node for node in graph.node for out in node.output}
    keep: set[str] = set()
    stack = [node for node in graph.node if node.op_type in FP16_KEEP_FP32_ANCESTORS_OF]
    while stack:
        node = stack.pop()
        for name in node.input:
            producer = producers.get(name)
            if producer is not None and producer.name not in keep:
                keep.add(producer.name)
                stack.append(producer)
    return sorted(keep)


def sort_topologically(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (the converter appends
    its Casts at the end; ONNX requires topological order)."""
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    deps = [{producer[name] for name in node.input if name in producer} for node in nodes]
    users: dict[int, list[int]] = collections.defaultdict(list)
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = collections.deque(i for i, n in enumerate(waiting) if n == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for j in users[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) != len(nodes):
        raise UserError(f"graph {graph.name!r} has a cycle after fp16 conversion: re-export the bundle")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def convert_to_fp16(src: Path, dst: Path) -> list[Path]:
    """Write the fp16 version of ``src`` to ``dst`` (and ``<dst>.data`` for large graphs); returns the files.

    External data is handled: shape inference runs on the graph without its weights (external tensors
    stay references, so a >2 GB graph never has to be serialised whole), then the weights are loaded
    from beside ``src`` and the converted graph is written with external data again if it is large.
    Nothing is written next to ``src`` (the bundle may be read-only)."""
    try:
        import onnx
        from onnx.external_data_helper import load_external_data_for_model
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise UserError(f"fp16 engines on TensorRT 11 need the onnx package to convert the graphs ({exc}): "
                        "pip install 'stylegen-trt[trt]'") from exc
    model = onnx.load(str(src), load_external_data=False)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # the converter then has fewer types to go by; TensorRT still checks them
        log.warning("shape inference on %s failed (%s): converting without it", src.name, _one_line(exc))
    load_external_data_for_model(model, str(src.parent))
    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                     op_block_list=list(FP16_KEEP_FP32_OPS), node_block_list=fp16_keep_nodes(model.graph))
    sort_topologically(model.graph)
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    data = dst.with_name(dst.name + ".data")
    data.unlink(missing_ok=True)
    if weights > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        return [dst, data]
    onnx.save_model(model, str(dst))
    return [dst]


def fp16_onnx(onnx_path: Path, files: Mapping[str, str], work_root: Path) -> Path:
    """The fp16 ONNX of a graph under ``work_root``/fp16-onnx/<key>/, converted now unless a valid one is there
    (safe to re-run: a partial conversion has no record and is redone)."""
    fields = {"graph_files": dict(files), "fp16_onnx": fp16_onnx_recipe()}
    entry = cache.entry_dir(work_root, "fp16-onnx", fields)
    with cache.build_lock(entry):
        if not cache.is_valid(entry, fields):
            (entry / cache.RECORD).unlink(missing_ok=True)
            start = time.perf_counter()
            written = convert_to_fp16(onnx_path, entry / "model.onnx")
            cache.commit(entry, fields, [p.name for p in written])
            log.info("%s converted to fp16 in %.1f s (%s)", onnx_path.name, time.perf_counter() - start, entry)
    return entry / "model.onnx"


# ---------------------------------------------------------------------------------------------------
# building


def build_engine_bytes(onnx_path: Path, spec: GraphSpec, recipe: dict, timing_cache: Path | None,
                       label: str | None = None, profile: Mapping[str, list] | None = None) -> bytes:
    """Parse ``onnx_path`` (already fp16 where the recipe says so) and build a serialized engine for the
    contract's profile. Every failure is one UserError line."""
    trt = require_tensorrt()
    require_polygraphy()
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    shapes = profile if profile is not None else profile_shapes(spec)
    profile = Profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.add(name, min=tuple(lo), opt=tuple(opt), max=tuple(hi))
    parser_flags = [getattr(trt.OnnxParserFlag, f) for f in recipe["parser_flags"] if hasattr(trt.OnnxParserFlag, f)]
    # TensorRT 11 networks are always strongly typed (the flag is kept there, deprecated and ignored): ask for it
    # only where the bindings still have it, so a release that drops it still builds
    strongly_typed = recipe["strongly_typed"] and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    with polygraphy_errors(f"TensorRT could not build the {spec.name} engine from {label or onnx_path.name}"):
        config = CreateConfig(
            fp16=recipe["fp16_flag"],
            tf32=recipe["tf32"],
            profiles=[profile],
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: recipe["workspace_bytes"]},
            builder_optimization_level=recipe["builder_optimization_level"],
            load_timing_cache=str(timing_cache) if timing_cache and timing_cache.is_file() else None,
        )
        network = NetworkFromOnnxPath(str(onnx_path), flags=parser_flags or None, strongly_typed=strongly_typed)
        built = EngineBytesFromNetwork(network, config, save_timing_cache=str(timing_cache) if timing_cache else None)()
    return bytes(built)


def build_plan(onnx_path: Path, files: Mapping[str, str], spec: GraphSpec, fields: dict, work_root: Path,
               timing_cache: Path | None) -> bytes:
    """Build an engine, converting the graph to fp16 first when the recipe says so (TensorRT 11)."""
    recipe = fields["recipe"]
    if recipe["fp16_onnx"]:
        return build_engine_bytes(fp16_onnx(onnx_path, files, work_root), spec, recipe, timing_cache,
                                  label=f"{onnx_path.name} (converted to fp16)", profile=fields["profile"])
    return build_engine_bytes(onnx_path, spec, recipe, timing_cache, profile=fields["profile"])


def build_into(entry: Path, onnx_path: Path, files: Mapping[str, str], spec: GraphSpec, fields: dict,
               work_root: Path) -> None:
    """Build one engine into a cache entry (caller holds the entry's lock); the record is written last."""
    log.info("building the %s TensorRT engine of %s (%s) into %s", fields["precision"], spec.name, onnx_path.name, entry)
    (entry / cache.RECORD).unlink(missing_ok=True)
    start = time.perf_counter()
    plan = build_plan(onnx_path, files, spec, fields, work_root, work_root / timing_cache_name(fields))
    atomic_write_bytes(entry / ENGINE_FILE, plan)
    cache.commit(entry, fields, [ENGINE_FILE])
    log.info("%s: engine %.1f MiB built in %.0f s", spec.name, len(plan) / 2**20, time.perf_counter() - start)


def describe_fields(fields: dict) -> str:
    """One line for logs and `build`'s report."""
    typing = "strongly typed" if fields["recipe"]["strongly_typed"] else "weakly typed"
    static = fields.get("static")
    shapes = f", static {static[0]}x{static[1]} latent x{static[2]}" if static else ""
    return (f"TensorRT {fields['tensorrt']}, {fields['device']} (sm {fields['compute_capability']}), "
            f"{fields['precision']}, {typing}{shapes}")


# ---------------------------------------------------------------------------------------------------
# running

# TensorRT DataType member names -> NumPy dtypes (the ones a bundle's contracts use, and a few to report)
_TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
               "INT8": "int8", "UINT8": "uint8", "BF16": "bfloat16"}


def tensor_table(engine, trt) -> dict[str, tuple[str, str]]:
    """The engine's own I/O tensors: name -> ("input" | "output", dtype name)."""
    table = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        kind = "input" if mode == trt.TensorIOMode.INPUT else "output" if mode == trt.TensorIOMode.OUTPUT else str(mode)
        dtype = engine.get_tensor_dtype(name)
        dtype_name = getattr(dtype, "name", str(dtype))
        table[name] = (kind, _TRT_DTYPES.get(dtype_name, dtype_name))
    return table


def check_tensor_table(table: Mapping[str, tuple[str, str]], spec: GraphSpec) -> None:
    """The engine must have exactly the contract's inputs and outputs, with its dtypes: anything else
    would be an input never set or an output never read - an error, not a silent wrong result."""
    expected = {t.name: ("input", t.dtype) for t in spec.inputs} | {t.name: ("output", t.dtype) for t in spec.outputs}
    problems = []
    for name, (kind, dtype) in expected.items():
        got = table.get(name)
        if got is None:
            problems.append(f"no {kind} {name}")
        elif got != (kind, dtype):
            problems.append(f"{name} is {got[0]} {got[1]}, the contract says {kind} {dtype}")
    for name, (kind, dtype) in table.items():
        if name not in expected:
            problems.append(f"{'an input' if kind == 'input' else 'an output'} the contract lacks: {name} ({dtype})")
    if problems:
        raise UserError(f"the {spec.name} engine does not match the bundle's contract ({'; '.join(problems)}): "
                        "delete its engine cache entry and rebuild, or re-export the bundle")


class _Block:
    """A device allocation owned by DeviceValues: freed when the last of them goes."""

    def __init__(self, array):
        self.array = array

    def __del__(self):
        try:
            self.array.free()
        except Exception:  # noqa: BLE001 - interpreter shutdown, or the runtime already gone
            pass


class TrtMemory:
    """DeviceValues in CUDA device memory (polygraphy's DeviceArray); copies through polygraphy's wrapper."""

    kind = "trt:cuda"

    def __init__(self, cuda):
        self._cuda = cuda

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> DeviceValue:
        from polygraphy.datatype import DataType

        array = self._cuda.DeviceArray(tuple(shape), DataType.from_dtype(np.dtype(dtype)))
        return DeviceValue(array.ptr, tuple(shape), np.dtype(dtype), _Block(array), self)

    def upload(self, array: np.ndarray) -> DeviceValue:
        host = np.ascontiguousarray(array)
        value = self.empty(host.shape, host.dtype)
        value.owner.array.copy_from(host)
        return value

    def download(self, value: DeviceValue) -> np.ndarray:
        from polygraphy.datatype import DataType

        host = np.empty(value.shape, value.dtype)
        self._cuda.DeviceView(value.ptr, value.shape, DataType.from_dtype(value.dtype)).copy_to(host)
        return host

    def copy_into(self, dst_ptr: int, src: DeviceValue, stream_ptr: int | None = None) -> None:
        if src.nbytes:
            self._cuda.wrapper().memcpy(dst_ptr, src.ptr, src.nbytes, _MEMCPY_D2D, stream_ptr)

    def concat(self, values) -> DeviceValue:
        out = self.empty((sum(v.shape[0] for v in values), *values[0].shape[1:]), values[0].dtype)
        offset = 0
        for v in values:
            self.copy_into(out.ptr + offset, v)
            offset += v.nbytes
        return out


class PinnedHost:
    """Page-locked host buffers by name, reused across runs (cudaMallocHost / cudaFreeHost through
    libcudart; polygraphy's wrapper allocates no host memory). Where page-locked memory cannot be had,
    ordinary NumPy memory (copies are then staged by the driver: slower, same results)."""

    def __init__(self, lib):
        self._lib = lib
        self._blocks: dict[str, tuple[int, int]] = {}  # name -> (address, bytes)
        self._pageable: dict[str, np.ndarray] = {}
        self.pinned = hasattr(lib, "cudaMallocHost") and hasattr(lib, "cudaFreeHost")

    def array(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
        if self.pinned:
            ptr, size = self._blocks.get(name, (0, 0))
            if size < nbytes:
                self._free(name)
                out = ctypes.c_void_p()
                status = self._lib.cudaMallocHost(ctypes.byref(out), ctypes.c_size_t(nbytes))
                if status != 0 or not out.value:
                    log.warning("cudaMallocHost(%d) failed (error %s): host copies use pageable memory", nbytes, status)
                    self.pinned = False
                    return self.array(name, shape, dtype)
                ptr, size = self._blocks[name] = (out.value, nbytes)
            raw = (ctypes.c_char * nbytes).from_address(ptr)
            return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape, dtype=np.int64))).reshape(shape)
        buffer = self._pageable.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = self._pageable[name] = np.empty(nbytes, np.uint8)
        return buffer[:int(np.prod(shape, dtype=np.int64)) * dtype.itemsize].view(dtype).reshape(shape)

    def _free(self, name: str) -> None:
        ptr, _ = self._blocks.pop(name, (0, 0))
        if ptr:
            self._lib.cudaFreeHost(ctypes.c_void_p(ptr))

    def free(self) -> None:
        for name in list(self._blocks):
            self._free(name)
        self._pageable.clear()


def _check_cuda(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed with CUDA error {status}")


class CudaGraph:
    """One captured TensorRT execution (``execute_async_v3`` on ``stream``), replayed with cudaGraphLaunch.

    The CUDA runtime calls are made through ctypes on libcudart, as NVIDIA's demo/Diffusion does through
    cuda-python: cudaStreamBeginCapture, cudaStreamEndCapture, cudaGraphInstantiateWithFlags (CUDA 11.4+
    and 12; plain cudaGraphInstantiate changed its signature in 12), cudaGraphLaunch."""

    def __init__(self, lib, context, stream_ptr: int):
        self._lib, self.exec, self.graph = lib, ctypes.c_void_p(), ctypes.c_void_p()
        stream = ctypes.c_void_p(stream_ptr)
        _check_cuda(lib.cudaStreamBeginCapture(stream, ctypes.c_int(_CAPTURE_MODE_THREAD_LOCAL)), "cudaStreamBeginCapture")
        ok = context.execute_async_v3(stream_ptr)
        status = lib.cudaStreamEndCapture(stream, ctypes.byref(self.graph))
        if not ok:
            self.close()
            raise RuntimeError("TensorRT execution failed while capturing a CUDA graph")
        _check_cuda(status, "cudaStreamEndCapture")
        _check_cuda(lib.cudaGraphInstantiateWithFlags(ctypes.byref(self.exec), self.graph, ctypes.c_ulonglong(0)),
                    "cudaGraphInstantiateWithFlags")
        self.launches = 0

    def launch(self, stream_ptr: int) -> None:
        _check_cuda(self._lib.cudaGraphLaunch(self.exec, ctypes.c_void_p(stream_ptr)), "cudaGraphLaunch")
        self.launches += 1

    def close(self) -> None:
        if self.exec.value:
            self._lib.cudaGraphExecDestroy(self.exec)
            self.exec = ctypes.c_void_p()
        if self.graph.value:
            self._lib.cudaGraphDestroy(self.graph)
            self.graph = ctypes.c_void_p()


def create_context(engine, trt):
    """An execution context without activation memory of its own: TensorRT 10/11's
    ``create_execution_context(ExecutionContextAllocationStrategy.USER_MANAGED)``, or 10.0's
    ``create_execution_context_without_device_memory()`` where the strategy enum is absent."""
    strategy = getattr(getattr(trt, "ExecutionContextAllocationStrategy", None), "USER_MANAGED", None)
    if strategy is not None:
        return engine.create_execution_context(strategy)
    return engine.create_execution_context_without_device_memory()


def activation_bytes(engine) -> int:
    """The activation memory an engine's context needs: ``device_memory_size_v2`` (10.x since 10.1, 11.x),
    else ``device_memory_size`` (deprecated in 10.x)."""
    for attr in ("device_memory_size_v2", "device_memory_size"):
        if hasattr(engine, attr):
            return int(getattr(engine, attr))
    raise RuntimeError("this TensorRT reports no activation memory size (device_memory_size[_v2])")


def set_activation_memory(context, ptr: int, nbytes: int) -> None:
    """``context.set_device_memory(ptr, size)`` (10.1+, 11.x), else 10.0's ``context.device_memory = ptr``."""
    if hasattr(context, "set_device_memory"):
        context.set_device_memory(ptr, nbytes)
    else:
        context.device_memory = ptr


class TrtEngine(EngineBase):
    """One TensorRT engine and its execution context; device buffers are kept and grown between runs,
    host outputs are fresh arrays every run (never views of buffers the next run overwrites), outputs
    kept on the device are fresh device buffers owned by the DeviceValues returned."""

    name = "trt"

    @classmethod
    def natural_precision(cls) -> str:
        return "fp16"

    def __init__(self, engine, spec: GraphSpec, device: CudaDevice, runtime=None, cuda=None, trt=None,
                 precision: str = "fp16", static: StaticShapes | None = None, cuda_graph: bool = False):
        if cuda is None:  # polygraphy's CUDA runtime wrapper (ctypes; no torch, no cuda-python)
            from polygraphy import cuda
        self._cuda = cuda
        self.spec = spec
        self.device = f"cuda:{device.index}"
        self.precision = precision
        self._static = static
        self._buffers: dict[str, object] = {}
        self._stream = None
        self._context = None
        self._activation = None
        self._pinned = None
        self._graph: CudaGraph | None = None
        trt = trt or require_tensorrt()
        check_tensor_table(tensor_table(engine, trt), spec)
        self._runtime = runtime  # TensorRT wants the runtime to outlive the engines it deserialised
        self._engine = engine
        self._context = create_context(engine, trt)
        if self._context is None:
            raise RuntimeError(f"{spec.name}: TensorRT could not create an execution context (out of GPU memory?)")
        self.activation_bytes = activation_bytes(engine)
        self._set_activation(self._own_block(self.activation_bytes))
        self._stream = cuda.Stream()
        self._lib = cuda.wrapper().handle
        self._pinned = PinnedHost(self._lib)
        self.memory = TrtMemory(cuda)
        self._dtypes = {t.name: np.dtype(NUMPY_DTYPES[t.dtype]) for t in (*spec.inputs, *spec.outputs)}
        self._use_graph = cuda_graph and spec.name in CUDA_GRAPH_GRAPHS
        self._graph_runs = 0
        self._graph_inputs: dict[str, tuple[int, object]] = {}  # name -> (ptr, owner) last copied in

    def _own_block(self, nbytes: int):
        return self._cuda.DeviceArray.raw((nbytes,)) if nbytes else None

    def _set_activation(self, block) -> None:
        """Point the context at ``block`` (this engine's own, or a pipeline's shared one)."""
        if self._activation is not None and self._activation is not block and getattr(self, "_owns_activation", True):
            self._activation.free()
        self._activation = block
        if block is not None:
            set_activation_memory(self._context, block.ptr, block.allocated_nbytes)
        self._drop_graph()  # a captured graph holds the old addresses

    @classmethod
    def link(cls, engines) -> None:
        """One activation block, of the largest size, for all engines of a pipeline (they run one at a
        time: every run ends with a synchronisation), instead of one block each."""
        engines = [e for e in engines if e._context is not None]
        if len(engines) < 2:
            return
        nbytes = max(e.activation_bytes for e in engines)
        shared = engines[0]._own_block(nbytes)
        for e in engines:
            e._set_activation(shared)
            e._owns_activation = False
        engines[0]._shared_activation = shared  # freed by the first engine's close

    @classmethod
    def cache_fields(cls, files: Mapping[str, str], spec: GraphSpec, options: EngineOptions) -> dict:
        if options.device == "cpu":
            raise UserError("--backend trt runs on a CUDA GPU: drop --device cpu, or use --backend ort")
        if options.precision == "bf16":
            raise UserError("--precision bf16 is OpenVINO's (--backend openvino): TensorRT builds fp16 or fp32 engines")
        trt = require_tensorrt()
        polygraphy = require_polygraphy()
        recipe = build_recipe(graph_precision(spec, options.precision), trt.__version__)
        return engine_fields(files, spec, recipe, trt.__version__, cuda_device(0), polygraphy.__version__, options.static)

    @classmethod
    def open(cls, onnx_path: Path, spec: GraphSpec, files: Mapping[str, str], cache_root: Path | None,
             options: EngineOptions) -> "TrtEngine":
        trt = require_tensorrt()
        fields = cls.cache_fields(files, spec, options)
        if options.cuda_graph and spec.name in CUDA_GRAPH_GRAPHS and not is_static(
                {k: tuple(map(tuple, v)) for k, v in fields["profile"].items()}):
            raise UserError("--cuda-graph needs static engines: add --static (engines built for one --height, "
                            "--width and --n with `stylegen-trt build --static`)")
        if cache_root is None:
            with tempfile.TemporaryDirectory(prefix="stylegen-trt-") as work:
                plan = build_plan(onnx_path, files, spec, fields, Path(work), None)
        else:
            work_root = cache_root / "trt"
            entry = cache.entry_dir(cache_root, "trt", fields)
            try:
                with cache.build_lock(entry):
                    if not cache.is_valid(entry, fields):
                        build_into(entry, onnx_path, files, spec, fields, work_root)
                    plan = (entry / ENGINE_FILE).read_bytes()
            except OSError as exc:
                raise UserError(f"cannot use the TensorRT engine cache {entry} ({exc.strerror or exc}): set "
                                "STYLEGEN_TRT_CACHE to a writable directory") from exc
        with polygraphy_errors(f"TensorRT could not load the {spec.name} engine"):
            from polygraphy.backend.trt import get_trt_logger

            runtime = trt.Runtime(get_trt_logger())
            engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise UserError(f"TensorRT could not deserialize the {spec.name} engine: delete "
                            f"{cache_root / 'trt' if cache_root else 'the engine cache'} and rebuild")
        return cls(engine, spec, cuda_device(0), runtime, trt=trt, precision=fields["precision"],
                   static=options.static, cuda_graph=options.cuda_graph)

    def _device_buffer(self, name: str, shape: tuple[int, ...]):
        from polygraphy.datatype import DataType

        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = self._buffers[name] = self._cuda.DeviceArray(shape, DataType.from_dtype(self._dtypes[name]))
        return buffer.resize(tuple(shape))

    def _bind(self, name: str, ptr: int) -> None:
        if not self._context.set_tensor_address(name, ptr):
            raise RuntimeError(f"{self.spec.name}: TensorRT refused the address of {name}")

    def to_device(self, array: np.ndarray) -> DeviceValue:
        return self.memory.upload(array)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_device(inputs)

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if self._context.set_input_shape(name, shape):
            return
        if self._static is not None:
            s = self._static
            raise UserError(f"the static {self.spec.name} engine takes other shapes than {name} {tuple(shape)} (built for "
                            f"a {s.latent_h}x{s.latent_w} latent, {s.images} image(s) with guidance > 1): drop --static, "
                            "or build and generate at one --height/--width/--n")
        raise ValueError(f"{self.spec.name}: TensorRT refused shape {tuple(shape)} for {name}")

    def run_device(self, inputs: Mapping[str, Value], keep=()) -> dict[str, Value]:
        check_inputs(self.spec, inputs)
        axes: dict[str, int] = {}
        for t in self.spec.inputs:
            bind_axes(t, tuple(inputs[t.name].shape), axes)
        stream = self._stream
        held = []  # DeviceValues bound by address must outlive the run
        graph = self._use_graph
        for name in self.spec.input_names:
            value = inputs[name]
            shape = tuple(value.shape)
            self._set_shape(name, shape)
            if isinstance(value, DeviceValue) and value.memory.kind == self.memory.kind:
                if not graph:  # bound where it is: no copy at all
                    held.append(value)
                    self._bind(name, value.ptr)
                    continue
                buffer = self._device_buffer(name, shape)  # a graph replays fixed addresses: copy in on the device
                if self._graph_inputs.get(name) != (value.ptr, value.owner) or self._graph is None:
                    self.memory.copy_into(buffer.ptr, value, stream.ptr)
                    self._graph_inputs[name] = (value.ptr, value.owner)
                self._bind(name, buffer.ptr)
                continue
            host = value.numpy() if isinstance(value, DeviceValue) else value
            staged = self._pinned.array(name, shape, self._dtypes[name])
            np.copyto(staged, host, casting="no")
            buffer = self._device_buffer(name, shape)
            buffer.copy_from(staged, stream)
            self._graph_inputs.pop(name, None)
            self._bind(name, buffer.ptr)
        outputs = {}
        for t in self.spec.outputs:
            shape = tuple(self._context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"{self.spec.name}: TensorRT left the shape of {t.name} unresolved {shape} after "
                                   "every input shape was set")
            try:
                expected = resolve_shape(t.dims, axes)
            except KeyError:  # an output axis no input names: nothing to compare with
                expected = shape
            if shape != expected:
                raise RuntimeError(f"{self.spec.name}: TensorRT gives {t.name} the shape {shape}, the contract says "
                                   f"{expected}")
            if t.name in keep and not graph:
                value = self.memory.empty(shape, self._dtypes[t.name])  # handed out: its own buffer
                self._bind(t.name, value.ptr)
                outputs[t.name] = value
            else:
                buffer = self._device_buffer(t.name, shape)
                self._bind(t.name, buffer.ptr)
                outputs[t.name] = buffer
        self._execute()
        result: dict[str, Value] = {}
        for name, out in outputs.items():
            if isinstance(out, DeviceValue):
                result[name] = out
            elif name in keep:  # a graph's fixed output buffer: copied out on the device
                value = self.memory.empty(tuple(out.shape), self._dtypes[name])
                self._cuda.wrapper().memcpy(value.ptr, out.ptr, value.nbytes, _MEMCPY_D2D, stream.ptr)
                result[name] = value
            else:
                staged = self._pinned.array(name, tuple(out.shape), self._dtypes[name])
                out.copy_to(staged, stream)
                result[name] = staged
        stream.synchronize()
        del held
        return {name: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for name, v in result.items()}

    def _execute(self) -> None:
        stream_ptr = self._stream.ptr
        if self._use_graph:
            self._graph_runs += 1
            if self._graph is None and self._graph_runs >= 2:  # the first run was the warm-up
                try:
                    self._graph = CudaGraph(self._lib, self._context, stream_ptr)
                except (RuntimeError, AttributeError) as exc:
                    log.warning("%s: CUDA graph capture failed (%s): running without it", self.spec.name, exc)
                    self._use_graph = False
            if self._graph is not None:
                self._graph.launch(stream_ptr)
                return
        if not self._context.execute_async_v3(stream_ptr):
            raise RuntimeError(f"{self.spec.name}: TensorRT execution failed (run with -v for TensorRT's log)")

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
            self._graph_runs = 0

    @property
    def graph_launches(self) -> int:
        return self._graph.launches if self._graph is not None else 0

    def close(self) -> None:
        self._drop_graph()
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()
        if self._pinned is not None:
            self._pinned.free()
            self._pinned = None
        if self._activation is not None and getattr(self, "_owns_activation", True):
            self._activation.free()
        shared = getattr(self, "_shared_activation", None)
        if shared is not None:
            shared.free()
            self._shared_activation = None
        self._activation = None
        if self._stream is not None:
            self._stream.free()
            self._stream = None
        self._context = self._engine = self._runtime = None
