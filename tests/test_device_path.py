"""Device-resident values through the engine protocol, on CPU: ONNX Runtime's IOBinding with OrtValues (the same
code as its CUDA provider), and the TensorRT backend over the stub tensorrt and host-memory CUDA runtime of
tests/trt_stub.py (copies counted per stream); static profiles, CUDA graphs, shared activation memory, NaN/Inf
reports, and the command-line options that reach them."""

import json
import shutil

import numpy as np
import pytest

import trt_stub
from conftest import cli
from stylegen_trt.engines import trt as trt_backend
from stylegen_trt.engines.base import DeviceValue, EngineBase, EngineOptions, StaticShapes
from stylegen_trt.engines.ort import OrtEngine
from stylegen_trt.errors import UserError
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.images import procedural_swatch, save_png
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline, StyleRequest, branch_chunk


@pytest.fixture()
def demo_copy(tmp_path):
    from stylegen_trt.cli import _demo_bundle_path

    dst = tmp_path / "bundle"
    shutil.copytree(_demo_bundle_path(), dst, ignore=shutil.ignore_patterns("engines", ".verified.json"))
    return dst


@pytest.fixture()
def swatches(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    save_png(procedural_swatch(64), a)
    save_png(np.ascontiguousarray(procedural_swatch(64)[::-1]), b)
    return a, b


def _requests(swatches, steps=6):
    a, b = swatches
    return [GenerationRequest("a red circle", steps=steps, seed=1, n=2, style=StyleRequest((a,))),
            GenerationRequest("a blue square", steps=steps, seed=2, style=StyleRequest((b,), window=(0.2, 0.7))),
            GenerationRequest("plain", steps=steps, seed=3)]


# ---------------------------------------------------------------------------------------------------
# ONNX Runtime: OrtValues on CPU through IOBinding


def test_ort_device_values_give_the_same_bytes_as_the_host_path(demo_copy, swatches, tmp_path, monkeypatch):
    """The pipeline on OrtValues (branch outputs bound by address as the UNet's residual inputs, zeros and the
    context uploaded once) gives exactly the images of the host-array path, for a mixed-style batch."""
    b = open_bundle(demo_copy)
    options = EngineOptions(threads=2, cache=False)
    seen = []
    original = OrtEngine.run_device

    def spy(self, inputs, keep=()):
        if self.spec.name == "unet":
            seen.append({k: type(v).__name__ for k, v in inputs.items()})
        out = original(self, inputs, keep)
        if self.spec.name == "style_branch":
            assert all(isinstance(v, DeviceValue) and v.memory.kind == "ort:cpu" for v in out.values())
        return out

    monkeypatch.setattr(OrtEngine, "run_device", spy)
    with StylePipeline(b, options, style_cache_dir=tmp_path / "s1") as pipe:
        device = [r.images for r in pipe.generate_many(_requests(swatches))]
    assert seen and all(s["encoder_hidden_states"] == "DeviceValue" and s["down_res_0"] == "DeviceValue" for s in seen)
    monkeypatch.setattr(OrtEngine, "run_device", EngineBase.run_device)  # NumPy in, NumPy out
    monkeypatch.setattr(OrtEngine, "to_device", EngineBase.to_device)
    with StylePipeline(b, options, style_cache_dir=tmp_path / "s2") as pipe:
        host = [r.images for r in pipe.generate_many(_requests(swatches))]
    assert all(x.tobytes() == y.tobytes() for x, y in zip(device, host))


def test_device_value_rows_copy_and_concat_on_ort_cpu(demo_copy):
    with open_bundle(demo_copy).open_engine("unet", EngineOptions(cache=False)) as engine:
        data = np.arange(24, dtype=np.float32).reshape(4, 6)
        value = engine.to_device(data)
        assert value.memory.kind == "ort:cpu" and value.shape == (4, 6)
        assert np.array_equal(value.rows(1, 3).numpy(), data[1:3])
        copied = value.rows(2, 3).copy()
        assert copied.owner is not value.owner and np.array_equal(copied.numpy(), data[2:3])
        from stylegen_trt.engines.base import concat_rows
        joined = concat_rows([value.rows(3, 4), value.rows(0, 1)])
        assert np.array_equal(joined.numpy(), data[[3, 0]])


def test_nan_in_an_output_is_a_one_line_error_naming_the_graph(demo_copy, swatches, tmp_path, monkeypatch):
    b = open_bundle(demo_copy)
    original = OrtEngine.run_device
    calls = []

    def poisoned(self, inputs, keep=()):
        out = original(self, inputs, keep)
        if self.spec.name == "unet":
            calls.append(1)
            if len(calls) == 3:
                out["eps"][0, 0, 0, 0] = np.nan
        return out

    monkeypatch.setattr(OrtEngine, "run_device", poisoned)
    with StylePipeline(b, EngineOptions(threads=2, cache=False), style_cache_dir=tmp_path / "s") as pipe:
        with pytest.raises(UserError) as excinfo:
            pipe.generate(GenerationRequest("x", steps=5, seed=0))
    assert str(excinfo.value) == "the unet produced NaN/Inf at step 3 in fp32: check the bundle's weights and inputs"
    from types import SimpleNamespace

    from stylegen_trt.runtime.pipeline import check_finite

    fp16_unet = SimpleNamespace(precision="fp16", spec=SimpleNamespace(name="unet"))
    with pytest.raises(UserError, match=r"^the unet produced NaN/Inf at step 7 in fp16: try --precision fp32$"):
        check_finite(fp16_unet, np.array([1.0, np.inf], np.float32), " at step 7")


# ---------------------------------------------------------------------------------------------------
# TensorRT over the stub and the host-memory CUDA runtime


def _install(monkeypatch, tmp_path, major=10, **kwargs):
    return trt_stub.install_for_test(monkeypatch, tmp_path, major, **kwargs)


@pytest.fixture(params=[10, 11])
def stub(request, monkeypatch, tmp_path):
    yield _install(monkeypatch, tmp_path, request.param)
    trt_stub.reset_polygraphy_tensorrt()
    trt_backend.cuda_device.cache_clear()


def test_styled_generation_uploads_residuals_once_not_every_step(stub, demo_copy, swatches, tmp_path):
    """50 styled steps: the UNet's stream carries 2 uploads a step (latent, timestep) and 1 download (eps); the
    residuals come from the branch's output buffers (no copy at all), the zero residuals and the text context
    are uploaded once. The old path uploaded 3 + 9 residual inputs every step."""
    trt, cudart = stub
    b = open_bundle(demo_copy)
    steps = 50
    residual_names = b.graphs["style_branch"].output_names
    with StylePipeline(b, EngineOptions(backend="trt"), style_cache_dir=tmp_path / "s") as pipe:
        unet = pipe.engines["unet"].engine
        branch = pipe.engines["style_branch"].engine
        pipe.generate(GenerationRequest("x", steps=steps, seed=0, scheduler="ddim"))  # warm: prompt encodings cached
        counts = {}
        for label, style in (("plain", StyleRequest()), ("styled", StyleRequest((swatches[0],)))):
            before = {k: dict(v) for k, v in cudart.by_stream.items()}
            uploads_before = len(cudart.log)
            result = pipe.generate(GenerationRequest("x", steps=steps, seed=0, scheduler="ddim", style=style))
            assert result.images.shape == (1, 32, 32, 3)
            after = cudart.by_stream
            delta = {h: {k: after[h][k] - before.get(h, {}).get(k, 0) for k in after[h]} for h in after}
            counts[label] = (delta, cudart.log[uploads_before:])
        for label, (delta, log) in counts.items():
            assert delta[unet._stream.ptr] == {"h2d": 2 * steps, "d2h": steps, "d2d": 0}, label
            synchronous = [entry for entry in log if entry[2] == 0]  # to_device: once per generation
            assert [d for d, _, _ in synchronous] == ["h2d"] * (1 + len(residual_names)), label
        styled = counts["styled"][0]
        chunk = branch_chunk(b.graphs["style_branch"], 16, 16)
        calls = -(-steps // chunk)
        assert styled[branch._stream.ptr] == {"h2d": 3 * calls, "d2h": 0, "d2d": 0}  # S, t, scale; outputs stay
        assert branch._stream.ptr not in counts["plain"][0] or counts["plain"][0][branch._stream.ptr]["h2d"] == 0
        # one activation block for all five engines, of the largest size
        blocks = {e.engine._context.activation for e in pipe.engines.values()}
        assert len(blocks) == 1 and next(iter(blocks))[1] >= trt_stub.ACTIVATION_BYTES
    assert not cudart.pinned and cudart.streams == 0


def test_mixed_styles_join_rows_on_the_device(stub, demo_copy, swatches, tmp_path):
    trt, cudart = stub
    b = open_bundle(demo_copy)
    with StylePipeline(b, EngineOptions(backend="trt"), style_cache_dir=tmp_path / "s") as pipe:
        unet = pipe.engines["unet"].engine
        before = dict(cudart.by_stream.get(unet._stream.ptr, {"h2d": 0}))
        results = pipe.generate_many(_requests(swatches)[:2])  # two styles in one UNet batch
        assert all(not isinstance(r, Exception) for r in results)
        assert pipe.times.calls["unet"] == 6
        assert cudart.by_stream[unet._stream.ptr]["h2d"] - before.get("h2d", 0) == 2 * 6
        residuals = len(b.graphs["style_branch"].output_names)
        joins = [entry for entry in cudart.log if entry[0] == "d2d"]
        assert len(joins) == 6 * residuals * 6  # per step and residual: a row per UNet batch item (3 images x 2 CFG)


def test_profiles_have_opt_at_what_the_runtime_sends_and_static_fixes_them(demo_copy):
    graphs = open_bundle(demo_copy).graphs
    text = trt_backend.profile_shapes(graphs["text_encoder"])
    assert text["input_ids"] == ((1, 16), (1, 16), (48, 16))  # one prompt per call
    branch = trt_backend.profile_shapes(graphs["style_branch"])
    chunk = branch_chunk(graphs["style_branch"], 16, 16)
    assert chunk == 16 and branch["timestep"] == ((1,), (chunk,), (50,))
    static = StaticShapes(16, 16, 1)
    unet = trt_backend.profile_shapes(graphs["unet"], static)
    assert unet["sample"] == ((2, 4, 16, 16),) * 3 and unet["down_res_0"] == ((1, 32, 16, 16),) * 3
    assert trt_backend.is_static(unet) and trt_backend.is_static(trt_backend.profile_shapes(graphs["vae_decoder"], static))
    assert trt_backend.profile_shapes(graphs["text_encoder"], static)["input_ids"] == ((1, 16),) * 3
    assert trt_backend.profile_shapes(graphs["style_branch"], static)["timestep"] == ((1,), (16,), (16,))
    wide = trt_backend.profile_shapes(graphs["unet"], StaticShapes(8, 32, 2))
    assert wide["sample"] == ((4, 4, 8, 32),) * 3
    with pytest.raises(UserError, match="outside the unet graph's range"):
        trt_backend.profile_shapes(graphs["unet"], StaticShapes(64, 64, 1))
    files = {"unet.onnx": "a" * 64}
    gpu = trt_backend.CudaDevice(0, "NVIDIA A10", "8.6")
    recipe = trt_backend.build_recipe("fp16", "10.13.3")
    from stylegen_trt.engines.cache import cache_key
    keys = {cache_key(trt_backend.engine_fields(files, graphs["unet"], recipe, "10.13.3", gpu, "0.53.6", s))
            for s in (None, static, StaticShapes(16, 16, 2))}
    assert len(keys) == 3


def test_cuda_graph_replays_the_static_unet_with_the_same_results(stub, demo_copy):
    trt, cudart = stub
    b = open_bundle(demo_copy)
    spec = b.graphs["unet"]
    static = StaticShapes(16, 16, 1)
    rng = np.random.default_rng(0)
    shapes = trt_backend.profile_shapes(spec, static)

    def feeds(seed):
        r = np.random.default_rng(seed)
        return {name: r.standard_normal(lo).astype(np.float32) for name, (lo, _, _) in shapes.items()}

    with pytest.raises(UserError, match="--cuda-graph needs static engines"):
        b.open_engine("unet", EngineOptions(backend="trt", cuda_graph=True))
    plain = b.open_engine("unet", EngineOptions(backend="trt", static=static))
    graphed = b.open_engine("unet", EngineOptions(backend="trt", static=static, cuda_graph=True))
    residual = graphed.to_device(rng.standard_normal(shapes["down_res_0"][0]).astype(np.float32))
    for seed in range(4):
        inputs = feeds(seed)
        on_device = {**inputs, "down_res_0": residual}
        expected = plain.run_device(on_device)["eps"]
        got = graphed.run_device(on_device)["eps"]
        assert np.array_equal(got, expected)
    assert cudart.launches == 3 and graphed.graph_launches == 3  # run 1 warms up, 2 captures + replays, 3-4 replay
    with pytest.raises(UserError, match="static unet engine takes other shapes"):
        graphed.run({**feeds(0), "sample": np.zeros((4, 4, 16, 16), np.float32),
                     "encoder_hidden_states": np.zeros((4, 16, 64), np.float32)})
    plain.close()
    graphed.close()
    assert not cudart.execs


def test_contexts_without_activation_memory_refuse_to_run(stub):
    trt, _ = stub
    record = {"io": [["x", "input", "FLOAT", [1]], ["y", "output", "FLOAT", [1]]], "profile": {"x": [[1], [1], [1]]}}
    engine = trt.Runtime(None).deserialize_cuda_engine(json.dumps(record).encode())
    context = trt_backend.create_context(engine, trt)
    context.set_input_shape("x", (1,))
    context.set_tensor_address("x", 8)
    context.set_tensor_address("y", 16)
    assert context.user_managed and not context.execute_async_v3(0)  # no activation memory yet
    with pytest.raises(ValueError):
        trt_backend.set_activation_memory(context, 64, 1)  # smaller than the engine needs
    assert trt_backend.activation_bytes(engine) == trt_stub.ACTIVATION_BYTES


def test_nan_from_an_fp16_engine_names_the_graph_and_writes_no_image(demo_copy, tmp_path):
    from test_trt import _stub_cli

    out = tmp_path / "out.png"
    result = _stub_cli(10, "generate", "--bundle", str(demo_copy), "-p", "x", "--backend", "trt", "--steps", "4",
                       "--out", str(out), env={"STYLEGEN_TRT_CACHE": str(tmp_path / "cache"), "STUB_NAN": "eps"})
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip() == "error: the unet produced NaN/Inf at step 1 in fp16: try --precision fp32"


def test_build_static_prints_one_line_per_graph(demo_copy, tmp_path):
    from test_trt import _stub_cli

    env = {"STYLEGEN_TRT_CACHE": str(tmp_path / "cache")}
    result = _stub_cli(11, "build", "--bundle", str(demo_copy), "--backend", "trt", "--static", "--height", "32",
                       "--width", "32", "--n", "1", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(" built in " in line for line in lines) and result.stderr == ""
    dynamic = _stub_cli(11, "build", "--bundle", str(demo_copy), "--backend", "trt", "--graph", "unet", env=env)
    assert dynamic.stdout.count(" built in ") == 1  # another key: the static entry is not reused
    out = tmp_path / "g.png"
    generated = _stub_cli(11, "generate", "--bundle", str(demo_copy), "-p", "x", "--backend", "trt", "--steps", "3",
                          "--cuda-graph", "--out", str(out), env=env)
    assert generated.returncode == 0, generated.stderr
    assert out.exists() and "built" not in generated.stderr
    for args, message in ((["--static"], "TensorRT options"), (["--height", "32"], "go with --static"),
                          (["--static", "--height", "33", "--backend", "trt"], "must be a multiple of 8")):
        bad = _stub_cli(10, "build", "--bundle", str(demo_copy), *args, env=env)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_bench_backend_arguments(tmp_path):
    for args, message in ((["--backend", "onnx"], "unknown --backend 'onnx'"),
                          (["--cuda-graph"], "TensorRT options"),
                          (["--static"], "TensorRT options"),
                          (["--device", "tpu"], "unknown --device 'tpu'")):
        result = cli("bench", "--config", "tiny", "--cache-dir", str(tmp_path), *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        result = cli("bench", "--config", "tiny", "--cache-dir", str(tmp_path), "--backend", "trt", check=False)
        assert result.returncode == 2 and result.stderr.startswith("error: --backend trt needs TensorRT")
        assert not list(tmp_path.iterdir())  # refused before building any model
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        result = cli("bench", "--config", "tiny", "--cache-dir", str(tmp_path), "--device", "cuda", check=False)
        assert result.returncode == 2 and "has no CUDA provider" in result.stderr
