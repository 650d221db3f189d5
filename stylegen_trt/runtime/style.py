"""Style maps in NumPy: blending, resizing to the latent, and the on-disk cache of S."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from stylegen_trt.files import atomic_write_bytes, user_cache_root

log = logging.getLogger(__name__)


def resize_style_map(style_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, 1, 64, 64) -> (B, 1, height, width): adaptive average pooling, as torch defines it.

    Output cell i averages input rows floor(i*H/h) .. ceil((i+1)*H/h) - 1 (likewise columns),
    so it equals ``torch.nn.functional.adaptive_avg_pool2d`` used in training.
    """
    def pool_matrix(n_in: int, n_out: int) -> np.ndarray:
        m = np.zeros((n_out, n_in), dtype=np.float64)
        for i in range(n_out):
            start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
            m[i, start:end] = 1.0 / (end - start)
        return m

    rows = pool_matrix(style_map.shape[-2], height)
    cols = pool_matrix(style_map.shape[-1], width)
    return (rows @ style_map.astype(np.float64) @ cols.T).astype(np.float32)


def blend(style_maps: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Linear blend in S space: sum_i w_i S_i (weights are used as given, not renormalised)."""
    out = np.zeros_like(style_maps[0], dtype=np.float32)
    for s, w in zip(style_maps, weights):
        out += np.float32(w) * s
    return out


def default_cache_dir() -> Path:
    return user_cache_root() / "styles"


class StyleMapCache:
    """S per (image bytes, style encoder graph, preprocessing size), in memory and on disk."""

    MEMORY_ENTRIES = 1024  # 16 KiB each: a server meets many style images

    def __init__(self, directory: Path | None, encoder_sha256: str, image_size: int):
        self.directory = directory
        self.namespace = f"{encoder_sha256[:16]}-{image_size}"
        self.memory: OrderedDict[str, np.ndarray] = OrderedDict()  # the most recent MEMORY_ENTRIES

    def key(self, image_bytes: bytes) -> str:
        return hashlib.sha256(image_bytes).hexdigest()

    def _path(self, key: str) -> Path | None:
        return self.directory / self.namespace / f"{key}.npy" if self.directory else None

    def get(self, key: str) -> np.ndarray | None:
        if key in self.memory:
            self.memory.move_to_end(key)
            return self.memory[key]
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            log.warning("ignoring unreadable style cache file %s", path)
            return None
        self._remember(key, value)
        return value

    def _remember(self, key: str, value: np.ndarray) -> None:
        self.memory[key] = value
        while len(self.memory) > self.MEMORY_ENTRIES:
            self.memory.popitem(last=False)

    def put(self, key: str, value: np.ndarray) -> None:
        self._remember(key, value)
        path = self._path(key)
        if path is None:
            return
        try:
            import io

            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as exc:
            log.warning("style cache not written (%s)", exc)
