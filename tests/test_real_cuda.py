"""The TensorRT backend's device data path on REAL CUDA memory: the stub ``tensorrt`` (tests/trt_stub.py, TensorRT
10's API) under polygraphy's real ``cuda`` wrapper over the real libcudart - real ``cudaMalloc`` buffers, real
streams, real ``cudaMallocHost`` pinned buffers, real copies. The stub engine reaches its bound tensors only through
the CUDA runtime (``trt_stub.CudartMemory``: stream sync, device -> host copy, ONNX Runtime CPU on the plan's ONNX
graph, host -> device copy, sync), so everything the backend does around it - ``TrtEngine.run_device``, the branch's
output buffers bound as the UNet's residual inputs, uploads once per generation, pinned staging, one USER_MANAGED
activation block per pipeline, ``close()`` - runs against real device memory.

Every test runs twice: ``host`` (``trt_stub.HostCudart``, host memory: runs everywhere) and ``cuda`` (real
libcudart and a GPU: skips cleanly without them). Both use the SAME stub code and the same counting wrapper
(``Tracked``), so what runs here is what runs on the GPU, only the runtime underneath differs.

Not covered: TensorRT's kernels (the stub computes on the host with ONNX Runtime), and CUDA graphs (``--cuda-graph``):
a host computation cannot be captured into a CUDA graph, so the stub's execution has nothing to record on a real
capturing stream; the graph path stays tested over HostCudart in tests/test_device_path.py.

The tests, one line each (every one on ``host`` and on ``cuda``):

- copy helpers: the stub's cudaMemcpyAsync (kinds 1, 2) and the backend's copies (DeviceArray, device-to-device
  kind 3 for rows and joins) move bytes exactly;
- Engine.run_device on the UNet: a residual bound in place, host inputs via pinned buffers, an output kept on the
  device: ONNX Runtime's numbers;
- a mixed-style batch and a styled DDIM generation through --backend trt: ONNX Runtime CPU's images to 1/255, the
  UNet fed device values;
- a styled generation: 2 uploads + 1 download per UNet step, context and zero residuals uploaded once, branch
  outputs never copied;
- close(): no device allocation, pinned buffer or stream left; one shared USER_MANAGED activation block before;
  cudaMemGetInfo back to where it was (within 8 MiB) on a GPU;
- discovery: quick, never raises.

GPU run (about 20 s): ``STYLEGEN_TRT_REAL_CUDA=1 python -m pytest tests/test_real_cuda.py -q -rs`` - with that
variable set, a missing libcudart or GPU FAILS the ``cuda`` tests instead of skipping them.
"""

from __future__ import annotations

import ctypes
import gc
import glob
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import trt_stub
from stylegen_trt.engines import trt as trt_backend
from stylegen_trt.engines.base import DeviceValue, EngineOptions, concat_rows
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.images import procedural_swatch, save_png
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline, StyleRequest, branch_chunk

ORT_OPTIONS = EngineOptions(threads=2, cache=False)  # the ONNX Runtime side, and the stub's compute, alike
MEMGETINFO_SLACK = 8 << 20  # cudaMemGetInfo is page/pool granular: a leak check by it alone is coarse
STEPS = 6


# ---------------------------------------------------------------------------------------------------
# finding libcudart and a GPU (a session's first look: well under a second where there is none)


def _site_dirs() -> list[str]:
    dirs = [p for p in sys.path if p and os.path.isdir(p)]
    for name in ("nvidia", "torch"):
        try:
            spec = importlib.util.find_spec(name)  # never imports torch (slow): only locates it
        except (ImportError, ValueError):
            continue
        for loc in (spec.submodule_search_locations or []) if spec else []:
            dirs.append(os.path.dirname(loc))
    return list(dict.fromkeys(dirs))


def cudart_candidates() -> list[str]:
    """Where libcudart may be, best first: what polygraphy's own loader picks (its search: LD_LIBRARY_PATH,
    /usr/local/cuda/lib64, /usr/lib, /lib, <site-packages>/nvidia/cuda_runtime/lib), then the NVIDIA pip wheels
    (CUDA 12's nvidia/cuda_runtime/lib, CUDA 13's nvidia/cu13/lib - polygraphy 0.53.6 does not look there), then
    torch's lib directory, then the loader's default paths."""
    found: list[str] = []
    try:
        trt_backend.require_polygraphy()  # polygraphy's log into Python logging, not stdout
        import polygraphy.cuda.cuda as pcuda
        from polygraphy import util as putil

        found += putil.find_in_dirs("libcudart.so*", pcuda._find_cuda_lib_dirs())
    except Exception:  # noqa: BLE001 - an older polygraphy without these helpers: the fixed list below
        pass
    for site in _site_dirs():
        for sub in ("nvidia/cuda_runtime/lib", "nvidia/cu13/lib", "nvidia/cu12/lib", "nvidia/*/lib", "torch/lib"):
            found += sorted(glob.glob(os.path.join(site, sub, "libcudart.so*")))
    found = [p for p in found if os.path.isfile(p) and not p.endswith(".a")]
    return list(dict.fromkeys(os.path.realpath(p) for p in found)) + ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]


def _probe(path: str):
    """(CDLL, None) if ``path`` loads and sees a GPU it can allocate on, else (None, why). Uses a CDLL object of its
    own with declared signatures (CUDA runtime API: cudaGetDeviceCount(int*), cudaMemGetInfo(size_t* free,
    size_t* total)), so polygraphy's handle keeps its own untyped function objects."""
    try:
        lib = ctypes.CDLL(path)
        lib.cudaGetDeviceCount.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.cudaGetDeviceCount.restype = ctypes.c_int
        lib.cudaMemGetInfo.argtypes = [ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
        lib.cudaMemGetInfo.restype = ctypes.c_int
    except (OSError, AttributeError) as exc:  # not loadable, or not a CUDA runtime
        return None, f"{path}: {exc}"
    count = ctypes.c_int(0)
    status = lib.cudaGetDeviceCount(ctypes.byref(count))
    if status != 0 or count.value < 1:
        return None, f"{path}: cudaGetDeviceCount -> error {status}, {count.value} devices"
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    status = lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total))  # creates the primary context
    if status != 0:
        return None, f"{path}: cudaMemGetInfo -> error {status}"
    return lib, None


class RealCuda:
    def __init__(self, path: str, probe):
        self.path = path
        self._probe = probe  # typed functions: cudaMemGetInfo
        self.lib = ctypes.CDLL(path)  # untyped, as polygraphy's wrapper and the backend call it

    def free_bytes(self) -> int:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        assert self._probe.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) == 0
        return free.value


@pytest.fixture(scope="session")
def real_cuda():
    reasons = []
    for path in cudart_candidates():
        probe, why = _probe(path)
        if probe is not None:
            return RealCuda(path, probe)
        reasons.append(why)
    (pytest.fail if os.environ.get("STYLEGEN_TRT_REAL_CUDA") == "1" else pytest.skip)("needs libcudart and a CUDA GPU: " + ("; ".join(dict.fromkeys(reasons)) or "no libcudart found"))


# ---------------------------------------------------------------------------------------------------
# the runtime underneath, counted


class Tracked:
    """A libcudart (real, or HostCudart) as polygraphy's wrapper and the backend see it: every call passes through;
    allocations, pinned buffers and streams are tracked while alive, copies counted by direction and stream (as
    HostCudart does, so the assertions read the same on both)."""

    KINDS = {1: "h2d", 2: "d2h", 3: "d2d"}

    def __init__(self, lib):
        self._lib = lib
        self.device: dict[int, int] = {}  # live cudaMalloc: address -> bytes
        self.pinned: dict[int, int] = {}  # live cudaMallocHost
        self.streams: set[int] = set()
        self.mallocs = self.pinned_allocs = 0
        self.by_stream: dict[int, dict[str, int]] = {}
        self.log: list[tuple[str, int, int]] = []

    def __getattr__(self, name):  # everything else: straight through (hasattr/getattr probes included)
        return getattr(self._lib, name)

    def cudaMalloc(self, ref, nbytes):  # noqa: N802 - CUDA's names
        status = self._lib.cudaMalloc(ref, nbytes)
        if status == 0:
            self.device[ref._obj.value] = nbytes.value
            self.mallocs += 1
        return status

    def cudaFree(self, ptr):  # noqa: N802
        status = self._lib.cudaFree(ptr)
        if status == 0 and ptr.value:
            assert self.device.pop(ptr.value, None) is not None, f"cudaFree of {ptr.value:#x}: not a live allocation"
        return status

    def cudaMallocHost(self, ref, nbytes):  # noqa: N802
        status = self._lib.cudaMallocHost(ref, nbytes)
        if status == 0:
            self.pinned[ref._obj.value] = nbytes.value
            self.pinned_allocs += 1
        return status

    def cudaFreeHost(self, ptr):  # noqa: N802
        status = self._lib.cudaFreeHost(ptr)
        if status == 0:
            assert self.pinned.pop(ptr.value, None) is not None
        return status

    def cudaStreamCreate(self, ref):  # noqa: N802
        status = self._lib.cudaStreamCreate(ref)
        if status == 0:
            self.streams.add(ref._obj.value)
        return status

    def cudaStreamDestroy(self, stream):  # noqa: N802
        status = self._lib.cudaStreamDestroy(stream)
        if status == 0:
            self.streams.discard(stream.value)
        return status

    def _count(self, kind, nbytes, stream):
        direction = self.KINDS.get(kind.value, "other")
        handle = int(stream.value or 0) if stream is not None else 0
        self.by_stream.setdefault(handle, {"h2d": 0, "d2h": 0, "d2d": 0, "other": 0})[direction] += 1
        self.log.append((direction, nbytes.value, handle))

    def cudaMemcpy(self, dst, src, nbytes, kind):  # noqa: N802
        status = self._lib.cudaMemcpy(dst, src, nbytes, kind)
        self._count(kind, nbytes, None)
        return status

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        status = self._lib.cudaMemcpyAsync(dst, src, nbytes, kind, stream)
        self._count(kind, nbytes, stream)
        return status


class Runtime:
    """One test's CUDA side: ``tracked`` (what polygraphy and the backend call), ``stub_memory`` (how the stub engine
    reaches its tensors: on the untracked runtime, so the counts are the backend's alone), ``real`` (None: host)."""

    def __init__(self, lib, real: RealCuda | None):
        self.tracked = Tracked(lib)
        self.stub_memory = trt_stub.CudartMemory(lib)
        self.real = real

    def free_bytes(self) -> int | None:
        return self.real.free_bytes() if self.real else None


_SESSIONS: dict[str, object] = {}


def ort_compute(record):
    """The stub engine's compute: ONNX Runtime CPU on the graph the plan was built from, with the ONNX Runtime
    backend's session options (TensorRT 10 builds fp16 from the fp32 graph: the source is the bundle's own file)."""
    import onnxruntime as ort

    from stylegen_trt.engines.ort import _session_options

    source = record["source"]
    session = _SESSIONS.get(source)
    if session is None:
        session = _SESSIONS[source] = ort.InferenceSession(source, _session_options(ORT_OPTIONS, ORT_OPTIONS.opt_level),
                                                           providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(names, inputs)))


@pytest.fixture(params=["host", "cuda"])
def runtime(request, monkeypatch, tmp_path):
    """The stub tensorrt (TensorRT 10's API, ONNX Runtime compute, execution through CudartMemory) and polygraphy's
    real ``Cuda`` wrapper class over a Tracked runtime: HostCudart, or the real libcudart."""
    import polygraphy.cuda.cuda as pcuda

    if request.param == "cuda":
        real = request.getfixturevalue("real_cuda")  # skips here: no GPU
        rt = Runtime(real.lib, real)
    else:
        rt = Runtime(trt_stub.HostCudart(), None)
    trt = trt_stub.make_tensorrt(10, memory=rt.stub_memory, compute=ort_compute)
    wrapper = pcuda.Cuda.__new__(pcuda.Cuda)  # polygraphy's own class and methods, the handle chosen here
    wrapper.handle = rt.tracked
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(pcuda, "G_CUDA", wrapper)
    monkeypatch.setenv("STYLEGEN_TRT_CACHE", str(tmp_path / "user-cache"))
    trt_stub.reset_polygraphy_tensorrt()
    trt_backend.cuda_device.cache_clear()
    yield rt
    gc.collect()  # device values of this test freed by this test's runtime, not the next one's
    trt_stub.reset_polygraphy_tensorrt()
    trt_backend.cuda_device.cache_clear()


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    from stylegen_trt.cli import _demo_bundle_path

    dst = tmp_path_factory.mktemp("real-cuda") / "bundle"
    shutil.copytree(_demo_bundle_path(), dst, ignore=shutil.ignore_patterns("engines", ".verified.json"))
    return dst


@pytest.fixture(scope="module")
def swatches(tmp_path_factory):
    root = tmp_path_factory.mktemp("swatches")
    a, b = root / "a.png", root / "b.png"
    save_png(procedural_swatch(64), a)
    save_png(np.ascontiguousarray(procedural_swatch(64)[::-1]), b)
    return a, b


def _requests(swatches):
    """A mixed batch: two styles (one with a window) and a plain request, 4 images in one UNet batch."""
    a, b = swatches
    return [GenerationRequest("a red circle", steps=STEPS, seed=1, n=2, style=StyleRequest((a,))),
            GenerationRequest("a blue square", steps=STEPS, seed=2, style=StyleRequest((b,), window=(0.2, 0.7))),
            GenerationRequest("plain", steps=STEPS, seed=3)]


@pytest.fixture(scope="module")
def reference_images(demo_bundle, swatches, tmp_path_factory):
    """The same requests on the ONNX Runtime CPU backend (host arrays and OrtValues, no stub at all)."""
    with StylePipeline(open_bundle(demo_bundle), ORT_OPTIONS, style_cache_dir=tmp_path_factory.mktemp("s")) as pipe:
        mixed = [r.images for r in pipe.generate_many(_requests(swatches))]
        single = pipe.generate(GenerationRequest("x", steps=STEPS, seed=0, scheduler="ddim",
                                                 style=StyleRequest((swatches[0],)))).images
    return mixed, single


def _trt_pipeline(demo_bundle, tmp_path):
    return StylePipeline(open_bundle(demo_bundle), EngineOptions(backend="trt"), style_cache_dir=tmp_path / "styles")


def _max_diff(x, y) -> int:
    assert x.shape == y.shape and x.dtype == y.dtype == np.uint8
    return int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max())


# ---------------------------------------------------------------------------------------------------
# the tests: each one line of what it proves, on host memory here and on device memory on a GPU


def test_copy_helpers_round_trip_through_the_runtime(runtime):
    """The stub's copies (CudartMemory: cudaMemcpyAsync kinds 1/2, cudaStreamSynchronize) and the backend's
    (polygraphy's DeviceArray, TrtMemory's device-to-device kind 3, rows and joins) move bytes exactly."""
    from polygraphy import cuda

    memory = trt_backend.TrtMemory(cuda)
    data = np.arange(60, dtype=np.float32).reshape(5, 12)
    with cuda.Stream() as stream, cuda.DeviceArray((5, 12)) as array:
        runtime.stub_memory.write(array.ptr, data, stream.ptr)
        runtime.stub_memory.synchronize(stream.ptr)
        assert np.array_equal(array.numpy(), data)
        assert np.array_equal(runtime.stub_memory.read(array.ptr + 2 * 48, (3, 12), np.float32, stream.ptr), data[2:])
        value = memory.upload(data * 2)
        joined = concat_rows([value.rows(3, 5), value.rows(0, 1)])  # device to device
        assert joined.memory.kind == "trt:cuda" and np.array_equal(joined.numpy(), data[[3, 4, 0]] * 2)
        assert np.array_equal(value.rows(1, 2).copy().numpy(), data[1:2] * 2)
        del value, joined
    gc.collect()
    assert runtime.tracked.device == {} and runtime.tracked.streams == set()
    assert runtime.tracked.by_stream[0]["d2d"] == 3 and runtime.stub_memory.copies == {"h2d": 1, "d2h": 1}


def test_engine_run_device_binds_device_values_and_keeps_outputs_on_the_device(runtime, demo_bundle):
    """Engine.run_device on the UNet: a residual bound where it lies (no copy), host inputs staged through pinned
    buffers, an output kept on the device: the same numbers as ONNX Runtime on the same inputs, and fresh host
    arrays that the next run does not overwrite."""
    b = open_bundle(demo_bundle)
    spec = b.graphs["unet"]
    shapes = trt_backend.profile_shapes(spec)
    rng = np.random.default_rng(0)
    feeds = [{name: rng.standard_normal(opt).astype(np.float32) for name, (_, opt, _) in shapes.items()} for _ in range(2)]
    ort_engine = b.open_engine("unet", ORT_OPTIONS)
    with b.open_engine("unet", EngineOptions(backend="trt")) as engine:
        assert engine.name == "trt" and engine._pinned.pinned
        residual = engine.to_device(feeds[0]["down_res_0"])
        stream = engine._stream.ptr
        before = dict(runtime.tracked.by_stream.get(stream, {"h2d": 0}))
        first = engine.run_device({**feeds[0], "down_res_0": residual})
        uploads = runtime.tracked.by_stream[stream]["h2d"] - before.get("h2d", 0)
        assert uploads == len(spec.input_names) - 1  # every input but the bound residual
        kept = engine.run_device({**feeds[1], "down_res_0": engine.to_device(feeds[1]["down_res_0"])}, keep=("eps",))
        assert isinstance(kept["eps"], DeviceValue) and kept["eps"].memory.kind == "trt:cuda"
        for got, inputs in ((first["eps"], feeds[0]), (kept["eps"].numpy(), feeds[1])):
            ref = ort_engine.run(inputs)["eps"]  # the same session options: equal here; a wrong copy is garbage
            assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
        assert runtime.stub_memory.copies["d2h"] == 2 * len(spec.input_names)  # the stub read real device buffers
        assert runtime.tracked.pinned and all(p in runtime.tracked.pinned for p, _ in engine._pinned._blocks.values())
        del residual, kept
    ort_engine.close()
    gc.collect()
    assert runtime.tracked.device == {} and runtime.tracked.pinned == {} and runtime.tracked.streams == set()


def test_mixed_style_generation_gives_onnx_runtimes_images(runtime, demo_bundle, swatches, reference_images, tmp_path,
                                                           monkeypatch):
    """A mixed-style batch (two styles, one windowed, and a plain request; residual rows joined on the device) and a
    styled DDIM generation through --backend trt: the images of the ONNX Runtime CPU backend, to 1/255; the UNet
    is given the branch's residuals and the text context as device values."""
    mixed_ref, single_ref = reference_images
    seen = []
    original = trt_backend.TrtEngine.run_device

    def spy(self, inputs, keep=()):
        if self.spec.name == "unet":
            seen.append({k: (type(v).__name__, getattr(getattr(v, "memory", None), "kind", None))
                         for k, v in inputs.items()})
        return original(self, inputs, keep)

    monkeypatch.setattr(trt_backend.TrtEngine, "run_device", spy)
    with _trt_pipeline(demo_bundle, tmp_path) as pipe:
        results = pipe.generate_many(_requests(swatches))
        assert not [r for r in results if isinstance(r, Exception)]
        single = pipe.generate(GenerationRequest("x", steps=STEPS, seed=0, scheduler="ddim",
                                                 style=StyleRequest((swatches[0],)))).images
    for got, ref in zip([r.images for r in results], mixed_ref):
        assert _max_diff(got, ref) <= 1
    assert _max_diff(single, single_ref) <= 1
    on_device = ("DeviceValue", "trt:cuda")
    assert seen and all(s["encoder_hidden_states"] == on_device and s["down_res_0"] == on_device for s in seen)
    assert runtime.tracked.by_stream.get(0, {}).get("d2d", 0) > 0  # residual rows of two styles joined on the device


def test_styled_generation_uploads_once_per_generation(runtime, demo_bundle, swatches, tmp_path):
    """Per UNet step: 2 uploads (latent, timestep) and 1 download (eps) on its stream; the text context and the
    zero residuals uploaded once per generation; the branch's outputs never leave the device."""
    b = open_bundle(demo_bundle)
    residual_names = b.graphs["style_branch"].output_names
    steps = 8
    with _trt_pipeline(demo_bundle, tmp_path) as pipe:
        unet, branch = pipe.engines["unet"].engine, pipe.engines["style_branch"].engine
        pipe.generate(GenerationRequest("x", steps=2, seed=0, scheduler="ddim"))  # the prompt's encoding cached
        counts = runtime.tracked.by_stream
        before = {h: dict(c) for h, c in counts.items()}
        first = len(runtime.tracked.log)
        pipe.generate(GenerationRequest("x", steps=steps, seed=0, scheduler="ddim", style=StyleRequest((swatches[0],))))
        delta = {h: {k: c[k] - before.get(h, {}).get(k, 0) for k in c} for h, c in counts.items()}
        assert delta[unet._stream.ptr] == {"h2d": 2 * steps, "d2h": steps, "d2d": 0, "other": 0}
        synchronous = [d for d, _, h in runtime.tracked.log[first:] if h == 0]
        assert synchronous == ["h2d"] * (1 + len(residual_names))  # to_device: once per generation
        calls = -(-steps // branch_chunk(b.graphs["style_branch"], 16, 16))
        assert delta[branch._stream.ptr] == {"h2d": 3 * calls, "d2h": 0, "d2d": 0, "other": 0}  # S, t, scale


def test_close_frees_every_buffer_pinned_buffer_stream_and_the_shared_activation_block(runtime, demo_bundle,
                                                                                      swatches, tmp_path):
    """During a styled generation: one USER_MANAGED activation block (a live device allocation, of the largest
    engine's size) for all five contexts, pinned staging buffers; after close: nothing of it left (tracked
    exactly; on a GPU cudaMemGetInfo agrees, within its granularity)."""
    request = GenerationRequest("x", steps=3, seed=0, style=StyleRequest((swatches[0],)))
    with _trt_pipeline(demo_bundle, tmp_path / "warm") as pipe:  # first use: lazy driver allocations happen here
        pipe.generate(request)
    gc.collect()
    free_before = runtime.free_bytes()
    tracked = runtime.tracked
    allocations_before = tracked.mallocs
    with _trt_pipeline(demo_bundle, tmp_path) as pipe:
        pipe.generate(request)
        contexts = [e.engine._context for e in pipe.engines.values()]
        assert all(c.user_managed for c in contexts)
        blocks = {c.activation for c in contexts}
        assert len(blocks) == 1
        (ptr, size), = blocks
        assert tracked.device.get(ptr) == size >= trt_stub.ACTIVATION_BYTES
        assert tracked.pinned and all(e.engine._pinned.pinned for e in pipe.engines.values())
        assert len(tracked.streams) == 5
    assert tracked.mallocs > allocations_before
    gc.collect()
    assert tracked.device == {} and tracked.pinned == {} and tracked.streams == set()
    if runtime.real is not None:
        assert runtime.free_bytes() >= free_before - MEMGETINFO_SLACK


def test_discovery_is_quick_and_never_raises():
    """Listing libcudart's candidates takes well under a second and raises nothing; a library that is not there is
    a reason to skip, not an error."""
    import time

    start = time.perf_counter()
    candidates = cudart_candidates()
    assert candidates and time.perf_counter() - start < 1
    lib, why = _probe("/nonexistent/libcudart.so.99")
    assert lib is None and why.startswith("/nonexistent/libcudart.so.99: ")
