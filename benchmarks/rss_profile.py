"""Where the runtime's peak memory goes: one fresh process per ONNX Runtime memory setting.

    python benchmarks/rss_profile.py BUNDLE [--threads 2] [--steps 10]

Each child imports the runtime, opens the bundle's engines with one setting (CPU memory arena
on/off, weight pre-packing on/off), generates one styled image, and reports its resident set
after imports, after loading and at the end, with VmHWM (the process's peak; fresh per exec).
Prints a Markdown table; seconds for the image are beside it, since the settings trade speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
out = {}
import numpy as np, onnxruntime as ort
from stylegen_trt.engines import ort as ort_engine
from stylegen_trt.engines.base import EngineOptions
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline, StyleRequest
bundle, style, threads, steps, arena, prepack = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6] == "1"
base_options = ort_engine._session_options
def patched(options, level):
    so = base_options(options, level)
    so.enable_cpu_mem_arena = arena
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    return so
ort_engine._session_options = patched
out["imports_mb"] = status("VmRSS:")
pipe = StylePipeline(open_bundle(bundle), EngineOptions(threads=threads), style_cache_dir=__import__("pathlib").Path(sys.argv[7]))
out["loaded_mb"] = status("VmRSS:")
start = time.perf_counter()
pipe.generate(GenerationRequest("a red cat painting", steps=steps, seed=0, style=StyleRequest((style,))))
out["image_s"] = time.perf_counter() - start
out["end_mb"] = status("VmRSS:")
out["peak_mb"] = status("VmHWM:")
print(json.dumps(out))
"""

SETTINGS = (("default (arena on, pre-packing on)", "1", "1"), ("arena off", "0", "1"),
            ("pre-packing off", "1", "0"), ("arena off, pre-packing off", "0", "0"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    from stylegen_trt.demo import data
    from stylegen_trt.runtime.images import save_png

    with tempfile.TemporaryDirectory() as tmp:
        style = Path(tmp) / "style.png"
        save_png(data.example_styles()[0][1], style)
        size = sum(f.stat().st_size for f in args.bundle.rglob("*.onnx*"))
        print(f"bundle {args.bundle}: {size / 2**20:.0f} MiB of ONNX files; {args.steps} steps, {args.threads} threads\n")
        print("| setting | after imports MiB | after load MiB | end MiB | peak (VmHWM) MiB | image s |")
        print("|---|---|---|---|---|---|")
        for label, arena, prepack in (("warm-up: builds the bundle's optimised-graph cache", "1", "1"), *SETTINGS):
            done = subprocess.run([sys.executable, "-c", CHILD, str(args.bundle), str(style), str(args.threads),
                                   str(args.steps), arena, prepack, tmp], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{label}: child failed:\n{done.stderr[-2000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            if label.startswith("warm-up"):
                continue
            print(f"| {label} | {r['imports_mb']:.0f} | {r['loaded_mb']:.0f} | {r['end_mb']:.0f} | "
                  f"{r['peak_mb']:.0f} | {r['image_s']:.2f} |")


if __name__ == "__main__":
    main()
