"""The benchmark's third side: optimum-intel's ``OVStableDiffusionPipeline``, in a process of its own.

Run by ``stylegen_trt.bench.optimum_side`` as ``PYTHON optimum_child.py JOB_JSON`` with any interpreter that
has optimum-intel (it pins transformers and torch versions that may not be this project's): this file imports
nothing from stylegen_trt. It exports the same diffusers model directory the PyTorch reference loads to
OpenVINO IR (once, cached under the job's ``ir_root`` keyed by the model's files and the tool versions),
loads it with static shapes (1 image, CFG, the run's size), then answers one JSON line per request line.

Same work as the runtime's plain generation: the same x_T (read from a .npy), the same scheduler class and
config, DDPM's per-step noise drawn from ``numpy.random.default_rng(seed)`` as the PyTorch reference and the
runtime draw it - so the images can be compared, not only the clocks. Protocol lines go to a private copy of
stdout; anything a library prints goes to stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # library prints -> stderr

import numpy as np  # noqa: E402

SCHEDULER_CLASSES = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpmpp": "DPMSolverMultistepScheduler"}
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def send(message: dict) -> None:
    PROTOCOL.write(json.dumps(message) + "\n")


def ir_key(model_dir: Path) -> str:
    """Every file of the model (path, size, mtime) and the versions of the tools that write the IR."""
    files = sorted((str(p.relative_to(model_dir)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in model_dir.rglob("*") if p.is_file())
    tools = {name: metadata.version(name) for name in ("optimum-intel", "optimum", "openvino", "diffusers",
                                                        "transformers", "torch")}
    blob = json.dumps({"files": files, "tools": tools}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def exported_ir(model_dir: Path, ir_root: Path) -> tuple[Path, float | None]:
    """(the IR directory, seconds the export took or None when it was cached)."""
    from optimum.intel import OVStableDiffusionPipeline

    target = ir_root / f"ir-{ir_key(model_dir)}"
    if (target / "model_index.json").is_file():
        return target, None
    ir_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=ir_root))
    try:
        start = time.perf_counter()
        OVStableDiffusionPipeline.from_pretrained(model_dir, export=True, compile=False).save_pretrained(staging)
        seconds = time.perf_counter() - start
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, seconds


def load(ir_dir: Path, job: dict):
    import torch
    from optimum.intel import OVStableDiffusionPipeline

    torch.set_num_threads(job["threads"])
    ov_config = {"INFERENCE_NUM_THREADS": str(job["threads"]), "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if job["precision"] != "auto":  # auto: the pipeline's own default (bf16 where the CPU has it)
        ov_config["INFERENCE_PRECISION_HINT"] = OV_PRECISION[job["precision"]]
    pipe = OVStableDiffusionPipeline.from_pretrained(ir_dir, compile=False, ov_config=ov_config)
    pipe.reshape(batch_size=1, height=job["size"], width=job["size"], num_images_per_prompt=1)
    pipe.compile()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def precision_of(pipe) -> str:
    try:
        hint = pipe.unet.request.get_property("INFERENCE_PRECISION_HINT")
        return hint.to_string() if hasattr(hint, "to_string") else str(hint)
    except Exception as exc:  # a property this openvino does not report
        return f"unknown ({exc})"


def generate(pipe, request: dict) -> dict:
    import diffusers
    import torch
    from diffusers.schedulers import scheduling_ddpm

    config = dict(pipe.scheduler.config)
    pipe.scheduler = getattr(diffusers, SCHEDULER_CLASSES[request["scheduler"]]).from_config(config)
    rng = np.random.default_rng(request["seed"])

    def from_rng(shape, generator=None, device=None, dtype=None, **_):
        return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))

    latents = torch.from_numpy(np.load(request["latents"]))
    marks: list[float] = []

    def on_step_end(_pipe, _i, _t, kwargs):
        marks.append(time.perf_counter())
        return kwargs

    original = scheduling_ddpm.randn_tensor
    scheduling_ddpm.randn_tensor = from_rng
    try:
        start = time.perf_counter()
        out = pipe(request["prompt"], negative_prompt=request["negative"] or None,
                   num_inference_steps=request["steps"], guidance_scale=request["guidance"],
                   height=request["size"], width=request["size"], latents=latents, output_type="np",
                   callback_on_step_end=on_step_end)
        seconds = time.perf_counter() - start
    finally:
        scheduling_ddpm.randn_tensor = original
    images = (np.clip(np.asarray(out.images, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
    np.save(request["out"], images)
    step_s = [b - a for a, b in zip(marks, marks[1:])]
    return {"seconds": seconds, "step_s": step_s, "steps_seen": len(marks)}


def main(job: dict) -> None:
    started = time.perf_counter()
    ir_dir, export_s = exported_ir(Path(job["model_dir"]), Path(job["ir_root"]))
    loaded_at = time.perf_counter()
    pipe = load(ir_dir, job)
    ready = time.perf_counter()
    send({"ready": True, "export_s": export_s, "load_s": ready - loaded_at, "since_start_s": ready - started,
          "ir_dir": str(ir_dir), "precision": precision_of(pipe),
          "versions": {name: metadata.version(name) for name in ("optimum-intel", "openvino", "diffusers")}})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        send(generate(pipe, request))


if __name__ == "__main__":
    try:
        main(json.loads(sys.argv[1]))
    except Exception as exc:  # one line for the parent; the traceback went to stderr
        import traceback

        traceback.print_exc()
        send({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]})
        sys.exit(1)
