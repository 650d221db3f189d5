"""Style-branch training (training/, the `train` command) on the tiny model, in seconds.

A run stopped after a checkpoint and resumed must end with exactly the weights of a run that was
never stopped (bit for bit on the CPU): the data stream, the noise generator, the optimiser and
the global generators all continue where they were.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from stylegen_trt.cli import app
from stylegen_trt.models import loaders
from stylegen_trt.training.branch import BranchTrainer, TrainConfig, train_branch
from stylegen_trt.training.data import folder_batches, scan_folder
from conftest import cli

STEPS = 4
CONFIG = TrainConfig(steps=STEPS, batch_size=1, grad_accumulation=2, learning_rate=1e-3, caption_dropout=0.3,
                     style_image_size=32, checkpoint_every=2, seed=3)


def captioned_folder(root: Path, good: int) -> Path:
    """``good`` captioned 64-px images in metadata.jsonl, plus a captioned file that is not an image."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(good)
    rows = []
    for i in range(good):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / name)
        rows.append({"file_name": name, "text": ["a cat", "a dog", "a red cat painting"][i % 3]})
    (root / "broken.png").write_bytes(b"not a png at all")
    rows.append({"file_name": "broken.png", "text": "a broken image"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> Path:
    return captioned_folder(tmp_path_factory.mktemp("captioned"), good=5)


def trainer_for(tiny) -> BranchTrainer:
    return BranchTrainer(tiny.base, tiny.encoder, loaders.new_branch(tiny.base, 0), CONFIG)


def procedural_stream(seed: int):
    """A plain generator (no state_dict), like the demo's: resumed by skipping what it gave."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield torch.rand(1, 3, 64, 64, generator=g), ["a cat" if torch.rand(1, generator=g) < 0.5 else "a dog"]


class Stop(Exception):
    pass


def stop_at(step: int):
    def on_step(current: int, loss: float) -> None:
        if current == step:
            raise Stop
    return on_step


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, out.with_suffix(".loss.jsonl").read_text().splitlines())]


@pytest.mark.parametrize("source", ["folder", "generator"])
def test_resumed_run_equals_uninterrupted_bit_for_bit(tiny, captioned, tmp_path, source):
    def stream():
        if source == "folder":
            return folder_batches(scan_folder(captioned), 64, CONFIG.batch_size, CONFIG.seed)
        return procedural_stream(CONFIG.seed)

    whole = train_branch(trainer_for(tiny), stream(), tmp_path / "whole" / "branch.safetensors")

    cut = tmp_path / "cut" / "branch.safetensors"
    with pytest.raises(Stop):  # killed at step 3: the last checkpoint is step 2, the log has step 3
        train_branch(trainer_for(tiny), stream(), cut, on_step=stop_at(3))
    assert torch.load(cut.with_suffix(".ckpt"), weights_only=False)["step"] == 2
    assert [s for s, _ in losses(cut)] == [1, 2, 3]
    resumed = trainer_for(tiny)  # a fresh process: fresh branch, optimiser, generator and stream
    train_branch(resumed, stream(), cut)

    assert resumed.step_count == STEPS
    a, b = load_file(str(whole)), load_file(str(cut))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert losses(cut) == losses(whole)  # every step's loss, the redone step 3 once
    assert not any(torch.equal(a[k], v) for k, v in loaders.new_branch(tiny.base, 0).state_dict().items()
                   if "projection" in k and k in a)  # it did train


def test_folder_batches_state_restores_the_order(captioned, caplog):
    items = scan_folder(captioned)
    first = folder_batches(items, 64, 2, seed=5)
    for _ in range(7):  # past an epoch boundary (5 good items, 1 bad)
        next(first)
    assert "broken.png" in caplog.text
    state = first.state_dict()
    assert state["bad"] == [str(captioned / "broken.png")]
    again = folder_batches(items, 64, 2, seed=5)
    again.load_state_dict(json.loads(json.dumps(state)))  # plain data: survives any serialisation
    for _ in range(5):
        (x, cx), (y, cy) = next(first), next(again)
        assert torch.equal(x, y) and cx == cy


def test_train_command_writes_weights_and_loss_log(tiny, tmp_path):
    data = captioned_folder(tmp_path / "data", good=2)
    out = tmp_path / "run" / "branch.safetensors"
    proc = cli("train", "--base", tiny.sd_dir, "--vgg", tiny.vgg_path, "--data", data, "--out", out,
               "--steps", "2", "--batch-size", "2", "--style-image-size", "32", "--checkpoint-every", "1", check=False)
    assert proc.returncode == 0, proc.stderr
    # 3 items, 2 of them images: 2 steps of 2 read past every item, so the broken one is met and skipped
    assert "training on 3 captioned images" in proc.stdout and f"wrote {out}" in proc.stdout
    assert "broken.png" in proc.stderr and "skipped" in proc.stderr  # the bad item, by name
    assert "Traceback" not in proc.stderr
    branch = loaders.load_branch(tiny.base, out)  # loadable as the branch export takes it
    assert branch.num_residuals == tiny.zero_branch.num_residuals
    assert [s for s, _ in losses(out)] == [1, 2]
    assert len([line for line in proc.stderr.splitlines() if "broken.png" in line]) == 1
    assert all(np.isfinite(loss) for _, loss in losses(out))


runner = CliRunner()


@pytest.mark.parametrize("change, match", [
    ({"--steps": "0"}, r"--steps must be >= 1"),
    ({"--device": "gpu"}, r"unknown --device 'gpu'"),
    ({"--out": "branch.pt"}, r"must end in \.safetensors"),
    ({"--data": "no-such-folder"}, r"training data folder no-such-folder does not exist"),
    ({"--mixed-precision": "fp16"}, r"--mixed-precision needs --device cuda"),
    ({"--caption-dropout": "1"}, r"--caption-dropout must be in \[0, 1\)"),
])
def test_train_bad_input_is_one_line(tiny, captioned, tmp_path, monkeypatch, change, match):
    monkeypatch.chdir(tmp_path)
    args = {"--base": str(tiny.sd_dir), "--vgg": str(tiny.vgg_path), "--data": str(captioned),
            "--out": "branch.safetensors", **change}
    result = runner.invoke(app, ["train", *(a for kv in args.items() for a in kv)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    detail = f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.exit_code == 2, detail
    assert len(lines) == 1 and lines[0].startswith("error: "), detail
    assert re.search(match, lines[0]), detail
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cuda_device_without_cuda_is_one_line(tiny, captioned, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = runner.invoke(app, ["train", "--base", str(tiny.sd_dir), "--vgg", str(tiny.vgg_path), "--data",
                                 str(captioned), "--out", str(tmp_path / "b.safetensors"), "--device", "cuda"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "no CUDA device" in result.stderr, \
        result.output



def _demo_stages(work: Path, cfg, interrupt_at: tuple[str, int] | None = None):
    """The demo's vgg, vae, decoder, base and base+style stages; ``interrupt_at`` (stage, step) raises there, as a kill would."""
    from stylegen_trt.demo import train as demo_train

    real_log = demo_train._log_progress

    def log_or_die(stage, step, total, loss, start, resumed_at=0):
        if interrupt_at == (stage, step):
            raise KeyboardInterrupt
        real_log(stage, step, total, loss, start, resumed_at)

    demo_train._log_progress = log_or_die
    try:
        demo_train.train_style_vgg(work, cfg)
        vae = demo_train.train_vae(work, cfg)
        demo_train.finetune_vae_decoder(work, cfg, vae)
        demo_train.train_base(work, cfg, vae)
        demo_train.train_base_with_style(work, cfg)
    finally:
        demo_train._log_progress = real_log


@pytest.mark.parametrize("stage, hold, source, shape_weight", [
    ("vgg", 0.0, "image", 1.0), ("vae decoder", 0.0, "image", 1.0), ("base", 0.0, "image", 1.0),
    ("base+style", 0.0, "image", 1.0), ("base+style", 0.5, "texture", 4.0)])
def test_demo_stage_cut_off_resumes_exactly(tmp_path, stage, hold, source, shape_weight):
    """Each demo stage, killed mid-way and re-run, ends as one never stopped (weights and losses); with the
    content hold, the resumed stage holds the base to the stage's starting base, not to the one it resumes."""
    from stylegen_trt.demo.train import DemoConfig

    torch.set_num_threads(1)
    cfg = DemoConfig(vgg_steps=4, vgg_batch=4, vae_steps=2, vae_batch=4, vae_decoder_steps=4, base_steps=4, base_batch=4,
                     base_style_steps=4, checkpoint_every=2, base_style_content_hold=hold,
                     base_style_source=source, base_style_shape_weight=shape_weight,
                     base_style_lr_decay_steps=3 if hold else 0)  # the decay's rates from the step, not the run
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _demo_stages(whole, cfg)
    with pytest.raises(KeyboardInterrupt):
        _demo_stages(cut, cfg, interrupt_at=(stage, 3))
    assert (cut / {"vgg": "vgg.ckpt", "vae decoder": "vae-decoder.ckpt", "base": "base.ckpt",
                  "base+style": "base-style.ckpt"}[stage]).is_file()
    _demo_stages(cut, cfg)
    for part in ("vae", "unet", "text_encoder"):
        a, b = (load_file(str(next((root / "sd" / part).glob("*.safetensors")))) for root in (whole, cut))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    a, b = (load_file(str(root / "branch-init.safetensors")) for root in (whole, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "branch-init"
    a, b = (torch.load(root / "vgg19.pth") for root in (whole, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "vgg19.pth"
    for log_name in ("vgg.loss.json", "vae-decoder.loss.json", "base.loss.json", "base-style.loss.json"):
        assert json.loads((whole / log_name).read_text()) == json.loads((cut / log_name).read_text())
    assert not list(cut.glob("*.ckpt"))  # finished stages leave no checkpoint behind
    assert not (cut / "base-style.teacher").exists()


def test_demo_content_hold_targets_the_starting_base(tmp_path):
    """Held wholly, the co-training target is the starting base's own prediction with the residuals off: the
    first step's loss is 0 (the data's v gives a loss well above it), and the teacher copy is gone after."""
    from stylegen_trt.demo import train as demo_train
    from stylegen_trt.models import loaders

    torch.set_num_threads(1)
    first_losses = {}
    for hold in (0.0, 1.0):
        work = tmp_path / str(hold)
        work.mkdir()
        cfg = demo_train.DemoConfig(vae_steps=2, vae_batch=4, vae_decoder_steps=0, base_steps=2, base_batch=4,
                                    base_style_steps=2, base_style_content_hold=hold)
        loaders.make_tiny_vgg(work / "vgg19.pth", 0)
        demo_train.train_base(work, cfg, demo_train.train_vae(work, cfg))
        demo_train.train_base_with_style(work, cfg)
        first_losses[hold] = json.loads((work / "base-style.loss.json").read_text())[0]
        assert not (work / "base-style.teacher").exists()
    assert first_losses[1.0] < 1e-10 < 1e-2 < first_losses[0.0]


def test_demo_shape_weights_cover_the_shape_and_its_outline():
    """The weight map is ``weight`` where data.render draws the shape or its outline (at latent resolution),
    1 elsewhere; the weighted loss is the plain v-MSE when the weights are even, and counts the shape more."""
    from stylegen_trt.demo import data
    from stylegen_trt.demo.train import _shape_weights, _weighted_mse

    contents = [data.Content(0, 0, 0), data.Content(1, 2, 1)]  # small circle left, large square right
    assert _shape_weights(contents, 16, 1.0) is None
    weights = _shape_weights(contents, 16, 5.0)
    assert weights.shape == (2, 1, 16, 16) and set(weights.unique().tolist()) == {1.0, 5.0}
    footprint = weights[:, 0] == 5.0
    for mask, content in zip(footprint, contents):
        shape = torch.from_numpy(data.shape_mask(content, 16)) > 0
        assert mask[shape].all()  # the shape itself, and a ring round it
        assert mask.sum() > shape.sum()
    assert footprint[0, :, :8].sum() == footprint[0].sum() and footprint[1, :, 8:].sum() == footprint[1].sum()
    wider = _shape_weights(contents, 16, 5.0, margin=2.0)[:, 0] == 5.0
    assert wider[footprint].all() and wider.sum() > footprint.sum()

    per_shape = _shape_weights(data.all_contents(), 16, 5.0, weighting="shape")[:, 0] - 1.0
    per_pixel = _shape_weights(data.all_contents(), 16, 5.0)[:, 0] - 1.0
    totals = per_shape.sum(dim=(1, 2))
    assert torch.allclose(totals, totals[0].expand_as(totals))  # a small cross carries as much as a large square
    assert torch.isclose(totals.mean(), per_pixel.sum(dim=(1, 2)).mean())  # as much in all as "pixel"
    assert torch.equal(per_shape > 0, per_pixel > 0)  # on the same pixels
    small, large = per_shape[0].max(), per_shape[1].max()  # small and large circle on the left
    assert small > 4.0 > large

    prediction, target = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.zeros(2, 4, 16, 16)
    assert torch.allclose(_weighted_mse(prediction, target, torch.full((2, 1, 16, 16), 3.0)),
                          torch.nn.functional.mse_loss(prediction, target))
    off_shape = prediction * (~footprint)[:, None]  # wrong only outside the shapes
    on_shape = prediction * footprint[:, None]
    assert _weighted_mse(on_shape, target, weights) > on_shape.square().mean()
    assert _weighted_mse(off_shape, target, weights) < off_shape.square().mean()


def test_demo_batches_are_indexed_by_step():
    from stylegen_trt.demo.train import batches

    stream = batches(5, 3, name_texture=0.5)
    first = [next(stream) for _ in range(4)]
    resumed = batches(5, 3, start=2, name_texture=0.5)
    for (a_img, a_cap), (b_img, b_cap) in zip(first[2:], [next(resumed) for _ in range(2)]):
        assert torch.equal(a_img, b_img) and a_cap == b_cap
    captions = [c for _, caps in (next(batches(9, 64, name_texture=0.5)),) for c in caps]
    named = [c for c in captions if " with " in c]
    assert 16 < len(named) < 48  # about half name the texture family
    assert all(c.split(" with ")[1] in ("stripes", "dots", "grid", "hatching", "waves", "rings", "grain") for c in named)
    assert not any(" with " in c for _, caps in (next(batches(9, 64)),) for c in caps)  # the branch's never do


@pytest.mark.parametrize("levels", [(1, 2), (0, 1, 2)])
def test_demo_base_has_attention_at_the_configured_levels(levels):
    """The up path mirrors the down path: level 0 (16x16 latent px) is the first down and the last up block."""
    from stylegen_trt.demo.train import DemoConfig, new_base_unet

    unet = new_base_unet(DemoConfig(base_attention_levels=levels))
    down = [getattr(b, "has_cross_attention", False) for b in unet.down_blocks]
    up = [getattr(b, "has_cross_attention", False) for b in unet.up_blocks]
    assert down == [level in levels for level in range(4)]
    assert up == down[::-1]
    sample = torch.zeros(1, 4, 16, 16)
    assert unet(sample, 10, torch.zeros(1, 3, 64)).sample.shape == sample.shape


def test_demo_base_channels_are_configurable():
    from stylegen_trt.demo.train import DemoConfig, new_base_unet

    unet = new_base_unet(DemoConfig(base_channels=(64, 64, 64, 64)))
    assert tuple(unet.config.block_out_channels) == (64, 64, 64, 64)
    assert new_base_unet(DemoConfig()).config.block_out_channels == DemoConfig().base_channels == (32, 64, 64, 64)
    sample = torch.zeros(1, 4, 16, 16)
    assert unet(sample, 10, torch.zeros(1, 3, 64)).sample.shape == sample.shape


@pytest.mark.parametrize("value", ["64,64,64", "64,64,64,40", "a,b,c,d", "0,64,64,64"])
def test_demo_train_rejects_bad_base_channels_before_writing(tmp_path, capsys, value):
    from stylegen_trt.demo.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--work", str(tmp_path / "work"), "--base-channels", value])
    assert exit_info.value.code == 2
    assert "--base-channels" in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("args, option", [(["--content-hold", "1.5"], "--content-hold"),
                                          (["--style-source", "swatch"], "--style-source"),
                                          (["--shape-weight", "0.5"], "--shape-weight"),
                                          (["--shape-weight", "nan"], "--shape-weight"),
                                          (["--shape-margin", "-1"], "--shape-margin"),
                                          (["--shape-weighting", "area"], "--shape-weighting"),
                                          (["--texture-caption-rate", "1.5"], "--texture-caption-rate"),
                                          (["--hatching-periods", "100:6.5"], "--hatching-periods"),
                                          (["--hatching-periods", "0:7.5,0:6.5"], "--hatching-periods"),
                                          (["--hatching-periods", "0:1"], "--hatching-periods"),
                                          (["--hatching-periods", "0-7.5"], "--hatching-periods"),
                                          (["--lr-decay-steps", "-1"], "--lr-decay-steps"),
                                          (["--outline-widths", "0:9"], "--outline-widths"),
                                          (["--outline-widths", "0:1.5,0:2.5"], "--outline-widths")])
def test_demo_train_rejects_bad_co_training_options_before_writing(tmp_path, capsys, args, option):
    from stylegen_trt.demo.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--work", str(tmp_path / "work"), *args])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "work").exists()


def test_demo_train_passes_the_co_training_schedule_and_weighting_to_its_stages(tmp_path, monkeypatch):
    from stylegen_trt.demo import train as demo_train

    class Captured(Exception):
        pass

    def capture(work, cfg):
        raise Captured(cfg)

    monkeypatch.setattr(demo_train.loaders, "make_tiny_vgg", lambda path, seed: None)
    monkeypatch.setattr(demo_train, "train_vae", capture)
    configs = []
    for args in ([], ["--hatching-periods", "0:7.5,10500:6.5", "--shape-weighting", "shape", "--lr-decay-steps", "2000",
                  "--outline-widths", "0:1.5,10500:2.5"]):
        with pytest.raises(Captured) as caught:
            demo_train.main(["--work", str(tmp_path / "work"), *args])
        configs.append(caught.value.args[0])
    assert configs[0].anchored_hatching_periods == ((0, 7.5),) and configs[0].base_style_shape_weighting == "pixel"
    assert configs[1].anchored_hatching_periods == ((0, 7.5), (10500, 6.5))
    assert configs[1].base_style_shape_weighting == "shape"
    assert (configs[0].base_style_lr_decay_steps, configs[1].base_style_lr_decay_steps) == (0, 2000)
    assert configs[0].outline_widths == ((0, 1.5),) and configs[1].outline_widths == ((0, 1.5), (10500, 2.5))


def test_demo_lr_decay_falls_linearly_over_the_last_steps():
    from stylegen_trt.demo.train import lr_decay_factor

    assert [lr_decay_factor(step, 10, 0) for step in (1, 10)] == [1.0, 1.0]
    assert [lr_decay_factor(step, 10, 4) for step in range(1, 11)] == [1.0] * 7 + [0.75, 0.5, 0.25]
    assert lr_decay_factor(1, 3, 5) == 0.6  # a decay longer than the stage starts part-way down


def test_demo_co_training_sets_the_decayed_rates(tmp_path, monkeypatch):
    """The optimiser steps with both groups' rates times the decay factor of that step."""
    from stylegen_trt.demo import train as demo_train
    from stylegen_trt.demo.train import DemoConfig

    torch.set_num_threads(1)
    cfg = DemoConfig(vgg_steps=0, vae_steps=2, vae_batch=4, vae_decoder_steps=0, base_steps=2, base_batch=4,
                     base_style_steps=4, base_style_lr_decay_steps=2)
    work = tmp_path / "work"
    work.mkdir()
    demo_train.loaders.make_tiny_vgg(work / "vgg19.pth", cfg.seed)
    demo_train.train_base(work, cfg, demo_train.train_vae(work, cfg))
    seen, real_step = [], torch.optim.AdamW.step

    def record_step(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record_step)
    demo_train.train_base_with_style(work, cfg)
    rates = (cfg.base_style_learning_rate, cfg.base_style_branch_learning_rate)
    assert seen == [[r * f for r in rates] for f in (1.0, 1.0, 1.0, 0.5)]


def test_demo_train_refuses_another_width_over_a_trained_base(tmp_path, capsys):
    from stylegen_trt.demo.train import DemoConfig, main, new_base_unet

    work = tmp_path / "work"
    new_base_unet(DemoConfig()).save_pretrained(work / "sd" / "unet")
    before = sorted(p.name for p in work.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--work", str(work), "--base-channels", "64,64,64,64"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "channels 32,64,64,64, not 64,64,64,64" in err and "new --work" in err
    assert sorted(p.name for p in work.rglob("*")) == before


@pytest.mark.parametrize("args", [[], ["--work", "w", "--bogus"], ["--work", "w", "--content-hold", "abc"]])
def test_demo_train_bad_arguments_are_one_line_without_usage(tmp_path, capsys, monkeypatch, args):
    from stylegen_trt.demo.train import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "usage" not in err and "error:" in err, err
    assert not (tmp_path / "w").exists()


def test_demo_train_rejects_negative_steps_before_writing(tmp_path, capsys):
    from stylegen_trt.demo.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--work", str(tmp_path / "work"), "--vgg-steps", "-1"])
    assert exit_info.value.code == 2
    assert "--vgg-steps must be >= 0" in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "work").exists()


def test_demo_texture_style_source_is_the_image_without_its_shape():
    """base_style_source "texture": S's input is the training image's own texture, the shape left out."""
    from stylegen_trt.demo import data
    from stylegen_trt.demo import train as demo_train

    stream = demo_train.batches(4, 6, texture_phase="anchored")
    images, _ = next(stream)
    assert demo_train._style_images(images, stream.last_styles, "image") is images
    textures = demo_train._style_images(images, stream.last_styles, "texture")
    assert textures.shape == images.shape
    for image, texture, style, index in zip(images, textures, stream.last_styles, range(6)):
        content = data.sample_batch(np.random.default_rng([4, 0]), 6, texture_phase="anchored")[2][index]
        shape = torch.from_numpy(data.shape_mask(content, data.IMAGE_SIZE, grow=1.5) > 0)
        assert torch.equal(image[:, ~shape], texture[:, ~shape])  # the same texture, pixel for pixel
        assert torch.equal(texture, torch.from_numpy(data.render(None, style)).permute(2, 0, 1).float() / 255.0)


# --- on a CUDA device (skipped where torch sees none; run on a GPU box: README "What was verified where") -------

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")


def cuda_trainer(tiny, config: TrainConfig) -> BranchTrainer:
    """The trainer as the `train` command builds it on ``config.device``: fresh copies of the tiny models moved there."""
    base = copy.deepcopy(tiny.base)
    encoder, branch = copy.deepcopy(tiny.encoder), loaders.new_branch(tiny.base, 0)
    for module in (base.unet, base.vae, base.text_encoder, encoder, branch):
        module.to(config.device)
    return BranchTrainer(base, encoder, branch, config)


@CUDA
@pytest.mark.parametrize("precision", ["no", "fp16"])
def test_cuda_training_draws_as_the_cpu_and_resumes_on_either_device(tiny, tmp_path, precision):
    """The same seed draws the same data, noise and t on CUDA as on the CPU (first losses agree to TF32/fp16
    rounding); a CUDA run cut off after its checkpoint resumes on CUDA (and in fp32 on the CPU) to the
    uninterrupted end, within rounding (CUDA kernels are not bit-reproducible, so no bit-for-bit claim here)."""
    config = replace(CONFIG, device="cuda", mixed_precision=precision)
    cpu = train_branch(trainer_for(tiny), procedural_stream(CONFIG.seed), tmp_path / "cpu" / "branch.safetensors")
    whole = train_branch(cuda_trainer(tiny, config), procedural_stream(CONFIG.seed), tmp_path / "whole" / "b.safetensors")
    tolerance = 2e-2 if precision == "no" else 5e-2
    assert losses(whole)[0][1] == pytest.approx(losses(cpu)[0][1], rel=tolerance)
    assert all(np.isfinite(loss) for _, loss in losses(whole))

    for resume_on in ("cuda", "cpu") if precision == "no" else ("cuda",):  # fp16 autocast is CUDA's
        cut = tmp_path / f"cut-{resume_on}" / "b.safetensors"
        with pytest.raises(Stop):
            train_branch(cuda_trainer(tiny, config), procedural_stream(CONFIG.seed), cut, on_step=stop_at(3))
        resumed = (cuda_trainer(tiny, config) if resume_on == "cuda"
                   else cuda_trainer(tiny, replace(config, device="cpu", mixed_precision="no")))
        train_branch(resumed, procedural_stream(CONFIG.seed), cut)
        assert resumed.step_count == STEPS
        a, b = load_file(str(whole)), load_file(str(cut))
        assert a.keys() == b.keys()
        # Adam's first steps are ~lr * sign(grad), so a near-zero gradient that CUDA rounds the other way moves a
        # weight by ~2 lr (seen on an H200 in a 4-step bias): compare the whole branch, not single tensors
        difference = torch.cat([(b[k] - a[k]).flatten() for k in a]).norm()
        assert difference <= tolerance * torch.cat([a[k].flatten() for k in a]).norm(), resume_on
        assert [s for s, _ in losses(cut)] == [1, 2, 3, 4]
        assert [v for _, v in losses(cut)] == pytest.approx([v for _, v in losses(whole)], rel=tolerance)


@CUDA
def test_train_command_on_cuda_with_mixed_precision(tiny, tmp_path):
    data = captioned_folder(tmp_path / "data", good=2)
    out = tmp_path / "run" / "branch.safetensors"
    proc = cli("train", "--base", tiny.sd_dir, "--vgg", tiny.vgg_path, "--data", data, "--out", out, "--device", "cuda",
               "--mixed-precision", "fp16", "--steps", "2", "--batch-size", "2", "--style-image-size", "32",
               "--checkpoint-every", "1", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert loaders.load_branch(tiny.base, out).num_residuals == tiny.zero_branch.num_residuals
    assert [s for s, _ in losses(out)] == [1, 2] and all(np.isfinite(loss) for _, loss in losses(out))


@CUDA
def test_demo_co_training_on_cuda_follows_the_cpu(tmp_path):
    """The demo's base+style stage on CUDA draws as on the CPU: per-step losses agree to TF32 rounding."""
    from stylegen_trt.demo import train as demo_train

    torch.set_num_threads(1)
    cfg = demo_train.DemoConfig(vae_steps=2, vae_batch=4, vae_decoder_steps=0, base_steps=2, base_batch=4,
                                base_style_steps=3, base_style_source="texture", branch_layout="anchored")
    first = tmp_path / "cpu"
    first.mkdir()
    loaders.make_tiny_vgg(first / "vgg19.pth", 0)
    demo_train.train_base(first, cfg, demo_train.train_vae(first, cfg))
    second = tmp_path / "cuda"
    shutil.copytree(first, second)
    demo_train.train_base_with_style(first, cfg)
    demo_train.train_base_with_style(second, cfg, device="cuda")
    on_cpu, on_cuda = (json.loads((w / "base-style.loss.json").read_text()) for w in (first, second))
    assert on_cuda == pytest.approx(on_cpu, rel=2e-2)
    assert loaders.load_branch(loaders.load_base(second / "sd"), second / "branch-init.safetensors") is not None
