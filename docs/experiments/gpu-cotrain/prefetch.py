"""Importing this makes the demo's co-training stage draw its batches (and texture-only style images) in worker
processes ahead of the step that uses them, so a GPU step does not wait ~85 ms for NumPy rendering.
Exact: batch i comes from default_rng([seed, i]) wherever it is drawn (DemoBatches), so the stream is the one
the stage would draw itself (checked by check_prefetch.py)."""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from stylegen_trt.demo import train as demo_train

WORKERS = int(os.environ.get("PREFETCH_WORKERS", "4"))
AHEAD = 4 * WORKERS


def _draw(seed, batch, index, name_texture, texture_phase):
    torch.set_num_threads(1)
    stream = demo_train.DemoBatches(seed, batch, index, name_texture, texture_phase)
    images, prompts = next(stream)
    swatches = demo_train._original_style_images(images, stream.last_styles, "texture")
    return images, prompts, stream.last_styles, stream.last_contents, swatches


class PrefetchedBatches(demo_train.DemoBatches):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pool = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))
        self.pending = {}
        self.last_swatches = None

    def __next__(self):
        for i in range(self.index, self.index + AHEAD):
            if i not in self.pending:
                self.pending[i] = self.pool.submit(_draw, self.seed, self.batch, i, self.name_texture, self.texture_phase)
        images, prompts, self.last_styles, self.last_contents, self.last_swatches = self.pending.pop(self.index).result()
        self.index += 1
        return images, prompts


CURRENT: list[PrefetchedBatches] = []


def _batches(seed, batch, start=0, name_texture=0.0, texture_phase="random"):
    stream = PrefetchedBatches(seed, batch, start, name_texture, texture_phase)
    CURRENT.append(stream)
    return stream


def _style_images(images, styles, source):
    if source == "texture" and CURRENT and CURRENT[-1].last_styles is styles:
        return CURRENT[-1].last_swatches
    return demo_train._original_style_images(images, styles, source)


if not hasattr(demo_train, "_original_style_images"):
    demo_train._original_style_images = demo_train._style_images
    demo_train._style_images = _style_images
    demo_train.batches = _batches
