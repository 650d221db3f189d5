"""`stylegen-trt bench`: the runtime on ONNX Runtime against the PyTorch eager reference, same work.

- ``harness``: the sections (end to end, stages, UNet FLOP/s, style overhead, steps for quality,
  cold start, peak RSS) -> one JSON-able dict; ``report`` renders it (text, Markdown, PNG).
- ``runtime_side`` / ``coldstart`` / ``workload`` / ``summary`` / ``flops`` / ``machine``: torch-free.
- ``torch_side``: the reference, timed per stage; imported only when the benchmark runs.
- ``configs``: the random-weight tiny / small / sd15 models, built, exported and cached once.

See benchmarks/README.md for the method.
"""
