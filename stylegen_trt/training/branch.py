"""Style-branch training, as in the patent: base frozen, self-style S, eps-prediction MSE
(or the base's own target when it was trained for v- or x0-prediction).

For each image: its latent x_0 (frozen VAE), its own style map S (frozen style encoder;
no paired content/style data needed), its caption's encoding c (frozen text encoder,
dropped to "" with probability ``caption_dropout`` so CFG works), a random t and noise;
minimise ||eps - eps_theta(x_t, t, c, S)||^2 over the branch's weights only.

Randomness and resuming. Every random draw of a step (the VAE posterior sample, caption dropout,
noise, t) comes from one seeded CPU ``torch.Generator`` and is then moved to the training device,
whatever that device is. A generator on the device would also work on CUDA, but CUDA's Philox
stream differs from the CPU's, so a run's noise would depend on where it ran and a checkpoint's
generator state could only be restored on the same kind of device. Drawn on the CPU, the noise of
a seed is the same on every device, the checkpoint is portable, and on the CPU nothing moves (the
draws are those of the earlier code, bit for bit). The copy is a few latent-sized tensors per step.

A checkpoint holds the branch, the optimiser, the fp16 loss scaler, that generator, torch's,
numpy's and Python's global generators (nothing here draws from them today: kept so that a module
that does cannot break resuming) and the data stream's position - the stream's ``state_dict()`` if
it has one (``training.data.FolderBatches``), else the number of batches it had given, which a
resumed run skips. So a run stopped after any checkpoint and resumed ends with the same weights, bit
for bit on the CPU, as one that was never stopped (``tests/test_training.py``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from stylegen_trt.models.loaders import BaseModel, save_branch
from stylegen_trt.models.style_branch import ResidualUNet, StyleBranch, resize_style_map
from stylegen_trt.models.style_encoder import StyleEncoder

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, list[str]]  # images (B, 3, H, W) in [0, 1], captions


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 4
    grad_accumulation: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    caption_dropout: float = 0.1
    style_image_size: int = 512
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" (CUDA)
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"


def encode_latents(base: BaseModel, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A sample of the VAE posterior; ``generator`` is a CPU generator (see the module's docstring)."""
    posterior = base.vae.encode(images * 2 - 1).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean.device, posterior.mean.dtype)
    return (posterior.mean + posterior.std * noise) * base.latent_scale


def style_maps(encoder: StyleEncoder, images: torch.Tensor, image_size: int, size: tuple[int, int]) -> torch.Tensor:
    """Self-style S of each image (patent S1-S2), resized to ``size``, the branch's input size."""
    pixels = F.interpolate(images, size=(image_size, image_size), mode="bicubic", align_corners=False).clamp(0, 1)
    return resize_style_map(encoder(pixels), *size)


class BranchTrainer:
    """Holds the frozen parts, the trainable branch and its optimiser; ``step`` does one update."""

    def __init__(self, base: BaseModel, encoder: StyleEncoder, branch: StyleBranch, config: TrainConfig):
        from diffusers import DDPMScheduler

        self.base, self.encoder, self.branch, self.config = base, encoder, branch, config
        for frozen in (base.unet, base.vae, base.text_encoder, encoder):
            frozen.requires_grad_(False).eval()
        self.unet = ResidualUNet(base.unet)
        branch.requires_grad_(True).train()
        branch.empty_context.requires_grad_(False)
        self.noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
        self.optimizer = torch.optim.AdamW([p for p in branch.parameters() if p.requires_grad],
                                           lr=config.learning_rate, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)  # on the CPU, whatever the device
        self.step_count = 0
        self.batches_used = 0  # micro-batches taken from the data stream
        use_cuda = config.device.startswith("cuda")
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision)
        self.scaler = torch.amp.GradScaler("cuda") if use_cuda and config.mixed_precision == "fp16" else None

    def loss(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        base, cfg = self.base, self.config
        with torch.no_grad():
            x0 = encode_latents(base, images, self.generator)
            device = x0.device
            s = style_maps(self.encoder, images, cfg.style_image_size, self.branch.style_map_size(*x0.shape[-2:]))
            # drawn on the CPU in this order (the module's docstring), then moved
            drop = torch.rand(len(captions), generator=self.generator) < cfg.caption_dropout
            context = base.encode_prompts(["" if d else c for c, d in zip(captions, drop.tolist())])
            noise = torch.randn(x0.shape, generator=self.generator).to(device, x0.dtype)
            t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (x0.shape[0],),
                              generator=self.generator).to(device)
            x_t = self.noise_scheduler.add_noise(x0, noise, t)
        with torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            residuals = self.branch(s, t.float(), torch.ones(1, device=device))
            prediction = self.unet(x_t, t.float(), context, *residuals)
        return F.mse_loss(prediction.float(), self.target(x0, noise, t))

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the base UNet predicts: eps for SD 1.x (the patent's loss), v or x0 for bases trained so."""
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(x0, noise, t)
        return x0

    def step(self, batches: Iterator[Batch]) -> float:
        """One optimiser update over ``grad_accumulation`` micro-batches; returns the mean loss."""
        total = 0.0
        for _ in range(self.config.grad_accumulation):
            images, captions = next(batches)
            self.batches_used += 1
            loss = self.loss(images.to(self.config.device), captions) / self.config.grad_accumulation
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.item()
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        return total

    # --- checkpoints: everything a resumed run needs to continue exactly (the module's docstring) ---

    def save_checkpoint(self, path: Path, data_state: dict | None = None) -> None:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if torch.cuda.is_available() and self.config.device.startswith("cuda"):
            rng["cuda"] = torch.cuda.get_rng_state_all()
        tmp = Path(f"{path}.tmp")
        torch.save({"branch": self.branch.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict() if self.scaler else None,
                    "generator": self.generator.get_state(), "global_rng": rng, "step": self.step_count,
                    "batches_used": self.batches_used, "data": data_state, "config": asdict(self.config)}, tmp)
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """Restore from ``path``; returns the checkpoint (its "data" entry is the stream's position)."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        changed = [k for k, v in state.get("config", {}).items()
                   if k not in ("steps", "checkpoint_every", "device") and getattr(self.config, k, v) != v]
        if changed:
            log.warning("resuming %s with other settings than it was started with (%s): the run will not "
                        "match an uninterrupted one", path, ", ".join(changed))
        self.branch.load_state_dict(state["branch"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        rng = state.get("global_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            if "cuda" in rng and torch.cuda.is_available() and self.config.device.startswith("cuda"):
                torch.cuda.set_rng_state_all(rng["cuda"])
        self.step_count = state["step"]
        self.batches_used = state.get("batches_used", self.step_count * self.config.grad_accumulation)
        return state


def _data_state(batches: Iterator[Batch]) -> dict | None:
    return batches.state_dict() if hasattr(batches, "state_dict") else None


def _restore_data_position(batches: Iterator[Batch], state: dict | None, used: int) -> None:
    """Put the data stream where it was at the checkpoint: from its saved state, or by skipping the
    ``used`` batches it had given (exact for any deterministic stream, e.g. the demo's)."""
    if state is not None and hasattr(batches, "load_state_dict"):
        batches.load_state_dict(state)
        return
    if used:
        log.info("skipping the %d batches the data stream gave before the checkpoint", used)
    for _ in range(used):
        next(batches)


def _truncate_loss_log(loss_log: Path, step: int) -> None:
    """Drop the lines of steps after ``step`` (a run cut off after its last checkpoint redoes them)."""
    if not loss_log.is_file():
        return
    lines = loss_log.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] > step:
                break
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a line cut off mid-write
        kept.append(line)
    if len(kept) != len(lines):
        loss_log.write_text("".join(kept))


def train_branch(trainer: BranchTrainer, batches: Iterator[Batch], out_path: Path,
                 on_step: Callable[[int, float], None] | None = None, resume: bool = True) -> Path:
    """Run to ``config.steps``, checkpointing beside ``out_path``; writes the branch safetensors and a loss log."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = out_path.with_suffix(".ckpt")
    loss_log = out_path.with_suffix(".loss.jsonl")
    if resume and checkpoint.is_file():
        state = trainer.load_checkpoint(checkpoint)
        _restore_data_position(batches, state.get("data"), trainer.batches_used)
        _truncate_loss_log(loss_log, trainer.step_count)
        log.info("resumed from %s at step %d", checkpoint, trainer.step_count)
    elif loss_log.exists():
        loss_log.unlink()
    cfg = trainer.config
    start = time.perf_counter()
    with open(loss_log, "a") as log_file:
        while trainer.step_count < cfg.steps:
            loss = trainer.step(batches)
            log_file.write(json.dumps({"step": trainer.step_count, "loss": loss,
                                       "seconds": round(time.perf_counter() - start, 2)}) + "\n")
            if on_step:
                on_step(trainer.step_count, loss)
            if trainer.step_count % cfg.checkpoint_every == 0 or trainer.step_count == cfg.steps:
                log_file.flush()
                trainer.save_checkpoint(checkpoint, _data_state(batches))
    trainer.branch.eval().requires_grad_(False)
    save_branch(trainer.branch, out_path)
    return out_path
