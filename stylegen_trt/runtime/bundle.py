"""Reading a bundle: manifest, graph contracts, file integrity, and opening its engines."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from stylegen_trt.engines import cache as engine_cache
from stylegen_trt.engines import open_engine
from stylegen_trt.engines.base import Engine, EngineOptions
from stylegen_trt.errors import UserError
from stylegen_trt.files import MANIFEST_NAME, SCHEMA_VERSION, atomic_write_bytes, sha256_file
from stylegen_trt.spec import GraphSpec

log = logging.getLogger(__name__)

GRAPH_NAMES = ("text_encoder", "style_encoder", "style_branch", "unet", "vae_decoder")
SECTIONS = ("graphs", "files", "tokenizer", "scheduler", "latent", "sizes", "style", "defaults", "tool_versions")
VERIFIED_STAMP = ".verified.json"  # (size, mtime) of files whose hash was checked, to skip re-hashing


@dataclass(frozen=True)
class BuiltEngine:
    entry: Path  # the cache entry directory
    reused: bool  # valid before: nothing was built
    seconds: float


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict

    @property
    def graphs(self) -> dict[str, GraphSpec]:
        return {name: GraphSpec.from_dict(name, g) for name, g in self.manifest["graphs"].items()}

    @property
    def is_demo(self) -> bool:
        return self.manifest.get("description", {}).get("kind") == "demo"

    def graph_path(self, name: str) -> Path:
        return self.path / self.manifest["graphs"][name]["file"]

    @property
    def is_embedded(self) -> bool:
        """The bundle shipped inside the installed package (its engines never go into site-packages)."""
        package = Path(__file__).resolve().parent.parent
        return self.path.resolve().is_relative_to(package)

    @property
    def identity(self) -> str:
        """SHA-256 of the manifest (which holds every file's hash): names this bundle's engine cache
        when it lives under the user cache root."""
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()

    def graph_files(self, name: str) -> dict[str, str]:
        """SHA-256 of every file of graph ``name``: ``<graph>.onnx`` first, then its external data."""
        entry = self.manifest["graphs"][name]
        names = [entry["file"], *entry.get("external_data", [])]
        return {n: self.manifest["files"][n]["sha256"] for n in names}

    def engine_cache_root(self) -> Path:
        """<bundle>/engines, or a directory under the user cache root for a read-only or embedded bundle."""
        return engine_cache.cache_root_for(self.path, self.identity, embedded=self.is_embedded)

    def build_engine(self, name: str, options: EngineOptions) -> "BuiltEngine":
        """Fill graph ``name``'s engine cache entry for ``options`` (reusing a valid one), as `build` does
        ahead of time; a cache that cannot be written is a UserError."""
        from stylegen_trt.engines import cache_fields

        root = self.engine_cache_root()
        fields = cache_fields(self.graph_path(name), self.graphs[name], self.graph_files(name), options)
        entry = engine_cache.entry_dir(root, options.backend, fields)
        reused = engine_cache.is_valid(entry, fields)
        start = time.perf_counter()
        self.open_engine(name, options).close()
        if not engine_cache.is_valid(entry, fields):
            raise UserError(f"could not write the engine cache under {root}: set STYLEGEN_TRT_CACHE to a writable "
                            "directory")
        return BuiltEngine(entry, reused, time.perf_counter() - start)

    def open_engine(self, name: str, options: EngineOptions) -> Engine:
        root = self.engine_cache_root() if options.cache else None
        return open_engine(self.graph_path(name), self.graphs[name], self.graph_files(name), root, options)


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle; every problem is a UserError that says what to do."""
    root = Path(path)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise UserError(f"bundle {root} does not exist: pass --bundle with a directory made by `stylegen-trt export`")
    if not manifest_path.is_file():
        raise UserError(f"{root} is not a bundle (no {MANIFEST_NAME}): re-run `stylegen-trt export`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{manifest_path} is not valid JSON ({exc}): re-run `stylegen-trt export`") from exc
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise UserError(f"{root} has bundle schema {version!r}; this stylegen-trt reads schema {SCHEMA_VERSION}: re-export it")
    bad_sections = [k for k in SECTIONS if not isinstance(manifest.get(k), dict)]
    if bad_sections:
        raise UserError(f"{manifest_path} is corrupt: no valid {', '.join(bad_sections)} section: re-run `stylegen-trt export`")
    missing_graphs = [g for g in GRAPH_NAMES if not isinstance(manifest["graphs"].get(g), dict)]
    if missing_graphs:
        raise UserError(f"{root} is incomplete: its manifest lacks {', '.join(missing_graphs)}: re-run `stylegen-trt export`")
    files = manifest["files"]
    unlisted = [g for g in GRAPH_NAMES if manifest["graphs"][g].get("file") not in files]
    if unlisted:
        raise UserError(f"{manifest_path} is corrupt: the files of {', '.join(unlisted)} have no SHA-256 entry: "
                        "re-run `stylegen-trt export`")
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise UserError(f"{root} is incomplete: {', '.join(sorted(missing))} missing: re-run `stylegen-trt export`")
    if verify:
        verify_files(root, files)
    return Bundle(root, manifest)


def verify_files(root: Path, files: dict) -> None:
    """Check every file against its manifest SHA-256 (skipping files unchanged since last verified)."""
    stamp_path = root / VERIFIED_STAMP
    try:
        stamps = json.loads(stamp_path.read_text())
    except (OSError, json.JSONDecodeError):
        stamps = {}
    fresh = {}
    for name, entry in files.items():
        st = (root / name).stat()
        key = [st.st_size, st.st_mtime_ns, st.st_ino, entry["sha256"]]
        if stamps.get(name) != key:
            if st.st_size != entry.get("bytes", st.st_size) or sha256_file(root / name) != entry["sha256"]:
                raise UserError(f"{root / name} does not match its SHA-256 in the manifest (modified or corrupt): "
                                "re-run `stylegen-trt export`")
        fresh[name] = key
    if fresh != stamps:
        try:
            atomic_write_bytes(stamp_path, json.dumps(fresh).encode())
        except OSError:
            pass  # read-only bundle: verify again next time


def describe_bundle(b: Bundle) -> str:
    """What `stylegen-trt info` prints: kind, sizes, defaults, each graph's contract, files, tools."""
    m = b.manifest
    desc = m.get("description", {})
    lines = [f"bundle {b.path}", f"  kind: {desc.get('kind', '?')}" +
             ("  (the DEMO model: tiny, trained on procedural shapes and textures only)" if b.is_demo else "")]
    lines += [f"  {key}: {desc[key]}" for key in ("base", "vgg", "branch", "note") if key in desc]
    s = m["sizes"]
    lines.append(f"  sizes: native {s['native']}, {s['min']}..{s['max']} in multiples of {s['multiple']}; "
                 f"up to {s['max_images']} images")
    lines.append(f"  style images resized to {m['style']['image_size']}px; S is {m['style']['map_size']}x{m['style']['map_size']}")
    lat = m["latent"]
    lines.append(f"  latents: {lat['channels']} channels, VAE factor {lat['vae_scale_factor']} "
                 f"(generate --latents: x_T of shape (n, {lat['channels']}, H/{lat['vae_scale_factor']}, "
                 f"W/{lat['vae_scale_factor']}))")
    lines.append(f"  defaults: {json.dumps(m['defaults'])}")
    for name, spec in b.graphs.items():
        lines.append(f"  graph {name}:")
        lines += [f"    in  {t.name} {t.dtype} {list(t.dims)}" for t in spec.inputs]
        lines += [f"    out {t.name} {t.dtype} {list(t.dims)}" for t in spec.outputs[:3]]
        if len(spec.outputs) > 3:
            lines.append(f"    ... {len(spec.outputs) - 3} more outputs")
        lines += [f"    axis {axis}: min {r.min} opt {r.opt} max {r.max}" for axis, r in spec.axes.items()]
    lines += [f"  file {name}: {f['bytes'] / 2**20:.1f} MiB sha256 {f['sha256'][:16]}..." for name, f in m["files"].items()]
    lines.append(f"  tools: {json.dumps(m['tool_versions'])}")
    return "\n".join(lines)
