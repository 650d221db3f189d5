"""Style branch (patent S3) and the UNet that takes its residuals.

The branch is ControlNet's wiring without the latent: a copy of the UNet's time
embedding, down blocks and mid block, fed by a stem over the style map S instead of
``conv_in(x_t)``, with zero-initialised 1x1 projections producing diffusers'
``down_block_additional_residuals`` / ``mid_block_additional_residual``. It sees
S and t only; its cross-attention attends to a fixed empty-prompt context stored
with it. So its residuals depend on (style, t) alone and the runtime computes them
once per step at batch 1.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def resize_style_map(style_map: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """S (B, 1, 64, 64) -> (B, 1, h, w) at the latent size, by adaptive average pooling.

    The runtime does the same in NumPy (``runtime.style.resize_style_map``) before
    calling the branch graph, so the graph's input is already latent-sized.
    """
    return F.adaptive_avg_pool2d(style_map, (height, width))


def zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class StyleStem(nn.Module):
    """S at latent size (B, 1, h, w) -> the first down block's channels, same resolution."""

    def __init__(self, out_channels: int, hidden: int = 32):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        )

    def forward(self, style_map: torch.Tensor) -> torch.Tensor:
        return self.layers(style_map)


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
    """(S at latent size, t, style_scale) -> 12 down residuals + 1 mid residual (for SD 1.x)."""

    def __init__(self, unet, empty_context: torch.Tensor, stem_hidden: int = 32):
        super().__init__()
        check_sd1_unet(unet)
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.stem = StyleStem(unet.config.block_out_channels[0], stem_hidden)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)
        self.down_projections = nn.ModuleList(zero_conv(c) for c in residual_channels(unet))
        self.mid_projection = zero_conv(unet.config.block_out_channels[-1])
        # (1, seq, dim): the text encoder's encoding of "" - fixed, saved with the branch.
        self.register_buffer("empty_context", empty_context.detach().clone().float())

    @property
    def num_residuals(self) -> int:
        return len(self.down_projections) + 1

    def forward(self, style_map: torch.Tensor, timestep: torch.Tensor, style_scale: torch.Tensor):
        batch = style_map.shape[0]
        t_emb = self.time_proj(timestep.reshape(-1).expand(batch)).to(style_map.dtype)
        emb = self.time_embedding(t_emb)
        context = self.empty_context.to(style_map.dtype).expand(batch, -1, -1)

        sample = self.stem(style_map)
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

    Residuals of batch 1 broadcast over the UNet's batch (CFG halves x images).
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
