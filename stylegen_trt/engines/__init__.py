"""Engines: one protocol (``base.Engine``), a registry of backends, and the engine cache.

``open_engine`` and ``cache_fields`` are the only entry points call sites use; they look the
backend up here. Backends are imported on first use (TensorRT's bindings are heavy and optional),
and each backend class says its own cache fields. Import graph: this module -> base.py, and
(lazily) -> ort.py / trt.py / openvino.py -> base.py, cache.py: no cycle.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Mapping, Sequence

from stylegen_trt.engines.base import Engine, EngineBase, EngineOptions, graph_files
from stylegen_trt.spec import GraphSpec

# backend name -> "module:class"; a backend class subclasses base.EngineBase
REGISTRY: dict[str, str] = {
    "ort": "stylegen_trt.engines.ort:OrtEngine",
    "trt": "stylegen_trt.engines.trt:TrtEngine",
    "openvino": "stylegen_trt.engines.openvino:OpenVinoEngine",
}


def backend_class(name: str) -> type[EngineBase]:
    """The class of backend ``name`` (imported now if it was not yet)."""
    target = REGISTRY.get(name)
    if target is None:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(REGISTRY)}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def open_engine(onnx_path: Path, spec: GraphSpec, files: str | Mapping[str, str], cache_root: Path | None,
                options: EngineOptions) -> Engine:
    """Open ``onnx_path`` on the backend ``options`` names.

    ``files``: SHA-256 of every file of the graph by name (``<graph>.onnx`` and its external data),
    or the ``.onnx`` file's hash alone for a one-file graph. ``cache_root``: where this bundle's
    engine cache lives (``Bundle.engine_cache_root()``), or None for no cache."""
    cache_root = cache_root if options.cache else None
    return backend_class(options.backend).open(onnx_path, spec, graph_files(onnx_path, files), cache_root, options)


def cache_fields(onnx_path: Path, spec: GraphSpec, files: str | Mapping[str, str], options: EngineOptions) -> dict:
    """The fields whose hash keys the backend's cache entry for a graph (see engines/cache.py)."""
    return backend_class(options.backend).cache_fields(graph_files(onnx_path, files), spec, options)


def link_engines(engines: Sequence[Engine]) -> None:
    """Let the engines of one pipeline share what their backend can share (see ``EngineBase.link``);
    engines of mixed classes are left alone."""
    kinds = {type(e) for e in engines}
    if len(kinds) == 1 and issubclass(next(iter(kinds)), EngineBase):
        next(iter(kinds)).link(list(engines))
