"""torch -> ONNX for one graph, then clean-up: constant folding, shape inference, dead-node removal.

Protobuf cannot hold more than 2 GB, so a graph whose weights exceed
``external_data_threshold`` bytes keeps them in ``<file>.data`` beside it.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from stylegen_trt.export.graphs import GraphExport

log = logging.getLogger(__name__)

OPSET = 17
TWO_GB = 2**31 - 1


def _trace_to_onnx(graph: GraphExport, path: Path) -> None:
    spec = graph.spec
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            graph.module.eval(),
            graph.sample_inputs(),
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes(),
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _clean(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_graphsurgeon as gs
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # folding runs ORT; its optimiser notes are noise here
    graph = gs.import_onnx(model)
    try:
        graph.fold_constants()
    except Exception as exc:  # folding is an optimisation: a graph that resists it is still valid
        log.warning("constant folding skipped for %s: %s", model.graph.name, exc)
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def weights_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def export_graph(graph: GraphExport, out_path: Path, external_data_threshold: int = TWO_GB) -> list[Path]:
    """Export ``graph`` to ``out_path`` (plus ``out_path.data`` when large); returns the files written."""
    with tempfile.TemporaryDirectory(prefix="stylegen-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        _trace_to_onnx(graph, raw)
        model = onnx.load(str(raw), load_external_data=True)
    model = _clean(model)
    model.graph.name = graph.spec.name
    large = weights_bytes(model) > external_data_threshold
    if not large:
        model = onnx.shape_inference.infer_shapes(model)
    files = [out_path]
    if large:
        data_name = out_path.name + ".data"
        onnx.save_model(model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        files.append(out_path.with_name(data_name))
        onnx.shape_inference.infer_shapes_path(str(out_path), str(out_path))
    else:
        onnx.save_model(model, str(out_path))
    onnx.checker.check_model(str(out_path))
    return files
