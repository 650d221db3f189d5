"""Bundles: manifest contents, each ONNX graph against its PyTorch module, external data."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stylegen_trt.export.graphs import ExportLimits, build_graphs
from stylegen_trt.export.onnx_export import export_graph
from stylegen_trt.files import sha256_file
from stylegen_trt.spec import resolve_shape

GRAPHS = ("text_encoder", "style_encoder", "style_branch", "unet", "vae_decoder")


def test_manifest_describes_every_graph(styled_bundle):
    m = json.loads((styled_bundle / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["model_family"] == "sd1"
    assert set(m["graphs"]) == set(GRAPHS)
    for name, entry in m["files"].items():
        assert sha256_file(styled_bundle / name) == entry["sha256"]
        assert (styled_bundle / name).stat().st_size == entry["bytes"]
    assert "tokenizer.json" in m["files"]
    unet = m["graphs"]["unet"]
    assert [t["name"] for t in unet["inputs"]][:3] == ["sample", "timestep", "encoder_hidden_states"]
    assert len(unet["inputs"]) == 3 + 13
    assert unet["axes"]["latent_h"] == {"min": 4, "opt": 8, "max": 16}
    assert m["scheduler"]["beta_schedule"] == "scaled_linear"
    assert m["latent"] == {"channels": 4, "scale": 0.18215, "vae_scale_factor": 8}
    assert m["sizes"]["native"] == 64 and m["style"]["image_size"] == 64
    for tool in ("torch", "onnx", "onnxruntime", "diffusers"):
        assert m["tool_versions"][tool] != "absent"


def test_onnx_graph_io_names_match_manifest(styled_bundle):
    m = json.loads((styled_bundle / "manifest.json").read_text())
    for name in GRAPHS:
        model = onnx.load(str(styled_bundle / m["graphs"][name]["file"]), load_external_data=False)
        assert [i.name for i in model.graph.input] == [t["name"] for t in m["graphs"][name]["inputs"]]
        assert [o.name for o in model.graph.output] == [t["name"] for t in m["graphs"][name]["outputs"]]


def _session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# Tolerances: fp32 ORT vs fp32 torch on random tiny weights; kernels differ in summation order.
ATOL = {"text_encoder": 1e-4, "style_encoder": 1e-4, "style_branch": 1e-4, "unet": 1e-4, "vae_decoder": 1e-4}


@pytest.mark.parametrize("latent", [8, 5, 16])  # opt, an odd size (not a multiple of 8), the max
def test_each_graph_matches_torch(tiny, styled_bundle, latent):
    graphs = build_graphs(tiny.base, tiny.encoder, tiny.styled_branch, ExportLimits(32, 128, 64, style_image_size=64))
    m = json.loads((styled_bundle / "manifest.json").read_text())
    gen = torch.Generator().manual_seed(latent)
    axes = {"latent_h": latent, "latent_w": latent, "text_batch": 2, "unet_batch": 2, "style_batch": 1, "image_batch": 1,
            "branch_steps": 3, "residual_batch": 2}  # a residual row per UNet batch item (per-image styles)
    for name in GRAPHS:
        spec = graphs[name].spec
        inputs = []
        for t in spec.inputs:
            shape = resolve_shape(t.dims, axes)
            if t.dtype == "int64":
                inputs.append(torch.randint(0, tiny.base.text_encoder.config.vocab_size, shape, generator=gen))
            elif t.name == "timestep":
                inputs.append(torch.tensor([417.0, 250.0, 3.0][:shape[0]]))  # the branch takes 3 timesteps
            elif t.name == "style_scale":
                inputs.append(torch.tensor([0.8]))
            elif t.name == "style_image":
                inputs.append(torch.rand(shape, generator=gen))
            else:
                inputs.append(torch.randn(shape, generator=gen) * (3 if name == "vae_decoder" else 1))
        with torch.no_grad():
            expected = graphs[name].module(*inputs)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = _session(styled_bundle / m["graphs"][name]["file"]).run(
            None, {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)})
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == tuple(e.shape), name
            np.testing.assert_allclose(g, e.numpy(), atol=ATOL[name], rtol=1e-4, err_msg=name)


def test_external_data_path(tiny, tmp_path):
    """A graph over the threshold keeps its weights in <file>.data and still runs identically."""
    graphs = build_graphs(tiny.base, tiny.encoder, tiny.styled_branch, ExportLimits(32, 128, 64, style_image_size=64))
    small = export_graph(graphs["style_branch"], tmp_path / "inline.onnx")
    large = export_graph(graphs["style_branch"], tmp_path / "external.onnx", external_data_threshold=1000)
    assert [p.name for p in small] == ["inline.onnx"]
    assert [p.name for p in large] == ["external.onnx", "external.onnx.data"]
    inline_size = (tmp_path / "inline.onnx").stat().st_size
    assert (tmp_path / "external.onnx").stat().st_size < 0.2 * inline_size < (tmp_path / "external.onnx.data").stat().st_size
    feeds = {"style_map": np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32),  # latent 8, stride 8
             "timestep": np.array([10.0], np.float32), "style_scale": np.array([1.0], np.float32)}
    for a, b in zip(_session(small[0]).run(None, feeds), _session(large[0]).run(None, feeds)):
        np.testing.assert_array_equal(a, b)
