"""Style encoder: VGG19_f3 -> three Gram matrices -> one style map S (patent steps S1, S2).

Layer layout is torchvision's ``vgg19().features`` so its ImageNet checkpoint
(``features.<index>.weight``) loads unchanged. Only the modules up to ``pool3``
(index 18) belong to VGG19_f3; StySim (the patent's metric) uses up to ``pool4``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# torchvision's cfg "E" (VGG19); "M" is a 2x2 max-pool.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M")
# Indices in ``features`` of the pool that closes each block: pool1, pool2, pool3, pool4.
BLOCK_ENDS = (4, 9, 18, 27)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STYLE_MAP_SIZE = 64  # S is 64x64: G1 is 64x64 and G2, G3 are max-pooled down to it.


def vgg19_features(num_blocks: int) -> nn.Sequential:
    """The first ``num_blocks`` down-sampling blocks of torchvision's VGG19, same indices."""
    layers: list[nn.Module] = []
    in_ch = 3
    pools = 0
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            pools += 1
            if pools == num_blocks:
                break
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = v
    return nn.Sequential(*layers)


def gram(features: torch.Tensor) -> torch.Tensor:
    """Patent S2: G[i, j] = sum_k F[i, k] F[j, k] / (H * W), k over spatial positions."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def normalise_term(term: torch.Tensor) -> torch.Tensor:
    """Scale a (pooled) Gram term to a mean entry of exactly 1.

    Raw Gram scales differ by orders of magnitude between VGG blocks (and between
    checkpoints), so without this G3 would drown G1 in S. VGG features are post-ReLU,
    so Gram entries are >= 0 and the mean is a fair measure of a term's mass: after
    this, the three terms contribute equally to S whatever the weights or the image.
    """
    mean = term.mean(dim=(-2, -1), keepdim=True)
    return term / mean.clamp_min(1e-12)


class VGGBlocks(nn.Module):
    """VGG19 blocks 1..num_blocks on a [0, 1] RGB image, returning each block's pooled output."""

    def __init__(self, num_blocks: int):
        super().__init__()
        self.features = vgg19_features(num_blocks)
        self.block_ends = BLOCK_ENDS[:num_blocks]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = (image - self.mean) / self.std
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.block_ends:
                outputs.append(x)
        return outputs


class StyleEncoder(nn.Module):
    """[0, 1] RGB image (B, 3, H, W) -> style map S (B, 1, 64, 64).

    S = N(G1) + N(maxpool2(G2)) + N(maxpool4(G3)), G1..G3 the Gram matrices of VGG19's
    pool1, pool2 and pool3 outputs (64, 128, 256 channels), N the scaling to mean 1.
    """

    def __init__(self):
        super().__init__()
        self.vgg = VGGBlocks(num_blocks=3)

    def terms(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The three normalised, pooled Gram terms whose sum is S, each (B, 64, 64)."""
        f1, f2, f3 = self.vgg(image)
        pooled = (gram(f1), F.max_pool2d(gram(f2)[:, None], 2)[:, 0], F.max_pool2d(gram(f3)[:, None], 4)[:, 0])
        return [normalise_term(term) for term in pooled]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        g1, g2, g3 = self.terms(image)
        return (g1 + g2 + g3)[:, None]


def load_vgg_state(module: VGGBlocks, state_dict: dict[str, torch.Tensor]) -> None:
    """Load torchvision's VGG19 checkpoint (``features.N.*``, classifier ignored) into ``module``."""
    wanted = module.features.state_dict().keys()
    missing = [f"features.{k}" for k in wanted if f"features.{k}" not in state_dict]
    if missing:
        raise KeyError(f"VGG19 checkpoint lacks {len(missing)} tensors, e.g. {missing[0]}")
    module.features.load_state_dict({k: state_dict[f"features.{k}"] for k in wanted})


def random_vgg19_state(seed: int, num_blocks: int = 4) -> dict[str, torch.Tensor]:
    """A seeded random VGG19 ``features`` state dict, initialised as torchvision does.

    Random filters still give usable Gram texture statistics; used by the tiny
    test model (never presented as ImageNet weights).
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for index, layer in enumerate(vgg19_features(num_blocks)):
        if isinstance(layer, nn.Conv2d):
            fan_out = layer.out_channels * 9
            std = (2.0 / fan_out) ** 0.5  # kaiming_normal_(mode="fan_out", nonlinearity="relu")
            state[f"features.{index}.weight"] = torch.randn(layer.weight.shape, generator=gen) * std
            state[f"features.{index}.bias"] = torch.zeros(layer.out_channels)
    return state
