"""A small client of the `stylegen` model over tritonclient (HTTP or gRPC): what the load generator,
the tests and the README's example use. Any Triton client works the same way; this only builds
the inputs of the contract (serve/contract.py) from Python values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from stylegen_trt.serve.contract import INPUTS, MODEL_NAME

Protocol = Literal["http", "grpc"]
_SPECS = {s.name: s for s in INPUTS}


class StylegenError(Exception):
    """The server refused one request; the message is the one-line reason it gave."""


@dataclass(frozen=True)
class Options:
    """A request's optional inputs; None leaves an input out (the bundle's default applies)."""

    negative: str | None = None
    style_weight: Sequence[float] | None = None
    style_scale: float | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    height: int | None = None
    width: int | None = None
    scheduler: str | None = None


def request_arrays(prompt: str, style_images: Sequence[bytes] = (), options: Options = Options()) -> dict[str, np.ndarray]:
    """Input name -> array with the leading batch dimension (batch 1), as the model's contract has them."""
    arrays = {"prompt": np.array([[prompt.encode()]], dtype=np.object_)}
    if style_images:
        arrays["style_image"] = np.array([list(style_images)], dtype=np.object_)
    for name, value in vars(options).items():
        if value is None:
            continue
        spec = _SPECS[name]
        values = list(value) if name == "style_weight" else [value.encode() if isinstance(value, str) else value]
        arrays[name] = np.array([values], dtype=spec.numpy_dtype)
    return arrays


class StylegenClient:
    """One connection to a server; ``generate`` returns the PNG bytes or raises StylegenError."""

    def __init__(self, url: str, protocol: Protocol = "http", timeout_s: float = 120.0):
        if protocol == "http":
            import tritonclient.http as module

            # network_timeout bounds the wait here; infer's own `timeout` is a server-side limit in microseconds
            self._client = module.InferenceServerClient(url, network_timeout=timeout_s, connection_timeout=timeout_s)
            self._timeout = {}
        else:
            import tritonclient.grpc as module

            self._client = module.InferenceServerClient(url)
            self._timeout = {"client_timeout": timeout_s}
        self._module = module

    def generate(self, prompt: str, style_images: Sequence[bytes] = (), options: Options = Options()) -> bytes:
        from tritonclient.utils import InferenceServerException

        inputs = []
        for name, array in request_arrays(prompt, style_images, options).items():
            tensor = self._module.InferInput(name, list(array.shape), _SPECS[name].dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = self._client.infer(MODEL_NAME, inputs, **self._timeout)
        except InferenceServerException as exc:
            raise StylegenError(exc.message() or str(exc)) from None
        return bytes(result.as_numpy("image")[0, 0])

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready())
        except Exception:  # not up (yet): connection refused and the like
            return False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "StylegenClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
