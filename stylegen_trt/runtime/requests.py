"""Building a GenerationRequest from what a user gave: the one place where a bundle's defaults fill
what was left out. `generate`, `grid`, `eval` and the Triton model all build their requests here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from stylegen_trt.errors import UserError
from stylegen_trt.runtime.pipeline import GenerationRequest, StyleImage, StylePipeline, StyleRequest


def demo_bundle_path() -> Path:
    """The small demo bundle shipped inside the package: what runs when no --bundle is given."""
    return Path(__file__).resolve().parent.parent / "demo" / "bundle"


@dataclass(frozen=True)
class BundleDefaults:
    """What a bundle's model was made for (its manifest's ``defaults``): used where a request is silent."""

    scheduler: str
    steps: int
    guidance: float
    style_scale: float

    @classmethod
    def of(cls, manifest: dict) -> "BundleDefaults":
        d = manifest["defaults"]
        return cls(d["scheduler"], int(d["steps"]), float(d["guidance"]), float(d.get("style_scale", 1.0)))


def build_request(manifest: dict, prompt: str | tuple[str, ...], *, negative: str = "",
                  styles: Sequence[StyleImage] = (), style_weights: Sequence[float] | None = None,
                  style_scale: float | None = None, style_window: tuple[float, float] = (0.0, 1.0),
                  scheduler: str | None = None, steps: int | None = None, guidance: float | None = None,
                  seed: int | None = None, n: int = 1, height: int | None = None, width: int | None = None,
                  latents: np.ndarray | None = None) -> GenerationRequest:
    """A request with the bundle's defaults wherever an option is None (not checked: the pipeline does)."""
    d = BundleDefaults.of(manifest)
    style = StyleRequest(tuple(styles), tuple(style_weights) if style_weights else None,
                         d.style_scale if style_scale is None else style_scale, tuple(style_window))
    return GenerationRequest(
        prompt=prompt, negative=negative, style=style,
        scheduler=d.scheduler if scheduler is None else scheduler,
        steps=d.steps if steps is None else steps,
        guidance=d.guidance if guidance is None else guidance,
        seed=seed, n=n, height=height, width=width, latents=latents)


def load_latents(path: Path, manifest: dict) -> np.ndarray:
    """x_T from a .npy file (as diffusers' ``latents=``), or a UserError saying what is wrong with it."""
    f = manifest["latent"]["vae_scale_factor"]
    expected = f"(n, {manifest['latent']['channels']}, H/{f}, W/{f})"
    try:
        x_t = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"--latents {path} is not a readable .npy file ({exc})") from exc
    if not isinstance(x_t, np.ndarray):  # an .npz archive
        raise UserError(f"--latents {path} is an .npz archive: save the single array x_T with numpy.save (.npy)")
    if x_t.ndim != 4:
        raise UserError(f"--latents has shape {x_t.shape}: x_T needs 4 dimensions {expected}")
    return x_t


def style_grid(pipe: StylePipeline, prompts: Sequence[str], styles: Sequence[Path], *, cell: int = 96, seed: int = 0,
               scheduler: str | None = None, steps: int | None = None, guidance: float | None = None,
               style_scale: float | None = None) -> np.ndarray:
    """(rows x cell, (1 + prompts) x cell, 3) uint8: columns = prompts (prompt i with seed + i), first row
    without style, then one row per style image, each row headed by its style image (blank for none).
    Each row is one `generate_many` call, batched as a server batches requests."""
    from PIL import Image

    from stylegen_trt.runtime.images import read_image_file

    def fit(image: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(image).resize((cell, cell), Image.NEAREST))

    rows = []
    for style in [None, *styles]:
        head = np.full((cell, cell, 3), 255, np.uint8) if style is None else \
            fit((read_image_file(style)[0] * 255).round().astype(np.uint8))
        requests = [build_request(pipe.bundle.manifest, p, styles=(style,) if style else (), scheduler=scheduler,
                                  steps=steps, guidance=guidance, style_scale=style_scale, seed=seed + i)
                    for i, p in enumerate(prompts)]
        results = pipe.generate_many(requests)
        failed = next((r for r in results if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed
        rows.append(np.concatenate([head, *(fit(r.images[0]) for r in results)], axis=1))
    return np.concatenate(rows, axis=0)
