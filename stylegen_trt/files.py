"""File helpers shared by every stage: content hashes and atomic writes (temp file + rename)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def user_cache_root() -> Path:
    """The user's cache directory for stylegen-trt: $STYLEGEN_TRT_CACHE, else $XDG_CACHE_HOME/stylegen-trt,
    else ~/.cache/stylegen-trt (style maps under styles/, engines of read-only bundles under engines/)."""
    env = os.environ.get("STYLEGEN_TRT_CACHE")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stylegen-trt"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent/old or complete, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
