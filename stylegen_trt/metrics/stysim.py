"""StySim, the patent's style-similarity metric (embodiment 2). Lower is more similar.

Both images go through VGG19's first four blocks (pool1..pool4 outputs); each block's
Gram matrix G[i, j] = sum_k F[i, k] F[j, k] / (H W); per block, the squared error
summed over the Gram entries and divided by their number (C x C); summed over blocks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stylegen_trt.models.style_encoder import VGGBlocks, gram, load_vgg_state


class StySim:
    def __init__(self, vgg_state: dict[str, torch.Tensor], image_size: int):
        self.vgg = VGGBlocks(num_blocks=4)
        load_vgg_state(self.vgg, vgg_state)
        self.vgg.eval().requires_grad_(False)
        self.image_size = image_size

    @torch.no_grad()
    def grams(self, images: np.ndarray) -> list[torch.Tensor]:
        """(N, H, W, 3) uint8 -> four (N, C, C) Gram matrices at ``image_size``."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False).clamp(0, 1)
        return [gram(f) for f in self.vgg(x)]

    def __call__(self, images: np.ndarray, references: np.ndarray) -> np.ndarray:
        """StySim of each image to its reference, (N,) float."""
        pairs = zip(self.grams(images), self.grams(references))
        per_block = [((a - b) ** 2).sum(dim=(1, 2)) / a.shape[1] ** 2 for a, b in pairs]
        return torch.stack(per_block).sum(0).numpy()
