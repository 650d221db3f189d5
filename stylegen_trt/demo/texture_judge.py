"""A palette-blind judge of the demo's texture families, and style swatches drawn by its own code.

The judge sees only normalised luminance (mean 0, std 1 per image), so colour cannot tell it
anything: it answers "which of the seven families is this texture?" from structure alone. It is
trained on textures drawn here - not by ``demo.data`` - in random palettes (any colours, either
polarity) with random period, angle and phase, half of them under a demo shape, blurred and noised
as a decoder's output is, on seeds the model's data never uses. ``swatch`` draws the same families
for evaluation, so the style images the model is judged on are renderings it never saw.

    python -m stylegen_trt.demo.texture_judge   # trains, reports, writes demo/texture_judge.safetensors
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stylegen_trt.demo import data
from stylegen_trt.metrics.texture import luminance

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).parent / "texture_judge.safetensors"
FAMILIES = data.TEXTURES
SEED_SPACE = 424242  # every draw here comes from default_rng([SEED_SPACE, ...]): never the model's seeds


@dataclass(frozen=True)
class Texture:
    family: str
    period: float   # px, in 32-px units
    angle: float    # radians
    phase: float    # radians
    centre: tuple[float, float] = (16.0, 16.0)  # rings only


def random_texture(rng: np.random.Generator, family: str | None = None,
                   periods: tuple[float, float] = data.PERIOD_RANGE) -> Texture:
    family = family or FAMILIES[int(rng.integers(len(FAMILIES)))]
    turn = rng.uniform(0, 2 * np.pi)
    return Texture(family, float(rng.uniform(*periods)), float(rng.uniform(0, np.pi)), float(rng.uniform(0, 2 * np.pi)),
                   (16.0 + 10.0 * np.cos(turn), 16.0 + 10.0 * np.sin(turn)))


def coverage(texture: Texture, size: int = 32) -> np.ndarray:
    """(size, size) bool: where the pattern colour lies. Written from the families' descriptions
    (band widths as fractions of the period), not from ``demo.data.pattern``."""
    step = 32.0 / size
    ys, xs = np.meshgrid((np.arange(size) + 0.5) * step, (np.arange(size) + 0.5) * step, indexing="ij")
    c, s = np.cos(texture.angle), np.sin(texture.angle)
    along, across = xs * c + ys * s, ys * c - xs * s
    k = 2 * np.pi / texture.period

    def band(coordinate: np.ndarray, width: float, shift: float = 0.0) -> np.ndarray:
        # a band of `width` (fraction of the period) every period: cos of the distance to the band's middle
        return np.cos(k * coordinate + shift - np.pi * width) > np.cos(np.pi * width)

    family = texture.family
    if family == "stripes":
        return band(along, 0.35, texture.phase)
    if family == "dots":  # radius 0.3 periods on a square lattice
        du = np.angle(np.exp(1j * (k * along + texture.phase))) / k
        dv = np.angle(np.exp(1j * k * across)) / k
        return du ** 2 + dv ** 2 < (0.3 * texture.period) ** 2
    if family == "grid":
        return band(along, 0.22) | band(across, 0.22)
    if family == "hatching":  # two families of thin diagonal lines, at +-45 degrees whatever the angle
        return band(xs + ys, 0.3, texture.phase) | band(xs - ys, 0.3)
    if family == "waves":
        return band(along + 1.8 * np.sin(k / 2.5 * across + texture.phase), 0.35)
    if family == "rings":
        return band(np.hypot(xs - texture.centre[0], ys - texture.centre[1]), 0.35)
    if family == "grain":  # a quarter of the 3-px cells lit, at random
        cells = int(np.ceil(32 / data.GRAIN_CELL))
        lit = np.random.default_rng([SEED_SPACE, int(texture.phase * 1e6)]).random((cells, cells)) < 0.25
        return lit[(ys // data.GRAIN_CELL).astype(int), (xs // data.GRAIN_CELL).astype(int)]
    raise ValueError(f"unknown texture family {family!r}")


def swatch(texture: Texture, fg, bg, size: int = 128) -> np.ndarray:
    """(size, size, 3) uint8 style image: the texture in colours fg on bg."""
    mask = coverage(texture, size)[..., None]
    return np.where(mask, np.array(fg, np.uint8), np.array(bg, np.uint8)).astype(np.uint8)


def random_colour_pair(rng: np.random.Generator, min_contrast: float = 80.0):
    while True:
        fg, bg = rng.integers(0, 256, (2, 3))
        if np.linalg.norm(fg - bg) >= min_contrast:
            return tuple(int(v) for v in fg), tuple(int(v) for v in bg)


def training_image(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(32, 32) float luminance of a random texture (half the time under a demo shape), degraded as a
    decoder's output is; and its family index."""
    texture = random_texture(rng, periods=(data.PERIOD_RANGE[0] - 1.0, data.PERIOD_RANGE[1] + 1.0))
    fg, bg = random_colour_pair(rng)
    image = swatch(texture, fg, bg, size=32).astype(np.float32)
    if rng.random() < 0.6:
        content = data.random_content(rng)
        inside = data.shape_mask(content, 32)[..., None]
        outline = np.clip(data.shape_mask(content, 32, grow=1.5)[..., None] - inside, 0, 1)
        image = image * (1 - outline) + np.array(bg, np.float32) * outline
        image = image * (1 - inside) + np.array(fg, np.float32) * inside
    y = luminance(image.clip(0, 255).astype(np.uint8))
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.2:
        y = _blur(y, sigma)
    y = y + rng.normal(0, rng.uniform(0, 0.04), y.shape).astype(np.float32)
    return y, FAMILIES.index(texture.family)


def _blur(y: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(np.ceil(2 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(y, radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, taps, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, taps, mode="valid"), 0, rows).astype(np.float32)


def normalise(y: np.ndarray) -> np.ndarray:
    """(N, 32, 32) luminance -> mean 0, std 1 per image: nothing of the palette is left."""
    y = y - y.mean(axis=(1, 2), keepdims=True)
    return y / np.maximum(y.std(axis=(1, 2), keepdims=True), 1e-3)


class TextureJudge(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * 96, len(FAMILIES))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = self.features(y)
        return self.head(torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1))


def train(steps: int = 2500, batch: int = 64, seed: int = 0) -> TextureJudge:
    torch.manual_seed(seed)
    model = TextureJudge()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for step in range(1, steps + 1):
        rng = np.random.default_rng([SEED_SPACE, seed, step])
        drawn = [training_image(rng) for _ in range(batch)]
        y = torch.from_numpy(normalise(np.stack([d[0] for d in drawn])))[:, None]
        labels = torch.tensor([d[1] for d in drawn])
        loss = F.cross_entropy(model(y), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0:
            log.info("texture judge step %d loss %.4f", step, loss.item())
    return model.eval()


def load(path: Path = WEIGHTS) -> TextureJudge:
    from safetensors.torch import load_file

    model = TextureJudge()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def classify(model: TextureJudge, images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N,) family indices."""
    y = normalise(np.stack([luminance(i) for i in images]))
    return model(torch.from_numpy(y)[:, None]).argmax(1).numpy()


def eval_swatches(per_family: int = 1, seed: int = 1, size: int = 128) -> list[tuple[str, np.ndarray]]:
    """Style images for evaluation: every family in each held-out palette (colours never drawn in
    training), random period/angle/phase, drawn by this module's code."""
    rng = np.random.default_rng([SEED_SPACE, 99, seed])
    out = []
    for index, (fg, bg) in enumerate(data.HELDOUT_PALETTES):
        for family in FAMILIES:
            for k in range(per_family):
                out.append((f"{family}-heldout{index}-{k}", swatch(random_texture(rng, family), fg, bg, size)))
    return out


def main() -> None:
    from safetensors.torch import save_file

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    model = train()
    rng = np.random.default_rng([SEED_SPACE, 7])
    held = [training_image(rng) for _ in range(700)]
    y = torch.from_numpy(normalise(np.stack([h[0] for h in held])))[:, None]
    accuracy = float((model(y).argmax(1).numpy() == np.array([h[1] for h in held])).mean())
    # the model's own training renders (demo.data, its palettes): the judge must read them too
    images, _, _, styles = data.sample_batch(np.random.default_rng(2024), 700)
    demo_accuracy = float(np.mean(classify(model, images) == np.array([s.texture for s in styles])))
    log.info("texture judge accuracy: own renders %.3f, demo.data renders %.3f", accuracy, demo_accuracy)
    save_file(model.state_dict(), str(WEIGHTS))


if __name__ == "__main__":
    main()
