"""Quality columns of the steps-for-quality table: StySim to the style image, content accuracy.

- StySim: ``stylegen_trt.metrics.stysim.StySim`` (lower = closer in style), with the VGG19 weights
  of the model under test (a ``--config`` model's seeded random VGG19, or ``--vgg``), at the
  bundle's style image size, each image against the style image.
- Content accuracy: only with a judge for the prompt's content, which exists for the demo
  bundle alone (``stylegen_trt.demo.classifier``, demo prompts). Elsewhere it is left empty:
  nothing is estimated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from stylegen_trt.bench.configs import BenchModel
from stylegen_trt.bench.workload import Workload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scorer:
    stysim: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    judge: Callable[[np.ndarray, list[str]], list[bool]] | None
    status: str  # what the columns mean here, or why they are empty

    def score(self, images: np.ndarray, work: Workload) -> dict[str, float | None]:
        out: dict[str, float | None] = {"stysim": None, "content_accuracy": None}
        if self.stysim is not None and work.style is not None:
            from stylegen_trt.metrics.evaluate import style_reference

            references = np.repeat(style_reference(work.style)[None], len(images), axis=0)
            out["stysim"] = float(np.mean(self.stysim(images, references)))
        if self.judge is not None:
            out["content_accuracy"] = float(np.mean(self.judge(images, [work.prompt] * len(images))))
        return out


def _demo_judge(manifest: dict, prompt: str):
    """The demo's content classifier as a judge, if this is the demo bundle and the prompt is a demo prompt."""
    if manifest.get("description", {}).get("kind") != "demo":
        return None, "no content judge for this model (only the demo bundle has one)"
    from stylegen_trt.demo import classifier, data

    if data.parse_prompt(prompt) is None or not classifier.WEIGHTS.is_file():
        return None, "no content judge: the prompt names no demo shape and position, or the classifier is absent"
    return classifier.content_judge(), "content accuracy: the demo content classifier (shape and position)"


def make_scorer(model: BenchModel, manifest: dict, prompt: str) -> Scorer:
    try:
        import torch

        from stylegen_trt.metrics.stysim import StySim
        from stylegen_trt.models.loaders import default_vgg_path
    except ImportError as exc:
        return Scorer(None, None, f"not measured: no StySim available ({exc})")
    vgg = model.vgg or default_vgg_path()
    notes = []
    stysim = None
    if vgg.is_file():
        stysim = StySim(torch.load(vgg, map_location="cpu", weights_only=True), manifest["style"]["image_size"])
        notes.append(f"StySim to the style image (lower = closer), VGG19 from {vgg.name}, "
                     f"{manifest['style']['image_size']} px")
    else:
        notes.append(f"StySim not measured: no VGG19 weights at {vgg}")
    judge, judge_note = _demo_judge(manifest, prompt)
    notes.append(judge_note)
    return Scorer(stysim, judge, "; ".join(notes))
