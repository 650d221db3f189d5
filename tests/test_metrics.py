"""`stylegen-trt eval`: StySim with and without the branch, and FID / KID / CLIPSIM from local weights."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import cli
from stylegen_trt.errors import UserError
from stylegen_trt.metrics import fidelity
from stylegen_trt.models import loaders


class TinyInception(nn.Module):
    """Same calling convention as NVIDIA's TorchScript inception-2015-12-05.pt."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, stride=2)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = F.interpolate(img / 255.0, size=(32, 32), mode="bilinear", align_corners=False)
        return self.conv(x).relu().mean((2, 3))


@pytest.fixture(scope="module")
def inception(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "inception.pt"
    torch.jit.script(TinyInception()).save(str(path))
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    root = tmp_path_factory.mktemp("clip")
    loaders.write_clip_tokenizer(root / "tok", loaders.TINY_WORDS)
    tokenizer = CLIPTokenizer.from_pretrained(root / "tok")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).save_pretrained(root / "clip")
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(root / "clip")
    return root / "clip"


def test_fid_kid_are_zero_for_the_same_set_and_grow_with_difference(inception):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 24, 24, 3), dtype=np.uint8)
    same = fidelity.fid_kid(a, a, inception)
    assert same["fid"] == pytest.approx(0.0, abs=1e-3) and abs(same["kid_mean"]) < 1e-3
    darker = (a // 3).astype(np.uint8)
    other = fidelity.fid_kid(darker, a, inception)
    assert other["fid"] > 1e-3 and other["kid_mean"] > same["kid_mean"]
    with pytest.raises(UserError, match="at least 2"):
        fidelity.fid_kid(a[:1], a, inception)


def test_clip_similarity_is_a_cosine_score(clip_dir):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    score = fidelity.clip_similarity(images, ["a red cat", "a blue dog", "a circle"], clip_dir)
    assert 0.0 <= score <= 100.0
    with pytest.raises(UserError, match="not a CLIP model directory"):
        fidelity.clip_similarity(images, ["a"] * 3, clip_dir.parent)


def test_eval_reports_stysim_fid_kid_and_clipsim(styled_bundle, style_images, tiny, inception, clip_dir, tmp_path):
    out = tmp_path / "eval.json"
    result = cli("eval", "--bundle", str(styled_bundle), "--vgg", str(tiny.vgg_path),
                 "--style", str(style_images[0]), "--style", str(style_images[1]),
                 "--prompt", "a red cat", "--prompt", "a blue dog", "--steps", "2",
                 "--inception", str(inception), "--clip", str(clip_dir), "--json", str(out))
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert summary["pairs"] == 4 and len(report["rows"]) == 4
    for key in ("stysim_guided", "stysim_off", "fid_guided", "fid_off", "kid_mean_guided", "clipsim_guided",
                "clipsim_off"):
        assert np.isfinite(summary[key]), key
    assert summary["stysim_guided"] != summary["stysim_off"]  # the branch changed the images
    for label in ("StySim to style image", "FID to style images", "KID to style images", "CLIPSIM to prompt"):
        assert label in result.stdout


def test_eval_without_weights_says_what_is_skipped(styled_bundle, style_images, tiny):
    result = cli("eval", "--bundle", str(styled_bundle), "--vgg", str(tiny.vgg_path), "--style", str(style_images[0]),
                 "--prompt", "a red cat", "--steps", "1")
    assert "FID/KID: skipped (needs local weights: pass --inception PATH" in result.stderr
    assert "CLIPSIM: skipped" in result.stderr and "StySim" in result.stdout


@pytest.mark.parametrize("option", ["--inception", "--clip"])
def test_eval_with_missing_weights_fails_in_one_line(styled_bundle, style_images, tiny, tmp_path, option):
    result = cli("eval", "--bundle", str(styled_bundle), "--vgg", str(tiny.vgg_path), "--style", str(style_images[0]),
                 "--prompt", "a red cat", "--steps", "1", option, str(tmp_path / "absent"), "--json",
                 str(tmp_path / "r.json"), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and option in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_eval_with_a_file_that_is_not_torchscript_fails_in_one_line(styled_bundle, style_images, tiny, tmp_path):
    bogus = tmp_path / "inception.pt"
    bogus.write_bytes(b"not a model")
    result = cli("eval", "--bundle", str(styled_bundle), "--vgg", str(tiny.vgg_path), "--style", str(style_images[0]),
                 "--style", str(style_images[1]), "--prompt", "a red cat", "--prompt", "a dog", "--steps", "1",
                 "--inception", str(bogus), check=False)
    assert result.returncode == 2 and result.stderr.startswith("error: --inception") and "Traceback" not in result.stderr


def test_eval_style_window_is_the_one_generate_uses(styled_bundle, style_images, tiny, tmp_path):
    """eval --style-window runs the branch on the same steps as generate's: guided images change, the off ones
    do not, the report names the window, and a bad window is one line with nothing written."""
    reports = {}
    for name, window in (("whole", ()), ("late", ("--style-window", "0.5", "1.0"))):
        out = tmp_path / f"{name}.json"
        result = cli("eval", "--bundle", str(styled_bundle), "--vgg", str(tiny.vgg_path), "--style", str(style_images[0]),
                     "--prompt", "a red cat", "--steps", "4", "--json", str(out), *window)
        reports[name] = json.loads(out.read_text())
    assert "style window 0.5-1" in result.stdout
    assert reports["late"]["settings"]["style_window"] == [0.5, 1.0]
    whole, late = reports["whole"]["summary"], reports["late"]["summary"]
    assert whole["stysim_off"] == late["stysim_off"] and whole["stysim_guided"] != late["stysim_guided"]
    bad = cli("eval", "--bundle", str(styled_bundle), "--vgg", str(tiny.vgg_path), "--style", str(style_images[0]),
              "--prompt", "a red cat", "--steps", "4", "--style-window", "0.8", "0.2", "--json",
              str(tmp_path / "bad.json"), check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--style-window" in bad.stderr
    assert not (tmp_path / "bad.json").exists()
