"""Evaluation over prompts x style images: StySim with and without the style branch, content accuracy.

Each (prompt, style) pair is generated twice with the same seed and latents: style-guided,
and with the branch off (plain generation). Prompts are generated in batches (the UNet runs
far more efficiently on a batch than on one image); a batch's seed is its first prompt's index. StySim is measured to the style image for
both, so the ratio guided / off says how much the branch moves the image toward the style.
A ``judge`` (for the demo: a classifier trained on procedural data) decides whether each
image shows the prompt's content; ``extra_judges`` give second opinions, reported beside it by name.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from stylegen_trt.metrics.stysim import StySim
from stylegen_trt.runtime.images import read_image_file
from stylegen_trt.runtime.pipeline import StylePipeline
from stylegen_trt.runtime.requests import build_request

log = logging.getLogger(__name__)

Judge = Callable[[np.ndarray, list[str]], list[bool]]  # images (N, H, W, 3), prompts -> content matches
# images (N, H, W, 3), the style image -> {measure: per-image values} (metrics.texture.style_measures)
StyleMeasures = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]
# (name, table label, format): the style measures a report shows when its rows have them
STYLE_MEASURES = (("texture_match", "texture family match", ".1%"), ("spectrum", "spectrum similarity", ".3f"),
                  ("colour_distance", "colour distance (RGB)", ".1f"))


@dataclass(frozen=True)
class EvalSettings:
    scheduler: str = "ddpm"
    steps: int = 50
    guidance: float = 7.5
    style_scale: float = 1.0
    style_window: tuple[float, float] = (0.0, 1.0)  # fractions of the schedule where the branch runs (generate's)
    seed: int = 0
    seeds: int = 1  # every pair generated with seeds seed .. seed + seeds - 1; the summary pools them
    images_per_pair: int = 1
    prompts_per_call: int = 0  # prompts generated in one batch; 0: as many as the bundle's max_images allows


@dataclass
class EvalReport:
    settings: EvalSettings
    rows: list[dict] = field(default_factory=list)
    fidelity: dict = field(default_factory=dict)  # FID / KID / CLIPSIM, when their weights were given
    # the images themselves, for set-level metrics (not written to JSON)
    images: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"guided": [], "off": []}, repr=False)
    image_prompts: list[str] = field(default_factory=list, repr=False)
    references: list[np.ndarray] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        guided = np.array([r["stysim_guided"] for r in self.rows])
        off = np.array([r["stysim_off"] for r in self.rows])
        out = {"pairs": len(self.rows), "stysim_guided": float(guided.mean()), "stysim_off": float(off.mean()),
               "stysim_ratio": float(guided.mean() / off.mean())}
        for name in self.judge_names():
            for kind in ("guided", "off"):
                out[f"content_accuracy{name}_{kind}"] = float(np.mean([r[f"content{name}_{kind}"] for r in self.rows]))
        for name, _, _ in STYLE_MEASURES:
            if self.rows and f"{name}_guided" in self.rows[0]:
                out[f"{name}_guided"] = float(np.mean([r[f"{name}_guided"] for r in self.rows]))
                out[f"{name}_off"] = float(np.mean([r[f"{name}_off"] for r in self.rows]))
        # which textures come through, and where the shapes get lost (the demo: grain, where its judge is least
        # sure, and the small shapes, which texture running into them turns into crosses)
        for measure, group, key in (("texture_match", "style_family", "texture_match_by_family"),
                                    ("content", "style_family", "content_accuracy_by_family"),
                                    ("content", "prompt", "content_accuracy_by_prompt")):
            grouped = self._grouped(measure, group)
            if grouped:
                out[key] = grouped
        seeds = sorted({r["seed"] for r in self.rows if "seed" in r})
        if len(seeds) > 1:  # the spread the pooled figures hide
            out["stysim_ratio_per_seed"] = {
                str(seed): float(np.mean([r["stysim_guided"] for r in self.rows if r["seed"] == seed]) /
                                 np.mean([r["stysim_off"] for r in self.rows if r["seed"] == seed])) for seed in seeds}
        out.update(self.fidelity)
        return out

    def _grouped(self, measure: str, group: str) -> dict:
        """{row[group]: {"guided", "off": mean of ``measure``, "pairs"}} over the rows that have both, style
        families sorted, prompts in the order given."""
        rows = [r for r in self.rows if group in r and f"{measure}_guided" in r]
        keys = dict.fromkeys(r[group] for r in rows)
        out = {}
        for key in (sorted(keys) if group == "style_family" else keys):
            mine = [r for r in rows if r[group] == key]
            out[key] = {kind: float(np.mean([r[f"{measure}_{kind}"] for r in mine])) for kind in ("guided", "off")}
            out[key]["pairs"] = len(mine)
        return out

    def judge_names(self) -> list[str]:
        """Suffixes of the content judges the rows hold: "" (the judge), then "_NAME" for each extra judge."""
        keys = self.rows[0] if self.rows else {}
        return [k[len("content"):-len("_guided")] for k in keys if k.startswith("content") and k.endswith("_guided")]

    def to_json(self) -> dict:
        return {"settings": asdict(self.settings), "summary": self.summary(), "rows": self.rows}

    def table(self) -> str:
        s = self.summary()
        lines = [f"{'':24}{'style-guided':>14}{'branch off':>14}",
                 f"{'StySim to style image':24}{s['stysim_guided']:>14.4g}{s['stysim_off']:>14.4g}",
                 f"{'ratio guided/off':24}{s['stysim_ratio']:>14.3f}"]
        for name in self.judge_names():
            label = f"content ({name[1:].replace('_', ' ')})" if name else "content accuracy"
            lines.append(f"{label:24}{s[f'content_accuracy{name}_guided']:>14.1%}{s[f'content_accuracy{name}_off']:>14.1%}")
        for name, label, fmt in STYLE_MEASURES:
            if f"{name}_guided" in s:
                lines.append(f"{label:24}{s[f'{name}_guided']:>14{fmt}}{s[f'{name}_off']:>14{fmt}}")
        for name, label in (("fid", "FID to style images"), ("kid_mean", "KID to style images"),
                            ("clipsim", "CLIPSIM to prompt")):
            if f"{name}_guided" in s:
                lines.append(f"{label:24}{s[f'{name}_guided']:>14.4g}{s[f'{name}_off']:>14.4g}")
        for key, label in (("texture_match_by_family", "match by style family"),
                           ("content_accuracy_by_family", "content by style family")):
            if key in s:
                lines.append(f"{label:24}" + "  ".join(f"{k} {v['guided']:.0%}/{v['off']:.0%}" for k, v in s[key].items())
                             + " (guided/off)")
        if "content_accuracy_by_prompt" in s:
            width = max(map(len, s["content_accuracy_by_prompt"]))
            lines.append("content by prompt (guided/off)")
            lines.extend(f"  {prompt:<{width}}  {v['guided']:>5.0%}/{v['off']:.0%}"
                         for prompt, v in s["content_accuracy_by_prompt"].items())
        if "stysim_ratio_per_seed" in s:
            lines.append(f"{'ratio per seed':24}" + "  ".join(f"{k}: {v:.3f}" for k, v in s["stysim_ratio_per_seed"].items()))
        lines.append(f"pairs: {s['pairs'] // self.settings.seeds} x {self.settings.images_per_pair} image(s) x "
                     f"{self.settings.seeds} seed(s), {self.settings.scheduler} {self.settings.steps} steps, "
                     f"style scale {self.settings.style_scale:g}"
                     + ("" if tuple(self.settings.style_window) == (0.0, 1.0)
                        else f", style window {self.settings.style_window[0]:g}-{self.settings.style_window[1]:g}"))
        return "\n".join(lines)


def style_reference(path: Path) -> np.ndarray:
    image, _ = read_image_file(path)
    return (image * 255).round().astype(np.uint8)


def evaluate(pipe: StylePipeline, prompts: list[str], styles: list[Path], stysim: StySim,
             settings: EvalSettings = EvalSettings(), judge: Judge | None = None,
             on_pair: Callable[[int, int], None] | None = None,
             measures: StyleMeasures | None = None, extra_judges: Mapping[str, Judge] = {}) -> EvalReport:
    report = EvalReport(settings)
    # row keys content_guided, content_NAME_guided, ...: the judge, then each extra judge by name
    judges = {"": judge, **{f"_{k}": v for k, v in extra_judges.items()}} if judge is not None else {}
    total = len(prompts) * len(styles) * settings.seeds
    n = settings.images_per_pair
    per_call = settings.prompts_per_call or max(1, pipe.bundle.manifest["sizes"]["max_images"] // n)
    chunks = [(start, prompts[start:start + per_call]) for start in range(0, len(prompts), per_call)]
    plain: dict[tuple[int, int], np.ndarray] = {}  # branch-off images depend on prompts and seed only, not the style
    references = [style_reference(style) for style in styles]
    family_name = getattr(measures, "family_name", None)
    families = [family_name(r) if family_name else None for r in references]
    report.references.extend(references)
    done = 0
    for seed in range(settings.seed, settings.seed + settings.seeds):
        for style, reference, family in zip(styles, references, families):
            for start, chunk in chunks:
                # one batch per chunk of prompts, seeded by its first prompt's index: guided and off
                # share x_T and the sampler's noise, so they differ only by the branch
                common = dict(scheduler=settings.scheduler, steps=settings.steps, guidance=settings.guidance,
                              seed=seed + start, n=n, style_scale=settings.style_scale)
                manifest = pipe.bundle.manifest
                guided = pipe.generate(build_request(manifest, tuple(chunk), styles=(style,),
                                                     style_window=tuple(settings.style_window), **common)).images
                if (seed, start) not in plain:
                    plain[seed, start] = pipe.generate(build_request(manifest, tuple(chunk), **common)).images
                off = plain[seed, start]
                refs = np.repeat(reference[None], n * len(chunk), axis=0)
                sims_guided, sims_off = stysim(guided, refs), stysim(off, refs)
                extra = ({"guided": measures(guided, reference), "off": measures(off, reference)}
                         if measures is not None else {})
                for k, prompt in enumerate(chunk):
                    mine = slice(k * n, (k + 1) * n)
                    row = {"prompt": prompt, "style": str(style), "seed": seed,
                           "stysim_guided": float(sims_guided[mine].mean()), "stysim_off": float(sims_off[mine].mean())}
                    if family is not None:
                        row["style_family"] = family
                    for name, judge_of in judges.items():
                        row[f"content{name}_guided"] = float(np.mean(judge_of(guided[mine], [prompt] * n)))
                        row[f"content{name}_off"] = float(np.mean(judge_of(off[mine], [prompt] * n)))
                    for kind, values in extra.items():
                        row.update({f"{name}_{kind}": float(v[mine].mean()) for name, v in values.items()})
                    report.rows.append(row)
                    report.images["guided"].extend(guided[mine])
                    report.images["off"].extend(off[mine])
                    report.image_prompts.extend([prompt] * n)
                    done += 1
                    if on_pair:
                        on_pair(done, total)
    return report


def add_fidelity(report: EvalReport, inception: Path | None = None, clip: Path | None = None) -> None:
    """FID and KID to the style images (Inception weights) and CLIPSIM to the prompts (CLIP weights),
    for the style-guided and the branch-off images."""
    from stylegen_trt.metrics import fidelity

    for kind in ("guided", "off"):
        images = np.stack(report.images[kind])
        if inception is not None:
            references = _common_size(report.references, images.shape[1:3])
            for name, value in fidelity.fid_kid(images, references, inception).items():
                report.fidelity[f"{name}_{kind}"] = value
        if clip is not None:
            report.fidelity[f"clipsim_{kind}"] = fidelity.clip_similarity(images, report.image_prompts, clip)


def _common_size(images: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(i).resize(size[::-1], Image.BICUBIC)) for i in images])


def write_report(report: EvalReport, path: Path) -> None:
    from stylegen_trt.files import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(report.to_json(), indent=2).encode())
