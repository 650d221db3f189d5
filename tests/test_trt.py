"""The TensorRT backend's pure logic (profiles, cache keys, missing-TensorRT errors), `build`, and
`verify` - on CPU. Building and running engines needs TensorRT and a CUDA GPU: those tests skip here."""

import importlib.util
import json
import shutil

import numpy as np
import pytest

from conftest import cli
from stylegen_trt.engines import trt as trt_backend
from stylegen_trt.engines.base import EngineOptions
from stylegen_trt.errors import UserError
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.verify import TOLERANCE, compare_outputs
from stylegen_trt.spec import AxisRange, GraphSpec, TensorSpec


def _has_tensorrt_and_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        trt_backend.require_tensorrt()
        trt_backend.cuda_device(0)
    except Exception:
        return False
    return True


GPU = pytest.mark.skipif(not _has_tensorrt_and_gpu(), reason="needs TensorRT and a CUDA GPU (none on this machine)")

UNET_LIKE = GraphSpec(
    "unet",
    (TensorSpec("sample", "float32", ("unet_batch", 4, "latent_h", "latent_w")),
     TensorSpec("timestep", "float32", (1,)),
     TensorSpec("down_res_3", "float32", (1, 32, "latent_h/2", "latent_w/2")),
     TensorSpec("style_map", "float32", (1, 1, "latent_h*4", "latent_w*4"))),
    (TensorSpec("eps", "float32", ("unet_batch", 4, "latent_h", "latent_w")),),
    {"unet_batch": AxisRange(1, 2, 8), "latent_h": AxisRange(8, 16, 33), "latent_w": AxisRange(8, 16, 32)},
)
GPU_A = trt_backend.CudaDevice(0, "NVIDIA A10", "8.6")


def test_profile_is_the_contract_min_opt_max():
    shapes = trt_backend.profile_shapes(UNET_LIKE)
    assert shapes["sample"] == ((1, 4, 8, 8), (2, 4, 16, 16), (8, 4, 33, 32))
    assert shapes["timestep"] == ((1,), (1,), (1,))
    assert shapes["down_res_3"] == ((1, 32, 4, 4), (1, 32, 8, 8), (1, 32, 17, 16))  # ceil, as strided convs
    assert shapes["style_map"] == ((1, 1, 32, 32), (1, 1, 64, 64), (1, 1, 132, 128))
    assert list(shapes) == UNET_LIKE.input_names


def test_engine_key_covers_version_device_precision_and_profile():
    from stylegen_trt.engines.cache import cache_key

    base = trt_backend.engine_fields("abc", UNET_LIKE, "fp16", "10.3.0", GPU_A)
    assert base["profile"]["sample"] == [[1, 4, 8, 8], [2, 4, 16, 16], [8, 4, 33, 32]]
    json.dumps(base)  # recorded as JSON beside the engine
    narrower = GraphSpec("unet", UNET_LIKE.inputs, UNET_LIKE.outputs, {**UNET_LIKE.axes, "unet_batch": AxisRange(1, 2, 4)})
    variants = [
        trt_backend.engine_fields("abd", UNET_LIKE, "fp16", "10.3.0", GPU_A),
        trt_backend.engine_fields("abc", UNET_LIKE, "fp32", "10.3.0", GPU_A),
        trt_backend.engine_fields("abc", UNET_LIKE, "fp16", "10.4.0", GPU_A),
        trt_backend.engine_fields("abc", UNET_LIKE, "fp16", "10.3.0", trt_backend.CudaDevice(0, "NVIDIA A10", "8.9")),
        trt_backend.engine_fields("abc", UNET_LIKE, "fp16", "10.3.0", trt_backend.CudaDevice(1, "NVIDIA L4", "8.6")),
        trt_backend.engine_fields("abc", narrower, "fp16", "10.3.0", GPU_A),
    ]
    keys = {cache_key(base)} | {cache_key(v) for v in variants}
    assert len(keys) == 1 + len(variants)
    # the same GPU model at another index is the same engine
    assert cache_key(trt_backend.engine_fields("abc", UNET_LIKE, "fp16", "10.3.0",
                                               trt_backend.CudaDevice(1, "NVIDIA A10", "8.6"))) == cache_key(base)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_backend_without_tensorrt_is_a_one_line_error(styled_bundle, tmp_path):
    b = open_bundle(styled_bundle)
    with pytest.raises(UserError, match="--backend trt needs TensorRT"):
        b.open_engine("unet", EngineOptions(backend="trt"))
    for command in (["build", "--bundle", str(styled_bundle), "--backend", "trt"],
                    ["generate", "--bundle", str(styled_bundle), "-p", "x", "--backend", "trt", "--out", str(tmp_path / "a.png")],
                    ["verify", "--bundle", str(styled_bundle), "--backend", "trt"]):
        result = cli(*command, check=False)
        assert result.returncode == 2 and result.stderr.startswith("error: --backend trt needs TensorRT")
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a.png").exists()


def test_fp16_on_onnx_runtime_is_refused(styled_bundle):
    with pytest.raises(UserError, match="fp16 needs --backend trt"):
        open_bundle(styled_bundle).open_engine("unet", EngineOptions(precision="fp16"))
    result = cli("build", "--bundle", str(styled_bundle), "--precision", "fp16", check=False)
    assert result.returncode == 2 and "fp16 needs --backend trt" in result.stderr


def test_build_then_reuse_then_rebuild_a_tampered_entry(styled_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(styled_bundle, bundle, ignore=shutil.ignore_patterns("engines"))
    first = cli("build", "--bundle", str(bundle))
    assert first.stdout.count("built in") == 5, first.stdout
    second = cli("build", "--bundle", str(bundle))
    assert second.stdout.count("reused") == 5, second.stdout
    unet_entry = next(line.split("-> ")[1] for line in second.stdout.splitlines() if line.startswith("unet:"))
    with open(bundle / unet_entry / "model.onnx", "ab") as f:
        f.write(b"\0")
    third = cli("build", "--bundle", str(bundle), "--graph", "unet")
    assert third.stdout.strip().startswith("unet: built in") and third.stdout.count("\n") == 1
    bad = cli("build", "--bundle", str(bundle), "--backend", "onnx", check=False)
    assert bad.returncode == 2 and "unknown --backend 'onnx'" in bad.stderr


def test_verify_onnx_runtime_against_the_reference(styled_bundle, tmp_path):
    report_path = tmp_path / "verify.json"
    result = cli("verify", "--bundle", str(styled_bundle), "--backend", "ort", "--steps", "3", "--json", str(report_path))
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["tolerance_rel"] == TOLERANCE["fp32"]
    assert {o["graph"] for o in report["outputs"]} == {"text_encoder", "style_encoder", "style_branch", "unet", "vae_decoder"}
    assert len(report["outputs"]) == 1 + 1 + 13 + 1 + 1  # the branch's 13 residuals each
    assert max(o["max_rel"] for o in report["outputs"]) < 1e-4  # measured ~1e-6: fusions, kernel order
    assert report["end_to_end"]["image_max_abs"] <= 2
    assert result.stdout.count(" ok") == 5


def test_compare_outputs_flags_large_errors_nans_and_shapes():
    ref = {"eps": np.linspace(-2, 2, 100, dtype=np.float32).reshape(4, 25)}
    close = {"eps": ref["eps"] + np.float32(1e-3)}
    far = {"eps": ref["eps"] * np.float32(1.1)}
    nan = {"eps": np.where(ref["eps"] > 1.9, np.nan, ref["eps"]).astype(np.float32)}
    assert compare_outputs("unet", ref, close, TOLERANCE["fp16"])[0].passed
    check = compare_outputs("unet", ref, far, TOLERANCE["fp16"])[0]
    assert not check.passed and check.max_rel == pytest.approx(0.1, rel=1e-3)
    assert not compare_outputs("unet", ref, nan, TOLERANCE["fp16"])[0].passed
    assert not compare_outputs("unet", ref, {"eps": ref["eps"][:2]}, TOLERANCE["fp16"])[0].passed


@GPU
def test_trt_engines_match_the_fp32_reference_and_honour_the_protocol(styled_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(styled_bundle, bundle, ignore=shutil.ignore_patterns("engines"))
    b = open_bundle(bundle)
    with b.open_engine("style_branch", EngineOptions(backend="trt")) as engine:
        assert engine.device.startswith("cuda")
        rng = np.random.default_rng(0)
        spec = engine.spec
        feeds = {name: rng.random(shape, dtype=np.float32) for name, shape in spec.shapes("opt").items()}
        first = engine.run(feeds)
        second = engine.run(feeds)
        assert list(first) == spec.output_names and all(first[k] is not second[k] for k in first)
    for precision in ("fp32", "fp16"):
        result = cli("verify", "--bundle", str(bundle), "--backend", "trt", "--precision", precision, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_timing_cache_is_per_tensorrt_version_and_gpu():
    a = trt_backend.engine_fields("abc", UNET_LIKE, "fp16", "10.3.0", GPU_A)
    b = trt_backend.engine_fields("xyz", UNET_LIKE, "fp32", "10.3.0", GPU_A)  # another graph, same GPU: shared
    c = trt_backend.engine_fields("abc", UNET_LIKE, "fp16", "10.3.0", trt_backend.CudaDevice(0, "NVIDIA L4", "8.9"))
    assert trt_backend.timing_cache_name(a) == trt_backend.timing_cache_name(b) == "timing-10.3.0-NVIDIA-A10-sm8.6.cache"
    assert trt_backend.timing_cache_name(c) != trt_backend.timing_cache_name(a)


class _FakeCuda:
    """Host memory standing in for polygraphy's CUDA wrapper, so TrtEngine's own glue (shapes, addresses,
    copies, fresh outputs) runs here. It says nothing about TensorRT itself: that is the GPU test's job."""

    memory: dict = {}

    class Stream:
        ptr = 1

        def synchronize(self):
            pass

        def free(self):
            pass

    class DeviceArray:
        def __init__(self, shape, dtype):
            self.dtype = np.dtype(dtype.numpy())
            self.ptr = id(self)
            self.resize(shape)

        def resize(self, shape):
            self.shape = tuple(shape)
            _FakeCuda.memory[self.ptr] = np.zeros(self.shape, self.dtype)
            return self

        def copy_from(self, host, stream=None):
            assert host.dtype == self.dtype and host.shape == self.shape
            _FakeCuda.memory[self.ptr][...] = host

        def copy_to(self, host, stream=None):
            host[...] = _FakeCuda.memory[self.ptr]
            return host

        def free(self):
            _FakeCuda.memory.pop(self.ptr, None)


class _FakeContext:
    """eps = sample * timestep, shaped like a UNet: what the engine would compute, on the fake device."""

    def __init__(self):
        self.shapes, self.addresses, self.fail = {}, {}, False

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["sample"]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        if self.fail:
            return False
        mem = _FakeCuda.memory
        mem[self.addresses["eps"]][...] = mem[self.addresses["sample"]] * mem[self.addresses["timestep"]][0]
        return True


def test_trt_engine_glue_on_a_fake_device():
    """Inputs reach the device at their shapes, outputs come back as fresh arrays of the declared dtype,
    shapes may change between runs, and a failed execution is an error - TrtEngine's logic, not TensorRT's."""
    spec = GraphSpec("unet", UNET_LIKE.inputs[:2], UNET_LIKE.outputs, UNET_LIKE.axes)
    context = _FakeContext()
    engine = type("FakeEngine", (), {"create_execution_context": lambda self: context})()
    trt_engine = trt_backend.TrtEngine(engine, spec, GPU_A, cuda=_FakeCuda)
    assert trt_engine.device == "cuda:0"
    rng = np.random.default_rng(0)
    small = {"sample": rng.standard_normal((2, 4, 8, 8), dtype=np.float32), "timestep": np.array([3.0], np.float32)}
    first = trt_engine.run(small)
    assert first["eps"].dtype == np.float32 and np.array_equal(first["eps"], small["sample"] * 3)
    larger = {"sample": rng.standard_normal((4, 4, 16, 12), dtype=np.float32), "timestep": np.array([2.0], np.float32)}
    second = trt_engine.run(larger)
    assert second["eps"].shape == (4, 4, 16, 12) and np.array_equal(second["eps"], larger["sample"] * 2)
    assert np.array_equal(first["eps"], small["sample"] * 3)  # the first result was not overwritten
    with pytest.raises(ValueError, match="outside"):
        trt_engine.run({**small, "sample": np.zeros((9, 4, 8, 8), np.float32)})  # beyond the profile: refused first
    context.fail = True
    with pytest.raises(RuntimeError, match="execution failed"):
        trt_engine.run(small)
    trt_engine.close()
    assert not _FakeCuda.memory
