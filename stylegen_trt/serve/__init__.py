"""Serving on NVIDIA Triton Inference Server: the `stylegen` model's contract, a model-repository
writer (for `stylegen-trt serve` and for NVIDIA's `tritonserver` container) and a launcher for the
`tritonserver` binary that the nvidia-pytriton wheel ships."""
