"""Engine cache: one directory per key under <bundle>/engines/<backend>/<key>/.

The key hashes everything that makes a built artefact valid (source ONNX hash, backend
and version, device, precision/optimisation, shape profile). A cached entry is used only
if its recorded key matches and its files still hash to what was recorded when it was
written - never because a file merely exists. Builders of one key serialise on a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stylegen_trt.files import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

RECORD = "key.json"


def cache_key(fields: dict) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def entry_dir(cache_root: Path, backend: str, fields: dict) -> Path:
    return cache_root / backend / cache_key(fields)


def is_valid(entry: Path, fields: dict) -> bool:
    """True if ``entry`` was completed for exactly ``fields`` and its files are unchanged."""
    try:
        record = json.loads((entry / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if record.get("fields") != fields:
        return False
    for name, digest in record.get("files", {}).items():
        path = entry / name
        if not path.is_file() or sha256_file(path) != digest:
            log.warning("engine cache entry %s has a changed file %s: rebuilding", entry, name)
            return False
    return bool(record.get("files"))


def commit(entry: Path, fields: dict, files: list[str]) -> None:
    """Record a completed entry; written last, so a crash mid-build leaves no valid record."""
    record = {"fields": fields, "files": {name: sha256_file(entry / name) for name in files}}
    atomic_write_bytes(entry / RECORD, json.dumps(record, indent=2).encode())


@contextmanager
def build_lock(entry: Path) -> Iterator[None]:
    entry.mkdir(parents=True, exist_ok=True)
    with open(entry / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
