"""The anchored branch layout and its training data (README "The demo model": why a branch that never
sees x_t needs textures at a fixed phase, coordinates at its stem and a global code of S)."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from stylegen_trt.demo import data
from stylegen_trt.errors import UserError
from stylegen_trt.export.graphs import ExportLimits, build_graphs
from stylegen_trt.export.onnx_export import export_graph
from stylegen_trt.models import loaders
from stylegen_trt.models.style_branch import StyleBranch, coordinate_features, randomise_projections


@pytest.fixture(scope="module")
def anchored(tiny):
    branch = randomise_projections(loaders.new_branch(tiny.base, seed=0, layout="anchored"), seed=1)
    with torch.no_grad():  # the global code starts at zero; make it matter here
        branch.style_code.net[2].weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    return branch


def test_anchored_layout_adds_coordinates_and_a_global_code(tiny, anchored):
    patent = loaders.new_branch(tiny.base, seed=0)
    assert patent.layout == "patent" and not hasattr(patent, "style_code")
    assert anchored.stem.layers[0].in_channels == 1 + 2 + 4 * 4 and patent.stem.layers[0].in_channels == 1
    feats = coordinate_features(2, 6, 10, torch.float32)
    assert feats.shape == (2, 18, 6, 10)
    assert torch.allclose(feats[0, 0, 0], (torch.arange(10) + 0.5) / 10 * 2 - 1)  # x runs across the width
    # untrained, an anchored branch is plain SD too: zero projections and a zero global code
    fresh = loaders.new_branch(tiny.base, seed=0, layout="anchored")
    size = fresh.style_map_size(8, 8)
    out = fresh(torch.rand(1, 1, *size), torch.tensor([500.0]), torch.tensor([1.0]))
    assert all(torch.count_nonzero(r) == 0 for r in out)
    with torch.no_grad():
        a = anchored(torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(0)), torch.tensor([500.0]), torch.tensor([1.0]))
        b = anchored(torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(1)), torch.tensor([500.0]), torch.tensor([1.0]))
    assert len(a) == patent.num_residuals and all(x.shape == y.shape for x, y in zip(a, b))
    assert max(float((x - y).abs().max()) for x, y in zip(a, b)) > 1e-3  # S reaches the residuals
    with pytest.raises(ValueError, match="patent, anchored"):
        StyleBranch(tiny.base.unet, patent.empty_context, layout="controlnet")


def test_anchored_branch_file_keeps_its_layout(tiny, anchored, tmp_path):
    path = tmp_path / "anchored.safetensors"
    loaders.save_branch(anchored, path)
    loaded = loaders.load_branch(tiny.base, path)
    assert loaded.layout == "anchored"
    for (k, a), b in zip(anchored.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # a file from before layouts existed is the patent's wiring; a wrong one is one clean error
    save_file(load_file(str(tiny.branch_path)), str(tmp_path / "old.safetensors"),
              metadata={"format": loaders.BRANCH_FORMAT, "stem_hidden": "32", "stem_stride": "8"})
    assert loaders.load_branch(tiny.base, tmp_path / "old.safetensors").layout == "patent"
    save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"),
              metadata={"format": loaders.BRANCH_FORMAT, "stem_hidden": "32", "stem_stride": "8", "layout": "what"})
    with pytest.raises(UserError, match="bad branch setting"):
        loaders.load_branch(tiny.base, tmp_path / "bad.safetensors")


@pytest.mark.parametrize("latent", [8, 5, 16])
def test_anchored_branch_graph_matches_torch(tiny, anchored, tmp_path, latent):
    """The coordinates (a Range over the input's size) and the global code's fixed-size Resize export at any size;
    one S with three timesteps gives what three rows of the same S give (the stem runs once, not per row)."""
    import onnxruntime as ort

    graph = build_graphs(tiny.base, tiny.encoder, anchored, ExportLimits(32, 128, 64, style_image_size=64))["style_branch"]
    path = tmp_path / "branch.onnx"
    export_graph(graph, path)
    size = anchored.style_map_size(latent, latent)
    s = torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(latent))
    t, scale = torch.tensor([417.0, 250.0, 3.0]), torch.tensor([0.8])
    with torch.no_grad():
        expected = graph.module(s.expand(3, -1, -1, -1).contiguous(), t, scale)  # one S per timestep row
        alone = [graph.module(s, t[i:i + 1], scale) for i in range(3)]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"style_map": s.numpy(), "timestep": t.numpy(), "style_scale": scale.numpy()})
    assert len(got) == len(expected) == graph.module.num_residuals
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.shape[0] == 3 and np.abs(e.numpy()).max() > 0
        np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(g[1:2], alone[1][k].numpy(), atol=1e-4, rtol=1e-4)


def test_anchored_textures_have_a_fixed_phase():
    rng = np.random.default_rng(0)
    styles = [data.anchored_style(rng) for _ in range(200)]
    assert all(s.anchored and s.period == data.ANCHORED_PERIOD and s.angle in data.ANCHORED_ANGLES for s in styles)
    assert {s.texture for s in styles} == set(range(len(data.TEXTURES)))
    assert all(not data.is_heldout_region(s.fg, s.bg) for s in styles)
    stripes = data.Style(data.TEXTURES.index("stripes"), (255, 255, 255), (0, 0, 0), 7.5, 0.0, 0.0, anchored=True)
    a = data.render(None, stripes, seed=1)
    assert np.array_equal(a, data.render(None, stripes, seed=2))  # no phase left to draw
    assert np.array_equal(a[0], a[-1]) and len(np.unique(a[0, :, 0])) == 2  # vertical stripes at angle 0
    rings = data.render(None, data.Style(data.TEXTURES.index("rings"), (255, 255, 255), (0, 0, 0), 7.5, 0.0, 0.0,
                                         anchored=True))
    assert np.array_equal(rings, rings[::-1, ::-1]) and np.array_equal(rings, rings.transpose(1, 0, 2))  # centred
    images, _, _, drawn = data.sample_batch(np.random.default_rng(3), 8, texture_phase="anchored")
    assert images.shape == (8, 32, 32, 3) and all(s.anchored for s in drawn)
    assert not any(s.anchored for s in data.sample_batch(np.random.default_rng(3), 8)[3])


def test_hatching_period_changes_only_hatching_and_follows_the_stage_schedule():
    """DemoConfig.anchored_hatching_periods: the shipped stage drew anchored hatching at 7.5 px for 10500 steps,
    then at 6.5 (docs/experiments/anchored-hatching/). The period is not drawn, so the same draws give the same
    styles with only hatching's period changed - what the experiment's wrapper round anchored_style drew."""
    import dataclasses

    from stylegen_trt.demo.train import batches, parse_hatching_periods

    hatching = data.TEXTURES.index("hatching")
    plain = [data.anchored_style(np.random.default_rng(k)) for k in range(60)]
    finer = [data.anchored_style(np.random.default_rng(k), None, 6.5) for k in range(60)]
    assert {s.texture for s in plain} >= {hatching, data.TEXTURES.index("dots")}
    assert finer == [dataclasses.replace(s, period=6.5) if s.texture == hatching else s for s in plain]

    schedule = parse_hatching_periods("0:7.5,2:6.5")
    assert schedule == ((0, 7.5), (2, 6.5))
    switched, before, after = (batches(12, 16, texture_phase="anchored", hatching_periods=periods)
                               for periods in (schedule, ((0, 7.5),), ((0, 6.5),)))
    for index in range(4):
        got, want = next(switched), next(before if index < 2 else after)
        other = next(after if index < 2 else before)
        assert torch.equal(got[0], want[0]) and got[1] == want[1]
        periods = {s.period for s in switched.last_styles if s.texture == hatching}
        assert periods == {7.5 if index < 2 else 6.5}
        assert not torch.equal(got[0], other[0])  # each batch draws hatching, so the period shows
    resumed = batches(12, 16, start=3, texture_phase="anchored", hatching_periods=schedule)
    assert torch.equal(next(resumed)[0], got[0])  # a resumed stage picks the schedule up at its step


def test_outline_width_changes_only_the_rings_and_follows_the_stage_schedule():
    """DemoConfig.outline_widths: the shipped stage widened the ground ring round each shape from 1.5 to 2.5 px
    after 10500 steps (docs/experiments/lr-decay/). No draw depends on the width: the same batches, with only the
    rings' pixels changed, and the loss's shape weights grown with them - what the experiment's patch of
    data.OUTLINE_WIDTH and data.render drew."""
    from stylegen_trt.demo.train import _shape_weights, batches, parse_outline_widths

    schedule = parse_outline_widths("0:1.5,2:2.5")
    assert schedule == ((0, 1.5), (2, 2.5))
    switched, before, after = (batches(12, 16, texture_phase="anchored", outline_widths=widths)
                               for widths in (schedule, ((0, 1.5),), ((0, 2.5),)))
    for index in range(4):
        got, want = next(switched), next(before if index < 2 else after)
        other = next(after if index < 2 else before)
        assert torch.equal(got[0], want[0]) and got[1] == want[1]
        assert switched.last_outline_width == (1.5 if index < 2 else 2.5)
        changed = (got[0] != other[0]).any(dim=1)
        for k, content in enumerate(switched.last_contents):  # only pixels in the wider ring differ
            ring = data.shape_mask(content, 32, grow=2.5) - data.shape_mask(content, 32)
            assert not changed[k][torch.from_numpy(ring) == 0].any()
        assert changed.any()
    resumed = batches(12, 16, start=3, texture_phase="anchored", outline_widths=schedule)
    assert torch.equal(next(resumed)[0], got[0]) and resumed.last_outline_width == 2.5
    contents = switched.last_contents
    narrow, wide = (_shape_weights(contents, 16, 2.0, outline_width=w) for w in (1.5, 2.5))
    assert torch.equal(narrow, _shape_weights(contents, 16, 2.0)) and (wide >= narrow).all() and (wide > narrow).any()


def test_demo_stages_train_the_anchored_layout_on_anchored_textures(tmp_path, monkeypatch):
    """base+style and the branch stage both build the anchored branch and draw centre-anchored textures."""
    from stylegen_trt.demo import train as demo_train

    torch.set_num_threads(1)
    phases = []
    real_batches = demo_train.batches
    monkeypatch.setattr(demo_train, "batches", lambda *a, **k: phases.append(k.get("texture_phase")) or real_batches(*a, **k))
    cfg = demo_train.DemoConfig(vae_steps=2, vae_batch=4, vae_decoder_steps=2, base_steps=2, base_batch=4,
                                base_style_steps=2, branch_steps=2, branch_batch=4, branch_layout="anchored")
    loaders.make_tiny_vgg(tmp_path / "vgg19.pth", 0)
    vae = demo_train.train_vae(tmp_path, cfg)
    demo_train.train_base(tmp_path, cfg, vae)
    phases.clear()
    demo_train.train_base_with_style(tmp_path, cfg)
    base = loaders.load_base(tmp_path / "sd")
    assert loaders.load_branch(base, tmp_path / "branch-init.safetensors").layout == "anchored"
    out = demo_train.train_style_branch(tmp_path, cfg)
    branch = loaders.load_branch(base, out)
    assert branch.layout == "anchored"
    assert phases == ["anchored", "anchored"]
    assert any(torch.count_nonzero(p) for p in branch.down_projections.parameters())  # it trained
