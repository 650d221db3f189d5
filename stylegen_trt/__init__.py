"""stylegen-trt: style-personalised text-to-image, exported to ONNX / TensorRT, run by a NumPy-only runtime."""

__version__ = "0.1.0"
