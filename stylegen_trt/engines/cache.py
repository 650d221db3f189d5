"""Engine cache: one directory per key under <cache root>/<backend>/<key>/.

The cache root is <bundle>/engines when the bundle's directory is writable, else (and always for the
demo bundle shipped inside the package) a directory under the user cache root named after the bundle
and its identity, so a read-only bundle (site-packages, a mounted model volume) works on every backend
and two bundles never share a root.

The key hashes everything that makes a built artefact valid (every source file's hash, backend
and version, device, precision/build recipe, shape profile). A cached entry is used only if its
recorded key matches and its files are unchanged since they were written - checked by content hash,
or by a (size, mtime, ctime, inode) stamp recorded beside the hash, so opening a cached engine does
not re-read a multi-GB plan every time. Builders of one key serialise on a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stylegen_trt.files import atomic_write_bytes, sha256_file, user_cache_root

log = logging.getLogger(__name__)

RECORD = "key.json"


def cache_key(fields: dict) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def entry_dir(cache_root: Path, backend: str, fields: dict) -> Path:
    return cache_root / backend / cache_key(fields)


def writable(directory: Path) -> bool:
    """Whether new files can be made in ``directory`` (or, if it does not exist, in its nearest existing
    ancestor). os.access honours read-only mounts; for root it ignores permission bits, as the kernel does."""
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def cache_root_for(bundle_dir: Path, identity: str, embedded: bool = False) -> Path:
    """Where a bundle's engines are cached: <bundle>/engines if that can be written and the bundle is not
    the one shipped inside the package, else <user cache root>/engines/<bundle name>-<identity>."""
    beside = bundle_dir / "engines"
    if not embedded and writable(beside):
        return beside
    return user_cache_root() / "engines" / f"{bundle_dir.name}-{identity[:16]}"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def is_valid(entry: Path, fields: dict) -> bool:
    """True if ``entry`` was completed for exactly ``fields`` and its files are unchanged.

    A file whose stamp is as recorded is taken as unchanged without reading it; any other is
    hashed, and if its hash still matches, its new stamp is recorded (when the entry is writable)."""
    try:
        record = json.loads((entry / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if record.get("fields") != fields or not record.get("files"):
        return False
    stamps = record.get("stamps", {})
    restamped = False
    for name, digest in record["files"].items():
        path = entry / name
        if not path.is_file():
            return False
        stamp = _stamp(path)
        if stamps.get(name) == stamp:
            continue
        if sha256_file(path) != digest:
            log.warning("engine cache entry %s has a changed file %s: rebuilding", entry, name)
            return False
        stamps[name] = stamp
        restamped = True
    if restamped:  # e.g. an entry copied from elsewhere: hash once, then trust the stamp
        try:
            atomic_write_bytes(entry / RECORD, json.dumps({**record, "stamps": stamps}, indent=2).encode())
        except OSError:
            pass  # read-only entry: hash again next time
    return True


def commit(entry: Path, fields: dict, files: list[str]) -> None:
    """Record a completed entry; written last, so a crash mid-build leaves no valid record."""
    record = {"fields": fields, "files": {name: sha256_file(entry / name) for name in files},
              "stamps": {name: _stamp(entry / name) for name in files}}
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


def processor_name() -> str:
    """The CPU's model name: CPU backends' compiled graphs may use layouts and kernels specific to it."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
