"""Cold start: process start to first image, and peak RSS, each side in its own fresh process.

Child (prints one JSON line on stdout)::

    python -m stylegen_trt.bench.coldstart runtime --bundle B --prompt P --style S.png --steps K ... --t0 EPOCH
    python -m stylegen_trt.bench.coldstart torch --base SD --vgg V --branch BR --style-image-size 512 ... --t0 EPOCH

``--t0`` is the wall clock just before the child was started, so the figure covers interpreter
start, imports, loading the models and the first generation. Peak RSS is the child's own
``ru_maxrss`` at the end; one side per process, so the two never share memory or imported
libraries. The runtime child never imports torch (it reports whether torch got imported).
This module imports only the standard library at the top, so the child's clock starts clean.

Linux carries ``ru_maxrss`` across ``execve``: a process forked from the (large) benchmark process
would start with the benchmark's peak as its own. So ``measure`` starts each child through a small
launcher process (a bare interpreter): the child inherits only the launcher's few MiB. ``VmHWM``
from /proc (the peak of the child's own address space) is reported beside it as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "TQDM_DISABLE": "1"}


def process_start_epoch() -> float | None:
    """When this process started (wall clock), from /proc; None off Linux. 10 ms resolution."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5); fields here start at field 3
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def peak_rss_mb() -> float:
    """ru_maxrss of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def vm_hwm_mb() -> float | None:
    """Peak resident set of this process's current address space (VmHWM), MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _workload(args):
    from stylegen_trt.bench.workload import Workload

    return Workload(args.prompt, args.negative, Path(args.style) if args.style else None, args.scheduler,
                    args.steps, args.guidance, args.seed, args.size, args.n,
                    args.latent_factor)


def _run_runtime(args) -> tuple[object, float]:
    from stylegen_trt.bench.runtime_side import RuntimeSide

    side = RuntimeSide(Path(args.bundle), args.threads, args.memory, args.backend, args.device, args.precision,
                       args.static, args.cuda_graph, size=args.size)
    ready = time.time()
    return side.run(_workload(args)).images, ready


def _run_torch(args) -> tuple[object, float]:
    from stylegen_trt.bench.configs import BenchModel
    from stylegen_trt.bench.torch_side import TorchSide

    model = BenchModel("cold-start", Path(args.bundle or "."), Path(args.base), Path(args.vgg) if args.vgg else None,
                       Path(args.branch) if args.branch else None)
    side = TorchSide(model, args.threads, args.style_image_size,
                     **({"device": "cuda", "dtype": "float16"} if args.backend == "trt" or args.device == "cuda" else {}))
    ready = time.time()
    return side.run(_workload(args)).images, ready


def child(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m stylegen_trt.bench.coldstart")
    parser.add_argument("side", choices=("runtime", "torch"))
    parser.add_argument("--bundle")
    parser.add_argument("--base")
    parser.add_argument("--vgg")
    parser.add_argument("--branch")
    parser.add_argument("--style-image-size", type=int, default=512)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative", default="")
    parser.add_argument("--style")
    parser.add_argument("--scheduler", default="ddpm")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--latent-factor", type=int, default=8)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--memory", choices=("fast", "lean"), default="fast")
    parser.add_argument("--backend", choices=("ort", "trt", "openvino"), default="ort")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    parser.add_argument("--static", action="store_true")
    parser.add_argument("--cuda-graph", action="store_true")
    parser.add_argument("--t0", type=float, help="the parent's time.time() just before starting this process")
    parser.add_argument("--out", help="save the images here (.npy) for the agreement check")
    args = parser.parse_args(argv)
    t0 = args.t0 if args.t0 is not None else process_start_epoch()
    entered = time.time()
    images, ready = _run_runtime(args) if args.side == "runtime" else _run_torch(args)
    done = time.time()
    result = {
        "side": args.side,
        "first_image_s": done - t0 if t0 else None,
        "to_main_s": entered - t0 if t0 else None,  # interpreter start until this function runs
        "ready_s": ready - t0 if t0 else None,  # ... until the models are loaded
        "generate_s": done - ready,
        "peak_rss_mb": peak_rss_mb(),
        "vm_hwm_mb": vm_hwm_mb(),
        "torch_imported": "torch" in sys.modules,
        "threads": args.threads,
        "pid": os.getpid(),
    }
    if args.out:
        import numpy as np

        np.save(args.out, images, allow_pickle=False)
    return result


# Runs the child and passes its exit code on; appends --t0 taken just before starting it.
_LAUNCHER = ("import subprocess, sys, time\n"
             "sys.exit(subprocess.run(sys.argv[1:] + ['--t0', repr(time.time())]).returncode)\n")


def measure(side: str, args: list[str], timeout: float = 24 * 3600) -> dict:
    """Start one child for ``side`` with ``args`` (everything after the side), return its JSON plus wall time."""
    env = {**os.environ, **QUIET_ENV}
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "stylegen_trt.bench.coldstart",
                           side, *args], capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start child ({side}) failed with exit code {proc.returncode}: "
                           f"{proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall  # includes the launcher, writing the images and interpreter exit
    return result


if __name__ == "__main__":
    print(json.dumps(child()))
