"""The engine protocol and the ONNX Runtime backend's cache of optimised graphs."""

import json

import numpy as np
import pytest

from stylegen_trt.engines import cache
from stylegen_trt.engines.base import Engine, EngineOptions, check_inputs
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.spec import AxisRange, GraphSpec, TensorSpec, bind_axes, resolve_dim


def _feeds(latent=8):
    rng = np.random.default_rng(0)  # S at 8x the latent: the tiny branch's stem strides 8
    return {"style_map": rng.random((1, 1, 8 * latent, 8 * latent), dtype=np.float32),
            "timestep": np.array([100.0], np.float32), "style_scale": np.array([1.0], np.float32)}


@pytest.fixture()
def bundle_copy(styled_bundle, tmp_path):
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(styled_bundle, dst, ignore=shutil.ignore_patterns("engines"))
    return open_bundle(dst)


def test_ort_engine_honours_protocol(bundle_copy):
    with bundle_copy.open_engine("style_branch", EngineOptions(threads=1)) as engine:
        assert isinstance(engine, Engine) and engine.device == "cpu"
        out = engine.run(_feeds())
        assert list(out) == engine.spec.output_names
        again = engine.run(_feeds())
        assert all(out[k] is not again[k] for k in out)  # fresh arrays, never reused buffers
        assert all(np.array_equal(out[k], again[k]) for k in out)


def test_lean_memory_frees_the_arena_and_changes_no_output(bundle_copy):
    outputs = {}
    for memory in ("fast", "lean"):
        with bundle_copy.open_engine("style_branch", EngineOptions(threads=1, memory=memory)) as engine:
            assert engine.session.get_session_options().enable_cpu_mem_arena == (memory == "fast")
            outputs[memory] = engine.run(_feeds())
    assert all(np.array_equal(outputs["fast"][k], outputs["lean"][k]) for k in outputs["fast"])


def test_engine_rejects_wrong_inputs(bundle_copy):
    with bundle_copy.open_engine("style_branch", EngineOptions(threads=1)) as engine:
        feeds = _feeds()
        with pytest.raises(ValueError, match="missing inputs"):
            engine.run({k: v for k, v in feeds.items() if k != "timestep"})
        with pytest.raises(ValueError, match="float64"):
            engine.run({**feeds, "timestep": np.array([1.0])})
        with pytest.raises(ValueError, match="outside"):
            engine.run(_feeds(latent=40))


def test_ort_cache_built_once_then_reused(bundle_copy):
    options = EngineOptions(threads=1)
    bundle_copy.open_engine("style_branch", options).close()
    entries = list((bundle_copy.path / "engines" / "ort").iterdir())
    assert len(entries) == 1
    record = json.loads((entries[0] / "key.json").read_text())
    assert record["fields"]["graph_files"] == {"style_branch.onnx": bundle_copy.manifest["files"]["style_branch.onnx"]["sha256"]}
    assert "onnxruntime" in record["fields"] and "model.onnx" in record["files"]
    # the weights beside the graph (ONNX Runtime maps them rather than parsing them out of the protobuf),
    # and the layout is part of the key, so entries from before it are rebuilt rather than reused
    assert "model.onnx.data" in record["files"] and record["fields"]["layout"] == "external-initializers"
    assert (entries[0] / "model.onnx.data").stat().st_size > (entries[0] / "model.onnx").stat().st_size
    mtime = (entries[0] / "model.onnx").stat().st_mtime_ns
    expected = bundle_copy.open_engine("style_branch", EngineOptions(threads=1, cache=False)).run(_feeds())
    with bundle_copy.open_engine("style_branch", options) as engine:  # from the cache: same outputs
        got = engine.run(_feeds())
    assert (entries[0] / "model.onnx").stat().st_mtime_ns == mtime
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], atol=1e-6)


def test_ort_cache_rebuilds_a_tampered_entry(bundle_copy):
    options = EngineOptions(threads=1)
    bundle_copy.open_engine("style_branch", options).close()
    entry = next((bundle_copy.path / "engines" / "ort").iterdir())
    model = entry / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    assert not cache.is_valid(entry, json.loads((entry / "key.json").read_text())["fields"])
    with bundle_copy.open_engine("style_branch", options) as engine:
        engine.run(_feeds())
    assert cache.is_valid(entry, json.loads((entry / "key.json").read_text())["fields"])


def test_cache_key_covers_its_fields():
    base = {"graph_files": {"g.onnx": "a" * 64}, "onnxruntime": "1.0", "opt_level": "all"}
    keys = {cache.cache_key(base), cache.cache_key({**base, "graph_files": {"g.onnx": "b" * 64}}),
            cache.cache_key({**base, "onnxruntime": "1.1"}), cache.cache_key({**base, "opt_level": "basic"})}
    assert len(keys) == 4
    assert cache.cache_key(dict(reversed(list(base.items())))) == cache.cache_key(base)


def test_different_opt_levels_use_different_entries(bundle_copy):
    bundle_copy.open_engine("style_branch", EngineOptions(threads=1, opt_level="all")).close()
    bundle_copy.open_engine("style_branch", EngineOptions(threads=1, opt_level="basic")).close()
    assert len(list((bundle_copy.path / "engines" / "ort").iterdir())) == 2


def test_spec_dims_and_profiles():
    spec = GraphSpec("g", (TensorSpec("x", "float32", ("b", 4, "h", "h/4")),), (),
                     {"b": AxisRange(1, 2, 8), "h": AxisRange(4, 8, 17)})
    assert spec.shapes("min") == {"x": (1, 4, 4, 1)}
    assert spec.shapes("max") == {"x": (8, 4, 17, 5)}  # ceil(17 / 4), as strided convs round
    assert spec.dynamic_axes() == {"x": {0: "b", 2: "h", 3: "h_4"}}
    assert resolve_dim("h/2", {"h": 9}) == 5
    axes = {}
    assert bind_axes(spec.inputs[0], (2, 4, 12, 3), axes) is None and axes == {"b": 2, "h": 12}
    assert "expected" in bind_axes(spec.inputs[0], (2, 4, 12, 4), {})
    strided = TensorSpec("s", "float32", ("b", 1, "h*4", "w*4"))  # an input the graph downsamples
    assert resolve_dim("h*4", {"h": 9}) == 36
    assert GraphSpec("g", (strided,), (), {}).dynamic_axes() == {"s": {0: "b", 2: "hx4", 3: "wx4"}}
    axes = {}
    assert bind_axes(strided, (1, 1, 36, 20), axes) is None and axes == {"b": 1, "h": 9, "w": 5}
    assert "multiple of 4" in bind_axes(strided, (1, 1, 34, 20), {})
    assert "expected" in bind_axes(strided, (1, 1, 36, 20), {"h": 8})
    with pytest.raises(ValueError):
        AxisRange(3, 2, 4)
    check_inputs(GraphSpec("g", (TensorSpec("t", "int64", (1,)),), ()), {"t": np.zeros(1, np.int64)})


def test_engines_package_is_acyclic_and_the_registry_names_every_backend():
    """base.py imports no backend; backends import base/cache, never the registry; the registry (engines/__init__)
    maps every Backend to a class that says its own cache fields."""
    import ast
    from pathlib import Path
    from typing import get_args

    import stylegen_trt.engines as engines
    from stylegen_trt.engines.base import Backend, EngineBase

    folder = Path(engines.__file__).parent
    imports = {}
    for path in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "stylegen_trt.engines":
                names |= {f"stylegen_trt.engines.{a.name}" for a in node.names}  # a submodule, or the registry's own
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stylegen_trt.engines."):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("stylegen_trt.engines")}
        imports[path.stem] = names
    assert imports["base"] == set()
    for module in ("ort", "trt", "cache"):  # below the registry: they import base/cache only, never each other
        assert imports[module] <= {"stylegen_trt.engines.base", "stylegen_trt.engines.cache"}, (module, imports[module])
    assert set(engines.REGISTRY) == set(get_args(Backend))
    for name in engines.REGISTRY:
        cls = engines.backend_class(name)
        assert issubclass(cls, EngineBase) and cls.name == name and "cache_fields" in vars(cls)
    with pytest.raises(ValueError, match="unknown backend"):
        engines.backend_class("onnx")


def test_ort_opens_a_cached_model_without_rehashing_it(bundle_copy, monkeypatch):
    options = EngineOptions(threads=1)
    bundle_copy.open_engine("style_branch", options).close()
    hashed = []
    original = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda path, *a: hashed.append(path) or original(path, *a))
    bundle_copy.open_engine("style_branch", options).close()
    assert hashed == []  # the (size, mtime, ctime, inode) stamp matched
    entry = next((bundle_copy.path / "engines" / "ort").iterdir())
    with open(entry / "model.onnx", "ab") as f:
        f.write(b"\0")  # changed: hashed, found different, rebuilt
    bundle_copy.open_engine("style_branch", options).close()
    assert entry / "model.onnx" in hashed


def test_read_only_bundle_on_ort_caches_under_the_user_cache(bundle_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEGEN_TRT_CACHE", str(tmp_path / "user-cache"))
    bundle_copy.path.chmod(0o555)
    try:
        if cache.writable(bundle_copy.path / "engines"):  # root: the kernel ignores the mode bits
            monkeypatch.setattr(cache, "writable", lambda path: False)
        root = bundle_copy.engine_cache_root()
        assert root.parent == tmp_path / "user-cache" / "engines"
        with bundle_copy.open_engine("style_branch", EngineOptions(threads=1)) as engine:
            engine.run(_feeds())
        assert not (bundle_copy.path / "engines").exists()
        entries = list((root / "ort").iterdir())
        assert len(entries) == 1 and (entries[0] / "model.onnx").is_file()
    finally:
        bundle_copy.path.chmod(0o755)


def test_build_of_the_embedded_demo_writes_nothing_into_the_package(tmp_path):
    """The shipped demo bundle lives in site-packages: its ORT graphs go under $STYLEGEN_TRT_CACHE."""
    import os
    import subprocess
    import sys

    from stylegen_trt.cli import _demo_bundle_path

    package_engines = _demo_bundle_path() / "engines"
    before = package_engines.exists()
    env = {**os.environ, "STYLEGEN_TRT_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "stylegen_trt", "build", "--graph", "style_branch"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("style_branch: built in ") and str(tmp_path / "cache" / "engines") in result.stdout
    assert package_engines.exists() == before and len(result.stdout.splitlines()) == 1
