"""FID, KID and CLIPSIM through torchmetrics, from local weights only (nothing is downloaded).

- FID / KID: Inception-v3 pool features of the generated images against the style images.
  The weights are a TorchScript Inception such as ``inception-2015-12-05.pt`` (the TF-Inception
  port that StyleGAN2-ADA and clean-fid use; ``net(images, return_features=True)`` on 0..255
  images of any size -> (N, 2048)), given to torchmetrics as its feature extractor. This avoids
  torch-fidelity, whose import needs torchvision.
- CLIPSIM: CLIPScore as torchmetrics defines it (100 x cosine similarity of CLIP image and text
  embeddings) of each image with its prompt, from a local CLIP directory in transformers layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stylegen_trt.errors import UserError


class InceptionFeatures(nn.Module):
    """uint8 (N, 3, H, W) -> (N, D) features of a TorchScript Inception."""

    def __init__(self, path: Path):
        super().__init__()
        try:
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--inception {path} is not a TorchScript Inception ({reason}): "
                            "give e.g. inception-2015-12-05.pt") from None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float(), return_features=True)


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def fid_kid(generated: np.ndarray, references: np.ndarray, inception: Path) -> dict:
    """FID and KID (mean, std) of ``generated`` against ``references``, both (N, H, W, 3) uint8."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        raise UserError("FID/KID need torchmetrics: pip install 'stylegen-trt[eval]'") from None

    if len(generated) < 2 or len(references) < 2:
        raise UserError("FID/KID need at least 2 generated and 2 style images: add --style or --prompt")
    features = InceptionFeatures(inception)
    fid = FrechetInceptionDistance(feature=features)
    subset = min(len(generated), len(references), 50)
    kid = KernelInceptionDistance(feature=features, subset_size=subset, subsets=50)
    for metric in (fid, kid):
        metric.update(_nchw(references), real=True)
        metric.update(_nchw(generated), real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
            "kid_subset_size": subset}


@torch.no_grad()
def clip_similarity(images: np.ndarray, prompts: list[str], clip: Path) -> float:
    """Mean CLIPScore of each image with its prompt: 100 x max(cos(image embedding, text embedding), 0),
    as torchmetrics defines it (computed here from CLIPModel's projected embeddings, because
    torchmetrics 1.9's CLIPScore does not read transformers 5's outputs)."""
    from transformers import CLIPModel, CLIPProcessor

    if not (Path(clip) / "config.json").is_file():
        raise UserError(f"--clip {clip} is not a CLIP model directory (no config.json): "
                        "give a local openai/clip-vit-* directory saved with save_pretrained")
    model, processor = CLIPModel.from_pretrained(clip).eval(), CLIPProcessor.from_pretrained(clip)
    inputs = processor(text=list(prompts), images=list(images), return_tensors="pt", padding=True,
                       truncation=True, max_length=model.config.text_config.max_position_embeddings)
    out = model(**inputs)
    cos = F.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)
    return float((100 * cos.clamp(min=0)).mean())
