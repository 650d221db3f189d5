"""The benchmark itself: runtime (ONNX Runtime) vs PyTorch eager reference, one process, same work.

Sections (each a key of the result dict, written as JSON by ``stylegen-trt bench --json``):

- ``end_to_end``: seconds per image, both sides run alternately (the order flips every
  repetition, so slow drift of the machine hits both), ``warmup`` rounds then ``repeats``
  timed rounds; medians, speedup = torch / runtime; uint8 images compared every round.
  Caches are cold on both sides in every round: the runtime's S cache (memory; its disk cache
  is switched off) and prompt-encoding cache are cleared, so each image pays tokenizer, text
  encoder and style encoder, as the reference does.
- ``stages``: per-stage seconds and calls (medians over the timed rounds), both sides.
- ``unet``: FLOPs of one UNet call from the ONNX graph at the run's shapes, achieved FLOP/s on
  both sides, and the runtime's share of the measured GEMM rate.
- ``style_overhead``: runtime, style-guided / plain at CFG batch 2 and 8 (n = 1 and 4), caches
  warm (S is computed once per style image and cached: the recurring cost is the branch).
- ``steps_for_quality``: runtime seconds per image for DDPM-50 and DPM-Solver++ at fewer steps.
- ``optimum``: the runtime, plain and style-guided, vs optimum-intel's OVStableDiffusionPipeline (plain SD, a
  child process: ``optimum_side``) on the same model directory and work, rounds rotated; images compared.
- ``cold_start`` / ``peak_rss``: from fresh child processes (``stylegen_trt.bench.coldstart``).
"""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stylegen_trt.bench import coldstart, machine, quality
from stylegen_trt.bench.configs import BenchModel, describe
from stylegen_trt.bench.flops import count_onnx_flops
from stylegen_trt.bench.runtime_side import RuntimeSide, request_of
from stylegen_trt.bench.summary import (
    Agreement, compare_images, median, profile_of, ratio, speedup, targets, worst_agreement,
)
from stylegen_trt.bench.workload import STAGES, Run, Workload
from stylegen_trt.engines.base import Memory
from stylegen_trt.errors import UserError
from stylegen_trt.runtime.images import procedural_swatch, save_png
from stylegen_trt.runtime.pipeline import check_request
from stylegen_trt.spec import resolve_shape

log = logging.getLogger(__name__)

SCHEMA = "stylegen-trt-bench-v1"
SECTIONS = ("cold_start", "style_overhead", "steps_for_quality", "optimum")  # optional; end_to_end always runs


@dataclass(frozen=True)
class BenchSettings:
    prompt: str = "a red cat painting"
    negative: str = ""
    style: Path | None = None  # None: a procedural swatch written for the run
    scheduler: str = "ddpm"
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    size: int | None = None  # None: the bundle's native size
    threads: int | None = None  # None: every usable core
    memory: Memory = "fast"  # the runtime's EngineOptions.memory
    repeats: int = 3
    warmup: int = 1
    overhead_steps: int = 10
    overhead_batches: tuple[int, ...] = (1, 4)
    quality: tuple[tuple[str, int], ...] = (("ddpm", 50), ("dpmpp", 10), ("dpmpp", 20))
    cold_repeats: int = 1
    skip: frozenset[str] = field(default_factory=frozenset)
    tolerance: int = 2
    gemm_size: int = 2048
    gemm_repeats: int = 5
    backend: str = "ort"  # the runtime's EngineOptions; on a GPU the reference runs on CUDA in fp16
    device: str = "auto"
    precision: str = "auto"
    static: bool = False  # TensorRT: static engines at the run's size, 1 image
    cuda_graph: bool = False
    optimum_python: Path | None = None  # None: this interpreter, when it has optimum-intel

    def __post_init__(self):
        unknown = set(self.skip) - set(SECTIONS)
        if unknown:
            raise UserError(f"unknown section(s) to skip: {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
        for name in ("repeats", "steps", "overhead_steps", "cold_repeats"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1")
        if self.warmup < 0:
            raise UserError("--warmup must be >= 0")


def write_swatch(path: Path, size: int = 512) -> Path:
    """A procedural style image so the benchmark needs no data files."""
    save_png(procedural_swatch(size), path)
    return path


def stage_medians(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Median seconds and calls per stage, per image."""
    out = {}
    for name in STAGES:
        n = runs[0].images.shape[0]
        seconds = median(r.stages[name]["seconds"] for r in runs) / n
        calls = median(r.stages[name]["calls"] for r in runs) / n
        out[name] = {"seconds": seconds, "calls": calls,
                     "seconds_per_call": seconds / calls if calls else None}
    return out


def unet_flops(bundle_path: Path, manifest: dict, work: Workload) -> dict:
    """FLOPs of the UNet graph at the shapes ``work`` runs it (batch 2n with CFG, n without)."""
    from stylegen_trt.runtime.bundle import open_bundle

    bundle = open_bundle(bundle_path, verify=False)
    latent = work.size // manifest["latent"]["vae_scale_factor"]
    batch = work.n * (2 if work.guidance > 1.0 else 1)
    axes = {"unet_batch": batch, "latent_h": latent, "latent_w": latent, "residual_batch": 1}  # one style: broadcast
    shapes = {t.name: resolve_shape(t.dims, axes) for t in bundle.graphs["unet"].inputs}
    count = count_onnx_flops(bundle.graph_path("unet"), shapes)
    return {"flops_per_call": count.total, "by_op": count.by_op, "counted_nodes": count.nodes,
            "unresolved_nodes": len(count.unresolved), "batch": batch, "latent": [latent, latent],
            "how": "2 x MACs of Conv/Gemm/MatMul from ONNX Runtime's symbolic shape inference at these shapes"}


def end_to_end(runtime: RuntimeSide, torch_side, work: Workload,
               settings: BenchSettings) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """(end_to_end, stages, the last images of each side)."""
    runs: dict[str, list[Run]] = {"runtime": [], "torch": []}
    agreements: list[Agreement] = []
    rounds = settings.warmup + settings.repeats
    for i in range(rounds):
        order = ("runtime", "torch") if i % 2 == 0 else ("torch", "runtime")
        this: dict[str, Run] = {}
        for side in order:
            this[side] = runtime.run(work) if side == "runtime" else torch_side.run(work)
        agreements.append(compare_images(this["runtime"].images, this["torch"].images, settings.tolerance))
        label = "warm-up" if i < settings.warmup else "timed"
        log.info("round %d/%d (%s): runtime %.3f s, torch %.3f s, max pixel diff %d", i + 1, rounds, label,
                 this["runtime"].seconds, this["torch"].seconds, agreements[-1].max_abs_diff)
        if i >= settings.warmup:
            for side in this:
                runs[side].append(this[side])
    runtime_s = median(r.seconds for r in runs["runtime"]) / work.n
    torch_s = median(r.seconds for r in runs["torch"]) / work.n
    agreement = worst_agreement(agreements)
    e2e = {
        "runtime_s": runtime_s, "torch_s": torch_s, "speedup": speedup(runtime_s, torch_s),
        "runtime_runs_s": [r.seconds for r in runs["runtime"]], "torch_runs_s": [r.seconds for r in runs["torch"]],
        "repeats": settings.repeats, "warmup": settings.warmup,
        "agreement": agreement.to_dict() | {"rounds_compared": len(agreements)},
        "caches": "cold on both sides every round: runtime S cache (memory; disk cache off) and prompt "
                  "cache cleared, so each image runs tokenizer, text encoder and style encoder",
    }
    stages = {"runtime": stage_medians(runs["runtime"]), "torch": stage_medians(runs["torch"]),
              "steps": work.steps,
              "notes": {"runtime.scheduler": "per-step wall time minus UNet and branch calls: sampler maths, "
                                             "CFG combine, residual feeds",
                        "torch.scheduler": "diffusers scheduler.step() only; CFG combine is in torch.other",
                        "other": "wall time minus every timed stage (style image read/resize, S blend, glue)"}}
    return e2e, stages, {side: runs[side][-1].images for side in runs}


def loop_and_fixed(run: Run) -> tuple[float, float]:
    """(seconds in the denoising loop, seconds outside it) of one runtime run."""
    loop = sum(run.stages[name]["seconds"] for name in ("unet", "style_branch", "scheduler"))
    return loop, run.seconds - loop


def extrapolate(loop_s: float, fixed_s: float, measured_steps: int, steps: int) -> float:
    """Seconds per generation at ``steps`` from a run at ``measured_steps`` (the loop scales, the rest does not)."""
    return loop_s * steps / measured_steps + fixed_s


PATENT_STEPS = 50  # DDPM-50: what a real image costs, whatever a reduced run measured


def scaled_steps(work: Workload) -> int:
    return max(work.steps, PATENT_STEPS)


def style_overhead(runtime: RuntimeSide, work: Workload, settings: BenchSettings) -> dict:
    batches = {}
    for n in settings.overhead_batches:
        styled = work.but(n=n, steps=settings.overhead_steps)
        plain = styled.but(style=None)
        for w in (plain, styled):  # warm-up at this batch's shapes; also fills the S and prompt caches
            runtime.run(w, cold=False)
        runs: dict[str, list[Run]] = {"plain": [], "styled": []}
        for i in range(settings.repeats):
            for label, w in ((("plain", plain), ("styled", styled)) if i % 2 == 0 else
                             (("styled", styled), ("plain", plain))):
                runs[label].append(runtime.run(w, cold=False))
        plain_s, styled_s = (median(r.seconds for r in runs[k]) for k in ("plain", "styled"))
        # The same ratio at the end-to-end step count, and at least the patent's DDPM-50: the VAE and
        # the rest do not scale with steps, so a reduced run (sd15 at 2 steps) would understate the
        # branch's share of a real image.
        at_steps = {k: extrapolate(median(loop_and_fixed(r)[0] for r in runs[k]),
                                   median(loop_and_fixed(r)[1] for r in runs[k]), settings.overhead_steps,
                                   scaled_steps(work)) for k in runs}
        batches[str(n)] = {"n": n, "unet_batch": n * (2 if work.guidance > 1.0 else 1), "plain_s": plain_s,
                           "styled_s": styled_s, "ratio": ratio(styled_s, plain_s),
                           "ratio_scaled": ratio(at_steps["styled"], at_steps["plain"]),
                           "branch_calls": median(r.stages["style_branch"]["calls"] for r in runs["styled"]),
                           "plain_runs_s": [r.seconds for r in runs["plain"]],
                           "styled_runs_s": [r.seconds for r in runs["styled"]]}
        log.info("style overhead n=%d: plain %.3f s, styled %.3f s", n, plain_s, styled_s)
    first = batches.get("1") or next(iter(batches.values()))
    known = [x for x in (first["ratio"], first["ratio_scaled"]) if x is not None]
    return {"ratio": max(known) if known else None, "measured_ratio": first["ratio"],
            "ratio_scaled": first["ratio_scaled"], "batches": batches, "steps": settings.overhead_steps,
            "scaled_to_steps": scaled_steps(work),
            "guidance": work.guidance,
            "ratio_rule": f"the larger of the ratio measured at {settings.overhead_steps} steps and the same runs' "
                          f"loop and fixed parts scaled to {scaled_steps(work)} steps (n=1, CFG batch 2)",
            "caches": "warm: S computed once and cached (as for any style image used twice); prompt cache warm"}


def steps_for_quality(runtime: RuntimeSide, work: Workload, settings: BenchSettings, scorer: quality.Scorer) -> dict:
    rows = []
    for scheduler, steps in settings.quality:
        w = work.but(scheduler=scheduler, steps=steps)
        run = runtime.run(w, cold=False)
        scores = scorer.score(run.images, w)  # after the clock stopped
        rows.append({"scheduler": scheduler, "steps": steps, "seconds": run.seconds / w.n, **scores})
        log.info("steps for quality: %s-%d %.3f s, %s", scheduler, steps, run.seconds, scores)
    return {"rows": rows, "runs": 1, "caches": "warm", "metrics": scorer.status}


OPTIMUM_KEYS = ("optimum_s", "runtime_plain_s", "runtime_styled_s", "plain_ratio", "styled_ratio")


def optimum_comparison(model: BenchModel, runtime: RuntimeSide, work: Workload, settings: BenchSettings,
                       threads: int) -> dict:
    """The runtime plain and style-guided vs optimum-intel (plain), same work, rounds rotated, caches cold."""
    from stylegen_trt.bench import optimum_side
    from stylegen_trt.bench.configs import default_cache_root

    python, why = optimum_side.find_python(settings.optimum_python)
    if python is None:
        return skipped(OPTIMUM_KEYS) | {"reason": why}
    if work.guidance <= 1.0 or work.n != 1 or work.style is None:
        return skipped(OPTIMUM_KEYS) | {"reason": "the comparison runs one image with CFG (guidance > 1) and a style"}
    precision = settings.precision if settings.precision in ("fp32", "bf16") else "auto"
    log.info("optimum-intel: starting its pipeline in a child process (%s); the first run exports the model", python)
    with tempfile.TemporaryDirectory(prefix="stylegen-optimum-") as tmp:
        try:
            side = optimum_side.OptimumSide(python, model.base, default_cache_root() / "optimum", threads, precision,
                                            work.size, Path(tmp) / "optimum.log")
        except UserError as exc:  # the third side failing is a finding of this run, not the end of it
            log.warning("optimum-intel side not run: %s", exc)
            return skipped(OPTIMUM_KEYS) | {"reason": f"it failed to start: {exc}"}
        try:
            ready = side.ready
            plain, styled = work.but(style=None), work
            runs: dict[str, list] = {"optimum": [], "plain": [], "styled": []}
            agreements = []
            labels = ("optimum", "plain", "styled")
            failure = None
            for i in range(settings.warmup + settings.repeats):
                this = {}
                try:
                    for label in (labels if i % 2 == 0 else labels[::-1]):
                        this[label] = side.run(plain) if label == "optimum" else \
                            runtime.run(plain if label == "plain" else styled)
                except optimum_side.SideFailed as exc:  # e.g. a crash mid-run: keep the rounds it finished
                    failure = f"it failed in round {i + 1}: {exc}"
                    log.warning("optimum-intel side stopped: %s", failure)
                    break
                agreements.append(compare_images(this["optimum"].images, this["plain"].images, settings.tolerance))
                log.info("optimum round %d: optimum-intel %.3f s, runtime plain %.3f s, styled %.3f s, max pixel diff "
                         "%d", i + 1, this["optimum"].seconds, this["plain"].seconds, this["styled"].seconds,
                         agreements[-1].max_abs_diff)
                if i >= settings.warmup:
                    for label in labels:
                        runs[label].append(this[label])
        finally:
            side.close()
    if not runs["optimum"]:
        return skipped(OPTIMUM_KEYS) | {"reason": failure}
    steps, target_steps = work.steps, scaled_steps(work)
    parts = {"optimum": [r.loop_and_fixed(steps) for r in runs["optimum"]],
             "plain": [loop_and_fixed(r) for r in runs["plain"]], "styled": [loop_and_fixed(r) for r in runs["styled"]]}
    loop = {k: median(x[0] for x in v) for k, v in parts.items()}
    fixed = {k: median(x[1] for x in v) for k, v in parts.items()}
    seconds = {k: median(r.seconds for r in v) for k, v in runs.items()}
    at_target = {k: extrapolate(loop[k], fixed[k], steps, target_steps) for k in runs}

    def worse(label: str) -> float | None:  # the larger of the measured ratio and the one scaled to DDPM-50
        known = [x for x in (ratio(seconds[label], seconds["optimum"]), ratio(at_target[label], at_target["optimum"]))
                 if x is not None]
        return max(known) if known else None

    return {
        "python": python, "versions": ready.get("versions"), "precision": ready.get("precision"),
        "export_s": ready.get("export_s"), "load_s": ready.get("load_s"), "ready_s": ready.get("parent_ready_s"),
        "optimum_s": seconds["optimum"], "runtime_plain_s": seconds["plain"], "runtime_styled_s": seconds["styled"],
        "runs_s": {k: [r.seconds for r in v] for k, v in runs.items()},
        "step_s": {k: loop[k] / steps for k in runs}, "fixed_s": fixed, "scaled_to_steps": target_steps,
        "per_image_at_scaled_steps_s": at_target,
        "plain_ratio": worse("plain"), "styled_ratio": worse("styled"), "failure": failure,
        "agreement": worst_agreement(agreements).to_dict() | {"rounds_compared": len(agreements),
                                                              "compared": "optimum-intel vs the runtime's plain image"},
        "how": f"one child process holding OVStableDiffusionPipeline (static 1 image, CFG, {work.size} px; "
               f"precision {precision}), the same diffusers directory, x_T, sampler, steps and DDPM noise; "
               f"{settings.warmup} warm-up + {settings.repeats} timed rounds, order rotated; runtime caches cold "
               "every image (prompt, and S for the styled runs); ratios: the larger of the measured one and the "
               f"one with loop and fixed parts scaled to {target_steps} steps",
    }


def cold_start(model: BenchModel, work: Workload, settings: BenchSettings, threads: int, style_image_size: int,
               tmp: Path, reference_images: dict[str, np.ndarray]) -> tuple[dict, dict]:
    common = ["--prompt", work.prompt, "--negative", work.negative, "--scheduler", work.scheduler,
              "--steps", str(work.steps), "--guidance", str(work.guidance), "--seed", str(work.seed),
              "--size", str(work.size), "--n", str(work.n), "--latent-factor", str(work.latent_factor), "--threads", str(threads)]
    if work.style is not None:
        common += ["--style", str(work.style)]
    args = {"runtime": ["--bundle", str(model.bundle), "--memory", settings.memory, "--backend", settings.backend,
                        "--device", settings.device, "--precision", settings.precision,
                        *(["--static"] if settings.static else []), *(["--cuda-graph"] if settings.cuda_graph else []),
                        *common],
            "torch": ["--base", str(model.base), "--style-image-size", str(style_image_size), *common,
                      *(["--vgg", str(model.vgg)] if model.vgg else []),
                      *(["--branch", str(model.branch)] if model.branch else [])]}
    results: dict[str, list[dict]] = {"runtime": [], "torch": []}
    agreements = []
    for i in range(settings.cold_repeats):
        images = {}
        for side in (("runtime", "torch") if i % 2 == 0 else ("torch", "runtime")):
            out = tmp / f"cold-{side}-{i}.npy"
            log.info("cold start: %s in a fresh process", side)
            results[side].append(coldstart.measure(side, [*args[side], "--out", str(out)]))
            images[side] = np.load(out)
        agreements.append(compare_images(images["runtime"], images["torch"], settings.tolerance))
        for side in images:  # same work in a fresh process must give the in-process bytes
            if side in reference_images:
                results[side][-1]["same_as_in_process"] = bool(np.array_equal(images[side], reference_images[side]))
    runtime_s = median(r["first_image_s"] for r in results["runtime"])
    torch_s = median(r["first_image_s"] for r in results["torch"])
    cold = {"runtime_s": runtime_s, "torch_s": torch_s, "speedup": speedup(runtime_s, torch_s),
            "runtime": results["runtime"], "torch": results["torch"],
            "agreement": worst_agreement(agreements).to_dict(),
            "how": "parent's clock just before starting a fresh `python -m stylegen_trt.bench.coldstart SIDE` "
                   "until its first image is in memory; OS page cache and the bundle's optimised ORT graphs warm "
                   "(as on any run after the first), S cache cold"}
    runtime_mb = median(r["peak_rss_mb"] for r in results["runtime"])
    torch_mb = median(r["peak_rss_mb"] for r in results["torch"])
    rss = {"runtime_mb": runtime_mb, "torch_mb": torch_mb, "ratio": ratio(runtime_mb, torch_mb),
           "runtime_imported_torch": any(r["torch_imported"] for r in results["runtime"]),
           "how": "ru_maxrss (MiB) of each cold-start child at its end: load + one image, one side per process"}
    return cold, rss


def skipped(keys: tuple[str, ...]) -> dict:
    return {**{k: None for k in keys}, "skipped": True}


def in_process(model: BenchModel, runtime: RuntimeSide, work: Workload, settings: BenchSettings, threads: int,
               gemm_gflops: float | None, flags: list[str]) -> tuple[dict, dict[str, np.ndarray]]:
    """The sections measured with both sides loaded in this process, and each side's last images."""
    from stylegen_trt.bench.torch_side import TorchSide  # torch only here: the runtime modules stay torch-free

    manifest = runtime.pipe.bundle.manifest
    device = runtime.device
    log.info("loading the PyTorch reference (%d threads, %s)", threads, device)
    # a runtime on a GPU is measured against PyTorch on that GPU in fp16, as a GPU user would run it
    torch_side = TorchSide(model, threads, manifest["style"]["image_size"],
                           **({"device": "cuda", "dtype": "float16"} if device.startswith("cuda") else {}))
    log.info("end to end: %d warm-up + %d timed rounds of %s-%d at %d px", settings.warmup, settings.repeats,
             work.scheduler, work.steps, work.size)
    e2e, stages, images = end_to_end(runtime, torch_side, work, settings)
    del torch_side  # the remaining sections are the runtime's alone
    gc.collect()
    if not e2e["agreement"]["agree"]:
        flags.append(f"OUTPUTS DISAGREE: max pixel diff {e2e['agreement']['max_abs_diff']} > "
                     f"{settings.tolerance}; speed figures do not count")

    unet = unet_flops(model.bundle, manifest, work)
    for side in ("runtime", "torch"):
        per_call = stages[side]["unet"]["seconds_per_call"]
        unet[f"{side}_s_per_call"] = per_call
        unet[f"{side}_gflops"] = unet["flops_per_call"] / per_call / 1e9 if per_call else None
    unet["gemm_gflops"] = gemm_gflops
    unet["gemm_share"] = ratio(unet["runtime_gflops"], gemm_gflops)
    unet["torch_gemm_share"] = ratio(unet["torch_gflops"], gemm_gflops)
    if unet["unresolved_nodes"]:
        flags.append(f"UNet FLOP count incomplete: {unet['unresolved_nodes']} nodes without shapes")

    if "optimum" in settings.skip:
        optimum = skipped(OPTIMUM_KEYS) | {"reason": "--skip optimum"}
    else:
        optimum = optimum_comparison(model, runtime, work, settings, threads)
        if optimum.get("agreement") and not optimum["agreement"]["agree"]:
            flags.append(f"optimum-intel's plain images disagree with the runtime's: max pixel diff "
                         f"{optimum['agreement']['max_abs_diff']} > {settings.tolerance}")
    if "style_overhead" in settings.skip:
        overhead = skipped(("ratio",))
    else:
        overhead = style_overhead(runtime, work, settings)
        if "1" in overhead["batches"]:
            # S's one-off cost (cold cache, from the end-to-end runs) added to the n=1 styled time.
            one_off = stages["runtime"]["style_encoder"]["seconds"]
            n1 = overhead["batches"]["1"]
            overhead["style_encoder_s"] = one_off
            overhead["ratio_with_style_encoder"] = ratio(n1["styled_s"] + one_off, n1["plain_s"])
    sfq = skipped(("rows",)) if "steps_for_quality" in settings.skip else \
        steps_for_quality(runtime, work, settings, quality.make_scorer(model, manifest, work.prompt))
    sections = {"end_to_end": e2e, "stages": stages, "unet": unet, "style_overhead": overhead,
                "steps_for_quality": sfq, "optimum": optimum}
    return sections, images


def sides_of(settings: BenchSettings, runtime_device: str) -> dict:
    """What each side ran on, for the report."""
    if settings.backend == "ort" and not runtime_device.startswith("cuda"):
        runtime = ("stylegen_trt StylePipeline on ONNX Runtime (CPU EP, opt level all, "
                   f"memory {settings.memory}: CPU arena {'on' if settings.memory == 'fast' else 'off'})")
    elif settings.backend == "openvino":
        from stylegen_trt.engines.openvino import auto_precision

        precision = auto_precision() if settings.precision == "auto" else settings.precision
        runtime = (f"stylegen_trt StylePipeline on OpenVINO (CPU, {precision}"
                   f"{' (auto; style encoder fp32)' if settings.precision == 'auto' else ''}, static shapes per call)")
    else:
        runtime = (f"stylegen_trt StylePipeline on {'TensorRT' if settings.backend == 'trt' else 'ONNX Runtime CUDA EP'} "
                   f"({runtime_device}, precision {settings.precision}{', static' if settings.static else ''}"
                   f"{', CUDA graph' if settings.cuda_graph else ''})")
    torch = ("TorchReference: diffusers/transformers modules + diffusers scheduler, "
             + ("CUDA fp16" if runtime_device.startswith("cuda") else "eager fp32") + ", torch.no_grad")
    return {"runtime": runtime, "torch": torch}


def run_bench(model: BenchModel, settings: BenchSettings = BenchSettings(), command: str = "") -> dict:
    """Every figure of the benchmark as one JSON-able dict."""
    started = time.time()
    snapshot = machine.cpu_snapshot()
    threads = settings.threads or machine.usable_cpus()
    log.info("measuring the fp32 GEMM rate (%d threads)", threads)
    info = machine.machine_info(threads, settings.gemm_size, settings.gemm_repeats)
    flags: list[str] = []
    with tempfile.TemporaryDirectory(prefix="stylegen-bench-") as tmp_name:
        tmp = Path(tmp_name)
        style = settings.style or write_swatch(tmp / "swatch.png")
        log.info("opening the runtime (%s, %d threads)", settings.backend, threads)
        runtime = RuntimeSide(model.bundle, threads, settings.memory, settings.backend, settings.device,
                              settings.precision, settings.static, settings.cuda_graph, size=settings.size)
        runtime_device = runtime.device
        try:
            manifest = runtime.pipe.bundle.manifest
            size = settings.size or manifest["sizes"]["native"]
            work = Workload(settings.prompt, settings.negative, style, settings.scheduler, settings.steps,
                            settings.guidance, settings.seed, size,
                            latent_factor=manifest["latent"]["vae_scale_factor"])
            check_request(request_of(work), manifest)
            sections, images = in_process(model, runtime, work, settings, threads, info["gemm"].get("gflops"), flags)
        finally:
            runtime.close()  # before the cold-start children, so they do not compete for memory
        del runtime
        gc.collect()
        if "cold_start" in settings.skip:
            cold = skipped(("runtime_s", "torch_s", "speedup"))
            rss = skipped(("runtime_mb", "torch_mb", "ratio"))
        else:
            cold, rss = cold_start(model, work, settings, threads, manifest["style"]["image_size"], tmp, images)
            if rss["runtime_imported_torch"]:
                flags.append("the runtime's cold-start process imported torch")
            if not cold["agreement"]["agree"]:
                flags.append("cold-start outputs disagree")

    info["load_average_end"] = machine.load_average()
    share = machine.others_share(snapshot, machine.cpu_snapshot(), info["logical_cpus"] or 1)
    info["other_processes_cpu_share"] = share
    if share is not None and share > machine.BUSY_SHARE:
        flags.append(f"machine busy: other processes used {share:.0%} of all CPUs during the run; treat the "
                     "figures as rough (thread-synchronised kernels, torch's OpenMP ones especially, can slow "
                     "down by orders of magnitude when one of their threads is descheduled)")
    model_info = describe(model)
    results = {
        "schema": SCHEMA,
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "model": model_info,
        "settings": {**{k: v for k, v in asdict(settings).items() if k not in ("style", "skip", "optimum_python")},
                     "optimum_python": str(settings.optimum_python) if settings.optimum_python else None,
                     "style": str(settings.style) if settings.style else "procedural swatch (512x512 PNG)",
                     "skip": sorted(settings.skip), "size": size, "threads": threads, "n": work.n,
                     "sides": sides_of(settings, runtime_device)},
        "machine": info,
        **sections,
        "cold_start": cold,
        "peak_rss": rss,
        "targets_profile": profile_of(model.name, model_info.get("native_size") or 0),
        "flags": flags,
    }
    results["targets"] = [t.to_dict() for t in targets(results)]
    return results
