"""The `stylegen` model's contract (names, types, shapes) and the settings a served model carries.

Tests and clients outside the project use these names: change them only with the issue that set them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, get_args, get_type_hints

MODEL_NAME = "stylegen"
# Internal models of the repository (an ensemble `stylegen` = fill -> core); see repo.py for why.
FILL_MODEL_NAME = "stylegen_fill"
CORE_MODEL_NAME = "stylegen_core"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton's name without TYPE_: BYTES, FP32, INT32, INT64
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def config_dtype(self) -> str:
        """The config.pbtxt spelling (BYTES is TYPE_STRING there)."""
        return "TYPE_STRING" if self.dtype == "BYTES" else f"TYPE_{self.dtype}"

    @property
    def numpy_dtype(self) -> str:
        return {"BYTES": "object", "FP32": "float32", "INT32": "int32", "INT64": "int64"}[self.dtype]


INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("prompt", "BYTES", (1,)),
    TensorSpec("negative", "BYTES", (1,), optional=True),
    TensorSpec("style_image", "BYTES", (-1,), optional=True),  # zero or more encoded PNG/JPEG/WebP
    TensorSpec("style_weight", "FP32", (-1,), optional=True),
    TensorSpec("style_scale", "FP32", (1,), optional=True),
    TensorSpec("steps", "INT32", (1,), optional=True),
    TensorSpec("guidance", "FP32", (1,), optional=True),
    TensorSpec("seed", "INT64", (1,), optional=True),
    TensorSpec("height", "INT32", (1,), optional=True),
    TensorSpec("width", "INT32", (1,), optional=True),
    TensorSpec("scheduler", "BYTES", (1,), optional=True),
)
OUTPUTS: tuple[TensorSpec, ...] = (TensorSpec("image", "BYTES", (1,)),)  # the PNG
INPUT_NAMES: tuple[str, ...] = tuple(s.name for s in INPUTS)
OPTIONAL_INPUTS: tuple[TensorSpec, ...] = tuple(s for s in INPUTS if s.optional)

DEFAULT_HANDLER = "stylegen_trt.serve.handler:StylegenHandler"


@dataclass(frozen=True)
class ServeSettings:
    """What one served `stylegen` model is: written into config.pbtxt, read back by every instance."""

    bundle: Optional[Path] = None  # None: the embedded demo bundle
    backend: Literal["ort", "trt"] = "ort"
    device: str = "auto"
    threads: Optional[int] = None
    precision: str = "auto"
    max_batch: int = 8
    max_queue_delay_ms: float = 50.0
    instances: int = 1
    residual_cache_mb: int = 256
    handler: str = DEFAULT_HANDLER  # "module:Class"; tests plug a toy in
    handler_options: tuple[tuple[str, str], ...] = ()  # free key/values for the handler (tests)

    def options(self) -> dict[str, str]:
        return dict(self.handler_options)

    def to_parameters(self) -> dict[str, str]:
        """Flat string parameters (config.pbtxt `parameters` only holds strings)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "handler_options":
                out.update({f"handler.{k}": v for k, v in value})
            else:
                out[f.name] = "" if value is None else str(value)
        return out

    @classmethod
    def from_parameters(cls, params: dict[str, str], base_dir: Optional[Path] = None) -> "ServeSettings":
        """Inverse of to_parameters; a relative bundle path is taken from ``base_dir`` (the model dir)."""
        hints = get_type_hints(cls)
        kwargs: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            if f.name == "handler_options" or f.name not in params:
                continue
            kwargs[f.name] = _parse(hints[f.name], params[f.name])
        bundle = kwargs.get("bundle")
        if isinstance(bundle, Path) and not bundle.is_absolute() and base_dir is not None:
            kwargs["bundle"] = base_dir / bundle
        opts = tuple(sorted((k[len("handler."):], v) for k, v in params.items() if k.startswith("handler.")))
        return cls(**kwargs, handler_options=opts)  # type: ignore[arg-type]


def _parse(hint: object, text: str) -> object:
    args = [a for a in get_args(hint) if a is not type(None)]
    optional = type(None) in get_args(hint)
    if optional and text == "":
        return None
    target = args[0] if optional and len(args) == 1 else hint
    if target is Path:
        return Path(text)
    if target is int:
        return int(text)
    if target is float:
        return float(text)
    return text  # str and Literal[str, ...]


