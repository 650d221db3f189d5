"""Loading the PyTorch parts from local files only, and the seeded ``tiny`` configuration.

- Base model: an SD 1.x directory in diffusers layout (text_encoder, tokenizer, unet,
  vae, scheduler).
- VGG19: torchvision's ImageNet checkpoint file (``vgg19-dcbbb69f.pth``).
- Style branch: safetensors written by ``stylegen-trt train``; absent -> the
  zero-initialised branch, which reproduces plain SD exactly.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from stylegen_trt.errors import UserError
from stylegen_trt.models.style_branch import BranchLayout, StyleBranch, default_stem_stride
from stylegen_trt.models.style_encoder import StyleEncoder, load_vgg_state, random_vgg19_state

log = logging.getLogger(__name__)

SD_SUBFOLDERS = ("text_encoder", "tokenizer", "unet", "vae", "scheduler")
VGG19_FILENAME = "vgg19-dcbbb69f.pth"
BRANCH_FORMAT = "stylegen-trt-branch-v1"


@dataclass
class BaseModel:
    """The frozen SD 1.x parts, in eval mode, float32."""

    tokenizer: object  # transformers CLIPTokenizer
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    source: str

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(self.text_encoder.device), return_dict=False)[0]


def load_base(sd_dir: str | Path) -> BaseModel:
    """Load an SD 1.x diffusers-layout directory, local files only."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = Path(sd_dir)
    if not root.is_dir():
        raise UserError(f"base model directory {root} does not exist: pass --base with a local SD 1.x directory in diffusers layout")
    missing = [name for name in SD_SUBFOLDERS if not (root / name).is_dir()]
    if missing:
        raise UserError(
            f"{root} is not an SD 1.x diffusers directory: missing {', '.join(m + '/' for m in missing)} "
            f"(expected subfolders: {', '.join(SD_SUBFOLDERS)})"
        )
    try:
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(
            root / "text_encoder", local_files_only=True, attn_implementation="eager"
        )
        unet = UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(root / "vae", local_files_only=True)
        scheduler_config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot load the base model from {root}: {exc}".splitlines()[0]) from exc
    for module in (text_encoder, unet, vae):
        module.float().eval().requires_grad_(False)
    return BaseModel(tokenizer, text_encoder, unet, vae, scheduler_config, str(root))


def default_vgg_path() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return torch_home / "hub" / "checkpoints" / VGG19_FILENAME


def load_style_encoder(vgg_path: str | Path | None) -> StyleEncoder:
    """StyleEncoder with torchvision's VGG19 weights from ``vgg_path`` (or torch's hub cache)."""
    path = Path(vgg_path) if vgg_path else default_vgg_path()
    if not path.is_file():
        raise UserError(
            f"VGG19 checkpoint not found at {path}: download torchvision's {VGG19_FILENAME} "
            f"and pass --vgg PATH, or put it in {default_vgg_path().parent}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise UserError(f"{path} is not a readable torch checkpoint: {exc}".splitlines()[0]) from exc
    encoder = StyleEncoder()
    try:
        load_vgg_state(encoder.vgg, state)
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"{path} is not torchvision's VGG19 checkpoint: {exc}".splitlines()[0]) from exc
    return encoder.eval().requires_grad_(False)


def new_branch(base: BaseModel, seed: int = 0, stem_hidden: int = 32, stem_stride: int | None = None,
               layout: BranchLayout = "patent") -> StyleBranch:
    """A zero-initialised branch copied from the base UNet (plain SD until trained).

    ``stem_stride`` None: the one that brings S to the native latent size (1 for SD 1.x at 512 px).
    ``layout``: "patent" (the claim's wiring) or "anchored" (coordinates at the stem + a global code of S).
    """
    torch.manual_seed(seed)  # the stem's random init; the projections are zero anyway
    empty = base.encode_prompts([""])
    if stem_stride is None:
        stem_stride = default_stem_stride(base.native_size // base.vae_scale_factor)
    return StyleBranch(base.unet, empty, stem_hidden, stem_stride, layout).eval().requires_grad_(False)


def save_branch(branch: StyleBranch, path: str | Path) -> None:
    from safetensors.torch import save_file

    meta = {"format": BRANCH_FORMAT, "stem_hidden": str(branch.stem.layers[0].out_channels),
            "stem_stride": str(branch.stem.stride), "layout": branch.layout}
    tmp = Path(f"{path}.tmp")
    save_file({k: v.contiguous() for k, v in branch.state_dict().items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_branch(base: BaseModel, path: str | Path | None, seed: int = 0) -> StyleBranch:
    """Branch weights from safetensors, or the zero-initialised branch when ``path`` is None."""
    if path is None:
        return new_branch(base, seed)
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"branch weights {path} not found: pass the .safetensors written by `stylegen-trt train`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise UserError(f"{path} is not a readable safetensors file: {exc}".splitlines()[0]) from exc
    if meta.get("format") != BRANCH_FORMAT:
        raise UserError(f"{path} is not a stylegen-trt style branch (format {meta.get('format')!r})")
    try:  # files written before the stem could stride have no "stem_stride" (theirs was 1), nor "layout"
        branch = new_branch(base, seed, int(meta.get("stem_hidden", 32)), int(meta.get("stem_stride", 1)),
                            meta.get("layout", "patent"))
    except ValueError as exc:
        raise UserError(f"{path} has a bad branch setting in its metadata: {exc}") from exc
    try:
        branch.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path} does not fit this base model's UNet: {exc}".splitlines()[0]) from exc
    return branch.eval().requires_grad_(False)


# --- the tiny configuration: same classes, small widths, seeded random weights ---------

SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bpe_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges learned on ``words`` until each is one token, most frequent pair first (ties by the pair).

    Learned, not written word by word: BPE encodes by merge rank across the whole word, so a chain of
    merges per word breaks when an earlier word's pair occurs inside it (the first demo tokenizer split
    "stripes" into st-ri-p-e-s because "right" had already claimed r+i). Encoding replays training's order,
    so every word comes out whole (``write_clip_tokenizer`` checks it).
    """
    pieces = {word: list(word[:-1]) + [word[-1] + "</w>"] for word in dict.fromkeys(words)}
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for parts in pieces.values():
            for pair in zip(parts, parts[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for word, parts in pieces.items():
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            pieces[word] = merged


def write_clip_tokenizer(out_dir: Path, words: list[str], max_length: int = 77) -> None:
    """A byte-level CLIP BPE tokenizer that reads each of ``words`` as one token.

    Same format as SD's tokenizer/ folder (vocab.json, merges.txt), so the real
    loader and converter are what the tiny model exercises.
    """
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = bpe_merges(words)
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    for word in words:  # BPE's encoding loop: the lowest-ranked adjacent pair first
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            rank, i = min((ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(parts, parts[1:])))
            if rank == len(ranks):
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 1:
            raise ValueError(f"tokenizer: {word!r} encodes as {parts}, not one token")
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": max_length, "pad_token": "<|endoftext|>", "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }))


TINY_WORDS = ["a", "an", "the", "of", "and", "in", "on", "cat", "dog", "red", "blue", "green",
              "circle", "square", "triangle", "painting", "photo", "style", "small", "large"]


def make_tiny_sd(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a seeded, random-weight SD 1.x-shaped model in diffusers layout (for tests and CI).

    4 down blocks with 2 layers each, like SD 1.x, so the branch has the same 13 residuals;
    8x8 latents, 64x64 images.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = Path(out_dir)
    write_clip_tokenizer(root / "tokenizer", TINY_WORDS)
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 32, 64, 64), norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(16, 16, 32, 32), norm_num_groups=8, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    return save_sd_dir(root, text_encoder, unet, vae)


TEXT_MODEL_PREFIX = "text_model."


def save_text_encoder(text_encoder, directory: Path) -> None:
    """``save_pretrained`` with SD 1.x's own key names (``text_model.*``): transformers 5.x writes the keys
    without that prefix, which older transformers (e.g. the one optimum-intel pins) silently skip, loading
    random weights instead. Every version reads the prefixed names, as they read real SD checkpoints."""
    from safetensors.torch import load_file, save_file

    text_encoder.save_pretrained(directory, max_shard_size="100GB")  # one file
    weights = directory / "model.safetensors"
    state = load_file(weights)
    if not all(k.startswith(TEXT_MODEL_PREFIX) for k in state):
        save_file({k if k.startswith(TEXT_MODEL_PREFIX) else TEXT_MODEL_PREFIX + k: v.contiguous()
                   for k, v in state.items()}, weights, metadata={"format": "pt"})


def save_sd_dir(root: Path, text_encoder, unet, vae) -> Path:
    """Write the model parts beside an existing tokenizer/ as an SD 1.x diffusers-layout directory."""
    save_text_encoder(text_encoder, root / "text_encoder")
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG, indent=2))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None],
    }, indent=2))
    return root


def make_tiny_vgg(path: str | Path, seed: int = 0) -> Path:
    """A seeded random VGG19 checkpoint in torchvision's key layout (blocks 1-4)."""
    path = Path(path)
    torch.save(random_vgg19_state(seed), path)
    return path
