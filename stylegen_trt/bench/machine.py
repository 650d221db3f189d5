"""Machine context for a benchmark: CPU, cores, memory, load, library versions, measured fp32 GEMM rate."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

LIBRARIES = ("stylegen-trt", "numpy", "onnxruntime", "openvino", "onnx", "torch", "diffusers", "transformers", "tokenizers",
             "pillow")
# The CPU's widest matrix/vector feature, widest first (what decides bf16 and int8 speed on a CPU backend).
ISA_FLAGS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512_vnni", "AVX512-VNNI"),
             ("avx512f", "AVX512"), ("avx2", "AVX2"), ("avx", "AVX"))
BUSY_SHARE = 0.1  # other processes' share of all CPUs during the run above which timings are suspect


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_isa() -> str:
    """E.g. "AVX512-BF16" or "AVX2": the widest feature of ISA_FLAGS this CPU reports (run-time detection)."""
    from stylegen_trt.engines.openvino import cpu_flags

    flags = cpu_flags()
    return next((name for flag, name in ISA_FLAGS if flag in flags), platform.machine())


def physical_cores() -> int | None:
    """Distinct (package, core) pairs in /proc/cpuinfo; None where that file does not say."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    cores, package = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            package = value.strip()
        elif key == "core id":
            cores.add((package, value.strip()))
    return len(cores) or None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps OpenMP/BLAS pools at ``threads`` for a child process."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
    return {**os.environ, **{n: str(threads) for n in names}}


_GEMM_CODE = """
import json, sys, time
import numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b  # warm-up: BLAS thread pool start, page faults
times = []
for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
try:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    blas = f"{blas.get('name')} {blas.get('version')}"
except Exception:
    blas = "unknown"
print(json.dumps({"best_s": min(times), "times_s": times, "blas": blas}))
"""


def gemm_rate(threads: int, size: int = 2048, repeats: int = 5) -> dict:
    """Best-of-``repeats`` fp32 ``numpy.matmul`` of two size x size matrices, in a child process.

    A child, because BLAS reads its thread count once at import: this way the rate is
    measured with the same thread count as both sides of the benchmark.
    """
    proc = subprocess.run([sys.executable, "-c", _GEMM_CODE, str(size), str(repeats)], capture_output=True,
                          text=True, env=thread_env(threads), timeout=600)
    if proc.returncode != 0:
        log.warning("GEMM measurement failed: %s", proc.stderr.strip()[-500:])
        return {"size": size, "threads": threads, "gflops": None, "error": proc.stderr.strip()[-500:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    flops = 2 * size**3
    return {"size": size, "threads": threads, "repeats": repeats, "dtype": "float32", "flop": flops,
            "best_s": out["best_s"], "gflops": flops / out["best_s"] / 1e9, "blas": out["blas"],
            "how": f"numpy.matmul of {size}x{size} fp32, best of {repeats} after one warm-up, "
                   f"in a child process with OMP/OPENBLAS/MKL_NUM_THREADS={threads}"}


def machine_info(threads: int, gemm_size: int = 2048, gemm_repeats: int = 5) -> dict:
    logical = os.cpu_count()
    load = load_average()
    info = {
        "cpu": cpu_model(),
        "vector_isa": vector_isa(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "logical_cpus": logical,
        "physical_cores": physical_cores(),
        "usable_cpus": usable_cpus(),
        "threads": threads,
        "memory_gb": memory_gb(),
        "load_average_start": load,
        "versions": versions(),
        "gemm": gemm_rate(threads, gemm_size, gemm_repeats),
    }
    return info


def cpu_snapshot() -> dict | None:
    """Wall clock, the whole machine's busy CPU seconds (/proc/stat) and this process tree's CPU seconds."""
    import resource

    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy_ticks = sum(fields[:8]) - idle  # guest time is already inside user
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # children: every child waited for
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    import time

    return {"wall": time.time(), "busy_s": busy_ticks / os.sysconf("SC_CLK_TCK"), "own_s": own}


def others_share(start: dict | None, end: dict | None, cpus: int) -> float | None:
    """Share of the machine's CPU capacity that other processes used between two snapshots."""
    if not start or not end or end["wall"] <= start["wall"]:
        return None
    others = (end["busy_s"] - start["busy_s"]) - (end["own_s"] - start["own_s"])
    return max(others, 0.0) / ((end["wall"] - start["wall"]) * max(cpus, 1))
