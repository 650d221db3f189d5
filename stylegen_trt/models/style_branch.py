"""Style branch (patent S3) and the UNet that takes its residuals.

The branch is ControlNet's wiring without the latent: a copy of the UNet's time
embedding, down blocks and mid block, fed by a stem over the style map S instead of
``conv_in(x_t)``, with zero-initialised 1x1 projections producing diffusers'
``down_block_additional_residuals`` / ``mid_block_additional_residual``. It sees
S and t only; its cross-attention attends to a fixed empty-prompt context stored
with it. So its residuals depend on (style, t) alone and the runtime computes them
once per step at batch 1.

Because the residuals cannot depend on x_t, what the branch adds is the same for every noise
draw: it can paint a texture only at a phase fixed to the image, never follow one the sampler
chose. ``BranchLayout`` "anchored" gives it what painting needs (README, "The demo model"):
image-space coordinates beside S at the stem (S, a Gram matrix, has no image layout) and a
global code of the whole S added to the time embedding (the stem sees only a patch of S, the
16x16 resnets far less). "patent" is the claim's wiring, nothing added.
"""

from __future__ import annotations

import copy
import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from stylegen_trt.models.style_encoder import STYLE_MAP_SIZE


def resize_style_map(style_map: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """S (B, 1, 64, 64) -> (B, 1, height, width), the branch's input size, by adaptive average pooling.

    The runtime does the same in NumPy (``runtime.style.resize_style_map``) before
    calling the branch graph, so the graph's input is already at the size its stem takes.
    """
    return F.adaptive_avg_pool2d(style_map, (height, width))


def zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


BranchLayout = Literal["patent", "anchored"]
BRANCH_LAYOUTS: tuple[str, ...] = get_args(BranchLayout)
COORDINATE_FREQUENCIES = (1, 2, 4, 8)  # cycles across the image, for the anchored stem
GLOBAL_CODE_SIZE = 32  # S is resized to this before the global code's MLP


def coordinate_features(batch: int, height: int, width: int, dtype: torch.dtype,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """(B, 2 + 4 * len(COORDINATE_FREQUENCIES), H, W): x, y in [-1, 1] and sin/cos of pi * f * x, y, made on
    ``device`` (S's, so the anchored stem trains on CUDA)."""
    ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width * 2 - 1
    yy, xx = ys[:, None].expand(height, width), xs[None, :].expand(height, width)
    feats = [xx, yy]
    for f in COORDINATE_FREQUENCIES:
        feats += [torch.sin(math.pi * f * xx), torch.cos(math.pi * f * xx),
                  torch.sin(math.pi * f * yy), torch.cos(math.pi * f * yy)]
    return torch.stack(feats)[None].expand(batch, -1, -1, -1)


class GlobalStyleCode(nn.Module):
    """S -> a vector added to the time embedding, so every resnet sees the whole S; zero at init."""

    def __init__(self, embedding_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(GLOBAL_CODE_SIZE * GLOBAL_CODE_SIZE, hidden), nn.SiLU(),
                                 nn.Linear(hidden, embedding_dim))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, style_map: torch.Tensor) -> torch.Tensor:
        # bilinear, not adaptive pooling: a fixed-size ONNX Resize at any input size (at 64x64 it is 2x2 averaging)
        small = F.interpolate(style_map, size=(GLOBAL_CODE_SIZE, GLOBAL_CODE_SIZE), mode="bilinear", align_corners=False)
        return self.net(small.flatten(1))


class StyleStem(nn.Module):
    """S (B, 1, stride*h, stride*w) -> the first down block's channels at the latent size (h, w).

    ``stride`` 1 (SD 1.x at 512 px: S and the latent are both 64x64) is three 3x3 convs. A latent
    smaller than S (the demo's 16x16) would lose most of S to pooling - a palette probe on the demo's
    data read colours back from S pooled to 16x16 with 2.5x the error of full-size S on held-out
    palettes - so there S comes in at ``stride`` times the latent size and stride-2 convs bring it
    down, as ControlNet's conditioning embedding brings its 512 px condition to the 64x64 latent.
    """

    def __init__(self, out_channels: int, hidden: int = 32, stride: int = 1, coordinates: bool = False):
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"stem stride must be a power of two, got {stride}")
        self.stride, self.coordinates = stride, coordinates
        downsamplings = stride.bit_length() - 1
        in_channels = 1 + (2 + 4 * len(COORDINATE_FREQUENCIES) if coordinates else 0)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.SiLU()]
        for _ in range(max(1, downsamplings)):
            layers += [nn.Conv2d(hidden, hidden, 3, stride=2 if downsamplings else 1, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(hidden, out_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, style_map: torch.Tensor) -> torch.Tensor:
        if self.coordinates:
            b, _, h, w = style_map.shape
            style_map = torch.cat([style_map, coordinate_features(b, h, w, style_map.dtype, style_map.device)], 1)
        return self.layers(style_map)


def default_stem_stride(native_latent: int) -> int:
    """The power of two that brings S (64x64) nearest the native latent size, at least 1."""
    ratio = max(1.0, STYLE_MAP_SIZE / native_latent)
    return 2 ** round(math.log2(ratio))


def residual_channels(unet) -> list[int]:
    """Channels of each of the UNet's down-path skip tensors, in diffusers' order."""
    cfg = unet.config
    channels = [cfg.block_out_channels[0]]  # conv_in output
    for i, block in enumerate(unet.down_blocks):
        channels += [cfg.block_out_channels[i]] * len(block.resnets)
        if block.downsamplers is not None:
            channels.append(cfg.block_out_channels[i])
    return channels


def check_sd1_unet(unet) -> None:
    cfg = unet.config
    unsupported = {
        "class_embed_type": cfg.class_embed_type,
        "addition_embed_type": cfg.addition_embed_type,
        "encoder_hid_dim_type": cfg.encoder_hid_dim_type,
    }
    bad = {k: v for k, v in unsupported.items() if v is not None}
    if bad:
        raise ValueError(f"not an SD 1.x UNet (has {bad}); only SD 1.x UNets are supported")


class StyleBranch(nn.Module):
    """(S at ``style_map_size`` of the latent, t, style_scale) -> 12 down residuals + 1 mid residual (SD 1.x)."""

    def __init__(self, unet, empty_context: torch.Tensor, stem_hidden: int = 32, stem_stride: int = 1,
                 layout: BranchLayout = "patent"):
        super().__init__()
        check_sd1_unet(unet)
        if layout not in BRANCH_LAYOUTS:
            raise ValueError(f"branch layout must be one of {', '.join(BRANCH_LAYOUTS)}, got {layout!r}")
        self.layout = layout
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.stem = StyleStem(unet.config.block_out_channels[0], stem_hidden, stem_stride, coordinates=layout == "anchored")
        if layout == "anchored":
            self.style_code = GlobalStyleCode(self.time_embedding.linear_2.out_features)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)
        self.down_projections = nn.ModuleList(zero_conv(c) for c in residual_channels(unet))
        self.mid_projection = zero_conv(unet.config.block_out_channels[-1])
        # (1, seq, dim): the text encoder's encoding of "" - fixed, saved with the branch.
        self.register_buffer("empty_context", empty_context.detach().clone().float())

    def style_map_size(self, latent_h: int, latent_w: int) -> tuple[int, int]:
        """The size S is resized to before it enters the branch, for a latent of (latent_h, latent_w)."""
        return latent_h * self.stem.stride, latent_w * self.stem.stride

    @property
    def num_residuals(self) -> int:
        return len(self.down_projections) + 1

    def forward(self, style_map: torch.Tensor, timestep: torch.Tensor, style_scale: torch.Tensor):
        """``style_map`` (1 or B, 1, H, W), ``timestep`` (1 or B,): rows broadcast against each other. The stem
        and the global code see S alone, so one S with many timesteps (the runtime's call) runs them once."""
        sample = self.stem(style_map)
        emb = self.time_embedding(self.time_proj(timestep.reshape(-1)).to(style_map.dtype))
        if self.layout == "anchored":
            emb = emb + self.style_code(style_map)
        emb = emb + sample.new_zeros(sample.shape[0], 1)  # (rows of S) against (rows of t): the larger of the two
        batch = emb.shape[0]
        sample = sample.expand(batch, -1, -1, -1)
        context = self.empty_context.to(style_map.dtype).expand(batch, -1, -1)
        skips = [sample]
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=context)
            else:
                sample, res = block(hidden_states=sample, temb=emb)
            skips += list(res)
        sample = self.mid_block(sample, emb, encoder_hidden_states=context)

        scale = style_scale.reshape(-1, 1, 1, 1).to(style_map.dtype)
        down = [proj(s) * scale for proj, s in zip(self.down_projections, skips)]
        return (*down, self.mid_projection(sample) * scale)


def randomise_projections(branch: StyleBranch, seed: int, std: float = 0.2) -> StyleBranch:
    """Random (seeded) output projections, so an untrained branch's residuals are non-zero.

    For tests and benchmarks: the zero projections of a fresh branch would make the style path add nothing.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in [*branch.down_projections, branch.mid_projection]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std / conv.weight.shape[1] ** 0.5)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.05)
    return branch


class ResidualUNet(nn.Module):
    """The frozen UNet with the branch's residuals added inside: (x_t, t, c, *residuals) -> eps.

    Residuals of batch 1 broadcast over the UNet's batch (CFG halves x images); residuals with
    one row per batch item give each image its own style. Expanded explicitly, so TensorRT sees a
    broadcast it can resolve at run time instead of an elementwise add of unequal dynamic dims.
    """

    def __init__(self, unet):
        super().__init__()
        check_sd1_unet(unet)
        self.unet = unet
        self.num_down = len(residual_channels(unet))

    def forward(self, sample, timestep, encoder_hidden_states, *residuals):
        if len(residuals) != self.num_down + 1:
            raise ValueError(f"expected {self.num_down + 1} residuals, got {len(residuals)}")
        timestep = timestep.reshape(-1).expand(sample.shape[0])
        residuals = [r.expand(sample.shape[0], -1, -1, -1) for r in residuals]
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states,
            down_block_additional_residuals=tuple(residuals[:-1]),
            mid_block_additional_residual=residuals[-1],
            return_dict=False,
        )[0]


class TextEncoder(nn.Module):
    """CLIP text model -> last hidden state, the context c the UNet attends to."""

    def __init__(self, text_model):
        super().__init__()
        self.text_model = text_model

    def forward(self, input_ids):
        return self.text_model(input_ids, return_dict=False)[0]


class VaeDecoder(nn.Module):
    """Unscaled latent (B, 4, h, w) -> image in [-1, 1] (B, 3, 8h, 8w); the runtime divides by latent_scale."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]
