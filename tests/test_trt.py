"""The TensorRT backend on CPU: profiles, recipes and cache keys; polygraphy's real CreateConfig / Profile /
NetworkFromOnnxPath / EngineBytesFromNetwork and cuda.DeviceArray / Stream over a stub tensorrt (TensorRT 10's
API and 11's: tests/trt_stub.py) and a host-memory CUDA runtime; failures as one line; `build` and `verify`.
Only running real engines needs TensorRT and a CUDA GPU: that test skips here."""

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import trt_stub  # tests/trt_stub.py (tests/ is on sys.path, as for conftest)
from conftest import cli
from stylegen_trt.engines import cache as engine_cache
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


# ---------------------------------------------------------------------------------------------------
# The build recipe and the cache key

FILES = {"unet.onnx": "a" * 64, "unet.onnx.data": "b" * 64}


def _fields(files=FILES, spec=UNET_LIKE, precision="fp16", trt_version="10.13.3", device=GPU_A, poly="0.53.6", **recipe):
    return trt_backend.engine_fields(files, spec, {**trt_backend.build_recipe(precision, trt_version), **recipe},
                                     trt_version, device, poly)


def test_engine_key_covers_every_graph_file_the_recipe_versions_device_and_profile():
    from stylegen_trt.engines.cache import cache_key

    base = _fields()
    assert base["profile"]["sample"] == [[1, 4, 8, 8], [2, 4, 16, 16], [8, 4, 33, 32]]
    json.dumps(base)  # recorded as JSON beside the engine
    narrower = GraphSpec("unet", UNET_LIKE.inputs, UNET_LIKE.outputs, {**UNET_LIKE.axes, "unet_batch": AxisRange(1, 2, 4)})
    variants = [
        _fields(files={**FILES, "unet.onnx": "c" * 64}),
        _fields(files={**FILES, "unet.onnx.data": "c" * 64}),  # same graph file, other external weights
        _fields(precision="fp32"),
        _fields(trt_version="10.14.1"),
        _fields(poly="0.53.7"),
        _fields(device=trt_backend.CudaDevice(0, "NVIDIA A10", "8.9")),
        _fields(device=trt_backend.CudaDevice(0, "NVIDIA L4", "8.6")),
        _fields(spec=narrower),
        _fields(tf32=True),
        _fields(workspace_bytes=8 << 30),
        _fields(builder_optimization_level=5),
        _fields(strongly_typed=True),
        _fields(parser_flags=[]),
    ]
    keys = {cache_key(base)} | {cache_key(v) for v in variants}
    assert len(keys) == 1 + len(variants)
    # the same GPU model at another index is the same engine
    assert cache_key(_fields(device=trt_backend.CudaDevice(1, "NVIDIA A10", "8.6"))) == cache_key(base)


def test_recipe_follows_the_tensorrt_major_version():
    ten = trt_backend.build_recipe("fp16", "10.13.3")
    assert ten["fp16_flag"] and not ten["strongly_typed"] and ten["fp16_onnx"] is None
    eleven = trt_backend.build_recipe("fp16", "11.4.1")
    assert not eleven["fp16_flag"] and eleven["strongly_typed"] and eleven["fp16_onnx"]["keep_io_types"]
    assert "Softmax" in eleven["fp16_onnx"]["keep_fp32_ops"] and "InstanceNormalization" in eleven["fp16_onnx"]["keep_fp32_ops"]
    fp32 = trt_backend.build_recipe("fp32", "11.4.1")
    assert fp32["strongly_typed"] and fp32["fp16_onnx"] is None and not fp32["fp16_flag"]
    assert not ten["tf32"] and ten["workspace_bytes"] == 4 << 30 and ten["builder_optimization_level"] == 3
    style = GraphSpec("style_encoder", UNET_LIKE.inputs, UNET_LIKE.outputs, UNET_LIKE.axes)
    assert trt_backend.graph_precision(style, "auto") == "fp32" and trt_backend.graph_precision(style, "fp16") == "fp16"
    assert trt_backend.graph_precision(UNET_LIKE, "auto") == "fp16"


def test_timing_cache_is_per_tensorrt_version_and_gpu():
    a = _fields()
    b = _fields(files={"other.onnx": "x" * 64}, precision="fp32")  # another graph, same GPU: shared
    c = _fields(device=trt_backend.CudaDevice(0, "NVIDIA L4", "8.9"))
    assert trt_backend.timing_cache_name(a) == trt_backend.timing_cache_name(b) == "timing-10.13.3-NVIDIA-A10-sm8.6.cache"
    assert trt_backend.timing_cache_name(c) != trt_backend.timing_cache_name(a)


# ---------------------------------------------------------------------------------------------------
# polygraphy's real code over a stub tensorrt (TensorRT 10's API, then 11's) and a host-memory CUDA runtime



@pytest.fixture()
def demo_copy(tmp_path):
    """A writable copy of the shipped demo bundle (no export needed)."""
    from stylegen_trt.cli import _demo_bundle_path

    dst = tmp_path / "bundle"
    shutil.copytree(_demo_bundle_path(), dst, ignore=shutil.ignore_patterns("engines", ".verified.json"))
    return dst


def _install_stub(monkeypatch, tmp_path, major, **kwargs):
    return trt_stub.install_for_test(monkeypatch, tmp_path, major, **kwargs)


@pytest.fixture()
def stub10(monkeypatch, tmp_path):
    yield _install_stub(monkeypatch, tmp_path, 10)
    trt_stub.reset_polygraphy_tensorrt()
    trt_backend.cuda_device.cache_clear()


@pytest.fixture()
def stub11(monkeypatch, tmp_path):
    yield _install_stub(monkeypatch, tmp_path, 11)
    trt_stub.reset_polygraphy_tensorrt()
    trt_backend.cuda_device.cache_clear()


def _opt_feeds(spec, seed=0):
    rng = np.random.default_rng(seed)
    return {t.name: (rng.integers(0, 10, shape).astype(np.int64) if t.dtype == "int64"
                     else rng.standard_normal(shape).astype(np.float32))
            for t, shape in zip(spec.inputs, spec.shapes("opt").values())}


def test_trt10_build_is_weakly_typed_fp16_with_the_contract_profile(stub10, demo_copy):
    trt, cudart = stub10
    b = open_bundle(demo_copy)
    with b.open_engine("style_branch", EngineOptions(backend="trt")) as engine:
        plan = trt.built[-1]
        assert plan["source"] == str(demo_copy / "style_branch.onnx")  # the bundle's fp32 graph, as is
        assert plan["builder_flags"] == ["FP16"]  # TF32 (on by TensorRT's default) cleared: tf32=False
        assert plan["network_flags"] == []  # weakly typed
        assert plan["pools"] == {"WORKSPACE": 4 << 30} and plan["builder_optimization_level"] == 3
        spec = b.graphs["style_branch"]
        assert plan["profile"] == {k: [list(s) for s in v] for k, v in trt_backend.profile_shapes(spec).items()}
        assert engine.device == "cuda:0"
        feeds = _opt_feeds(spec)
        first, second = engine.run(feeds), engine.run(feeds)
        assert list(first) == spec.output_names and all(first[k] is not second[k] for k in first)
        assert first["down_res_0"].shape[0] == feeds["timestep"].shape[0] > 1  # the stub resolved the output shape
    assert not cudart.blocks and cudart.streams == 0  # close freed every buffer and the stream
    # the entry records the whole recipe; a second open reuses it without building or re-hashing the plan
    entry = engine_cache.entry_dir(b.engine_cache_root(), "trt", trt_backend.TrtEngine.cache_fields(
        b.graph_files("style_branch"), b.graphs["style_branch"], EngineOptions(backend="trt")))
    record = json.loads((entry / "key.json").read_text())
    assert record["fields"]["recipe"]["fp16_flag"] and record["fields"]["polygraphy"]
    assert entry.is_relative_to(demo_copy / "engines")
    hashed = []
    original = engine_cache.sha256_file
    engine_cache.sha256_file = lambda path, *a: hashed.append(path) or original(path, *a)
    try:
        b.open_engine("style_branch", EngineOptions(backend="trt")).close()
    finally:
        engine_cache.sha256_file = original
    assert len(trt.built) == 1 and hashed == []


def test_trt11_builds_a_strongly_typed_network_from_an_fp16_graph(stub11, demo_copy):
    import onnx
    import onnxruntime as ort

    trt, cudart = stub11
    assert not hasattr(trt.BuilderFlag, "FP16")
    b = open_bundle(demo_copy)
    with b.open_engine("unet", EngineOptions(backend="trt")) as engine:
        plan = trt.built[-1]
        assert plan["builder_flags"] == [] and plan["network_flags"] == ["STRONGLY_TYPED"]
        assert "fp16-onnx" in plan["source"] and plan["source_fp16_weights"] > 0
        assert [io[2] for io in plan["io"]] == ["FLOAT"] * len(plan["io"])  # graph inputs/outputs kept fp32
        engine.run(_opt_feeds(b.graphs["unet"]))
    converted = onnx.load(plan["source"])
    onnx.checker.check_model(converted, full_check=True)  # well typed, topologically sorted
    typed = onnx.shape_inference.infer_shapes(converted)
    types = {v.name: v.type.tensor_type.elem_type for v in (*typed.graph.value_info, *typed.graph.input)}
    for node in typed.graph.node:  # normalisation statistics, softmax, the time embedding: fp32
        if node.op_type in ("InstanceNormalization", "LayerNormalization", "Softmax", "Sin", "Cos"):
            assert types.get(node.input[0]) == onnx.TensorProto.FLOAT, (node.op_type, node.name)
    # its numerics, on ONNX Runtime's CPU (TensorRT's own need a GPU): within the fp16 tolerance of the fp32 graph
    so = ort.SessionOptions()
    so.log_severity_level = 3
    feeds = {**_opt_feeds(b.graphs["unet"], seed=1), "timestep": np.array([901.0], np.float32)}
    ref = ort.InferenceSession(str(demo_copy / "unet.onnx"), so).run(None, feeds)[0]
    got = ort.InferenceSession(plan["source"], so).run(None, feeds)[0]
    assert np.abs(got - ref).max() / np.abs(ref).max() < TOLERANCE["fp16"]
    # the fp16 graph is a cached stage: opening again neither converts nor builds
    source_mtime = Path(plan["source"]).stat().st_mtime_ns
    b.open_engine("unet", EngineOptions(backend="trt")).close()
    assert len(trt.built) == 1 and Path(plan["source"]).stat().st_mtime_ns == source_mtime
    # fp32 on TensorRT 11: the bundle's graph, strongly typed
    b.open_engine("unet", EngineOptions(backend="trt", precision="fp32")).close()
    assert trt.built[-1]["source"] == str(demo_copy / "unet.onnx") and trt.built[-1]["network_flags"] == ["STRONGLY_TYPED"]


def test_trt11_rejects_the_fp16_builder_flag_the_old_code_used(stub11):
    """Defect 1 as it was: CreateConfig(fp16=True) on TensorRT 11 raises (no BuilderFlag.FP16)."""
    from polygraphy.backend.trt import CreateConfig
    from polygraphy.exception import PolygraphyException

    trt_backend.require_polygraphy()
    trt = sys.modules["tensorrt"]
    builder = trt.Builder(trt.Logger())
    with pytest.raises(PolygraphyException, match="fp16"):
        CreateConfig(fp16=True)(builder, builder.create_network())


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_parse_and_build_failures_are_one_line_user_errors(monkeypatch, tmp_path, demo_copy):
    _install_stub(monkeypatch, tmp_path, 10, fail_build="Internal Error: out of GPU memory during tactic selection")
    b = open_bundle(demo_copy)
    with pytest.raises(UserError) as excinfo:
        b.open_engine("vae_decoder", EngineOptions(backend="trt"))
    message = _one_line_error(excinfo)
    assert "could not build the vae_decoder engine" in message and "out of GPU memory" in message
    _install_stub(monkeypatch, tmp_path, 10)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(UserError) as excinfo:
        trt_backend.build_engine_bytes(broken, b.graphs["vae_decoder"], trt_backend.build_recipe("fp16", "10.13"), None)
    message = _one_line_error(excinfo)
    assert "broken.onnx" in message and "Failed to parse ONNX" in message
    trt_stub.reset_polygraphy_tensorrt()


def test_missing_polygraphy_cuda_runtime_or_unsupported_tensorrt_are_one_line_user_errors(monkeypatch, tmp_path, demo_copy):
    import polygraphy.cuda.cuda as pcuda

    _install_stub(monkeypatch, tmp_path, 10)
    b = open_bundle(demo_copy)
    monkeypatch.setattr(pcuda, "G_CUDA", None)  # polygraphy looks for libcudart itself: not on this machine
    monkeypatch.setattr(pcuda, "_find_cuda_lib_dirs", lambda: [str(tmp_path / "nowhere")])
    monkeypatch.setattr(pcuda.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError(f"{name}: cannot open shared object file")))
    with pytest.raises(UserError, match="needs the CUDA runtime library") as excinfo:
        b.open_engine("unet", EngineOptions(backend="trt"))
    _one_line_error(excinfo)
    monkeypatch.setitem(sys.modules, "polygraphy", None)  # import polygraphy -> ImportError
    trt_backend.cuda_device.cache_clear()
    with pytest.raises(UserError, match="needs polygraphy"):
        b.open_engine("unet", EngineOptions(backend="trt"))
    old = trt_stub.make_tensorrt(10)
    old.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(UserError, match="TensorRT 8.6.1 is not supported"):
        b.open_engine("unet", EngineOptions(backend="trt"))
    trt_stub.reset_polygraphy_tensorrt()


def test_cuda_13_pip_wheel_runtime_is_found_where_polygraphy_does_not_look(monkeypatch, tmp_path):
    """CUDA 13's pip wheel puts libcudart.so.13 in nvidia/cu13/lib (polygraphy 0.53 looks in nvidia/cuda_runtime/lib,
    then for a bare libcudart.so): the backend loads it from there and hands it to polygraphy's wrapper."""
    import polygraphy.cuda.cuda as pcuda

    _install_stub(monkeypatch, tmp_path, 10)
    site = tmp_path / "site"
    wheel_lib = site / "nvidia" / "cu13" / "lib" / "libcudart.so.13"
    wheel_lib.parent.mkdir(parents=True)
    wheel_lib.write_bytes(b"")
    monkeypatch.syspath_prepend(str(site))
    cudart = trt_stub.HostCudart()
    loaded = []

    def cdll(name):
        loaded.append(str(name))
        if str(name) != str(wheel_lib):
            raise OSError(f"{name}: cannot open shared object file")
        return cudart

    monkeypatch.setattr(pcuda, "G_CUDA", None)
    monkeypatch.setattr(pcuda, "_find_cuda_lib_dirs", lambda: [str(tmp_path / "nowhere")])
    monkeypatch.setattr(pcuda.ctypes, "CDLL", cdll)
    trt_backend.cuda_device.cache_clear()
    device = trt_backend.cuda_device(0)
    assert loaded == ["libcudart.so", str(wheel_lib)]
    assert device.name == cudart.device_name and pcuda.wrapper().handle is cudart
    trt_backend.cuda_device.cache_clear()


STUB_CLI = ("import sys; sys.path.insert(0, {tests!r}); import trt_stub; trt_stub.install({major}, fail_build={fail!r}); "
            "from stylegen_trt.cli import main; sys.argv = ['stylegen-trt', *sys.argv[1:]]; main()")


def _stub_cli(major, *args, fail=None, env=None):
    import os
    import subprocess
    from pathlib import Path as P

    code = STUB_CLI.format(tests=str(P(__file__).parent), major=major, fail=fail)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("major", [10, 11])
def test_build_trt_prints_one_line_per_graph_and_polygraphy_only_with_verbose(major, demo_copy, tmp_path):
    env = {"STYLEGEN_TRT_CACHE": str(tmp_path / "cache")}
    result = _stub_cli(major, "build", "--bundle", str(demo_copy), "--backend", "trt", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(" built in " in line and "-> engines/trt/" in line for line in lines), result.stdout
    assert result.stderr == ""
    again = _stub_cli(major, "build", "--bundle", str(demo_copy), "--backend", "trt", "--graph", "unet", "-v", env=env)
    assert again.stdout.splitlines() == [next(line for line in lines if line.startswith("unet:")).split(": ")[0]
                                         + ": reused -> " + lines[3].split("-> ")[1]]
    assert "stylegen_trt.polygraphy" not in again.stderr  # reused: polygraphy built nothing
    verbose = _stub_cli(major, "build", "--bundle", str(demo_copy), "--backend", "trt", "--graph", "text_encoder",
                        "--precision", "fp32", "-v", env=env)
    assert len(verbose.stdout.splitlines()) == 1
    assert "stylegen_trt.polygraphy: [I] Building engine" in verbose.stderr  # polygraphy's log, through logging
    failed = _stub_cli(major, "build", "--bundle", str(demo_copy), "--backend", "trt", "--precision", "fp32",
                       "--graph", "vae_decoder", fail="Internal Error: no implementation for node /conv_in/Conv", env=env)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.startswith("error: TensorRT could not build the vae_decoder engine")
    assert "[E]" not in failed.stderr and "Traceback" not in failed.stderr
    assert "no implementation for node" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------
# read-only bundles, and keys that cover external data


def test_read_only_and_embedded_bundles_cache_under_the_user_cache(stub10, demo_copy, tmp_path, monkeypatch):
    from stylegen_trt.cli import _demo_bundle_path

    trt, _ = stub10
    embedded = open_bundle(_demo_bundle_path())
    assert embedded.is_embedded and embedded.engine_cache_root().is_relative_to(tmp_path / "user-cache" / "engines")
    demo_copy.chmod(0o555)  # read-only; root ignores that, as the kernel does: then say so explicitly
    try:
        if engine_cache.writable(demo_copy / "engines"):
            monkeypatch.setattr(engine_cache, "writable", lambda path: False)
        b = open_bundle(demo_copy)
        root = b.engine_cache_root()
        assert root.parent == tmp_path / "user-cache" / "engines" and root.name.startswith("bundle-")
        b.open_engine("text_encoder", EngineOptions(backend="trt")).close()
        b.open_engine("text_encoder", EngineOptions(backend="trt")).close()
        assert len(trt.built) == 1 and not (demo_copy / "engines").exists()
        assert list((root / "trt").glob("*/model.plan"))
    finally:
        demo_copy.chmod(0o755)


def test_cache_key_changes_with_the_external_data(stub10, demo_copy):
    """A graph whose weights are in <graph>.onnx.data: the key covers that file (two checkpoints
    with the same graph file no longer collide)."""
    manifest_path = demo_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    keys = []
    for weights in (b"checkpoint one", b"checkpoint two"):
        (demo_copy / "unet.onnx.data").write_bytes(weights)
        manifest["graphs"]["unet"]["external_data"] = ["unet.onnx.data"]
        manifest["files"]["unet.onnx.data"] = {"sha256": hashlib.sha256(weights).hexdigest(), "bytes": len(weights)}
        manifest_path.write_text(json.dumps(manifest))
        b = open_bundle(demo_copy)
        assert list(b.graph_files("unet")) == ["unet.onnx", "unet.onnx.data"]
        from stylegen_trt.engines import cache_fields

        fields = cache_fields(b.graph_path("unet"), b.graphs["unet"], b.graph_files("unet"), EngineOptions(backend="trt"))
        keys.append(engine_cache.cache_key(fields))
    assert keys[0] != keys[1]


# ---------------------------------------------------------------------------------------------------
# TrtEngine's run loop on the stub engine and host-memory device: strict about shapes and bindings


def _stub_engine(trt, io, profile):
    record = {"io": io, "profile": profile}
    return trt.Runtime(None).deserialize_cuda_engine(json.dumps(record).encode())


SMALL_SPEC = GraphSpec("unet", UNET_LIKE.inputs[:2], UNET_LIKE.outputs, UNET_LIKE.axes)
SMALL_IO = [["sample", "input", "FLOAT", ["unet_batch", 4, "latent_h", "latent_w"]],
            ["timestep", "input", "FLOAT", [1]],
            ["eps", "output", "FLOAT", ["unet_batch", 4, "latent_h", "latent_w"]]]
SMALL_PROFILE = {"sample": [[1, 4, 8, 8], [2, 4, 16, 16], [8, 4, 33, 32]], "timestep": [[1], [1], [1]]}


def test_trt_engine_run_on_the_stub_and_host_memory(stub10):
    """Inputs reach the device at their shapes through polygraphy's real DeviceArray/Stream code, outputs come
    back as fresh arrays, shapes may change between runs, failures are errors - TrtEngine's logic, not TensorRT's."""
    trt, cudart = stub10
    engine = _stub_engine(trt, SMALL_IO, SMALL_PROFILE)
    contexts = []
    create = engine.create_execution_context

    def create_context(*strategy):
        contexts.append(create(*strategy))
        contexts[-1].compute = lambda x: {"eps": x["sample"] * x["timestep"][0]}
        return contexts[-1]

    engine.create_execution_context = create_context
    trt_engine = trt_backend.TrtEngine(engine, SMALL_SPEC, GPU_A, trt=trt)
    rng = np.random.default_rng(0)
    small = {"sample": rng.standard_normal((2, 4, 8, 8), dtype=np.float32), "timestep": np.array([3.0], np.float32)}
    first = trt_engine.run(small)
    assert first["eps"].dtype == np.float32 and np.array_equal(first["eps"], small["sample"] * 3)
    larger = {"sample": rng.standard_normal((4, 4, 16, 12), dtype=np.float32), "timestep": np.array([2.0], np.float32)}
    second = trt_engine.run(larger)
    assert second["eps"].shape == (4, 4, 16, 12) and np.array_equal(second["eps"], larger["sample"] * 2)
    assert np.array_equal(first["eps"], small["sample"] * 3)  # the first result was not overwritten
    assert cudart.copies == {"h2d": 4, "d2h": 2, "d2d": 0}
    with pytest.raises(ValueError, match="outside"):
        trt_engine.run({**small, "sample": np.zeros((9, 4, 8, 8), np.float32)})  # beyond the profile: refused first
    context = contexts[-1]
    context.set_tensor_address = lambda name, ptr: False
    with pytest.raises(RuntimeError, match="refused the address of sample"):
        trt_engine.run(small)
    del context.set_tensor_address
    context.execute_async_v3 = lambda stream: False
    with pytest.raises(RuntimeError, match="execution failed"):
        trt_engine.run(small)
    trt_engine.close()
    assert not cudart.blocks and cudart.streams == 0


def test_unresolved_or_wrong_output_shapes_are_errors(stub10):
    trt, _ = stub10
    unresolved = [*SMALL_IO[:2], ["eps", "output", "FLOAT", ["unet_batch", 4, "mystery", "latent_w"]]]
    feeds = {"sample": np.zeros((2, 4, 8, 8), np.float32), "timestep": np.array([1.0], np.float32)}
    with trt_backend.TrtEngine(_stub_engine(trt, unresolved, SMALL_PROFILE), SMALL_SPEC, GPU_A, trt=trt) as engine:
        with pytest.raises(RuntimeError, match=r"left the shape of eps unresolved \(2, 4, -1, 8\)"):
            engine.run(feeds)
    halved = [*SMALL_IO[:2], ["eps", "output", "FLOAT", ["unet_batch", 4, "latent_h_2", "latent_w"]]]
    with trt_backend.TrtEngine(_stub_engine(trt, halved, SMALL_PROFILE), SMALL_SPEC, GPU_A, trt=trt) as engine:
        with pytest.raises(RuntimeError, match=r"gives eps the shape \(2, 4, 4, 8\), the contract says \(2, 4, 8, 8\)"):
            engine.run(feeds)
    # the stub's context is strict by itself: an output shape is -1 until every input shape is set
    context = _stub_engine(trt, SMALL_IO, SMALL_PROFILE).create_execution_context()
    context.set_input_shape("sample", (2, 4, 8, 8))
    assert context.get_tensor_shape("eps") == (-1, 4, -1, -1)
    context.set_input_shape("timestep", (1,))
    assert context.get_tensor_shape("eps") == (2, 4, 8, 8)
    assert not context.execute_async_v3(0)  # nothing bound


def test_engine_tensor_table_must_match_the_contract(stub10):
    trt, _ = stub10
    cases = {
        "an output the contract lacks: attn_probs": [*SMALL_IO, ["attn_probs", "output", "FLOAT", [1]]],
        "an input the contract lacks: mask": [*SMALL_IO, ["mask", "input", "BOOL", [1]]],
        "no input timestep": [SMALL_IO[0], SMALL_IO[2]],
        "eps is output float16, the contract says output float32": [*SMALL_IO[:2], ["eps", "output", "HALF", SMALL_IO[2][3]]],
        "timestep is output float32, the contract says input float32": [SMALL_IO[0], ["timestep", "output", "FLOAT", [1]], SMALL_IO[2]],
    }
    for problem, io in cases.items():
        with pytest.raises(UserError, match="does not match the bundle's contract") as excinfo:
            trt_backend.TrtEngine(_stub_engine(trt, io, SMALL_PROFILE), SMALL_SPEC, GPU_A, trt=trt)
        assert problem in _one_line_error(excinfo)


def test_fp16_conversion_reads_and_writes_external_data_and_writes_nothing_beside_the_source(demo_copy, tmp_path, monkeypatch):
    """A >2 GB graph keeps its weights in <graph>.onnx.data: the conversion loads them from beside the source
    (which may be read-only: nothing is written there) and writes its own external data when large
    (threshold lowered here so that the demo's UNet counts as large)."""
    import onnx
    import onnxruntime as ort

    src_dir = tmp_path / "external"
    src_dir.mkdir()
    onnx.save_model(onnx.load(str(demo_copy / "unet.onnx")), str(src_dir / "unet.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="unet.onnx.data", size_threshold=1024)
    before = sorted(p.name for p in src_dir.iterdir())
    monkeypatch.setattr(trt_backend, "EXTERNAL_DATA_BYTES", 1024)
    out = tmp_path / "out"
    out.mkdir()
    written = trt_backend.convert_to_fp16(src_dir / "unet.onnx", out / "model.onnx")
    assert [p.name for p in written] == ["model.onnx", "model.onnx.data"] and sorted(p.name for p in src_dir.iterdir()) == before
    assert (out / "model.onnx").stat().st_size < 1 << 20 < (out / "model.onnx.data").stat().st_size
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    feeds = _opt_feeds(open_bundle(demo_copy).graphs["unet"], seed=2)
    ref = ort.InferenceSession(str(src_dir / "unet.onnx"), so).run(None, feeds)[0]
    got = ort.InferenceSession(str(out / "model.onnx"), so).run(None, feeds)[0]
    assert np.abs(got - ref).max() / np.abs(ref).max() < TOLERANCE["fp16"]
