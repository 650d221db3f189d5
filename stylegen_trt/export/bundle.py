"""Write a bundle directory: five ONNX graphs, tokenizer.json and manifest.json.

The bundle is assembled in a temporary sibling directory and renamed into place,
so an interrupted export never leaves a half-written bundle at ``out_dir``.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable

from stylegen_trt.errors import UserError
from stylegen_trt.export.graphs import GRAPH_NAMES, ExportLimits, build_graphs
from stylegen_trt.export.onnx_export import OPSET, TWO_GB, export_graph
from stylegen_trt.files import MANIFEST_NAME, SCHEMA_VERSION, sha256_file
from stylegen_trt.models.loaders import BaseModel
from stylegen_trt.models.style_branch import StyleBranch
from stylegen_trt.models.style_encoder import STYLE_MAP_SIZE, StyleEncoder

log = logging.getLogger(__name__)

DEFAULTS = {"scheduler": "ddpm", "steps": 50, "guidance": 7.5, "style_scale": 1.0}  # the patent's DDPM-50
TOOLS = ("stylegen-trt", "torch", "diffusers", "transformers", "onnx", "onnxruntime", "onnx-graphsurgeon", "tokenizers")


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _prepare_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} exists and is not a directory: choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise UserError(f"{out_dir} is a non-empty directory that is not a bundle: choose another --out")


def export_bundle(
    base: BaseModel,
    style_encoder: StyleEncoder,
    branch: StyleBranch,
    out_dir: str | Path,
    limits: ExportLimits | None = None,
    *,
    external_data_threshold: int = TWO_GB,
    description: dict | None = None,
    defaults: dict | None = None,
    on_graph: Callable[[str], None] | None = None,
) -> Path:
    """Export every graph of the style-guided model into a new bundle at ``out_dir`` (replacing one there)."""
    out_dir = Path(out_dir)
    _prepare_target(out_dir)
    limits = limits or ExportLimits.for_base(base)
    graphs = build_graphs(base, style_encoder, branch, limits)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        files: list[Path] = []
        graph_entries = {}
        for name in GRAPH_NAMES:
            if on_graph:
                on_graph(name)
            written = export_graph(graphs[name], staging / f"{name}.onnx", external_data_threshold)
            files += written
            graph_entries[name] = {"file": written[0].name, "external_data": [p.name for p in written[1:]],
                                   **graphs[name].spec.to_dict()}
        tokenizer_path = staging / "tokenizer.json"
        base.tokenizer.backend_tokenizer.save(str(tokenizer_path))
        files.append(tokenizer_path)

        tok = base.tokenizer
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "model_family": "sd1",
            "description": description or {"kind": "custom", "base": base.source},
            "graphs": graph_entries,
            "files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files},
            "tokenizer": {"file": "tokenizer.json", "max_length": int(tok.model_max_length),
                          "bos_id": int(tok.bos_token_id), "eos_id": int(tok.eos_token_id),
                          "pad_id": int(tok.pad_token_id)},
            "scheduler": {k: v for k, v in base.scheduler_config.items()},
            "latent": {"channels": int(base.unet.config.in_channels), "scale": base.latent_scale,
                       "vae_scale_factor": base.vae_scale_factor},
            "sizes": {"native": limits.native_size, "min": limits.min_size, "max": limits.max_size,
                      "multiple": 8, "max_images": limits.max_images},
            "style": {"image_size": limits.style_image_size, "map_size": STYLE_MAP_SIZE,
                      "max_styles": limits.max_styles, "resize": "adaptive_avg_pool"},
            "defaults": {**DEFAULTS, **(defaults or {})},
            "opset": OPSET,
            "tool_versions": tool_versions(),
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle written to %s", out_dir)
    return out_dir


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
