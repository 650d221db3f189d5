"""The Python-backend models of the repository that repo.py writes (loaded by its model.py files).

`TritonPythonModel` is the core: it hands every request of one Triton batch to the handler in ONE
call (so the handler can batch them) and answers each request on its own: a request the handler
fails gets an error response with a one-line message; its batch-mates still get their images.
`FillModel` turns absent optional inputs into 0-length tensors (see repo.py for why).

Imports only numpy and the standard library at module level: the handler is imported in
initialize(), from the `handler` parameter.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from stylegen_trt.errors import UserError
from stylegen_trt.serve.contract import INPUTS, ServeSettings

try:  # present only inside Triton's Python-backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # tests and tools import this module outside Triton
    pb_utils = None

log = logging.getLogger("stylegen_trt.serve")
FILLED_SUFFIX = "_filled"  # as repo.FILLED_SUFFIX; not imported to keep this module's imports minimal


class _TritonLogHandler(logging.Handler):
    """Routes Python logging into Triton's log (same format and file as the server's own lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            if record.levelno >= logging.ERROR:
                pb_utils.Logger.log_error(msg)
            elif record.levelno >= logging.WARNING:
                pb_utils.Logger.log_warn(msg)
            else:
                pb_utils.Logger.log_info(msg)
        except Exception:  # logging must never take a request down
            self.handleError(record)


def _route_logging() -> None:
    root = logging.getLogger("stylegen_trt")
    if pb_utils is not None and not any(isinstance(h, _TritonLogHandler) for h in root.handlers):
        handler = _TritonLogHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


def settings_from_args(args: dict[str, Any]) -> ServeSettings:
    """ServeSettings from the `parameters` of the model config Triton hands initialize()."""
    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    model_dir = Path(args["model_repository"]) if args.get("model_repository") else None
    return ServeSettings.from_parameters(params, base_dir=model_dir)


def load_handler_class(path: str) -> type:
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot import the serve handler {path!r}: {e}") from None


def one_line(exc: BaseException) -> str:
    """The message a client gets: UserError's own text; anything else short, without internals."""
    if isinstance(exc, UserError):
        text = str(exc).strip()
        return text.splitlines()[0] if text else "bad request"
    detail = str(exc).strip().splitlines()
    return f"internal error ({type(exc).__name__}{': ' + detail[0][:200] if detail else ''})"


def request_inputs(request: Any) -> dict[str, np.ndarray]:
    """One request's inputs, name -> array WITHOUT the batch dimension; absent and 0-length are left out."""
    out: dict[str, np.ndarray] = {}
    for spec in INPUTS:
        tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
        if tensor is None:
            continue
        array = tensor.as_numpy()
        if array.size == 0:
            continue
        if array.ndim < 1 or array.shape[0] != 1:
            raise UserError(f"input {spec.name!r} has batch size {array.shape[0] if array.ndim else 0}: "
                            "send one image per request (batch 1)")
        out[spec.name] = array[0]
    return out


def _triton_error(exc: BaseException) -> Any:
    """A TritonError whose status says whose fault it is (HTTP 400 / INVALID_ARGUMENT for a UserError)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if isinstance(exc, UserError) else "INTERNAL", None)
    try:
        return pb_utils.TritonError(one_line(exc), code) if code is not None else pb_utils.TritonError(one_line(exc))
    except TypeError:  # an older Python backend: message only
        return pb_utils.TritonError(one_line(exc))


class TritonPythonModel:
    """The `stylegen_core` model: Triton batch -> handler.infer(list of dicts) -> one response each."""

    def initialize(self, args: dict[str, Any]) -> None:
        _route_logging()
        self.settings = settings_from_args(args)
        cls = load_handler_class(self.settings.handler)
        self.handler = cls(self.settings)
        log.info("stylegen model instance %s ready (handler %s, max batch %d)", args.get("model_instance_name", "?"),
                 self.settings.handler, self.settings.max_batch)

    def execute(self, requests: list) -> list:
        results: list[Any] = [None] * len(requests)
        batch, where = [], []
        for i, request in enumerate(requests):
            try:
                batch.append(request_inputs(request))
                where.append(i)
            except UserError as e:
                results[i] = e
        if batch:
            try:
                answers = list(self.handler.infer(batch))
                if len(answers) != len(batch):
                    raise RuntimeError(f"handler answered {len(answers)} of {len(batch)} requests")
            except Exception as e:  # a handler bug: every request of the call fails, the server lives on
                log.error("handler failed for a batch of %d: %s", len(batch), one_line(e))
                answers = [e] * len(batch)
            for i, answer in zip(where, answers):
                results[i] = answer
        return [self._response(r) for r in results]

    @staticmethod
    def _response(result: Any) -> Any:
        if isinstance(result, (bytes, bytearray)):
            image = np.array([[bytes(result)]], dtype=np.object_)  # [batch 1, 1]
            return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("image", image)])
        if not isinstance(result, BaseException):
            result = RuntimeError(f"handler returned {type(result).__name__}, not PNG bytes")
        if not isinstance(result, UserError):
            log.error("request failed: %s", one_line(result))  # one line, no traceback
        return pb_utils.InferenceResponse(error=_triton_error(result))

    def finalize(self) -> None:
        close = getattr(getattr(self, "handler", None), "close", None)
        if close is not None:
            close()


class FillModel:
    """The `stylegen_fill` model: each input passes through, or becomes a [1, 0] tensor when absent."""

    def initialize(self, args: dict[str, Any]) -> None:
        _route_logging()

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            given = {spec.name: pb_utils.get_input_tensor_by_name(request, spec.name) for spec in INPUTS}
            present = [t.as_numpy() for t in given.values() if t is not None]
            # the core refuses batch != 1 with a clear message
            batch = present[0].shape[0] if present and present[0].ndim else 1
            tensors = []
            for spec in INPUTS:  # the prompt too: absent, the core answers that it is missing
                tensor = given[spec.name]
                array = tensor.as_numpy() if tensor is not None else np.zeros((batch, 0), dtype=spec.numpy_dtype)
                if array.ndim == 1:  # keep a batch dimension whatever the client sent
                    array = array[None]
                tensors.append(pb_utils.Tensor(spec.name + FILLED_SUFFIX, array.reshape(array.shape[0], -1)))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        pass
