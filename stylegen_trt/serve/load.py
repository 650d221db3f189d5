"""Load generator for a `stylegen` server: closed-loop clients at several concurrency levels, a mixed
workload (prompts, styles, some requests without style), images/s and latency percentiles, and a
check that no answer was mixed up: every image at every level equals the same request's image at
one client (where each request is served alone).

    stylegen-trt bench-serve --json benchmarks/results/serve.json --markdown benchmarks/results/serve.md
"""

from __future__ import annotations

import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stylegen_trt.serve.client import Options, StylegenClient, StylegenError

log = logging.getLogger(__name__)

PROMPTS = ("a large circle on the left", "a small square on the right", "a large triangle in the center",
           "a small cross on the left", "a large square in the center", "a small circle on the right")


@dataclass(frozen=True)
class LoadSettings:
    clients: tuple[int, ...] = (1, 4, 16)
    requests: int = 64  # per concurrency level above 1 (the 1-client level sends each distinct request once)
    distinct: int = 16  # distinct requests, cycled
    no_style_every: int = 4  # every 4th distinct request has no style
    warmup: int = 4  # untimed requests first (other seeds), so 1 client is not measured cold
    steps: int | None = None  # None: the bundle's default (the demo's DDPM-50)
    timeout_s: float = 300.0  # per request
    level_timeout_s: float = 900.0  # per concurrency level


@dataclass(frozen=True)
class Job:
    prompt: str
    style: int | None  # index into the style images, None: no style
    seed: int


@dataclass
class Level:
    clients: int
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    max_diff_vs_solo: int = 0
    mismatched: int = 0
    others_cpu_share: float | None = None  # other processes' share of the CPUs during this level

    @property
    def images_per_s(self) -> float:
        return (self.requests - len(self.errors)) / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")


def workload(settings: LoadSettings, n_styles: int) -> list[Job]:
    return [Job(PROMPTS[i % len(PROMPTS)], None if i % settings.no_style_every == settings.no_style_every - 1
                else i % n_styles, 1000 + i) for i in range(settings.distinct)]


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def run_level(url: str, protocol: str, clients: int, jobs: list[Job], count: int, styles: list[bytes],
              settings: LoadSettings) -> tuple[Level, list[tuple[int, bytes]]]:
    """``count`` requests (job i % len(jobs)) from ``clients`` closed-loop clients; every answer comes back
    as (job index, PNG) for the mix-up check."""
    level = Level(clients, count)
    answers: list[tuple[int, bytes]] = []
    lock = threading.Lock()
    next_index = iter(range(count))
    deadline = time.monotonic() + settings.level_timeout_s

    def client_loop() -> None:
        with StylegenClient(url, protocol, timeout_s=settings.timeout_s) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                job = jobs[i % len(jobs)]
                options = Options(seed=job.seed, steps=settings.steps)
                start = time.perf_counter()
                try:
                    png = client.generate(job.prompt, [styles[job.style]] if job.style is not None else [], options)
                except StylegenError as exc:
                    with lock:
                        level.errors.append(str(exc))
                    continue
                elapsed = time.perf_counter() - start
                with lock:
                    level.latencies_s.append(elapsed)
                    answers.append((i % len(jobs), png))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    level.wall_s = time.perf_counter() - start
    level.requests = len(level.latencies_s) + len(level.errors)
    return level, answers


def _server_cpu_s(pid: int | None) -> float:
    """CPU seconds of the server's process tree (tritonserver and its backend stubs); 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        import psutil

        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        return sum(sum(p.cpu_times()[:2]) for p in procs)
    except Exception:  # no psutil, or a process gone between listing and reading
        return 0.0


def _others_share(start: tuple, end: tuple) -> float | None:
    from stylegen_trt.bench.machine import others_share, usable_cpus

    (snap0, server0), (snap1, server1) = start, end
    if snap0 is None or snap1 is None:
        return None
    snap1 = {**snap1, "own_s": snap1["own_s"] + (server1 - server0)}  # the server's CPU is ours too
    return others_share(snap0, snap1, usable_cpus())


def run_load(url: str, styles: list[bytes], settings: LoadSettings = LoadSettings(),
             protocol: str = "http", server_pid: int | None = None) -> dict:
    """Every level of ``settings.clients``; the first must be 1 (it gives the solo renderings).
    With ``server_pid`` (a server on this machine), each level says how much CPU other processes took."""
    from stylegen_trt.bench.machine import cpu_snapshot

    if settings.clients[0] != 1:
        raise ValueError("the first concurrency level must be 1 client: it gives each request's solo image")
    jobs = workload(settings, len(styles))
    if settings.warmup:
        warm = [Job(j.prompt, j.style, j.seed + 10_000) for j in jobs[:settings.warmup]]
        run_level(url, protocol, 1, warm, len(warm), styles, settings)
    levels: list[Level] = []
    solo: dict[int, np.ndarray] = {}
    for clients in settings.clients:
        count = len(jobs) if clients == 1 else settings.requests
        log.info("%d client(s): %d requests", clients, count)
        start = (cpu_snapshot(), _server_cpu_s(server_pid))
        level, answers = run_level(url, protocol, clients, jobs, count, styles, settings)
        if server_pid is not None:
            level.others_cpu_share = _others_share(start, (cpu_snapshot(), _server_cpu_s(server_pid)))
        if clients == 1:
            solo = {i: _decode(png) for i, png in answers}
        for index, png in answers:
            if index in solo:
                diff = int(np.abs(_decode(png) - solo[index]).max())
                level.max_diff_vs_solo = max(level.max_diff_vs_solo, diff)
                level.mismatched += diff > 1
        levels.append(level)
        log.info("%d client(s): %.2f images/s, p50 %.2f s, p95 %.2f s, errors %d, max diff vs solo %d",
                 clients, level.images_per_s, level.percentile(50), level.percentile(95), len(level.errors),
                 level.max_diff_vs_solo)
    return summarise(levels, jobs, settings)


def summarise(levels: list[Level], jobs: list[Job], settings: LoadSettings) -> dict:
    one, top = levels[0], levels[-1]
    styled = [t for job, t in zip(jobs, one.latencies_s) if job.style is not None]
    plain = [t for job, t in zip(jobs, one.latencies_s) if job.style is None]
    seen: set[int] = set()
    cached = []  # styled requests whose style an earlier request used: residuals from the cache
    for job, t in zip(jobs, one.latencies_s):
        if job.style is not None:
            if job.style in seen:
                cached.append(t)
            seen.add(job.style)
    results = {
        "settings": asdict(settings),
        "levels": [{"clients": lv.clients, "requests": lv.requests, "errors": lv.errors, "wall_s": lv.wall_s,
                    "images_per_s": lv.images_per_s, "p50_s": lv.percentile(50), "p95_s": lv.percentile(95),
                    "p99_s": lv.percentile(99), "max_diff_vs_solo": lv.max_diff_vs_solo,
                    "mismatched": lv.mismatched, "others_cpu_share": lv.others_cpu_share} for lv in levels],
        "single_request_s": one.percentile(50),
        "solo_styled_s": float(np.median(styled)) if styled else None,
        "solo_styled_cached_s": float(np.median(cached)) if cached else None,
        "solo_plain_s": float(np.median(plain)) if plain else None,
    }
    throughput_ratio = top.images_per_s / one.images_per_s if one.images_per_s else float("nan")
    p95_ratio = top.percentile(95) / one.percentile(50)
    answered = all(not lv.errors for lv in levels)
    mixed_up = sum(lv.mismatched for lv in levels)
    results["goals"] = [
        {"name": f"throughput at {top.clients} clients / at 1", "value": throughput_ratio, "op": ">=",
         "threshold": 2.0, "met": throughput_ratio >= 2.0},
        {"name": f"p95 latency at {top.clients} clients / single-request latency", "value": p95_ratio,
         "op": "<=", "threshold": 10.0, "met": p95_ratio <= 10.0},
        {"name": "every request answered", "value": float(answered), "op": "==", "threshold": 1.0, "met": answered},
        {"name": "answers that differ from their solo image by > 1/255", "value": float(mixed_up), "op": "==",
         "threshold": 0.0, "met": mixed_up == 0},
    ]
    if cached and plain:
        ratio = results["solo_styled_cached_s"] / results["solo_plain_s"]
        results["goals"].append({"name": "styled (residuals cached) / plain latency, 1 client", "value": ratio,
                                 "op": "<=", "threshold": 1.15, "met": ratio <= 1.15})
    return results


def markdown(results: dict, command: str, plot_name: str | None) -> str:
    s = results["settings"]
    lines = ["## Serving on Triton: `stylegen-trt bench-serve`", "",
             f"Produced by: `{command}`", "",
             f"{results.get('machine', '')}Workload: {s['distinct']} distinct requests (prompts of the demo, "
             f"4 style images, every {s['no_style_every']}th without style), cycled; closed-loop clients over "
             "HTTP; DDPM steps: " + (str(s["steps"]) if s["steps"] else "the bundle's default") + "; "
             f"{s.get('warmup', 0)} untimed warm-up requests first. "
             "Each level's images are compared with the same request's image at 1 client (served alone).", "",
             "| clients | requests | images/s | p50 s | p95 s | p99 s | errors | max diff vs solo (1/255) "
             "| CPU taken by other processes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for lv in results["levels"]:
        others = lv.get("others_cpu_share")
        lines.append(f"| {lv['clients']} | {lv['requests']} | {lv['images_per_s']:.2f} | {lv['p50_s']:.2f} | "
                     f"{lv['p95_s']:.2f} | {lv['p99_s']:.2f} | {len(lv['errors'])} | {lv['max_diff_vs_solo']} | "
                     f"{'-' if others is None else f'{others:.0%}'} |")
    lines += ["", "| goal | measured | target | status |", "|---|---|---|---|"]
    for g in results["goals"]:
        lines.append(f"| {g['name']} | {g['value']:.3f} | {g['op']} {g['threshold']} | "
                     f"{'met' if g['met'] else 'MISSED'} |")
    if results.get("solo_plain_s") is not None:
        lines += ["", f"At 1 client: plain {results['solo_plain_s']:.3f} s, styled {results['solo_styled_s']:.3f} s "
                      f"(median; styled with the style's residuals already cached: "
                      f"{results['solo_styled_cached_s'] or float('nan'):.3f} s)."]
    if plot_name:
        lines += ["", f"![throughput and latency by clients]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path:
    """Two bar groups by concurrency: images/s, and p50/p95 latency (Pillow only)."""
    from PIL import Image, ImageDraw

    from stylegen_trt.bench.report import _font

    levels = results["levels"]
    width, height, left, top, bar = 640, 300, 60, 50, 28
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    draw.text((10, 8), "stylegen on Triton: throughput and latency by concurrent clients", fill="black", font=font)
    panels = (("images/s", [lv["images_per_s"] for lv in levels], (70, 130, 180)),
              ("latency s (inner bar p50, outer p95)", [lv["p95_s"] for lv in levels], (200, 90, 60)))
    panel_w = (width - left - 20) // 2
    for k, (title, values, colour) in enumerate(panels):
        x0 = left + k * panel_w
        draw.text((x0, top - 18), title, fill="black", font=small)
        peak = max(values) or 1.0
        for j, (lv, value) in enumerate(zip(levels, values)):
            x = x0 + 20 + j * (bar + 30)
            h = int((height - top - 50) * value / peak)
            draw.rectangle([x, height - 40 - h, x + bar, height - 40], fill=colour)
            if k == 1:  # p50 inside the p95 bar
                h50 = int((height - top - 50) * lv["p50_s"] / peak)
                draw.rectangle([x + 6, height - 40 - h50, x + bar - 6, height - 40], fill=(240, 170, 140))
            draw.text((x, height - 40 - h - 16), f"{value:.2f}", fill=(40, 40, 40), font=small)
            draw.text((x + 4, height - 34), f"{lv['clients']}", fill="black", font=small)
    draw.text((left, height - 18), "clients", fill=(60, 60, 60), font=small)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
