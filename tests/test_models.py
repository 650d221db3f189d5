"""The torch modules: VGG19_f3 layout, Gram maths, S, the branch's zero start, residual wiring."""

import numpy as np
import pytest
import torch

from stylegen_trt.errors import UserError
from stylegen_trt.models import loaders
from stylegen_trt.models.style_branch import (
    ResidualUNet, StyleStem, default_stem_stride, residual_channels, resize_style_map,
)
from stylegen_trt.models.style_encoder import StyleEncoder, VGGBlocks, gram, load_vgg_state, random_vgg19_state
from stylegen_trt.runtime.style import resize_style_map as resize_style_map_np


def test_vgg19_f3_has_torchvision_layout():
    """Indices and shapes of torchvision's vgg19().features[:19] (conv1_1 .. pool3)."""
    encoder = StyleEncoder()
    keys = list(encoder.vgg.features.state_dict())
    convs = [0, 2, 5, 7, 10, 12, 14, 16]
    assert keys == [f"{i}.{p}" for i in convs for p in ("weight", "bias")]
    assert len(encoder.vgg.features) == 19 and isinstance(encoder.vgg.features[18], torch.nn.MaxPool2d)
    shapes = {i: tuple(encoder.vgg.features[i].weight.shape) for i in convs}
    assert shapes[0] == (64, 3, 3, 3) and shapes[5] == (128, 64, 3, 3) and shapes[16] == (256, 256, 3, 3)


def test_block_outputs_have_patent_channels():
    f1, f2, f3 = StyleEncoder().vgg(torch.rand(1, 3, 64, 64))
    assert (f1.shape[1:], f2.shape[1:], f3.shape[1:]) == ((64, 32, 32), (128, 16, 16), (256, 8, 8))


def test_load_vgg_state_rejects_incomplete_checkpoint(tmp_path):
    state = random_vgg19_state(0)
    del state["features.16.weight"]
    with pytest.raises(KeyError):
        load_vgg_state(VGGBlocks(3), state)
    torch.save(state, tmp_path / "vgg.pth")
    with pytest.raises(UserError, match="not torchvision's VGG19"):
        loaders.load_style_encoder(tmp_path / "vgg.pth")
    with pytest.raises(UserError, match="not found"):
        loaders.load_style_encoder(tmp_path / "absent.pth")


def test_gram_matches_patent_definition():
    f = torch.randn(2, 5, 3, 4)
    g = gram(f)
    flat = f.reshape(2, 5, 12)
    expected = torch.einsum("bik,bjk->bij", flat, flat) / 12
    torch.testing.assert_close(g, expected)
    assert torch.allclose(g, g.transpose(1, 2))


def test_style_map_terms_contribute_equally(tiny):
    """Raw Gram scales differ by orders of magnitude; after scaling each term has mean exactly 1."""
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    f1, f2, f3 = tiny.encoder.vgg(image)
    raw_means = [gram(f).mean().item() for f in (f1, f2, f3)]
    terms = tiny.encoder.terms(image)
    for term in terms:
        assert term.shape == (2, 64, 64)
        torch.testing.assert_close(term.mean(dim=(1, 2)), torch.ones(2))
    s = tiny.encoder(image)
    assert s.shape == (2, 1, 64, 64)
    torch.testing.assert_close(s.mean(dim=(1, 2, 3)), torch.full((2,), 3.0))
    assert max(raw_means) / min(raw_means) > 2  # the scaling is doing real work


def test_style_map_differs_between_textures(tiny):
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    stripes = ((torch.sin(xx / 2) > 0).float()).expand(3, 64, 64)[None]
    checks = (((xx // 8 + yy // 8) % 2).float()).expand(3, 64, 64)[None]
    s_stripes, s_checks = tiny.encoder(stripes), tiny.encoder(checks)
    s_stripes2 = tiny.encoder(torch.roll(stripes, 5, dims=3))  # Gram statistics ignore position
    assert (s_stripes - s_checks).abs().mean() > 2 * (s_stripes - s_stripes2).abs().mean()


def test_branch_starts_at_zero_and_has_sd_residual_layout(tiny):
    branch = tiny.zero_branch
    assert branch.num_residuals == 13  # 12 down + 1 mid, as SD 1.x
    assert residual_channels(tiny.base.unet) == [32, 32, 32, 32, 32, 32, 32, 64, 64, 64, 64, 64]
    assert branch.style_map_size(8, 8) == (64, 64)  # tiny's native latent is 8: its stem strides 8
    style = resize_style_map(tiny.encoder(torch.rand(1, 3, 64, 64)), *branch.style_map_size(8, 8))
    residuals = branch(style, torch.tensor([321.0]), torch.tensor([1.0]))
    assert len(residuals) == 13 and all(torch.count_nonzero(r) == 0 for r in residuals)
    assert [tuple(r.shape[-2:]) for r in residuals] == [(8, 8)] * 3 + [(4, 4)] * 3 + [(2, 2)] * 3 + [(1, 1)] * 4


def test_branch_weights_initialised_from_unet(tiny):
    unet_state = tiny.base.unet.down_blocks.state_dict()
    for key, value in tiny.zero_branch.down_blocks.state_dict().items():
        torch.testing.assert_close(value, unet_state[key], rtol=0, atol=0)


def test_style_scale_multiplies_residuals(tiny):
    style = torch.rand(1, 1, *tiny.styled_branch.style_map_size(8, 8)) * 3
    t = torch.tensor([500.0])
    one = tiny.styled_branch(style, t, torch.tensor([1.0]))
    half = tiny.styled_branch(style, t, torch.tensor([0.5]))
    assert all(torch.count_nonzero(r) > 0 for r in one)
    for a, b in zip(one, half):
        torch.testing.assert_close(b, a * 0.5)


def test_residual_unet_with_zero_residuals_is_plain_unet(tiny):
    unet = ResidualUNet(tiny.base.unet)
    x = torch.randn(2, 4, 8, 8)
    c = tiny.base.encode_prompts(["a red cat", ""])
    zeros = [torch.zeros_like(r) for r in tiny.zero_branch(torch.zeros(1, 1, 64, 64), torch.tensor([1.0]), torch.tensor([1.0]))]
    with torch.no_grad():
        ours = unet(x, torch.tensor([700.0]), c, *zeros)
        plain = tiny.base.unet(x, 700, c).sample
    torch.testing.assert_close(ours, plain, rtol=0, atol=0)


def test_batch1_residuals_broadcast_like_repeated(tiny):
    unet = ResidualUNet(tiny.base.unet)
    x = torch.randn(4, 4, 8, 8)
    c = tiny.base.encode_prompts(["a", "b", "c", "d"])
    with torch.no_grad():
        res = tiny.styled_branch(torch.rand(1, 1, 64, 64), torch.tensor([200.0]), torch.tensor([1.0]))
        broadcast = unet(x, torch.tensor([200.0]), c, *res)
        repeated = unet(x, torch.tensor([200.0]), c, *[r.repeat(4, 1, 1, 1) for r in res])
    torch.testing.assert_close(broadcast, repeated)


@pytest.mark.parametrize("size", [(8, 8), (4, 6), (13, 9), (64, 64), (96, 72)])
def test_numpy_style_resize_equals_torch_adaptive_pool(size):
    s = torch.rand(2, 1, 64, 64)
    expected = resize_style_map(s, *size).numpy()
    np.testing.assert_allclose(resize_style_map_np(s.numpy(), *size), expected, atol=1e-6)


def test_stem_stride_brings_s_to_the_latent_size():
    # SD 1.x at 512 px: S and the latent are both 64x64; the demo's 16x16 latent takes S at 4x
    assert [default_stem_stride(n) for n in (64, 96, 48, 32, 16, 8)] == [1, 1, 1, 2, 4, 8]
    stem = StyleStem(32, hidden=8, stride=4)
    for h, w in ((16, 16), (13, 9), (1, 3)):
        assert stem(torch.rand(2, 1, 4 * h, 4 * w)).shape == (2, 32, h, w)
    plain = StyleStem(32, hidden=8, stride=1)  # SD 1.x's layout, unchanged: three 3x3 convs, no stride
    assert [type(m).__name__ for m in plain.layers] == ["Conv2d", "SiLU", "Conv2d", "SiLU", "Conv2d"]
    assert plain(torch.rand(1, 1, 13, 9)).shape == (1, 32, 13, 9)
    with pytest.raises(ValueError, match="power of two"):
        StyleStem(32, stride=3)


def test_branch_files_without_stem_stride_load_with_stride_1(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    branch = loaders.new_branch(tiny.base, stem_stride=1)
    path = tmp_path / "old.safetensors"
    save_file(branch.state_dict(), str(path), metadata={"format": loaders.BRANCH_FORMAT, "stem_hidden": "32"})
    assert loaders.load_branch(tiny.base, path).stem.stride == 1
    save_file(load_file(str(path)), str(path), metadata={"format": loaders.BRANCH_FORMAT, "stem_stride": "3"})
    with pytest.raises(UserError, match="bad branch setting"):
        loaders.load_branch(tiny.base, path)


def test_branch_safetensors_roundtrip(tiny, tmp_path):
    path = tmp_path / "b.safetensors"
    loaders.save_branch(tiny.styled_branch, path)
    loaded = loaders.load_branch(tiny.base, path)
    assert loaded.stem.stride == tiny.styled_branch.stem.stride == 8
    for (k, a), b in zip(tiny.styled_branch.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(UserError, match="not a readable safetensors"):
        loaders.load_branch(tiny.base, tmp_path / "bad.safetensors")


def test_load_base_reports_missing_parts(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(UserError, match="missing text_encoder/, tokenizer/, vae/, scheduler/"):
        loaders.load_base(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        loaders.load_base(tmp_path / "nowhere")


def test_clip_tokenizer_reads_every_word_whole(tmp_path):
    """BPE encodes by merge rank across the word: merges written word by word let "right"'s r+i split
    "stripes", "grid" and "triangle" into pieces (and cut the texture word off at 16 tokens)."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    from stylegen_trt.demo import data
    from stylegen_trt.runtime.tokenizer import PromptTokenizer

    for words in (list(data.WORDS), loaders.TINY_WORDS):
        loaders.write_clip_tokenizer(tmp_path / "tok", words, max_length=16)
        reference = CLIPTokenizer.from_pretrained(tmp_path / "tok")
        assert {w: reference.tokenize(w) for w in words} == {w: [w + "</w>"] for w in words}
    CLIPTokenizerFast.from_pretrained(tmp_path / "tok").backend_tokenizer.save(str(tmp_path / "tokenizer.json"))  # as export does
    ours = PromptTokenizer(tmp_path / "tokenizer.json", 16, reference.bos_token_id, reference.eos_token_id,
                           reference.pad_token_id)
    prompt = "a large triangle on the right"
    assert ours([prompt])[0].tolist() == reference(prompt, padding="max_length", max_length=16).input_ids
    longest = "a large triangle on the right with stripes"
    loaders.write_clip_tokenizer(tmp_path / "demo", list(data.WORDS), max_length=16)
    assert len(CLIPTokenizer.from_pretrained(tmp_path / "demo")(longest).input_ids) == 10  # bos + 8 words + eos
