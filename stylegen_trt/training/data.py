"""Training data from a folder: images with captions, diffusers' ImageFolder convention.

Captions come from ``metadata.jsonl`` (one ``{"file_name": ..., "text": ...}`` per line)
or, failing that, from a ``.txt`` file beside each image. Bad items (unreadable image,
missing caption) are reported by name and skipped, never fatal.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from stylegen_trt.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass(frozen=True)
class Item:
    path: Path
    caption: str


def scan_folder(root: Path) -> list[Item]:
    """Pair every image with its caption; report and skip what cannot be paired."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"training data folder {root} does not exist")
    captions: dict[str, str] = {}
    metadata = root / "metadata.jsonl"
    if metadata.is_file():
        for number, line in enumerate(metadata.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                captions[row["file_name"]] = str(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s line %d: not a {file_name, text} record; skipped", metadata, number)
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        name = str(path.relative_to(root))
        caption = captions.get(name)
        if caption is None and path.with_suffix(".txt").is_file():
            caption = path.with_suffix(".txt").read_text().strip()
        if caption is None:
            log.warning("%s has no caption (metadata.jsonl or %s); skipped", path, path.with_suffix(".txt").name)
            continue
        items.append(Item(path, caption))
    if not items:
        raise UserError(f"no captioned images in {root}: add metadata.jsonl or a .txt beside each image")
    return items


def load_image(path: Path, resolution: int) -> np.ndarray | None:
    """(3, res, res) float32 in [0, 1], resized (shorter side) and centre-cropped; None if unreadable."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = resolution / min(img.size)
            size = (max(resolution, round(img.width * scale)), max(resolution, round(img.height * scale)))
            img = img.resize(size, Image.BICUBIC)
            left, top = (img.width - resolution) // 2, (img.height - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
            return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("%s is unreadable (%s); skipped", path, exc)
        return None


class FolderBatches:
    """Endless shuffled batches of (images, captions), resumable: ``state_dict()`` is the position
    after the last batch given, ``load_state_dict()`` goes back there without loading any image.

    Epoch ``e`` visits every item in the order ``default_rng([seed, e]).permutation``; a batch may
    span two epochs. An unreadable image is reported once and skipped for good (its name is part of
    the state, so a resumed run skips it too).
    """

    def __init__(self, items: list[Item], resolution: int, batch: int, seed: int):
        self.items, self.resolution, self.batch, self.seed = list(items), resolution, batch, seed
        self.epoch, self.offset = 0, 0
        self.bad: set[str] = set()
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.items))

    def __iter__(self) -> "FolderBatches":
        return self

    def __next__(self) -> tuple[torch.Tensor, list[str]]:
        images: list[np.ndarray] = []
        captions: list[str] = []
        while len(images) < self.batch:
            if self.offset == len(self._order):
                if len(self.bad) == len(self.items):
                    raise UserError("every training image was unreadable")
                self.epoch, self.offset = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            item = self.items[self._order[self.offset]]
            self.offset += 1
            if str(item.path) in self.bad:
                continue
            pixels = load_image(item.path, self.resolution)
            if pixels is None:
                self.bad.add(str(item.path))
                continue
            images.append(pixels)
            captions.append(item.caption)
        return torch.from_numpy(np.stack(images)), captions

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "offset": self.offset, "bad": sorted(self.bad),
                "items": len(self.items)}

    def load_state_dict(self, state: dict) -> None:
        if state["items"] != len(self.items) or state["seed"] != self.seed:
            log.warning("the training data or seed changed since the checkpoint (%d items, seed %d then; %d, %d "
                        "now): the data order will not match an uninterrupted run", state["items"], state["seed"],
                        len(self.items), self.seed)
        self.epoch, self.offset, self.bad = state["epoch"], min(state["offset"], len(self.items)), set(state["bad"])
        self._order = self._permutation(self.epoch)


def folder_batches(items: list[Item], resolution: int, batch: int, seed: int) -> FolderBatches:
    """Endless shuffled batches; unreadable images are dropped for good after their first failure."""
    return FolderBatches(items, resolution, batch, seed)
