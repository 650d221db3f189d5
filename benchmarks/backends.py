"""One warm image per backend on the same bundle and request; prints seconds and pixel differences vs ORT fp32.

    python benchmarks/backends.py BUNDLE [--steps 50] [--threads 2]

Each backend opens its own pipeline, generates once (warm-up: OpenVINO compiles or imports its shapes then),
and is timed on a second, identical generation (style and prompt caches warm). One run each: a quick
same-machine comparison, not the benchmark (`stylegen-trt bench`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from stylegen_trt.engines.base import EngineOptions
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.images import procedural_swatch, save_png
from stylegen_trt.runtime.pipeline import StylePipeline
from stylegen_trt.runtime.requests import build_request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    b = open_bundle(args.bundle)
    sides = {"ort fp32": EngineOptions(threads=args.threads),
             "openvino fp32": EngineOptions(backend="openvino", precision="fp32", threads=args.threads),
             "openvino auto": EngineOptions(backend="openvino", threads=args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        save_png(procedural_swatch(), Path(tmp) / "swatch.png")
        request = build_request(b.manifest, "a red cat painting", styles=(Path(tmp) / "swatch.png",), steps=args.steps,
                                seed=0, scheduler="ddpm", guidance=7.5)
        images = {}
        for name, options in sides.items():
            with StylePipeline(b, options) as pipe:
                pipe.generate(request)
                start = time.perf_counter()
                images[name] = pipe.generate(request).images.astype(np.int16)
                print(f"{name}: {time.perf_counter() - start:.2f} s per image", flush=True)
    for name in list(sides)[1:]:
        diff = np.abs(images[name] - images["ort fp32"])
        print(f"{name} vs ort fp32: max pixel diff {diff.max()}, mean {diff.mean():.3f}")


if __name__ == "__main__":
    main()
