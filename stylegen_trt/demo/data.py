"""Procedural data for the demo model: content from the prompt, style from the image.

An image is a texture (the style: a pattern family with random period/angle/phase,
drawn in a two-colour palette) covering the whole frame, with a shape (the content:
kind, position, size) filled with the pattern colour and outlined in the ground
colour - so the shape is plainly visible and the image uses only the style's colours. Content and style are drawn independently; some palettes are held out of
training entirely, so style swatches that were never seen exist for evaluation.

NumPy only; every sample is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32
SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS = ("left", "center", "right")
SIZES = ("small", "large")
TEXTURES = ("stripes", "dots", "grid", "hatching", "waves", "rings", "grain")
# (pattern colour, ground colour), RGB 0..255. The last three are never used in training.
PALETTES = (
    ((230, 57, 70), (241, 250, 238)),     # red on cream
    ((29, 53, 87), (168, 218, 220)),      # navy on pale blue
    ((38, 70, 83), (233, 196, 106)),      # slate on mustard
    ((106, 76, 147), (255, 202, 58)),     # purple on yellow
    ((0, 0, 0), (255, 255, 255)),         # black on white
    ((255, 89, 94), (25, 25, 60)),        # coral on night
    ((46, 196, 182), (1, 22, 39)),        # teal on ink
    ((255, 159, 28), (46, 64, 40)),       # orange on forest
    ((120, 0, 0), (253, 240, 213)),       # maroon on paper
    ((80, 200, 60), (60, 20, 80)),        # held out: green on plum
    ((240, 240, 80), (20, 90, 160)),      # held out: lemon on cobalt
    ((200, 120, 200), (30, 30, 30)),      # held out: orchid on charcoal
)
TRAIN_PALETTES = tuple(range(9))
HELDOUT_PALETTES = (9, 10, 11)
WORDS = ("a", "small", "large", "on", "the", "in", "left", "center", "right", *SHAPES)


@dataclass(frozen=True)
class Content:
    shape: int
    position: int
    size: int

    @property
    def prompt(self) -> str:
        where = "in the center" if POSITIONS[self.position] == "center" else f"on the {POSITIONS[self.position]}"
        return f"a {SIZES[self.size]} {SHAPES[self.shape]} {where}"


@dataclass(frozen=True)
class Style:
    texture: int
    palette: int
    period: float
    angle: float
    phase: float


def random_content(rng: np.random.Generator) -> Content:
    return Content(int(rng.integers(len(SHAPES))), int(rng.integers(len(POSITIONS))), int(rng.integers(len(SIZES))))


def random_style(rng: np.random.Generator, palettes: tuple[int, ...] = TRAIN_PALETTES) -> Style:
    return Style(int(rng.integers(len(TEXTURES))), int(rng.choice(palettes)), float(rng.uniform(4.0, 7.0)),
                 float(rng.uniform(0, np.pi)), float(rng.uniform(0, 2 * np.pi)))


def pattern(style: Style, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) in [0, 1]: where the pattern colour shows. Coordinates in 32-px units, so a
    larger ``size`` renders the same texture at a higher resolution."""
    scale = IMAGE_SIZE / size
    y, x = (np.mgrid[0:size, 0:size] + 0.5) * scale
    p, a, ph = style.period, style.angle, style.phase
    u = x * np.cos(a) + y * np.sin(a)
    v = -x * np.sin(a) + y * np.cos(a)
    name = TEXTURES[style.texture]
    if name == "stripes":
        out = ((u / p + ph / (2 * np.pi)) % 1.0) < 0.35
    elif name == "dots":
        du, dv = (u / p + ph) % 1.0 - 0.5, (v / p) % 1.0 - 0.5
        out = du * du + dv * dv < 0.09
    elif name == "grid":
        out = (((u / p) % 1.0) < 0.22) | (((v / p) % 1.0) < 0.22)
    elif name == "hatching":
        out = (((x + y) / p + ph) % 1.0 < 0.2) | (((x - y) / p) % 1.0 < 0.2)
    elif name == "waves":
        out = ((u + 1.8 * np.sin(v * 2 * np.pi / (2.5 * p) + ph)) / p % 1.0) < 0.35
    elif name == "rings":
        cx, cy = 16 + 10 * np.cos(ph), 16 + 10 * np.sin(ph)
        out = (np.hypot(x - cx, y - cy) / p % 1.0) < 0.35
    else:  # grain: sparse speckles on a field that varies slowly
        cells = np.floor(x / 2.0) * 7919 + np.floor(y / 2.0) * 104729 + int(ph * 1000)
        out = (np.sin(cells) * 43758.5453 % 1.0) < 0.25
    return out.astype(np.float32)


def shape_mask(content: Content, size: int, grow: float = 0.0) -> np.ndarray:
    scale = IMAGE_SIZE / size
    y, x = (np.mgrid[0:size, 0:size] + 0.5) * scale
    cx = (8.0, 16.0, 24.0)[content.position]
    cy = 16.0
    r = (5.0, 7.5)[content.size] + grow
    dx, dy = x - cx, y - cy
    kind = SHAPES[content.shape]
    if kind == "circle":
        m = dx * dx + dy * dy < r * r
    elif kind == "square":
        m = (np.abs(dx) < r * 0.85) & (np.abs(dy) < r * 0.85)
    elif kind == "triangle":
        m = (dy < r * 0.8) & (dy > -r) & (np.abs(dx) < (dy + r) * 0.6)
    else:
        m = ((np.abs(dx) < r * 0.35) & (np.abs(dy) < r)) | ((np.abs(dy) < r * 0.35) & (np.abs(dx) < r))
    return m.astype(np.float32)


def render(content: Content | None, style: Style, size: int = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8. ``content=None`` renders a style swatch (texture only)."""
    rng = np.random.default_rng(seed)
    p = pattern(style, size, rng)
    if content is not None:
        inside = shape_mask(content, size)
        outline = np.clip(shape_mask(content, size, grow=1.5) - inside, 0, 1)
        p = np.maximum(p * (1 - outline), inside)
    fg, bg = (np.array(c, np.float32) for c in PALETTES[style.palette])
    image = p[..., None] * fg + (1 - p[..., None]) * bg
    return np.clip(image, 0, 255).round().astype(np.uint8)


def sample_batch(rng: np.random.Generator, batch: int, palettes: tuple[int, ...] = TRAIN_PALETTES):
    """(images (B, 32, 32, 3) uint8, prompts, contents, styles) drawn independently."""
    contents = [random_content(rng) for _ in range(batch)]
    styles = [random_style(rng, palettes) for _ in range(batch)]
    images = np.stack([render(c, s) for c, s in zip(contents, styles)])
    return images, [c.prompt for c in contents], contents, styles


def parse_prompt(prompt: str) -> Content | None:
    """The Content a demo prompt asks for, or None if it does not name a shape and a position."""
    words = prompt.lower().replace(",", " ").split()
    shape = next((SHAPES.index(w) for w in words if w in SHAPES), None)
    position = next((POSITIONS.index(w) for w in words if w in POSITIONS), None)
    size = next((SIZES.index(w) for w in words if w in SIZES), 0)
    if shape is None or position is None:
        return None
    return Content(shape, position, size)


def all_contents() -> list[Content]:
    return [Content(s, p, z) for s in range(len(SHAPES)) for p in range(len(POSITIONS)) for z in range(len(SIZES))]


def heldout_swatches(count_per_palette: int = 2, seed: int = 7, size: int = 128) -> list[tuple[str, np.ndarray]]:
    """Style swatches in palettes never used in training, rendered at ``size`` px (same texture scale)."""
    rng = np.random.default_rng(seed)
    swatches = []
    for palette in HELDOUT_PALETTES:
        for k in range(count_per_palette):
            style = random_style(rng, (palette,))
            name = f"{TEXTURES[style.texture]}-p{palette}-{k}"
            swatches.append((name, render(None, style, size=size)))
    return swatches
