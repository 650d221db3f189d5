"""Seconds to open each graph of a bundle on a backend, in a fresh process (what "time to ready" is made of).

    python benchmarks/open_times.py BUNDLE [--backend ort|openvino] [--threads 2]

Run it twice: the first run may build the engine cache (ORT's optimised graphs, OpenVINO's blobs); the
second shows what every later process pays.
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()

from stylegen_trt.engines.base import EngineOptions  # noqa: E402
from stylegen_trt.runtime.bundle import open_bundle  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    imported = time.perf_counter()
    bundle = open_bundle(args.bundle)
    options = EngineOptions(backend=args.backend, threads=args.threads)
    seconds, engines = {}, []
    for name in bundle.graphs:
        start = time.perf_counter()
        engines.append(bundle.open_engine(name, options))
        seconds[name] = round(time.perf_counter() - start, 3)
    print(json.dumps({"imports_s": round(imported - START, 3), "open_s": seconds,
                      "total_s": round(time.perf_counter() - START, 3)}))
    for engine in engines:
        engine.close()


if __name__ == "__main__":
    main()
