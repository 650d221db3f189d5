"""OpenVINO backend: the bundle's ONNX graphs compiled by OpenVINO's CPU plugin, in bf16 where the CPU has it.

- Static shapes: OpenVINO is fastest on a model reshaped to concrete shapes, so a graph is compiled once
  per input-shape signature - at open for ``EngineOptions.static`` (``build``, ``--static``), else on the
  first call with that signature - and kept in memory per shape.
- Precision: ``auto`` is bf16 where the CPU reports AVX512-BF16 or AMX (``/proc/cpuinfo`` flags, read at
  run time) and fp32 elsewhere; the style encoder stays fp32 under ``auto`` (its Gram matrices are what
  StySim compares, and it runs once per style image). ``--precision fp32|bf16`` overrides; fp16 is
  TensorRT's.
- Cache: each compiled model (one graph, one shape signature) is exported as a blob into its own entry
  <cache root>/openvino/<key>/model.blob (engines/cache.py: key = every file of the graph, the openvino
  version, precision, performance hint, machine and processor, and the shapes; atomic, locked; a
  read-only bundle caches under the user cache root as on ONNX Runtime). Later opens import the blob
  (memory-mapped) without reading the ONNX file.
- Crash isolation: OpenVINO does not officially support AMD CPUs and ``compile_model`` has crashed
  (SIGFPE, reported upstream on Zen 4). Every compile therefore runs in a child process
  (``python -m stylegen_trt.engines.openvino``) that writes the blob; this process only imports it. A
  child killed by a signal or failing is one ``UserError`` line that says ``--backend ort`` works, and
  the failure is remembered for the rest of the process (no second crash per graph).
- Threads: ``EngineOptions.threads`` -> INFERENCE_NUM_THREADS (0: OpenVINO's choice), one stream,
  latency hint. ``memory`` and ``opt_level`` are ONNX Runtime settings and change nothing here.
- Device values: host memory (``EngineBase``'s fallbacks): OpenVINO runs on the CPU here.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Mapping

import numpy as np

from stylegen_trt.engines import cache
from stylegen_trt.engines.base import EngineBase, EngineOptions, StaticShapes, check_inputs
from stylegen_trt.errors import UserError
from stylegen_trt.spec import GraphSpec, branch_chunk, resolve_shape

log = logging.getLogger(__name__)

BLOB = "model.blob"
DEVICE = "CPU"
PERFORMANCE_HINT = "LATENCY"
# Graphs kept fp32 under --precision auto (see the module docstring).
AUTO_FP32_GRAPHS = frozenset({"style_encoder"})
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
COMPILE_TIMEOUT_S = 3600
FALLBACK = "use --backend ort (ONNX Runtime) instead"

_failed: dict[str, str] = {}  # precision -> the one-line crash of a compile in this process


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def require_openvino():
    """The ``openvino`` module, or a UserError that says how to get it."""
    try:
        import openvino
    except ImportError as exc:
        raise UserError(f"--backend openvino needs the openvino package ({_one_line(exc)}): "
                        f"pip install 'stylegen-trt[openvino]', or {FALLBACK}") from exc
    return openvino


def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere OpenVINO would emulate it."""
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def auto_precision() -> str:
    return "bf16" if cpu_has_bf16() else "fp32"


def graph_precision(spec: GraphSpec, precision: str) -> str:
    """What the engine of ``spec`` computes in for ``--precision precision``."""
    if precision == "fp16":
        raise UserError("--precision fp16 is TensorRT's: OpenVINO on the CPU runs fp32 or bf16 "
                        "(auto: bf16 where the CPU has AVX512-BF16 or AMX)")
    if precision == "auto":
        return "fp32" if spec.name in AUTO_FP32_GRAPHS else auto_precision()
    return precision


def static_input_shapes(spec: GraphSpec, static: StaticShapes) -> dict[str, tuple[int, ...]]:
    """The shapes a generation at ``static`` feeds the graph (images with CFG, one style, one prompt per
    text-encoder call, the branch's full chunk of timesteps; a shorter last chunk compiles on first use)."""
    values = {name: r.opt for name, r in spec.axes.items()}
    values.update({"latent_h": static.latent_h, "latent_w": static.latent_w, "unet_batch": 2 * static.images,
                   "residual_batch": 1, "text_batch": 1, "image_batch": 1, "style_batch": 1})
    if "branch_steps" in spec.axes:
        values["branch_steps"] = branch_chunk(spec, static.latent_h, static.latent_w)
    for name, value in values.items():
        r = spec.axes.get(name)
        if r is not None and not r.min <= value <= r.max:
            raise UserError(f"--static: {name} {value} is outside the {spec.name} graph's range {r.min}..{r.max}: "
                            "choose another --height/--width/--n")
    return {t.name: resolve_shape(t.dims, values) for t in spec.inputs}


def compile_config(precision: str, threads: int | None) -> dict:
    return {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "PERFORMANCE_HINT": PERFORMANCE_HINT,
            "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads or 0)}


def _child_command(job: dict) -> list[str]:
    """The compile child's command line (a function so that tests can substitute a crashing child)."""
    return [sys.executable, "-m", "stylegen_trt.engines.openvino", json.dumps(job)]


def _describe_exit(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"crashed with {name}"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f"failed ({_one_line(lines[-1])[:300]})" if lines else f"failed (exit code {returncode})"


def compile_in_child(onnx_path: Path, shapes: Mapping[str, tuple[int, ...]], precision: str, threads: int | None,
                     blob: Path, graph: str) -> None:
    """Compile ``onnx_path`` reshaped to ``shapes`` in a child process, which writes the blob to ``blob``.
    A crash or failure of the child is one UserError line; this process is never at risk."""
    known = _failed.get(precision)
    if known is not None:
        raise UserError(known)
    job = {"onnx": str(onnx_path), "shapes": {k: list(v) for k, v in shapes.items()},
           "config": compile_config(precision, threads), "blob": str(blob)}
    log.info("compiling %s with OpenVINO (%s, %s) in a child process", onnx_path.name, precision,
             ", ".join(f"{k}={tuple(v)}" for k, v in shapes.items()))
    try:
        done = subprocess.run(_child_command(job), capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        done = None
    if done is not None and done.returncode == 0 and blob.is_file():
        return
    what = "timed out" if done is None else _describe_exit(done.returncode, done.stderr)
    if done is not None and done.stderr:
        log.info("OpenVINO compile child's stderr:\n%s", done.stderr[-4000:])
    message = (f"OpenVINO {what} compiling the {graph} graph in {precision} on this CPU "
               f"({cache.processor_name()}): {FALLBACK}")
    if done is None or done.returncode < 0:
        _failed[precision] = message  # a crash is the CPU's or the plugin's: do not try again in this process
    raise UserError(message)


def _compile_main(job: dict) -> None:
    """The child: read, reshape, compile, export. Runs with nothing else at stake."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(job["onnx"])
    by_name = {}
    for port in model.inputs:
        for name in port.get_names():
            by_name[name] = port
    model.reshape({by_name[name]: ov.PartialShape(shape) for name, shape in job["shapes"].items()})
    compiled = core.compile_model(model, DEVICE, job["config"])
    blob = Path(job["blob"])
    tmp = blob.with_name(f".{blob.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        exported = compiled.export_model()  # io.BytesIO on 2026.x
        f.write(exported.getbuffer() if hasattr(exported, "getbuffer") else exported)
    os.replace(tmp, blob)


class OpenVinoEngine(EngineBase):
    name = "openvino"

    @classmethod
    def natural_precision(cls) -> str:
        return auto_precision()

    @classmethod
    def base_fields(cls, files: Mapping[str, str], spec: GraphSpec, options: EngineOptions) -> dict:
        ov = require_openvino()
        return {
            "graph_files": dict(files),
            "openvino": ov.__version__,
            "device": DEVICE,
            "precision": graph_precision(spec, options.precision),
            "performance_hint": PERFORMANCE_HINT,
            "machine": platform.machine(),
            "processor": cache.processor_name(),
        }

    @classmethod
    def cache_fields(cls, files: Mapping[str, str], spec: GraphSpec, options: EngineOptions) -> dict:
        """The entry of the compiled model for ``options.static`` (what ``open`` compiles ahead); without
        static shapes, the fields every per-shape entry shares (``shapes`` None)."""
        shapes = static_input_shapes(spec, options.static) if options.static is not None else None
        return {**cls.base_fields(files, spec, options),
                "shapes": None if shapes is None else {k: list(v) for k, v in shapes.items()}}

    def __init__(self, onnx_path: Path, spec: GraphSpec, files: Mapping[str, str], cache_root: Path | None,
                 options: EngineOptions):
        self._ov = require_openvino()
        if options.cuda_graph:
            raise UserError("--cuda-graph is a TensorRT option: add --backend trt")
        if options.device == "cuda":
            raise UserError("--backend openvino runs on the CPU: drop --device cuda, or use --backend trt")
        self.spec = spec
        self.device = "cpu"
        self.onnx_path = onnx_path
        self.cache_root = cache_root
        self.options = options
        self._fields = self.base_fields(files, spec, options)
        self.precision = self._fields["precision"]
        self._core = self._ov.Core()
        self._compiled: dict[tuple, tuple] = {}  # shape signature -> (compiled model, infer request, output ports)
        self._compile_lock = threading.Lock()

    @classmethod
    def open(cls, onnx_path: Path, spec: GraphSpec, files: Mapping[str, str], cache_root: Path | None,
             options: EngineOptions) -> "OpenVinoEngine":
        engine = cls(onnx_path, spec, files, cache_root, options)
        if options.static is not None:
            engine.compiled_for(static_input_shapes(spec, options.static))
        return engine

    def compiled_for(self, shapes: Mapping[str, tuple[int, ...]]):
        """The compiled model for one shape signature: from memory, the disk cache, or a compile child."""
        signature = tuple((name, tuple(shapes[name])) for name in self.spec.input_names)
        with self._compile_lock:
            found = self._compiled.get(signature)
            if found is None:
                found = self._compiled[signature] = self._load(dict(signature))
        return found

    def _load(self, shapes: dict[str, tuple[int, ...]]):
        fields = {**self._fields, "shapes": {k: list(v) for k, v in shapes.items()}}
        if self.cache_root is not None:
            entry = cache.entry_dir(self.cache_root, "openvino", fields)
            try:
                with cache.build_lock(entry):
                    if not cache.is_valid(entry, fields):
                        (entry / cache.RECORD).unlink(missing_ok=True)
                        compile_in_child(self.onnx_path, shapes, self.precision, self.options.threads,
                                         entry / BLOB, self.spec.name)
                        cache.commit(entry, fields, [BLOB])
                return self._import(entry / BLOB)
            except OSError as exc:  # e.g. a read-only cache: compile into a temporary directory instead
                log.warning("OpenVINO cache at %s unusable (%s); compiling uncached", entry, exc)
        with tempfile.TemporaryDirectory(prefix="stylegen-ov-") as tmp:
            blob = Path(tmp) / BLOB
            compile_in_child(self.onnx_path, shapes, self.precision, self.options.threads, blob, self.spec.name)
            return self._import(blob, mapped=False)

    def _import(self, blob: Path, mapped: bool = True):
        ov = self._ov
        if mapped:  # copy-on-write map: OpenVINO reads the blob's pages in place
            data = np.memmap(blob, dtype=np.uint8, mode="c")
            stream = ov.Tensor(data, shared_memory=True)
        else:
            data = None
            stream = blob.read_bytes()
        # the same properties as the compile: an imported blob otherwise runs at the plugin's defaults (bf16 on
        # a bf16 CPU, whatever it was compiled for)
        compiled = self._core.import_model(stream, DEVICE, compile_config(self.precision, self.options.threads))
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        if hint != getattr(ov.Type, OV_PRECISION[self.precision]):
            raise UserError(f"OpenVINO runs the {self.spec.name} graph in {hint}, not {self.precision}: {FALLBACK}")
        outputs = []
        for name in self.spec.output_names:
            port = next((p for p in compiled.outputs if name in p.get_names()), None)
            if port is None:
                raise UserError(f"the OpenVINO {self.spec.name} model has no output {name!r}: delete {blob.parent} "
                                "and run again")
            outputs.append((name, port))
        return compiled, compiled.create_infer_request(), outputs, data, threading.Lock()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.spec, inputs)
        _, request, outputs, _, lock = self.compiled_for({k: tuple(v.shape) for k, v in inputs.items()})
        with lock:  # one infer request per compiled model: callers on several threads take turns
            request.infer({k: np.ascontiguousarray(v) for k, v in inputs.items()})
            return {name: np.array(request.get_tensor(port).data, copy=True) for name, port in outputs}

    def close(self) -> None:
        self._compiled.clear()



if __name__ == "__main__":  # the compile child: python -m stylegen_trt.engines.openvino JOB_JSON
    _compile_main(json.loads(sys.argv[1]))
