"""Image input and output: style images in (checked), PNGs out (atomically)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stylegen_trt.errors import UserError
from stylegen_trt.files import atomic_write_bytes

MAX_PIXELS = 8192 * 8192  # a larger style image is far more likely a decompression bomb than a swatch


def _to_rgb01(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) float32 in [0, 1]; transparency composited over white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        gray = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or gray.max(initial=0) > 255 else 255.0
        gray = np.clip(gray / peak, 0, 1).astype(np.float32)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        gray = np.asarray(img, dtype=np.float32)
        gray = np.clip(gray / 255.0 if gray.max(initial=0) > 1 else gray, 0, 1)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_image_file(path: str | Path) -> tuple[np.ndarray, bytes]:
    """Read and check an image file: (H, W, 3) float32 in [0, 1] and the file's bytes."""
    data = read_style_file(path)
    return decode_image(data, f"style image {path}"), data


def read_style_file(path: str | Path) -> bytes:
    """A style image file's bytes (not decoded), or a UserError saying why it cannot be had."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"style image {path} not found: check the path given to --style")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"style image {path} cannot be read ({exc.strerror or exc}): check its permissions") from exc


def decode_image(data: bytes, label: str = "style image") -> np.ndarray:
    """Check and decode an encoded image (PNG, JPEG, WebP, ...): (H, W, 3) float32 in [0, 1].

    ``label`` names the image in errors: a file path for the CLI, an index for a server request.
    """
    if not data:
        raise UserError(f"{label} is empty (0 bytes): give a PNG or JPEG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise UserError(f"{label} is {width}x{height}: over {MAX_PIXELS // 10**6} MP is refused "
                                "as a possible decompression bomb; downscale it first")
            img.load()
            return _to_rgb01(img)
    except UserError:
        raise
    except UnidentifiedImageError as exc:
        raise UserError(f"{label} is not an image this tool can read: give a PNG, JPEG or WebP file") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"{label} is too large to be plausible (decompression bomb?): downscale it first") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{label} is truncated or corrupt ({exc}): re-save or replace it") from exc


def resize_rgb01(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) -> (3, size, size) float32, bicubic per channel in float (no 8-bit rounding)."""
    channels = [
        np.asarray(Image.fromarray(image[..., c], mode="F").resize((size, size), Image.BICUBIC))
        for c in range(3)
    ]
    return np.clip(np.stack(channels), 0.0, 1.0).astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """VAE output (N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, rounded as diffusers does."""
    images = np.clip(images / 2 + 0.5, 0.0, 1.0)
    return (images.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: np.ndarray, path: str | Path) -> None:
    atomic_write_bytes(path, png_bytes(image))


def procedural_swatch(size: int = 512) -> np.ndarray:
    """(size, size, 3) uint8 stripes over dots: a style image for runs that are given none."""
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin(xx / 5.0 + yy / 11.0) > 0
    dots = (xx % 24 - 12) ** 2 + (yy % 24 - 12) ** 2 < 40
    rgb = np.stack([np.where(stripes, 220, 40), np.where(dots, 250, 60), np.where(stripes, 30, 190)], -1)
    return rgb.astype(np.uint8)
