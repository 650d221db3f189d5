"""Palette-blind texture measures: does an image carry the style image's texture, not just its colours?

- ``spectrum_similarity``: cosine similarity of the two images' luminance power spectra (Hann window,
  DC removed). 1 = same orientation and period; phase, position and palette do not count.
- ``dominant_colours`` / ``colour_distance``: the two colours that cover most of an image (2-means in
  RGB) and how far an image's pair lies from the style's (mean RGB distance, best pairing).

NumPy only, any image size (both images are brought to ``size`` px by area averaging first, so a
128-px swatch and a 32-px generation compare at one scale).
"""

from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def luminance(image: np.ndarray, size: int = 32) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size) float32 luminance in [0, 1], area-averaged (H, W multiples of size)."""
    y = image.astype(np.float32) @ LUMA / 255.0
    h, w = y.shape
    if h != size or w != size:
        if h % size or w % size:
            from PIL import Image

            return np.asarray(Image.fromarray(y).resize((size, size), Image.BOX), np.float32)
        y = y.reshape(size, h // size, size, w // size).mean(axis=(1, 3))
    return y


def power_spectrum(image: np.ndarray, size: int = 32) -> np.ndarray:
    y = luminance(image, size)
    window = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
    y = (y - y.mean()) * window
    power = np.abs(np.fft.fft2(y)) ** 2
    power[0, 0] = 0.0  # DC
    return power


def spectrum_similarity(image: np.ndarray, reference: np.ndarray, size: int = 32) -> float:
    a, b = power_spectrum(image, size).ravel(), power_spectrum(reference, size).ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 else 0.0


def dominant_colours(image: np.ndarray, iterations: int = 12) -> np.ndarray:
    """(2, 3) float: the centres of a 2-means clustering of the pixels, started at the darkest and
    the brightest pixel (deterministic)."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    y = pixels @ LUMA
    centres = np.stack([pixels[y.argmin()], pixels[y.argmax()]])
    for _ in range(iterations):
        nearest = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack([pixels[nearest == k].mean(0) if np.any(nearest == k) else centres[k] for k in range(2)])
    return centres


def colour_distance(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean RGB distance between the two dominant colours of each image, in the better pairing."""
    a, b = dominant_colours(image), dominant_colours(reference)
    straight = np.linalg.norm(a - b, axis=1).mean()
    crossed = np.linalg.norm(a - b[::-1], axis=1).mean()
    return float(min(straight, crossed))


def style_measures(family_of=None, family_names: tuple[str, ...] = ()):
    """``measure(images, reference) -> {name: per-image values}``: spectrum similarity and colour distance
    to the style image, and - given ``family_of(images) -> family indices`` (a palette-blind judge) -
    whether each image's texture family is the style image's. With ``family_names`` the function also has
    ``family_name(reference)``, the judge's reading of the style image, so reports can break results down."""

    def measure(images: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
        out = {"spectrum": np.array([spectrum_similarity(i, reference) for i in images]),
               "colour_distance": np.array([colour_distance(i, reference) for i in images])}
        if family_of is not None:
            out["texture_match"] = (np.asarray(family_of(images)) == family_of(reference[None])[0]).astype(np.float64)
        return out

    if family_of is not None and family_names:
        measure.family_name = lambda reference: family_names[int(family_of(reference[None])[0])]
    return measure
