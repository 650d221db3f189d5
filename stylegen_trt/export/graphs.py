"""The five graphs of a bundle: each one's contract (GraphSpec), module and sample inputs, in one object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from stylegen_trt.models.loaders import BaseModel
from stylegen_trt.models.style_branch import (
    ResidualUNet, StyleBranch, TextEncoder, VaeDecoder, residual_channels,
)
from stylegen_trt.models.style_encoder import STYLE_MAP_SIZE, StyleEncoder
from stylegen_trt.spec import AxisRange, GraphSpec, TensorSpec

GRAPH_NAMES = ("text_encoder", "style_encoder", "style_branch", "unet", "vae_decoder")


@dataclass(frozen=True)
class ExportLimits:
    """What the exported graphs accept; recorded in the manifest as axis ranges."""

    min_size: int
    max_size: int
    native_size: int
    max_images: int = 4
    style_image_size: int = 512
    max_styles: int = 4
    max_branch_steps: int = 50  # timesteps one style-branch call can take (the runtime batches them)

    def __post_init__(self):
        if self.min_size % 8 or self.max_size % 8 or not self.min_size <= self.native_size <= self.max_size:
            raise ValueError(f"size range must be multiples of 8 around the native size, got {self}")

    @classmethod
    def for_base(cls, base: BaseModel, style_image_size: int = 512) -> "ExportLimits":
        native = base.native_size
        return cls(min_size=native // 2, max_size=native * 2, native_size=native,
                   style_image_size=style_image_size)


@dataclass(frozen=True)
class GraphExport:
    spec: GraphSpec
    module: nn.Module
    sample_inputs: Callable[[], tuple[torch.Tensor, ...]]


def residual_levels(unet) -> list[int]:
    """How many times each down residual has been downsampled (0 = latent resolution)."""
    levels = [0]
    for i, block in enumerate(unet.down_blocks):
        levels += [i] * len(block.resnets)
        if block.downsamplers is not None:
            levels.append(i + 1)
    return levels


def residual_specs(unet, batch: str) -> tuple[TensorSpec, ...]:
    """The 12 down + 1 mid residuals: ``residual_batch`` rows into the UNet (1, broadcast over its
    batch, or one row per UNet batch item: per-image styles), ``branch_steps`` out of the branch."""
    def dims(channels, level):
        if level == 0:
            return (batch, channels, "latent_h", "latent_w")
        return (batch, channels, f"latent_h/{2 ** level}", f"latent_w/{2 ** level}")

    down = [TensorSpec(f"down_res_{i}", "float32", dims(c, lvl))
            for i, (c, lvl) in enumerate(zip(residual_channels(unet), residual_levels(unet)))]
    mid_level = len(unet.down_blocks) - 1
    mid = TensorSpec("mid_res", "float32", dims(unet.config.block_out_channels[-1], mid_level))
    return (*down, mid)


def _latent_axes(base: BaseModel, limits: ExportLimits) -> dict[str, AxisRange]:
    f = base.vae_scale_factor
    r = AxisRange(limits.min_size // f, limits.native_size // f, limits.max_size // f)
    return {"latent_h": r, "latent_w": r}


def _trace_latent(base: BaseModel, limits: ExportLimits) -> int:
    # A latent size that is not a multiple of the UNet's total downsampling makes diffusers
    # trace its explicit-upsample-size path, so the graph serves every size in the range.
    native = limits.native_size // base.vae_scale_factor
    return native + 1 if native + 1 <= limits.max_size // base.vae_scale_factor else native - 1


def build_graphs(base: BaseModel, style_encoder: StyleEncoder, branch: StyleBranch,
                 limits: ExportLimits) -> dict[str, GraphExport]:
    unet_cfg = base.unet.config
    seq = base.tokenizer.model_max_length
    dim = base.text_encoder.config.hidden_size
    latent_ch = unet_cfg.in_channels
    residuals = residual_specs(base.unet, "residual_batch")
    latent_axes = _latent_axes(base, limits)
    h = _trace_latent(base, limits)
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def residual_samples(batch_h):
        axes = {"latent_h": batch_h, "latent_w": batch_h, "residual_batch": 1}
        from stylegen_trt.spec import resolve_shape
        return tuple(randn(*resolve_shape(r.dims, axes)) * 0.1 for r in residuals)

    text_batch = AxisRange(1, 2, 2 * limits.max_images)
    text = GraphSpec(
        "text_encoder",
        (TensorSpec("input_ids", "int64", ("text_batch", seq)),),
        (TensorSpec("context", "float32", ("text_batch", seq, dim)),),
        {"text_batch": text_batch},
    )
    size = limits.style_image_size
    style = GraphSpec(
        "style_encoder",
        (TensorSpec("style_image", "float32", ("style_batch", 3, size, size)),),
        (TensorSpec("style_map", "float32", ("style_batch", 1, STYLE_MAP_SIZE, STYLE_MAP_SIZE)),),
        {"style_batch": AxisRange(1, 1, limits.max_styles)},
    )
    # S and t only (no latent), so the runtime can run the branch for many timesteps in one call; one S
    # per call, so the stem and the global code (S alone) run once, not once per timestep. S comes at the
    # size the branch's stem takes (a multiple of the latent when the stem strides)
    stride = branch.stem.stride
    map_dims = ("latent_h", "latent_w") if stride == 1 else (f"latent_h*{stride}", f"latent_w*{stride}")
    branch_spec = GraphSpec(
        "style_branch",
        (TensorSpec("style_map", "float32", (1, 1, *map_dims)),
         TensorSpec("timestep", "float32", ("branch_steps",)),
         TensorSpec("style_scale", "float32", (1,))),
        residual_specs(base.unet, "branch_steps"),
        {"branch_steps": AxisRange(1, min(10, limits.max_branch_steps), limits.max_branch_steps), **latent_axes},
    )
    unet = GraphSpec(
        "unet",
        (TensorSpec("sample", "float32", ("unet_batch", latent_ch, "latent_h", "latent_w")),
         TensorSpec("timestep", "float32", (1,)),
         TensorSpec("encoder_hidden_states", "float32", ("unet_batch", seq, dim)),
         *residuals),
        (TensorSpec("eps", "float32", ("unet_batch", latent_ch, "latent_h", "latent_w")),),
        {"unet_batch": text_batch, "residual_batch": AxisRange(1, 1, text_batch.max), **latent_axes},
    )
    image_axis = AxisRange(limits.min_size, limits.native_size, limits.max_size)
    vae = GraphSpec(
        "vae_decoder",
        (TensorSpec("latent", "float32", ("image_batch", latent_ch, "latent_h", "latent_w")),),
        (TensorSpec("image", "float32", ("image_batch", 3, "image_h", "image_w")),),
        {"image_batch": AxisRange(1, 1, limits.max_images), **latent_axes,
         "image_h": image_axis, "image_w": image_axis},
    )
    vocab = base.text_encoder.config.vocab_size
    return {
        "text_encoder": GraphExport(text, TextEncoder(base.text_encoder),
                                    lambda: (torch.randint(0, vocab, (2, seq), generator=gen),)),
        "style_encoder": GraphExport(style, style_encoder, lambda: (torch.rand(1, 3, size, size, generator=gen),)),
        "style_branch": GraphExport(branch_spec, branch, lambda: (
            torch.rand(1, 1, *branch.style_map_size(h, h), generator=gen) * 3,
            torch.tensor([500.0, 250.0]),
            torch.tensor([1.0]))),
        "unet": GraphExport(unet, ResidualUNet(base.unet), lambda: (
            randn(2, latent_ch, h, h), torch.tensor([500.0]), randn(2, seq, dim), *residual_samples(h))),
        "vae_decoder": GraphExport(vae, VaeDecoder(base.vae), lambda: (randn(1, latent_ch, h, h) * 5,)),
    }
