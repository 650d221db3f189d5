"""FLOPs of an ONNX graph at concrete input shapes: 2 x multiply-accumulates of Conv, Gemm and MatMul.

Only these three ops are counted: they are where a diffusion UNet spends its arithmetic,
and their cost is exact given shapes. Bias adds, norms, softmax and elementwise ops are not
counted, so the figure is a slight under-count (the usual convention for "achieved FLOP/s").
Shapes come from shape inference after the graph's dynamic inputs are pinned to concrete
sizes: ONNX Runtime's symbolic shape inference (ONNX's own inference plus value propagation
through Shape -> Gather -> Slice/Range/Reshape chains, which traced diffusers and CLIP graphs
are full of; plain ``onnx.shape_inference`` leaves most of their MatMuls unshaped), falling
back to ``onnx.shape_inference`` if it fails. Nodes still unshaped are listed, not guessed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

log = logging.getLogger(__name__)

COUNTED_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class FlopCount:
    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    nodes: int = 0  # counted nodes
    unresolved: tuple[str, ...] = ()  # nodes of a counted op whose shapes inference could not give

    @property
    def complete(self) -> bool:
        return not self.unresolved


def _attr(node, name: str, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def conv_flops(w: Sequence[int], y: Sequence[int]) -> int:
    """2 * N * C_out * prod(output spatial) * (C_in / group) * prod(kernel); ``w`` is (C_out, C_in/group, k...)."""
    return 2 * y[0] * w[0] * math.prod(y[2:]) * w[1] * math.prod(w[2:])


def matmul_flops(a: Sequence[int], y: Sequence[int]) -> int:
    """numpy.matmul semantics: 2 * prod(output) * K; prod(output) is batch x M x N (1-D operands drop M or N)."""
    return 2 * math.prod(y) * a[-1]


def gemm_flops(a: Sequence[int], y: Sequence[int], trans_a: int) -> int:
    """Y (M, N) = op(A) (M, K) op(B) (K, N): 2 * M * N * K."""
    k = a[0] if trans_a else a[1]
    return 2 * y[0] * y[1] * k


def _shape_table(model) -> dict[str, tuple[int, ...] | None]:
    table: dict[str, tuple[int, ...] | None] = {}

    def dims(type_proto):
        if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
            return None
        out = []
        for d in type_proto.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                return None
            out.append(int(d.dim_value))
        return tuple(out)

    g = model.graph
    for vi in (*g.input, *g.value_info, *g.output):
        table[vi.name] = dims(vi.type)
    for init in g.initializer:
        table[init.name] = tuple(int(d) for d in init.dims)
    for node in g.node:  # Constant nodes carry their own shapes
        if node.op_type == "Constant":
            value = _attr(node, "value", None)
            if value is not None:
                table[node.output[0]] = tuple(int(d) for d in value.dims)
    return table


def pin_inputs(model, shapes: Mapping[str, Sequence[int]]):
    """A copy of ``model`` whose graph inputs have the given concrete shapes and no stale value_info."""
    import onnx

    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    del pinned.graph.value_info[:]
    for inp in pinned.graph.input:
        if inp.name not in shapes:
            continue
        shape = list(shapes[inp.name])
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ValueError(f"input {inp.name} has rank {len(dims)}, got shape {shape}")
        for d, value in zip(dims, shape):
            d.Clear()
            d.dim_value = int(value)
    return pinned


def infer_shapes(model):
    from onnx import shape_inference

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as exc:  # any failure there: ONNX's inference still shapes most Convs
        log.warning("symbolic shape inference failed (%s); using onnx.shape_inference", exc)
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def count_model_flops(model, input_shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """FLOPs of one run of an in-memory ONNX model (weights may be left external) at ``input_shapes``."""
    inferred = infer_shapes(pin_inputs(model, input_shapes))
    shapes = _shape_table(inferred)
    total, by_op, counted, unresolved = 0, {op: 0 for op in COUNTED_OPS}, 0, []
    for node in inferred.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        ins = [shapes.get(name) for name in node.input[:2]]
        out = shapes.get(node.output[0])
        if any(s is None for s in ins) or out is None:
            unresolved.append(node.name or node.output[0])
            continue
        if node.op_type == "Conv":
            flops = conv_flops(ins[1], out)
        elif node.op_type == "MatMul":
            flops = matmul_flops(ins[0], out)
        else:
            flops = gemm_flops(ins[0], out, _attr(node, "transA", 0))
        by_op[node.op_type] += flops
        total += flops
        counted += 1
    if unresolved:
        log.warning("%d Conv/Gemm/MatMul nodes have no inferred shapes; their FLOPs are not counted",
                    len(unresolved))
    return FlopCount(total, by_op, counted, tuple(unresolved))


def count_onnx_flops(path: str | Path, input_shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """As ``count_model_flops`` for a file. Of the external weight data only small tensors are
    loaded (constants that shape inference may fold); weights' shapes are in the graph."""
    import numpy as np
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if uses_external_data(tensor) and int(np.prod(tensor.dims)) <= SMALL_TENSOR_ELEMENTS:
            load_external_data_for_tensor(tensor, str(Path(path).parent))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
    return count_model_flops(model, input_shapes)


SMALL_TENSOR_ELEMENTS = 65536  # biases and norms: a few MB in all
