"""The third side of the benchmark: optimum-intel's OVStableDiffusionPipeline (what CPU users pick instead).

It runs in a child process (``optimum_child.py``) under any interpreter that has optimum-intel - this one
when it imports ``optimum.intel``, else the one ``--optimum-python`` names - because optimum-intel pins
transformers and torch versions of its own. Plain SD only (it has no style branch), on the same diffusers
directory the PyTorch reference loads, the same x_T, sampler, steps, guidance and DDPM noise, so its images
are compared with the runtime's plain images as well as timed. Torch-free.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylegen_trt.bench.workload import Workload
from stylegen_trt.errors import UserError

log = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("optimum_child.py")
READY_TIMEOUT_S = 3600.0  # the first run exports the model to OpenVINO IR (minutes at SD-1.5 size)
RUN_TIMEOUT_S = 1800.0
INSTALL_HINT = ("pip install 'optimum-intel[openvino]' (in its own environment if its transformers pin clashes "
                "with this one) and pass --optimum-python PATH/TO/python")


def find_python(explicit: Path | None) -> tuple[str | None, str]:
    """(the interpreter that runs the child, or None; why not)."""
    if explicit is not None:
        if not (explicit.is_file() and os.access(explicit, os.X_OK)):
            raise UserError(f"--optimum-python {explicit} is not an executable file: give the python of an "
                            "environment that has optimum-intel")
        return str(explicit), ""
    if importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.intel") is not None:
        return sys.executable, ""
    return None, f"optimum-intel is not installed here: {INSTALL_HINT}"


class SideFailed(UserError):
    """The child failed, exited or went silent: a finding of the run, reported in its section."""


@dataclass(frozen=True)
class OptimumRun:
    images: np.ndarray  # (1, H, W, 3) uint8
    seconds: float  # the pipeline call, wall time
    step_s: list[float]  # between consecutive step ends (callback_on_step_end)

    def loop_and_fixed(self, steps: int) -> tuple[float, float]:
        """(seconds in the denoising loop, seconds outside it): the median step times the steps."""
        step = float(np.median(self.step_s)) if self.step_s else self.seconds / steps
        loop = min(step * steps, self.seconds)
        return loop, self.seconds - loop


class OptimumSide:
    """A live child holding the compiled pipeline; ``run`` generates one plain image."""

    def __init__(self, python: str, model_dir: Path, ir_root: Path, threads: int, precision: str, size: int,
                 log_path: Path):
        self.log_path = log_path
        self._work_dir = log_path.parent
        self._count = 0
        job = {"model_dir": str(model_dir), "ir_root": str(ir_root), "threads": threads, "precision": precision,
               "size": size}
        start = time.perf_counter()
        with open(log_path, "w") as stderr:
            self._proc = subprocess.Popen([python, str(CHILD), json.dumps(job)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=stderr, text=True)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._proc.stdout, selectors.EVENT_READ)
        try:
            self.ready = self._receive(READY_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        self.ready["parent_ready_s"] = time.perf_counter() - start

    def _receive(self, timeout_s: float) -> dict:
        if not self._selector.select(timeout_s):
            raise SideFailed(f"the optimum-intel side sent nothing for {timeout_s:.0f} s (its log: {self.log_path})")
        line = self._proc.stdout.readline()
        if not line:
            raise SideFailed(f"the optimum-intel side exited (code {self._proc.wait()}): {self._log_tail()}")
        message = json.loads(line)
        if "error" in message:
            raise SideFailed(f"the optimum-intel side failed: {message['error']}")
        return message

    def _log_tail(self) -> str:
        try:
            lines = [x.strip() for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            lines = []
        return lines[-1][:300] if lines else "no output"

    def run(self, work: Workload) -> OptimumRun:
        if work.style is not None or work.n != 1:
            raise ValueError("the optimum-intel side runs plain SD, one image")
        self._count += 1
        latents = self._work_dir / f"optimum-latents-{self._count}.npy"
        out = self._work_dir / f"optimum-images-{self._count}.npy"
        np.save(latents, work.latents())
        request = {"prompt": work.prompt, "negative": work.negative, "steps": work.steps, "guidance": work.guidance,
                   "seed": work.seed, "size": work.size, "scheduler": work.scheduler, "latents": str(latents),
                   "out": str(out)}
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError as exc:  # the child is gone: its exit code and last words say why
            raise SideFailed(f"the optimum-intel side exited (code {self._proc.wait()}): {self._log_tail()}") from exc
        result = self._receive(RUN_TIMEOUT_S)
        images = np.load(out)
        latents.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        return OptimumRun(images, float(result["seconds"]), [float(s) for s in result["step_s"]])

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            try:
                proc.stdin.write(json.dumps({"quit": True}) + "\n")
                proc.stdin.flush()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        self._selector.close()
        proc.stdout.close()
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
