#!/usr/bin/env python
"""The bench's PyTorch reference on CUDA in fp16 (``TorchSide(device="cuda", dtype="float16")``, what
``stylegen-trt bench --device cuda`` runs) vs the same reference on the CPU in fp32 and vs the runtime on
ONNX Runtime CPU: same prompt, style image, seed, x_T and DDPM noise. Per config: seconds per image (median
of --repeats after one warm-up), UNet seconds per step, uint8 image differences. One JSON (--json), one line.

    python benchmarks/cuda_reference.py --configs tiny,small --json cuda-reference.json
    python benchmarks/cuda_reference.py --device cpu ...   # no GPU: the fp16 side becomes a second CPU fp32 one
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, installed or not

from stylegen_trt.bench.configs import CONFIGS, describe, prepare  # noqa: E402
from stylegen_trt.bench.harness import BenchSettings, write_swatch  # noqa: E402
from stylegen_trt.bench.machine import usable_cpus  # noqa: E402
from stylegen_trt.bench.runtime_side import RuntimeSide  # noqa: E402
from stylegen_trt.bench.summary import compare_images, median  # noqa: E402
from stylegen_trt.bench.torch_side import TorchSide  # noqa: E402
from stylegen_trt.bench.workload import Workload  # noqa: E402

log = logging.getLogger("cuda_reference")
DEVICE_SIDE = {"cuda": ("cuda", "float16"), "cpu": ("cpu", "float32")}  # --device cpu: a CPU fp32 stand-in
DEVICE_KEY = {"cuda": "torch_cuda_fp16", "cpu": "torch_cpu_fp32_standin"}


def versions(device: str) -> dict:
    out = {name: metadata.version(name) for name in ("torch", "onnxruntime", "numpy", "diffusers", "transformers")}
    out |= {"python": platform.python_version(), "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available()}
    if device == "cuda":
        out |= {"gpu": torch.cuda.get_device_name(0), "cudnn": torch.backends.cudnn.version(),
                "capability": list(torch.cuda.get_device_capability(0))}
    return out


def timed(name: str, side, work: Workload, repeats: int) -> dict:
    """One warm-up, then ``repeats`` timed runs of ``side`` (TorchSide.run syncs CUDA before it stops the clock)."""
    warm = side.run(work)
    log.info("%s: warm-up %.3f s", name, warm.seconds)
    runs = [side.run(work) for _ in range(repeats)]
    unet_s = median(r.stages["unet"]["seconds"] / max(r.stages["unet"]["calls"], 1) for r in runs)
    loop_s = median(sum(r.stages[s]["seconds"] for s in ("unet", "style_branch", "scheduler")) / work.steps
                    for r in runs)
    log.info("%s: %s s per image, UNet %.2f ms per step", name, [round(r.seconds, 3) for r in runs], unet_s * 1e3)
    return {"seconds_per_image": median(r.seconds for r in runs) / work.n, "runs_s": [r.seconds for r in runs],
            "warmup_s": warm.seconds, "unet_s_per_step": unet_s, "loop_s_per_step": loop_s,
            "unet_calls": runs[-1].stages["unet"]["calls"], "stages_last_run": runs[-1].stages,
            "image_std": float(runs[-1].images.std()),  # ~0: a blank image (NaN/Inf in fp16 become 0)
            "same_image_every_run": all(np.array_equal(r.images, runs[-1].images) for r in [warm, *runs]),
            "images": runs[-1].images}


def diff(a: np.ndarray, b: np.ndarray) -> dict:
    agreement = compare_images(a, b)
    return {"max_abs": agreement.max_abs_diff, "mean_abs": agreement.mean_abs_diff, "within_2": agreement.agree}


def run_config(name: str, args, style: Path, threads: int, record: dict, save) -> None:
    """Fills ``record`` side by side (the device side first), calling ``save`` after each: a cut-off run keeps it."""
    start = time.perf_counter()
    model = prepare(name, args.cache_dir)
    record |= {"prepare_s": time.perf_counter() - start, "built": model.built, "model": describe(model), "sides": {}}
    log.info("%s: prepared in %.1f s (%s)", name, record["prepare_s"], "built" if model.built else "cached")
    runtime = RuntimeSide(model.bundle, threads)
    manifest = runtime.pipe.bundle.manifest
    s = BenchSettings()
    work = Workload(s.prompt, s.negative, style, "ddpm", args.steps, s.guidance, s.seed, manifest["sizes"]["native"],
                    latent_factor=manifest["latent"]["vae_scale_factor"])
    record |= {"size": work.size, "steps": work.steps, "scheduler": work.scheduler, "guidance": work.guidance,
               "seed": work.seed, "threads": threads}
    key = DEVICE_KEY[args.device]
    images = {}
    for side_key, (device, dtype) in ((key, DEVICE_SIDE[args.device]), ("torch_cpu_fp32", ("cpu", "float32"))):
        load = time.perf_counter()
        side = TorchSide(model, threads, manifest["style"]["image_size"], device=device, dtype=dtype)
        load_s = time.perf_counter() - load
        log.info("%s: TorchSide(%s, %s) loaded in %.1f s", name, device, dtype, load_s)
        record["sides"][side_key] = timed(f"{name} torch {device} {dtype}", side, work, args.repeats) | \
            {"device": device, "dtype": dtype, "load_s": load_s}
        images[side_key] = record["sides"][side_key].pop("images")
        del side
        save()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    try:
        record["sides"]["runtime_ort_cpu"] = timed(f"{name} runtime ORT CPU", runtime, work, args.repeats)
    finally:
        runtime.close()
    images["runtime_ort_cpu"] = record["sides"]["runtime_ort_cpu"].pop("images")
    record["diff"] = {f"{key}_vs_torch_cpu_fp32": diff(images[key], images["torch_cpu_fp32"]),
                      f"{key}_vs_runtime": diff(images[key], images["runtime_ort_cpu"]),
                      "torch_cpu_fp32_vs_runtime": diff(images["torch_cpu_fp32"], images["runtime_ort_cpu"])}
    sides = record["sides"]
    record["speedup_vs_torch_cpu"] = sides["torch_cpu_fp32"]["seconds_per_image"] / sides[key]["seconds_per_image"]
    record["seconds"] = time.perf_counter() - start
    save()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,small", help="comma-separated bench configs [tiny,small]")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side after one warm-up [3]")
    parser.add_argument("--steps", type=int, default=10, help="DDPM steps [10]")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared models [the bench's cache]")
    parser.add_argument("--json", type=Path, default=Path("cuda-reference.json"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: no GPU, the fp16 CUDA side is replaced by CPU fp32 (proves the script)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads [every usable core]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or args.repeats < 1 or args.steps < 1:
        parser.error(f"unknown config(s) {unknown}" if unknown else "--repeats and --steps must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"error: CUDA is not available to torch {torch.__version__} (built for CUDA {torch.version.cuda}); "
              "run on a GPU machine or pass --device cpu", file=sys.stderr)
        return 2
    threads = args.threads or usable_cpus()
    out = {"schema": "stylegen-trt-cuda-reference-v1", "command": " ".join(sys.argv), "device": args.device,
           "versions": versions(args.device), "repeats": args.repeats, "configs": {}}
    with tempfile.TemporaryDirectory(prefix="cuda-reference-") as tmp:
        style = write_swatch(Path(tmp) / "swatch.png")
        for name in configs:
            out["configs"][name] = {}
            run_config(name, args, style, threads, out["configs"][name],
                       lambda: args.json.write_text(json.dumps(out, indent=2)))
    parts = []
    key = DEVICE_KEY[args.device]
    for name, r in out["configs"].items():
        d = r["diff"]
        parts.append(f"{name}: {key} {r['sides'][key]['seconds_per_image']:.3f} s/img "
                     f"(UNet {r['sides'][key]['unet_s_per_step'] * 1e3:.2f} ms/step), torch cpu fp32 "
                     f"{r['sides']['torch_cpu_fp32']['seconds_per_image']:.3f}, runtime "
                     f"{r['sides']['runtime_ort_cpu']['seconds_per_image']:.3f}; max|diff| vs cpu "
                     f"{d[f'{key}_vs_torch_cpu_fp32']['max_abs']}, vs runtime {d[f'{key}_vs_runtime']['max_abs']}")
    print(f"cuda_reference ({args.device}, {out['versions'].get('gpu', 'no GPU')}): " + " | ".join(parts)
          + f" -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
