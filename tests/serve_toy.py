"""A toy serve handler for tests/test_serve_infra.py: the Triton plumbing without the pipeline.

infer() answers PNG bytes whose pixels encode the prompt and the number of style images, raises
UserError for the prompt "bad", sleeps when asked (input `steps` = milliseconds), and appends the
size of every batch it gets to the file named by the handler option `batch_log`.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
from PIL import Image

from stylegen_trt.errors import UserError


def toy_png(prompt: str, n_styles: int) -> bytes:
    data = np.frombuffer(prompt.encode().ljust(15, b"\0")[:15] + bytes([n_styles]), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(data.reshape(4, 4)).save(buf, format="PNG")
    return buf.getvalue()


def decode_toy_png(png: bytes) -> tuple[str, int]:
    data = np.asarray(Image.open(io.BytesIO(png))).reshape(-1).tobytes()
    return data[:15].rstrip(b"\0").decode(), data[15]


class ToyHandler:
    def __init__(self, settings) -> None:
        # as the real handler would: a missing bundle fails the model load (tests copy_bundle's path)
        if settings.bundle is not None and not (settings.bundle / "manifest.json").is_file():
            raise UserError(f"no bundle at {settings.bundle}")
        self.batch_log = settings.options().get("batch_log")

    def infer(self, requests: list[dict]) -> list:
        if self.batch_log:
            record = {"size": len(requests), "prompts": [r["prompt"][0].decode() for r in requests],
                      "inputs": [sorted(r) for r in requests],
                      "styles": [len(r.get("style_image", ())) for r in requests]}
            with open(self.batch_log, "a") as f:
                f.write(json.dumps(record) + "\n")
        sleep_ms = max((int(r["steps"][0]) for r in requests if "steps" in r), default=0)
        time.sleep(sleep_ms / 1000)
        out: list = []
        for r in requests:
            prompt = r["prompt"][0].decode()
            if prompt == "bad":
                out.append(UserError("bad prompt: say something else"))
            elif prompt == "crash":
                out.append(ValueError("toy crash\nsecond line"))
            else:
                out.append(toy_png(prompt, len(r.get("style_image", ()))))
        return out

    def close(self) -> None:
        pass
