"""Why does (or doesn't) the demo show textures? Measurements on a training work dir, in PyTorch.

    python -m stylegen_trt.demo.diagnose --work demo-work [--base sd] [--branch branch.safetensors] --out FILE.json

1. base: can the frozen base draw each texture family at all? Sampled with no style, prompts with and
   without the family's name, classified by the palette-blind judge (demo/texture_judge.py).
2. S: is the texture in the style map? A ridge probe fitted on S of training-palette renders
   (demo.data) reads family, period and angle back from S of held-out-palette swatches drawn by
   the judge's code.
3. branch: family match, spectrum similarity and colour distance of style-guided samples on those
   swatches, for each branch given (e.g. a checkpoint part-way through training and the final one).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from stylegen_trt.demo import data, texture_judge
from stylegen_trt.metrics.texture import colour_distance, spectrum_similarity
from stylegen_trt.models import loaders
from stylegen_trt.models.reference import TorchReference

log = logging.getLogger("stylegen_trt.demo.diagnose")
PROMPT_CONTENTS = (data.Content(0, 1, 1), data.Content(1, 0, 0), data.Content(2, 2, 1), data.Content(3, 1, 0))


def _reference(base_dir: Path, branch_path: Path | None, work: Path) -> TorchReference:
    base = loaders.load_base(base_dir)
    encoder = loaders.load_style_encoder(work / "vgg19.pth")
    branch = loaders.load_branch(base, branch_path) if branch_path else loaders.new_branch(base, seed=0, stem_hidden=32)
    return TorchReference(base, encoder, branch.eval())


def _latents(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4, data.IMAGE_SIZE // 2, data.IMAGE_SIZE // 2)).astype(np.float32)


def base_modes(ref: TorchReference, judge, per_prompt: int = 4, guidance: float = 4.0) -> dict:
    """Families the base draws with no style: asked by name, and not asked."""
    named = {}
    for family in data.TEXTURES:
        images = np.concatenate([ref.generate(c.prompt_with_texture(data.TEXTURES.index(family)),
                                              _latents(100 + k, per_prompt), guidance=guidance,
                                              rng=np.random.default_rng(k)) for k, c in enumerate(PROMPT_CONTENTS)])
        named[family] = float(np.mean(texture_judge.classify(judge, images) == data.TEXTURES.index(family)))
    plain = np.concatenate([ref.generate(c.prompt, _latents(200 + k, 2 * per_prompt), guidance=guidance,
                                         rng=np.random.default_rng(k)) for k, c in enumerate(PROMPT_CONTENTS)])
    counts = np.bincount(texture_judge.classify(judge, plain), minlength=len(data.TEXTURES))
    return {"named_accuracy": named, "named_accuracy_mean": float(np.mean(list(named.values()))),
            "unnamed_histogram": dict(zip(data.TEXTURES, counts.tolist()))}


def _style_maps(encoder, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(data.IMAGE_SIZE, data.IMAGE_SIZE), mode="area")
    with torch.no_grad():
        return encoder(x).flatten(1).numpy().astype(np.float64)


def s_probe(encoder, train_count: int = 1400, test_per_family: int = 20) -> dict:
    """Ridge probe from S (log, standardised) to family, period and angle; fitted on training palettes,
    scored on held-out palettes drawn by other code."""
    rng = np.random.default_rng(77)
    styles = [data.random_style(rng) for _ in range(train_count)]
    train_x = np.log(_style_maps(encoder, np.stack([data.render(None, s) for s in styles])) + 1e-6)
    test_rng = np.random.default_rng([texture_judge.SEED_SPACE, 5])
    tests = [(f, texture_judge.random_texture(test_rng, f), data.HELDOUT_PALETTES[k % 3])
             for f in data.TEXTURES for k in range(test_per_family)]
    test_x = np.log(_style_maps(encoder, np.stack([texture_judge.swatch(t, *p, size=32) for _, t, p in tests])) + 1e-6)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std

    def ridge(targets: np.ndarray, lam: float = 30.0) -> np.ndarray:
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ targets)
        return b @ w

    family = np.eye(len(data.TEXTURES))[[s.texture for s in styles]]
    family_accuracy = float(np.mean(ridge(family).argmax(1) == np.array([data.TEXTURES.index(f) for f, _, _ in tests])))
    # period and angle where they are defined (angle: stripes and waves, as (cos 2a, sin 2a))
    periodic = [i for i, (f, _, _) in enumerate(tests) if f in ("stripes", "waves", "dots", "grid", "rings")]
    period_pred = ridge(np.array([s.period for s in styles]))[periodic]
    period_true = np.array([tests[i][1].period for i in periodic])
    period_r2 = 1 - np.mean((period_pred - period_true) ** 2) / np.var(period_true)
    oriented = [i for i, (f, _, _) in enumerate(tests) if f in ("stripes", "waves")]
    angle_pred = ridge(np.stack([np.cos(2 * np.array([s.angle for s in styles])),
                                 np.sin(2 * np.array([s.angle for s in styles]))], 1))[oriented]
    true = np.array([tests[i][1].angle for i in oriented])
    error = np.abs(np.angle(np.exp(1j * (np.arctan2(angle_pred[:, 1], angle_pred[:, 0]) - 2 * true)))) / 2
    return {"family_accuracy": family_accuracy, "period_r2": float(period_r2),
            "angle_error_deg_median": float(np.degrees(np.median(error))), "train": train_count, "test": len(tests)}


def ceilings(vae, judge) -> dict:
    """What a perfect model would score: each eval swatch's texture under each prompt's shape, rendered
    exactly (the judge's code) and passed through the VAE (the decoder's limit)."""
    rows = {"exact": [], "vae": []}
    rng = np.random.default_rng([texture_judge.SEED_SPACE, 13])
    for index, (fg, bg) in enumerate(data.HELDOUT_PALETTES):
        for family in data.TEXTURES:
            texture = texture_judge.random_texture(rng, family)
            swatch = texture_judge.swatch(texture, fg, bg, size=128)
            for content in PROMPT_CONTENTS:
                inside = data.shape_mask(content, 32)[..., None]
                outline = np.clip(data.shape_mask(content, 32, grow=1.5)[..., None] - inside, 0, 1)
                image = texture_judge.swatch(texture, fg, bg, size=32).astype(np.float32)
                image = image * (1 - outline) + np.float32(bg) * outline
                image = (image * (1 - inside) + np.float32(fg) * inside).round().astype(np.uint8)
                with torch.no_grad():
                    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
                    y = vae.decode(vae.encode(x).latent_dist.mean).sample
                through = ((y[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
                for kind, picture in (("exact", image), ("vae", through)):
                    rows[kind].append((texture_judge.classify(judge, picture[None])[0] ==
                                       texture_judge.classify(judge, swatch[None])[0],
                                       spectrum_similarity(picture, swatch), colour_distance(picture, swatch)))
    return {kind: {"match": float(np.mean([r[0] for r in v])), "spectrum": float(np.mean([r[1] for r in v])),
                   "colour": float(np.mean([r[2] for r in v]))} for kind, v in rows.items()}


def guided_measures(ref: TorchReference, judge, style_scale: float, guidance: float = 4.0, seeds: int = 2) -> dict:
    """The style-guided and the branch-off samples against held-out swatches (all families x 3 palettes)."""
    swatches = texture_judge.eval_swatches(size=32)
    rows = []
    for name, swatch in swatches:
        pixels = (swatch.astype(np.float32) / 255.0).transpose(2, 0, 1)
        for seed in range(seeds):
            for k, c in enumerate(PROMPT_CONTENTS):
                latents = _latents(1000 * seed + k, 1)
                row = {"style": name}
                for kind, scale in (("guided", style_scale), ("off", 0.0)):
                    image = ref.generate(c.prompt, latents, style_images=(pixels,), style_scale=scale,
                                         guidance=guidance, rng=np.random.default_rng(seed * 10 + k))
                    row[f"match_{kind}"] = bool(texture_judge.classify(judge, image)[0] ==
                                                texture_judge.classify(judge, swatch[None])[0])
                    row[f"spectrum_{kind}"] = spectrum_similarity(image[0], swatch)
                    row[f"colour_{kind}"] = colour_distance(image[0], swatch)
                rows.append(row)
    summary = {f"{m}_{kind}": float(np.mean([r[f"{m}_{kind}"] for r in rows]))
               for m in ("match", "spectrum", "colour") for kind in ("guided", "off")}
    per_family = {f: float(np.mean([r["match_guided"] for r in rows if r["style"].startswith(f)])) for f in data.TEXTURES}
    return {**summary, "match_guided_per_family": per_family, "samples": len(rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--base", type=Path, default=None, help="base dir (diffusers layout) [default: WORK/sd]")
    parser.add_argument("--branch", type=Path, action="append", default=[], help="branch weights; repeat")
    parser.add_argument("--style-scale", type=float, default=1.5)
    parser.add_argument("--skip", action="append", default=[], choices=["base", "probe", "ceiling"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    judge = texture_judge.load()
    base_dir = args.base or args.work / "sd"
    report: dict = {"base_dir": str(base_dir)}
    if "base" not in args.skip:
        report["base"] = base_modes(_reference(base_dir, None, args.work), judge)
        log.info("base: %s", report["base"])
    if "ceiling" not in args.skip:
        from diffusers import AutoencoderKL

        report["ceilings"] = ceilings(AutoencoderKL.from_pretrained(base_dir / "vae").eval(), judge)
        log.info("ceilings: %s", report["ceilings"])
    if "probe" not in args.skip:
        report["s_probe"] = s_probe(loaders.load_style_encoder(args.work / "vgg19.pth"))
        log.info("S probe: %s", report["s_probe"])
    for branch_path in args.branch:
        result = guided_measures(_reference(base_dir, branch_path, args.work), judge, args.style_scale)
        report.setdefault("branch", {})[str(branch_path)] = result
        log.info("branch %s: %s", branch_path, result)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
