"""The models a benchmark runs: seeded random-weight configs (built, exported and cached once) or a user's own.

- ``tiny``: exactly the seeded tiny model of the tests (``loaders.make_tiny_sd``), 64 px.
- ``small`` (default): SD-shaped, UNet (64, 128, 256, 256), 32x32 latent = 256 px, 4-layer CLIP text 256.
- ``sd15``: SD-1.5-size, random weights: UNet (320, 640, 1280, 1280) with cross-attention 768,
  12-layer CLIP text 768 with SD's 49408-token embedding, VAE (128, 256, 512, 512), 512 px -> 64x64.

Each is written in diffusers layout (``save_pretrained``), given a seeded VGG19 and a style branch
whose output projections are random (an untrained branch's zero projections would make the style
path compute nothing visible), exported with ``export_bundle`` and kept under
``<cache>/bench/<config>-<key>/``; the key hashes the config and the versions of the tools that
shape the files, so a repeated run reuses the bundle and its optimised ORT graphs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from stylegen_trt.errors import UserError

log = logging.getLogger(__name__)

BUILD_FORMAT = 2  # bump when the files a config builds change (2: text encoder keys as text_model.*)
DONE = "done.json"
VOCAB_SD = 49408  # SD 1.x's CLIP token embedding rows (memory and load time like the real model)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    unet_channels: tuple[int, ...]
    cross_attention_dim: int  # = text hidden size
    attention_heads: int  # diffusers' ``attention_head_dim``, which SD 1.x uses as the head count
    norm_groups: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    vocab_size: int | None  # None: the test tokenizer's vocabulary
    vae_channels: tuple[int, ...]
    vae_layers: int
    vae_norm_groups: int
    latent: int  # native latent side; images are 8x that
    style_image_size: int
    seed: int = 0
    branch_seed: int = 1
    note: str = ""

    @property
    def native_size(self) -> int:
        return self.latent * 8


CONFIGS = {
    # Mirrors loaders.make_tiny_sd (which builds it); listed here for the report and the cache key.
    "tiny": ModelConfig("tiny", (32, 32, 64, 64), 32, 4, 8, 2, 4, 64, None, (16, 16, 32, 32), 1, 8, 8, 64,
                        note="the seeded tiny test model (loaders.make_tiny_sd), 64 px"),
    "small": ModelConfig("small", (64, 128, 256, 256), 256, 8, 32, 4, 4, 1024, None, (32, 64, 128, 128), 2, 32,
                         32, 256, note="SD-shaped, random weights, 256 px"),
    "sd15": ModelConfig("sd15", (320, 640, 1280, 1280), 768, 8, 32, 12, 12, 3072, VOCAB_SD, (128, 256, 512, 512),
                        2, 32, 64, 512, note="SD-1.5-size, random weights, 512 px"),
}


@dataclass(frozen=True)
class BenchModel:
    """Both sides of a benchmark: a bundle and the PyTorch source it was exported from."""

    name: str  # a config name, or "custom"
    bundle: Path
    base: Path
    vgg: Path | None  # None: torch's hub cache, as `export` does
    branch: Path | None  # None: the zero-initialised branch
    built: bool = False  # True when this run built it (rather than reusing the cache)


def default_cache_root() -> Path:
    env = os.environ.get("STYLEGEN_TRT_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stylegen-trt"
    return base / "bench"


def cache_key(config: ModelConfig) -> str:
    tools = {}
    for name in ("stylegen-trt", "torch", "diffusers", "transformers", "onnx"):
        try:
            tools[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            tools[name] = "absent"
    blob = json.dumps({"config": asdict(config), "tools": tools, "format": BUILD_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def text_encoder_config(config: ModelConfig, tokenizer):
    from transformers import CLIPTextConfig

    dim = config.cross_attention_dim
    return CLIPTextConfig(
        vocab_size=config.vocab_size or len(tokenizer), hidden_size=dim, intermediate_size=config.text_intermediate,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads, max_position_embeddings=77,
        projection_dim=dim, hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def unet_kwargs(config: ModelConfig) -> dict:
    """diffusers ``UNet2DConditionModel`` arguments; its default block types are SD 1.x's."""
    return dict(sample_size=config.latent, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=config.unet_channels, norm_num_groups=config.norm_groups,
                cross_attention_dim=config.cross_attention_dim, attention_head_dim=config.attention_heads)


def vae_kwargs(config: ModelConfig) -> dict:
    blocks = len(config.vae_channels)
    return dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=config.vae_layers,
                block_out_channels=config.vae_channels, norm_num_groups=config.vae_norm_groups,
                sample_size=config.native_size, down_block_types=("DownEncoderBlock2D",) * blocks,
                up_block_types=("UpDecoderBlock2D",) * blocks)


def make_random_sd(config: ModelConfig, out_dir: Path) -> Path:
    """Write a seeded random-weight SD 1.x-shaped model of ``config`` in diffusers layout."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from stylegen_trt.models import loaders

    if config.name == "tiny":
        return loaders.make_tiny_sd(out_dir, config.seed)
    root = Path(out_dir)
    loaders.write_clip_tokenizer(root / "tokenizer", loaders.TINY_WORDS)
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    torch.manual_seed(config.seed)
    # One module at a time, saved and dropped: the SD-1.5-size build then peaks near the UNet's size.
    return loaders.save_sd_dir(root, CLIPTextModel(text_encoder_config(config, tokenizer)),
                               UNet2DConditionModel(**unet_kwargs(config)), AutoencoderKL(**vae_kwargs(config)))


def build(config: ModelConfig, out_dir: Path) -> None:
    """sd/, vgg19.pth, branch.safetensors and bundle/ for ``config`` in ``out_dir``."""
    from stylegen_trt.export.bundle import export_bundle
    from stylegen_trt.export.graphs import ExportLimits
    from stylegen_trt.models import loaders, style_branch

    log.info("building the %s model (random weights) in %s", config.name, out_dir)
    sd_dir = make_random_sd(config, out_dir / "sd")
    vgg = loaders.make_tiny_vgg(out_dir / "vgg19.pth", config.seed)
    base = loaders.load_base(sd_dir)
    encoder = loaders.load_style_encoder(vgg)
    branch = style_branch.randomise_projections(loaders.load_branch(base, None, config.seed), config.branch_seed)
    loaders.save_branch(branch, out_dir / "branch.safetensors")
    log.info("exporting the %s bundle", config.name)
    description = {"kind": f"bench-{config.name}", "base": f"{config.name}: random weights ({config.note})",
                   "vgg": "seeded random VGG19", "branch": "random output projections"}
    export_bundle(base, encoder, branch, out_dir / "bundle", ExportLimits.for_base(base, config.style_image_size),
                  description=description)


def prepare(name: str, cache_root: Path | None = None) -> BenchModel:
    """The cached build of config ``name``, building it first if absent (atomically: build, then rename)."""
    if name not in CONFIGS:
        raise UserError(f"unknown --config {name!r}: choose one of {', '.join(CONFIGS)}")
    config = CONFIGS[name]
    root = cache_root or default_cache_root()
    target = root / f"{name}-{cache_key(config)}"
    built = False
    if not (target / DONE).is_file():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
        try:
            build(config, staging)
            (staging / DONE).write_text(json.dumps({"config": asdict(config)}, indent=2))
            if target.exists():  # a half-built leftover (no DONE) or a concurrent build
                shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            built = True
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    else:
        log.info("reusing the cached %s model in %s", name, target)
    return BenchModel(name, target / "bundle", target / "sd", target / "vgg19.pth", target / "branch.safetensors",
                      built)


DEMO_NOTE = "the shipped demo model (trained here), 32 px; its PyTorch files from `python -m stylegen_trt.demo.train --work`"


def custom(bundle: Path, base: Path, vgg: Path | None, branch: Path | None) -> BenchModel:
    """A user's bundle and its PyTorch files; named ``demo`` when the bundle is the demo model."""
    try:
        kind = json.loads((bundle / "manifest.json").read_text()).get("description", {}).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError):
        kind = None
    return BenchModel("demo" if kind == "demo" else "custom", bundle, base, vgg, branch)


def describe(model: BenchModel) -> dict:
    """The model's shapes as read from its files (so a user's own model is described the same way)."""
    def read(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    unet = read(model.base / "unet" / "config.json")
    text = read(model.base / "text_encoder" / "config.json")
    vae = read(model.base / "vae" / "config.json")
    manifest = read(model.bundle / "manifest.json")
    files = manifest.get("files", {})
    return {
        "name": model.name,
        "note": CONFIGS[model.name].note if model.name in CONFIGS else DEMO_NOTE if model.name == "demo" else "user model",
        "bundle": str(model.bundle), "base": str(model.base),
        "vgg": str(model.vgg) if model.vgg else "torch hub cache",
        "branch": str(model.branch) if model.branch else "zero-initialised",
        "unet_block_out_channels": unet.get("block_out_channels"),
        "cross_attention_dim": unet.get("cross_attention_dim"),
        "text_hidden": text.get("hidden_size"), "text_layers": text.get("num_hidden_layers"),
        "text_vocab": text.get("vocab_size"),
        "vae_block_out_channels": vae.get("block_out_channels"),
        "native_size": manifest.get("sizes", {}).get("native"),
        "style_image_size": manifest.get("style", {}).get("image_size"),
        "bundle_mb": round(sum(f.get("bytes", 0) for f in files.values()) / 2**20, 1),
    }
