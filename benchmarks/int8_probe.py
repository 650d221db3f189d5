"""Is NNCF int8 worth it on this CPU? One graph of a bundle, OpenVINO fp32 vs int8, side by side in one run.

    python benchmarks/int8_probe.py BUNDLE [--graph unet] [--latent 32] [--threads 2] [--samples 16]

Needs ``openvino`` and ``nncf`` (pip install nncf). The graph is reshaped to the static shapes a one-image CFG
generation feeds it (``engines.openvino.static_input_shapes``) and quantized two ways with NNCF post-training
quantization: "hybrid" (optimum-intel's recipe for diffusion UNets: int8 weights for MatMuls, int8 weights and
activations for convolutions) and "full" (every op NNCF quantizes). Calibration inputs are random draws of the
graph's inputs (timestep uniform in 0..999, latents N(0, 1), residuals 0.1 N(0, 1)): enough to time the
quantized model, not to judge its images - the error printed is an upper bound's order of magnitude, not a
verdict on quality. Prints one JSON line: ms per call for each, and the relative RMS error of int8 vs fp32.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from stylegen_trt.bench.machine import vector_isa
from stylegen_trt.engines.base import StaticShapes
from stylegen_trt.engines.openvino import static_input_shapes
from stylegen_trt.runtime.bundle import open_bundle


def random_inputs(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str], rng: np.random.Generator) -> dict:
    out = {}
    for name, shape in shapes.items():
        if dtypes[name].startswith("int"):
            out[name] = rng.integers(0, 1000, shape).astype(dtypes[name])
        else:
            scale = 0.1 if "res" in name else 1.0
            out[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--graph", default="unet")
    parser.add_argument("--latent", type=int, default=None, help="latent size (default: the bundle's native)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16, help="calibration samples")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    bundle = open_bundle(args.bundle)
    spec = bundle.graphs[args.graph]
    manifest = bundle.manifest
    latent = args.latent or manifest["sizes"]["native"] // manifest["latent"]["vae_scale_factor"]
    shapes = static_input_shapes(spec, StaticShapes(latent, latent, 1))
    dtypes = {t.name: t.dtype for t in spec.inputs}
    core = ov.Core()
    model = core.read_model(bundle.graph_path(args.graph))
    model.reshape({name: ov.PartialShape(list(shape)) for name, shape in shapes.items()})
    rng = np.random.default_rng(0)
    calibration = nncf.Dataset([random_inputs(shapes, dtypes, rng) for _ in range(args.samples)])
    probe = random_inputs(shapes, dtypes, rng)
    config = {"INFERENCE_NUM_THREADS": str(args.threads), "INFERENCE_PRECISION_HINT": "f32",
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    no_smooth_quant = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=-1, matmul=-1))

    def hybrid(m):
        m = nncf.compress_weights(m, mode=nncf.CompressWeightsMode.INT8_ASYM,
                                  ignored_scope=nncf.IgnoredScope(types=["Convolution"]))
        return nncf.quantize(m, calibration, subset_size=args.samples, model_type=nncf.ModelType.TRANSFORMER,
                             ignored_scope=nncf.IgnoredScope(types=["MatMul"]), advanced_parameters=no_smooth_quant)

    def full(m):
        return nncf.quantize(m, calibration, subset_size=args.samples, model_type=nncf.ModelType.TRANSFORMER,
                             advanced_parameters=no_smooth_quant)

    results, reference = {}, None
    for label, make in (("fp32", lambda m: m), ("int8_hybrid", hybrid), ("int8_full", full)):
        start = time.perf_counter()
        variant = make(model.clone())
        made_s = time.perf_counter() - start
        compiled = core.compile_model(variant, "CPU", config)
        output = compiled(probe)[0]
        start = time.perf_counter()
        for _ in range(args.repeats):
            compiled(probe)
        ms = (time.perf_counter() - start) / args.repeats * 1000
        reference = output if reference is None else reference
        error = float(np.sqrt(np.mean((output - reference) ** 2) / np.mean(reference ** 2)))
        results[label] = {"ms": round(ms, 1), "quantize_s": round(made_s, 1), "relative_rms_error": round(error, 4)}
    speedups = {k: round(results["fp32"]["ms"] / v["ms"], 3) for k, v in results.items() if k != "fp32"}
    print(json.dumps({"graph": args.graph, "shapes": shapes, "threads": args.threads, "vector_isa": vector_isa(),
                      "processor": platform.processor() or platform.machine(), "openvino": ov.__version__,
                      "nncf": nncf.__version__, "results": results, "speedup_vs_fp32": speedups}))


if __name__ == "__main__":
    main()
