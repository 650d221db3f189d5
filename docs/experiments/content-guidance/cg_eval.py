"""`stylegen-trt eval` with the text's CFG direction taken partly from the unstyled base (ONNX Runtime only).

    eps = eps_u^S + g [(1 - LAMBDA) (eps_c^S - eps_u^S) + LAMBDA (eps_c^0 - eps_u^0)] + W (eps_c^0 - eps_u^0)

eps^S: UNet with the branch's residuals, eps^0: with zero residuals - the bundle's own (co-trained) base, or
with CG_CONTENT_UNET=path/unet.onnx another UNet over the same VAE and text encoder (the shipped base, from which
the co-training started: 90.8% content, where the co-trained base alone has 75%). LAMBDA 0, W 0 is the shipped denoiser. The question: does the shape come back from the base's own
text direction while the texture stays in from the styled passes?
usage: CG_LAMBDA=.. CG_W=.. python cg_eval.py [eval args]"""
import os

import numpy as np

from stylegen_trt.runtime import pipeline

LAMBDA, W = float(os.environ.get("CG_LAMBDA", "0")), float(os.environ.get("CG_W", "0"))
CONTENT_UNET = os.environ.get("CG_CONTENT_UNET")


def host(value):
    """A DeviceValue (how the ORT backend hands values around) as an array."""
    return value if isinstance(value, np.ndarray) else value.numpy()


def make_denoiser(unet, context, guidance, residuals_at):
    if guidance is None:
        return pipeline.make_original(unet, context, guidance, residuals_at)
    zeros = {}
    content = None
    if CONTENT_UNET:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("CG_THREADS", "1"))
        content = ort.InferenceSession(CONTENT_UNET, options, providers=["CPUExecutionProvider"])

    def eps_of(x, t, residuals, base=False):
        feeds = {"sample": x, "timestep": np.array([t], np.float32), "encoder_hidden_states": context}
        if base and content is not None:
            feeds["encoder_hidden_states"] = host(context)
            return content.run(["eps"], {**feeds, **residuals})[0]
        return pipeline.check_finite(unet, unet.run_device({**feeds, **residuals})["eps"])

    def guided(x, t):
        residuals = residuals_at(t)
        if not zeros:
            zeros.update({k: np.zeros(v.shape, v.dtype) for k, v in residuals.items()})
        xx = np.concatenate([x, x])
        eps_u, eps_c = np.split(eps_of(xx, t, residuals), 2)
        d_style = eps_c - eps_u
        if LAMBDA == 0 and W == 0:
            return eps_u + guidance * d_style
        eps_u0, eps_c0 = np.split(eps_of(xx, t, zeros, base=True), 2)
        d_base = eps_c0 - eps_u0
        return eps_u + guidance * ((1 - LAMBDA) * d_style + LAMBDA * d_base) + W * d_base

    return guided


if __name__ == "__main__":
    pipeline.make_original = pipeline.make_denoiser
    pipeline.make_denoiser = make_denoiser
    from stylegen_trt.cli import app
    app()
