"""Check a backend against the fp32 ONNX reference on the inputs a real generation feeds it.

One short generation on the reference (ONNX Runtime, CPU, fp32, graph optimisations off: the
exported maths as written) records the first inputs each of the five graphs receives; the
candidate engines (e.g. TensorRT fp16) replay exactly those inputs, output by output. Then the
same request end to end on both, compared in pixels. Graph errors are relative to the largest
reference value of the output, so one tolerance serves residuals, eps and images alike.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from stylegen_trt.engines.base import DeviceValue, EngineOptions
from stylegen_trt.runtime.bundle import GRAPH_NAMES, Bundle
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline

# bf16 (OpenVINO): an 8-bit mantissa (2^-9 ~ 2e-3 per rounding). Measured worst output (10 steps, styled, 2026-12-02,
# openvino 2026.4.1, Zen 4 with AVX512-BF16): demo 3.9e-2 (style_branch down_res_3; VAE image 3.8e-2, UNet eps 8e-3),
# small 6.2e-2 (style_branch down_res_11; UNet eps 2.8e-2, VAE 8e-3). The branch's residuals are the worst: their
# largest value is small, so rounding of the large activations feeding their projections counts relatively more.
# 1e-1 leaves ~1.6x margin over small; whether images keep their quality is judged by `eval` (StySim, content).
BF16_TOLERANCE = 1e-1
# max |candidate - reference| / max |reference| per output. fp32: kernel order and fusions
# only (measured ~1e-6 between ORT's optimised and unoptimised CPU graphs); fp16: a 10-bit
# mantissa (2^-11 ~ 5e-4 per rounding) accumulated through a network, as TensorRT's own demo allows.
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": BF16_TOLERANCE}
REFERENCE = EngineOptions(backend="ort", device="cpu", opt_level="disable", precision="fp32", cache=False)


@dataclass(frozen=True)
class OutputCheck:
    graph: str
    output: str
    max_abs: float
    max_rel: float
    passed: bool


@dataclass
class VerifyReport:
    candidate: dict
    tolerance: float
    outputs: list[OutputCheck] = field(default_factory=list)
    image_max_abs: int = 0
    image_mean_abs: float = 0.0
    image_psnr: float = float("inf")

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def worst(self) -> dict[str, OutputCheck]:
        """Per graph, the output furthest from the reference."""
        out: dict[str, OutputCheck] = {}
        for check in self.outputs:
            if check.graph not in out or check.max_rel > out[check.graph].max_rel:
                out[check.graph] = check
        return out

    def to_json(self) -> dict:
        return {"candidate": self.candidate, "tolerance_rel": self.tolerance, "passed": self.passed,
                "outputs": [asdict(o) for o in self.outputs],
                "end_to_end": {"image_max_abs": self.image_max_abs, "image_mean_abs": self.image_mean_abs,
                               "image_psnr_db": self.image_psnr}}


class Recorder:
    """Wraps an engine and keeps the first inputs it is given (copies: callers may reuse arrays)."""

    def __init__(self, engine):
        self.engine, self.spec, self.device = engine, engine.spec, engine.device
        self.first_inputs: dict[str, np.ndarray] | None = None

    @property
    def precision(self) -> str:
        return self.engine.precision

    def _record(self, inputs) -> None:
        if self.first_inputs is None:
            self.first_inputs = {k: v.numpy() if isinstance(v, DeviceValue) else np.array(v, copy=True)
                                 for k, v in inputs.items()}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._record(inputs)
        return self.engine.run(inputs)

    def run_device(self, inputs, keep=()):
        self._record(inputs)
        return self.engine.run_device(inputs, keep)

    def to_device(self, array: np.ndarray):
        return self.engine.to_device(array)

    def close(self) -> None:
        self.engine.close()


def compare_outputs(graph: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    tolerance: float) -> list[OutputCheck]:
    checks = []
    for name, ref in reference.items():
        got = candidate[name]
        if got.shape != ref.shape:
            checks.append(OutputCheck(graph, name, float("inf"), float("inf"), False))
            continue
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        max_rel = max_abs / scale if scale > 0 else max_abs
        finite = bool(np.isfinite(got).all())
        checks.append(OutputCheck(graph, name, max_abs, max_rel, finite and max_rel <= tolerance))
    return checks


def verify(bundle: Bundle, candidate: EngineOptions, request: GenerationRequest) -> VerifyReport:
    """Compare ``candidate`` engines with the fp32 reference, graph by graph, then end to end.
    ``request`` should carry a style image, so that every graph runs."""
    from stylegen_trt.engines import backend_class, cache_fields

    for name in GRAPH_NAMES:  # a candidate that cannot run here fails now, not after the reference's generation
        cache_fields(bundle.graph_path(name), bundle.graphs[name], bundle.graph_files(name), candidate)
    precision = candidate.precision if candidate.precision != "auto" else \
        backend_class(candidate.backend).natural_precision()
    report = VerifyReport({**asdict(candidate), "precision": precision}, TOLERANCE[precision])
    # each side its own empty style cache: the candidate must compute S with its own style encoder
    with tempfile.TemporaryDirectory() as ref_cache, StylePipeline(bundle, REFERENCE, style_cache_dir=Path(ref_cache)) as ref:
        recorders = {}
        for name in GRAPH_NAMES:
            recorders[name] = Recorder(ref.engines[name].engine)
            ref.engines[name].engine = recorders[name]
        ref_images = ref.generate(request).images
        feeds = {name: r.first_inputs for name, r in recorders.items() if r.first_inputs is not None}
        ref_outputs = {name: ref.engines[name].engine.engine.run(f) for name, f in feeds.items()}
    with tempfile.TemporaryDirectory() as cand_cache, StylePipeline(bundle, candidate, style_cache_dir=Path(cand_cache)) as cand:
        for name, f in feeds.items():
            # each graph against its own precision's tolerance (e.g. OpenVINO's auto keeps the style encoder fp32)
            tolerance = TOLERANCE.get(cand.engines[name].precision, report.tolerance)
            report.outputs.extend(compare_outputs(name, ref_outputs[name], cand.engines[name].run(f), tolerance))
        images = cand.generate(request).images
    diff = np.abs(images.astype(np.int16) - ref_images.astype(np.int16))
    report.image_max_abs, report.image_mean_abs = int(diff.max()), float(diff.mean())
    mse = float((diff.astype(np.float64) ** 2).mean())
    report.image_psnr = float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
    return report
