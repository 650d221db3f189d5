"""Graph contracts as data, shared by export (writes them), the manifest, engines and runtime.

Pure Python: imports neither torch nor NumPy. A dimension is an int (static) or a
string naming a dynamic axis, optionally divided (ceil) or multiplied by a whole number:
``"latent_h"``, ``"latent_h/4"`` (a downsampled skip), ``"latent_h*4"`` (an input the graph
downsamples). Each axis has a min/opt/max range, which is what
ONNX dynamic axes, the runtime's input checks and TensorRT optimisation profiles use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal, Union

Dim = Union[int, str]
DType = Literal["float32", "float16", "int64", "int32"]


@dataclass(frozen=True)
class AxisRange:
    min: int
    opt: int
    max: int

    def __post_init__(self):
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"axis range needs min <= opt <= max, got {self}")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: DType
    dims: tuple[Dim, ...]


@dataclass(frozen=True)
class GraphSpec:
    """One graph's contract: names, dtypes, named dynamic axes and their ranges."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    axes: dict[str, AxisRange] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def shapes(self, point: Literal["min", "opt", "max"]) -> dict[str, tuple[int, ...]]:
        """Every input's concrete shape at one end of the axis ranges (a TensorRT profile row)."""
        values = {name: getattr(r, point) for name, r in self.axes.items()}
        return {t.name: resolve_shape(t.dims, values) for t in self.inputs}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """torch.onnx.export's ``dynamic_axes``: every named dimension, by its own name."""
        out: dict[str, dict[int, str]] = {}
        for t in (*self.inputs, *self.outputs):
            named = {i: d.replace("/", "_").replace("*", "x") for i, d in enumerate(t.dims) if isinstance(d, str)}
            if named:
                out[t.name] = named
        return out

    def to_dict(self) -> dict:
        return {
            "inputs": [asdict(t) | {"dims": list(t.dims)} for t in self.inputs],
            "outputs": [asdict(t) | {"dims": list(t.dims)} for t in self.outputs],
            "axes": {k: asdict(v) for k, v in self.axes.items()},
        }

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "GraphSpec":
        def tensors(items):
            return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["dims"])) for t in items)

        axes = {k: AxisRange(**v) for k, v in d["axes"].items()}
        return cls(name, tensors(d["inputs"]), tensors(d["outputs"]), axes)


def split_dim(dim: str) -> tuple[str, str, int]:
    """``"a"`` -> ("a", "", 1); ``"a/k"`` -> ("a", "/", k); ``"a*k"`` -> ("a", "*", k)."""
    for op in "/*":
        name, found, factor = dim.partition(op)
        if found:
            return name, op, int(factor)
    return dim, "", 1


def resolve_dim(dim: Dim, axes: dict[str, int]) -> int:
    """Concrete size of ``dim`` given axis values; ``"a/k"`` is ceil(a / k), as strided convs give."""
    if isinstance(dim, int):
        return dim
    name, op, factor = split_dim(dim)
    value = axes[name]
    if op == "/":
        return math.ceil(value / factor)
    return value * factor


def resolve_shape(dims: tuple[Dim, ...], axes: dict[str, int]) -> tuple[int, ...]:
    return tuple(resolve_dim(d, axes) for d in dims)


def bind_axes(spec: TensorSpec, shape: tuple[int, ...], axes: dict[str, int]) -> str | None:
    """Check ``shape`` against ``spec`` while learning axis values; returns an error or None."""
    if len(shape) != len(spec.dims):
        return f"{spec.name} has rank {len(shape)}, expected {len(spec.dims)}"
    for size, dim in zip(shape, spec.dims):
        if isinstance(dim, str):
            name, op, factor = split_dim(dim)
            if name not in axes and op != "/":  # "a/k" does not say a; "a*k" does, when k divides
                if size % factor:
                    return f"{spec.name} has shape {tuple(shape)}, expected {spec.dims} (a multiple of {factor})"
                axes[name] = size // factor
        expected = resolve_dim(dim, axes) if (isinstance(dim, int) or split_dim(dim)[0] in axes) else size
        if size != expected:
            return f"{spec.name} has shape {tuple(shape)}, expected {spec.dims}"
    return None


# What the runtime sends the style branch (runtime/pipeline.py calls it; TensorRT's profiles use it as
# their opt shape). RESIDUAL_BUDGET_BYTES: precomputed branch residuals held at once (SD 1.5, 512 px:
# 2 steps). BRANCH_LATENT_PIXELS: rows x latent pixels per branch call - the call's activations
# (self-attention grows with the square of the latent area) must stay near a UNet call's. 4096 = one
# SD 1.5 latent at 512 px: 1 row there, 4 for the small bench model (32x32), 16 for the demo (16x16).
# Measured: 45 rows at 32x32 took the small model's peak RSS from 0.7 to 2.4 GB.
RESIDUAL_BUDGET_BYTES = 64 * 2**20
BRANCH_LATENT_PIXELS = 4096


def branch_chunk(spec: GraphSpec, latent_h: int, latent_w: int, budget_bytes: int = RESIDUAL_BUDGET_BYTES,
                 latent_pixels: int = BRANCH_LATENT_PIXELS) -> int:
    """How many timesteps one branch call takes: the graph's limit, a memory budget for the residuals
    held between calls, and one for the call's own activations."""
    steps_axis = spec.axes.get("branch_steps")
    if steps_axis is None:  # a bundle exported before the branch took a batch of timesteps
        return 1
    axes = {"latent_h": latent_h, "latent_w": latent_w, "branch_steps": 1}
    per_step = sum(4 * math.prod(resolve_shape(o.dims, axes)) for o in spec.outputs)
    return max(1, min(steps_axis.max, budget_bytes // per_step, latent_pixels // (latent_h * latent_w)))
