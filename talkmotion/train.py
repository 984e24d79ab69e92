"""Training: `talkmotion train CONFIG.toml [--init CKPT] [--set key=value ...]`.

A config may train in stages, each fine-tuning the one before (recipe.py).

Read top to bottom: the config, the loss, the objective (the one module training
differentiates), the Trainer (set-up, one step, validation, checkpoints, the loop).

Loss: masked smooth-L1 on normalised labels plus a velocity term; optionally a phone loss
that teaches the audio encoder the phones of clips with timings, and distillation of
Whisper tiny.en's features into the audio encoder (data/teacher.py). The model never hears
its own output (model.py), so a batch is one pass through the model's cached step,
`TalkModel.forward`, the same arithmetic streaming does: no teacher forcing, no
scheduled sampling.

AdamW (no decay on norms, biases and position tables) with warm-up and cosine decay,
gradient clipping, EMA weights (the exported model), bf16 autocast where asked, a
checkpoint every N steps with exact resume (weights, EMA, optimizer, RNG, step — the
data is a function of the step), TensorBoard scalars, validation loss and lip metrics through the
same step. Data-parallel under `torchrun` (gloo on CPU, nccl on GPU). A loss or gradient
that is not finite stops training with an error, the last checkpoint kept.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from . import labels
from .checkpoint import (load_checkpoint, load_training_state, optimizer_state, optimizer_tensors,
                         save_checkpoint, save_training_state)
from .config import ConfigError, to_dict
from .data.augment import HEARING_PROBS
from .data.dataset import ClipSet, DataConfig, StepBatches, has_split, whole_clip_batch
from .data.phonemes import NO_PHONE, PHONE_CLASSES
from .data.teacher import TeacherConfig
from .errors import TalkmotionError
from .files import write_json
from .metrics import summary_metrics
from .model import ModelDims, TalkModel

MOUTH_CLOSE = labels.index("mouthClose")
JAW_OPEN = labels.index("jawOpen")


class TrainingError(TalkmotionError, RuntimeError):
    """Training cannot go on (a non-finite loss); the message says what is kept."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):     # a name too long for the file system, or holding a NUL
        return False


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 4000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01      # AdamW decay of weight matrices (never of norms, biases, position tables)
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05      # cosine decay floor, as a share of lr
    grad_clip: float = 1.0
    ema_decay: float = 0.998
    amp: Literal["auto", "off", "bf16"] = "auto"   # "auto": bf16 autocast on CUDA when supported

    def __post_init__(self):
        _check(self.steps >= 1, f"optim.steps must be at least 1, got {self.steps}")
        _check(self.batch_size >= 1, f"optim.batch_size must be at least 1, got {self.batch_size}")
        _check(_finite(self.lr) and self.lr > 0, f"optim.lr must be a finite number above 0, got {self.lr}")
        _check(_finite(self.weight_decay) and self.weight_decay >= 0,
               f"optim.weight_decay must be a finite number, 0 or more, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, f"optim.warmup_steps must be 0 or more, got {self.warmup_steps}")
        _check(_finite(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1,
               f"optim.min_lr_ratio must be between 0 and 1, got {self.min_lr_ratio}")
        _check(_finite(self.grad_clip) and self.grad_clip > 0,
               f"optim.grad_clip must be a finite number above 0, got {self.grad_clip}")
        _check(_finite(self.ema_decay) and 0 <= self.ema_decay < 1,
               f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class LossConfig:
    beta: float = 0.1               # smooth-L1 transition, in normalised units
    velocity_weight: float = 0.5    # frame-to-frame difference term
    std_floor: float = 0.05         # normalising scale never below this (blendshape units)
    closure_weight: float = 0.0     # extra weight on frames whose target closes the lips (p/b/m):
                                    # rare, short, and what a viewer checks first
    closure_level: float = 0.1      # target mouthClose at or above which a frame counts as a closure
    closure_channels: Literal["all", "mouthClose"] = "all"   # what the closure weight weighs on those
                                    # frames: every channel, or mouthClose alone (which leaves the jaw
                                    # free to follow the vowels around a closure, as it does in speech)
    phone_weight: float = 0.0       # cross-entropy of a phone classifier on the audio features, for
                                    # clips with phone timings: teaches the encoder what is said.
                                    # The classifier exists only in training; models never carry it
    distill_weight: float = 0.0     # squared error of a projection of the audio features against
                                    # Whisper's on the clean clip (data/teacher.py): teaches the encoder
                                    # speech as Whisper hears it. Training only, like the phone head
    aperture_corr_weight: float = 0.0   # 1 - Pearson correlation of lip aperture (jawOpen - mouthClose)
                                    # with the target's over each crop's valid frames: rewards the
                                    # contrast between open and closed frames whatever its scale
    distill_layers: int = 2         # the teacher: Whisper tiny.en's blocks...
    distill_window: int = 64        # ...and the features each attends to

    def __post_init__(self):
        for name in ("beta", "velocity_weight", "std_floor", "closure_weight", "closure_level", "phone_weight",
                     "distill_weight", "aperture_corr_weight"):
            _check(_finite(getattr(self, name)), f"loss.{name} must be a finite number, got {getattr(self, name)}")
        _check(self.distill_layers >= 1 and self.distill_window >= 2,
               f"loss.distill_layers must be at least 1 and distill_window at least 2, got "
               f"{self.distill_layers} and {self.distill_window}")
        for name in ("velocity_weight", "closure_weight", "phone_weight", "distill_weight", "aperture_corr_weight"):
            _check(getattr(self, name) >= 0, f"loss.{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("beta", "std_floor"):
            _check(getattr(self, name) > 0, f"loss.{name} must be above 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    name: str = "talkmotion"
    out_dir: str = "runs/talkmotion"
    seed: int = 0
    threads: int = 0                # torch threads per process; 0 = leave torch's default
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    cached_encoder: bool = False    # a frozen "whisper" encoder's output is read from per-clip caches of
                                    # the clean clip (data/teacher.py) instead of computed every step:
                                    # the trunk runs once per clip, not per crop; speed changes reach
                                    # what the model hears, the other augmentations only as hearings:
    cached_hearings: int = 0        # with cached_encoder: also cache the output for this many degraded
                                    # hearings of each clip (data.augment's timing-keeping transforms:
                                    # voice, room, microphone, line), and read a random one of them or
                                    # the clean clip's for each crop
    init: str = ""                  # fine-tune from this checkpoint (its dims win)
    export: str = ""                # also write the final EMA model here (never over a file, unless...)
    export_overwrite: bool = False  # ...this is set: replacing a shipped model is a deliberate act
    export_fp16: bool = True        # store exported weights as float16 (half the size)
    model: ModelDims = field(default_factory=ModelDims)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        for name in ("log_every", "eval_every", "checkpoint_every"):
            _check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        _check(self.threads >= 0, f"threads must be 0 (torch's default) or more, got {self.threads}")
        _check(not self.init or _is_file(self.init), f"init: no such checkpoint {self.init!r}")
        if self.cached_encoder:
            enc = self.model.encoder
            _check(enc.kind == "whisper" and enc.weights == "tiny.en",
                   "cached_encoder needs model.encoder.kind = \"whisper\" with weights = \"tiny.en\" "
                   f"(the caches are Whisper tiny.en's), got kind {enc.kind!r}"
                   + (f" with weights {enc.weights!r}" if enc.kind == "whisper" else ""))
            _check(not self.loss.distill_weight, "cached_encoder and loss.distill_weight cannot both be on: "
                   "the caches hold the encoder's own output, so there is nothing to distil")
            _check(self.cached_hearings or not self.data.augment.changes_hearing,
                   "with cached_encoder, data.augment's transforms that keep the timing ("
                   + ", ".join(HEARING_PROBS) + ") reach the model only through cached_hearings: "
                   "set cached_hearings, or those probabilities to 0")
        _check(self.cached_hearings >= 0, f"cached_hearings must be 0 or more, got {self.cached_hearings}")
        _check(not self.cached_hearings or (self.cached_encoder and self.data.augment.changes_hearing),
               "cached_hearings needs cached_encoder and data.augment settings that change what is heard")

    def encoder_cache(self) -> TeacherConfig | None:
        """The per-clip caches training reads: the frozen encoder's output (cached_encoder) or
        the distillation teacher's; None when neither is on."""
        if self.cached_encoder:
            return TeacherConfig(self.model.encoder.layers, self.model.encoder.window, self.cached_hearings,
                                 self.data.augment if self.cached_hearings else None)
        if self.loss.distill_weight:
            return TeacherConfig(self.loss.distill_layers, self.loss.distill_window)
        return None


# --- loss -----------------------------------------------------------------------------------

def masked_loss(pred, target, mask, scale, cfg: LossConfig) -> torch.Tensor:
    """Smooth-L1 on (pred - target) / scale where mask, plus the same on frame differences.

    With closure_weight w, frames whose target lips are closed count 1 + w times: all their
    channels, or with closure_channels "mouthClose" that channel alone.
    """
    m = mask.float()
    weighted = m
    if cfg.closure_weight:
        closed = (target[..., MOUTH_CLOSE] >= cfg.closure_level).float()[..., None]   # (B, T, 1)
        if cfg.closure_channels == "mouthClose":
            closed = closed * F.one_hot(torch.tensor(MOUTH_CLOSE), target.shape[-1]).to(closed)
        weighted = m * (1 + cfg.closure_weight * closed)
    err = F.smooth_l1_loss(pred / scale, target / scale, beta=cfg.beta, reduction="none")
    loss = (err * weighted).sum() / weighted.sum().clamp(min=1)
    if cfg.velocity_weight:
        mv = m[:, 1:] * m[:, :-1]
        dp, dt = (pred[:, 1:] - pred[:, :-1]) / scale, (target[:, 1:] - target[:, :-1]) / scale
        verr = F.smooth_l1_loss(dp, dt, beta=cfg.beta, reduction="none")
        loss = loss + cfg.velocity_weight * (verr * mv).sum() / mv.sum().clamp(min=1)
    return loss


APERTURE_MIN_STD = 0.01   # a crop whose target aperture moves less than this has no shape to follow
                          # (speech moves it by about 0.1); also the floor under the predicted spread


def aperture_corr_loss(pred, target, mask) -> torch.Tensor:
    """Mean over crops of 1 - Pearson r between predicted and target lip aperture (jawOpen -
    mouthClose, not floored, so closures below zero still rank) on the frames where both
    channels are valid. Crops whose target aperture is flat (pauses) are left out; 0 if all are."""
    valid = (mask[..., JAW_OPEN] & mask[..., MOUTH_CLOSE]).float()                  # (B, T)
    count = valid.sum(1)

    def centred(values):
        ap = values[..., JAW_OPEN] - values[..., MOUTH_CLOSE]
        mean = (ap * valid).sum(1, keepdim=True) / count.clamp(min=1)[:, None]
        return (ap - mean) * valid

    t = centred(target)
    n = count.clamp(min=1)
    t_var = (t * t).sum(1) / n
    kept = (count >= 2) & (t_var > APERTURE_MIN_STD ** 2)
    if not kept.any():
        return pred.new_zeros(())
    p, t, t_var, n = centred(pred)[kept], t[kept], t_var[kept], n[kept]
    # The floor under the predicted variance keeps the gradient bounded when the prediction is flat.
    r = ((p * t).sum(1) / n) / (((p * p).sum(1) / n + APERTURE_MIN_STD ** 2) * t_var).sqrt()
    return (1 - r).mean()


class PhoneHead(torch.nn.Module):
    """Training-only phone classifier on the audio features (the phone loss); never exported."""

    def __init__(self, d_model: int):
        super().__init__()
        self.linear = torch.nn.Linear(d_model, len(PHONE_CLASSES))

    def _aligned(self, memory, phones):
        """Logits (B, J, K) and targets (B, J): the batch carries targets for at least J features."""
        return self.linear(memory), phones[:, :memory.shape[1]]

    def loss(self, memory: torch.Tensor, phones: torch.Tensor) -> torch.Tensor:
        logits, target = self._aligned(memory, phones)
        if not (target != NO_PHONE).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=NO_PHONE)

    @torch.no_grad()
    def hits(self, memory: torch.Tensor, phones: torch.Tensor) -> tuple[int, int]:
        """(features classified right, features with a known phone)."""
        logits, target = self._aligned(memory, phones)
        known = target != NO_PHONE
        return int(((logits.argmax(-1) == target) & known).sum()), int(known.sum())


class DistillHead(torch.nn.Module):
    """Training-only projection of the audio features onto the teacher's (the distillation
    loss); never exported. Targets are standardised per dimension (Whisper has a few huge ones)."""

    def __init__(self, d_model: int, width: int):
        super().__init__()
        self.linear = torch.nn.Linear(d_model, width)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    @torch.no_grad()
    def fit_to(self, tracks: list[np.ndarray]) -> None:
        sample = np.concatenate([np.asarray(t, np.float32) for t in tracks[:400]])
        self.mean.copy_(torch.from_numpy(sample.mean(0)))
        self.std.copy_(torch.from_numpy(sample.std(0) + 1e-3))

    def loss(self, memory: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """memory (B, J, d); teacher (B, J', width), valid (B, J') with J' >= J."""
        j = memory.shape[1]
        target = (teacher[:, :j].float() - self.mean) / self.std
        err = (self.linear(memory) - target).square().mean(-1)                    # (B, J)
        keep = valid[:, :j].float()
        return (err * keep).sum() / keep.sum().clamp(min=1)


class Objective(torch.nn.Module):
    """The training loss of a batch: everything training differentiates in one module, so
    data-parallel training (DDP wraps this) averages every gradient, the phone head's too."""

    def __init__(self, model: TalkModel, cfg: TrainConfig, teacher_tracks: list[np.ndarray] | None = None):
        """`teacher_tracks`: the training clips' teacher tracks, with the distillation loss on."""
        super().__init__()
        self.model, self.cfg = model, cfg
        self.phone_head = PhoneHead(model.dims.d_model) if cfg.loss.phone_weight else None
        self.distill_head = None
        if cfg.loss.distill_weight:
            self.distill_head = DistillHead(model.dims.d_model, teacher_tracks[0].shape[1])
            self.distill_head.fit_to(teacher_tracks)

    def heads(self) -> dict[str, torch.nn.Module]:
        """The training-only heads that are on, by the name their state is saved under."""
        return {name: head for name, head in (("phone_head", self.phone_head), ("distill_head", self.distill_head))
                if head is not None}

    def forward(self, batch: dict) -> torch.Tensor:
        model = self.model
        with _autocast(self.cfg.optim.amp):
            memory = model.features(batch)
            pred = model(memory, batch["labels"].shape[1])
        loss = masked_loss(pred.float(), batch["labels"], batch["mask"], model.label_std, self.cfg.loss)
        if self.cfg.loss.aperture_corr_weight:
            loss = loss + self.cfg.loss.aperture_corr_weight * aperture_corr_loss(pred.float(), batch["labels"],
                                                                                  batch["mask"])
        if self.phone_head is not None:
            loss = loss + self.cfg.loss.phone_weight * self.phone_head.loss(memory.float(), batch["phones"])
        if self.distill_head is not None:
            loss = loss + self.cfg.loss.distill_weight * self.distill_head.loss(memory.float(), batch["teacher"],
                                                                                batch["teacher_valid"])
        return loss


def _autocast(amp: str):
    on_cuda = torch.cuda.is_available()
    if amp == "bf16" or (amp == "auto" and on_cuda and torch.cuda.is_bf16_supported()):
        return torch.autocast("cuda" if on_cuda else "cpu", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight matrices decay; norms, biases (1-D) and position tables (`*_pos`) do not."""
    decay, keep = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (keep if p.ndim < 2 or name.endswith("_pos") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


# --- the trainer -------------------------------------------------------------------------------

class Trainer:
    def __init__(self, cfg: TrainConfig, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.out = Path(cfg.out_dir)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        data = cfg.data
        self.train_set = ClipSet(data, data.train_split, teacher=cfg.encoder_cache(),
                                 teacher_is_encoder=cfg.cached_encoder)
        validating = data.max_val_clips > 0 and has_split(data, data.val_split)
        self.val_set = ClipSet(data, data.val_split, data.max_val_clips) if validating else None
        self.model = self._fine_tune_start(cfg.init) if cfg.init else self._new_model()
        tracks = [heard[0] for source in self.train_set.tracks for heard in source]     # the clean clips
        self.objective = Objective(self.model, cfg, tracks)
        if world > 1:   # every gradient averaged; DDP starts every rank from rank 0's weights
            from torch.nn.parallel import DistributedDataParallel

            self.step_loss = DistributedDataParallel(self.objective, find_unused_parameters=True)
        else:
            self.step_loss = self.objective
        self.params = [p for p in self.objective.parameters() if p.requires_grad]
        self.optim = torch.optim.AdamW(param_groups(self.objective, cfg.optim.weight_decay), lr=cfg.optim.lr)
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.step = 0
        self.history: list[dict] = []

    def _new_model(self) -> TalkModel:
        model = TalkModel(self.cfg.model, name=self.cfg.name).train()
        mean, std, valid = self.train_set.label_stats()
        model.label_mean.copy_(torch.from_numpy(mean))
        model.label_std.copy_(torch.from_numpy(np.maximum(std, self.cfg.loss.std_floor)))
        model.trained.copy_(torch.from_numpy(valid))
        model.encoder.fit_to(self.train_set.clips)
        # Start the blendshape head at the data mean, so early outputs are plausible.
        blend_mean = torch.from_numpy(np.clip(mean[labels.BLENDSHAPE_SLICE], 1e-3, 1 - 1e-3))
        with torch.no_grad():
            model.decoder.blend_head.bias.copy_(torch.log(blend_mean / (1 - blend_mean)))
        return model

    def _fine_tune_start(self, path: str) -> TalkModel:
        """The checkpoint's model, also learning channels the new data has and it lacked.

        Its normalisation is kept for the channels it knows (the fed-back frames must
        look as they did in training); new channels take the new data's statistics.
        """
        model = load_checkpoint(path).train()
        model.name = self.cfg.name
        mean, std, valid = self.train_set.label_stats()
        new = torch.from_numpy(valid) & ~model.trained
        with torch.no_grad():
            model.label_mean[new] = torch.from_numpy(mean)[new]
            model.label_std[new] = torch.from_numpy(np.maximum(std, self.cfg.loss.std_floor))[new]
            model.trained |= new
        if self.rank == 0:
            added = [c for c, n in zip(labels.CHANNELS, new.tolist()) if n]
            print(f"train: fine-tuning from {path} (its dims are used)"
                  + (f"; also learning {', '.join(added)}" if added else ""))
        return model

    # --- one step ---
    def lr_at(self, step: int) -> float:
        o = self.cfg.optim
        if step < o.warmup_steps:
            return o.lr * (step + 1) / o.warmup_steps
        progress = (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * cosine)

    def train_step(self, batch) -> float:
        for group in self.optim.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = self.step_loss(batch)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        # After DDP's averaging the norm is the same on every rank, so all ranks stop together.
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            saved = self.out / "state.safetensors"
            raise TrainingError(f"step {self.step + 1}: the loss ({loss.item():.4g}) or its gradient "
                                f"({norm.item():.4g}) is not finite; training stopped, "
                                + (f"{saved} keeps the last checkpoint" if saved.exists() else "nothing was saved"))
        self.optim.step()
        with torch.no_grad():
            decay = min(self.cfg.optim.ema_decay, (1 + self.step) / (10 + self.step))
            for k, v in self.model.state_dict().items():
                if v.is_floating_point():
                    self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    self.ema[k].copy_(v)
        self.step += 1
        return loss.item()

    # --- validation ---
    @torch.no_grad()
    def validate(self) -> dict:
        """Loss and lip metrics on whole validation clips, EMA weights, the streaming arithmetic."""
        if self.val_set is None:
            return {}
        model = self.ema_model()
        head = self.objective.phone_head
        losses, preds, phones_right, phones_known = [], [], 0, 0
        for clip in self.val_set.clips:
            batch = whole_clip_batch(clip, model.dims)
            memory = model.features(batch)
            pred = model(memory, batch["labels"].shape[1])
            losses.append(float(masked_loss(pred, batch["labels"], batch["mask"], model.label_std, self.cfg.loss)))
            preds.append(pred[0].numpy())
            if head is not None:
                right, known = head.hits(memory, batch["phones"])
                phones_right, phones_known = phones_right + right, phones_known + known
        report = {"val_loss": float(np.mean(losses))}
        if phones_known:
            report["phone_accuracy"] = phones_right / phones_known
        report.update(summary_metrics(self.val_set.clips, preds))
        return report

    def ema_model(self) -> TalkModel:
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.ema)
        return model.eval()

    # --- checkpoints ---
    def save(self) -> None:
        """Everything needed to continue exactly (weights, EMA, optimizer, RNG, step), and the EMA model."""
        optim = self.optim.state_dict()
        groups = {"model": self.model.state_dict(), "ema": self.ema, "optim": optimizer_tensors(optim["state"]),
                  "rng": {"torch": torch.get_rng_state()}}
        groups.update({name: head.state_dict() for name, head in self.objective.heads().items()})
        record = {"step": self.step, "param_groups": optim["param_groups"], "history": self.history,
                  "config": to_dict(self.cfg)}
        self.out.mkdir(parents=True, exist_ok=True)
        save_training_state(self.out / "state.safetensors", groups, record)
        save_checkpoint(self.out / "model.safetensors", self.ema_model(), self.training_record())

    def resume(self) -> bool:
        path = self.out / "state.safetensors"
        if not path.exists():
            return False
        groups, record = load_training_state(path)
        self._check_resumable(path, record["config"], groups)
        self.model.load_state_dict(groups["model"])
        self.ema = groups["ema"]
        for name, head in self.objective.heads().items():
            head.load_state_dict(groups[name])
        self.optim.load_state_dict({"state": optimizer_state(groups["optim"]), "param_groups": record["param_groups"]})
        torch.set_rng_state(groups["rng"]["torch"])
        self.step, self.history = record["step"], record["history"]
        return True

    def _check_resumable(self, path: Path, saved: dict, groups: dict) -> None:
        """The saved run's parameters must be this run's: same model, same start, the same
        training-only heads (phone and distillation losses on or off alike)."""
        now = to_dict(self.cfg)
        differ = [key for key in ("model", "init") if json.dumps(saved.get(key)) != json.dumps(now[key])]
        for name, weight in (("phone_head", "phone_weight"), ("distill_head", "distill_weight")):
            if (name in groups) != (name in self.objective.heads()):
                differ.append(f"loss.{weight} (on or off)")
        if differ:
            raise ConfigError(f"{path}: cannot resume, the run was started with other {', '.join(differ)}; "
                              f"use the same settings or another out_dir")

    def training_record(self) -> dict:
        return {"steps": self.step, "config": to_dict(self.cfg), "history": self.history[-20:],
                "sources": [s.path for s in self.cfg.data.sources], "world_size": self.world}

    # --- the loop ---
    def fit(self, until: int | None = None) -> dict:
        """Train to `optim.steps` (or stop early at step `until`, as a killed run would)."""
        cfg = self.cfg
        if self.resume() and self.rank == 0:
            print(f"train: resumed {self.out} at step {self.step}")
        if cfg.export and self.step < cfg.optim.steps:   # refuse now, not after hours of training
            self._check_export()
        writer = None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", to_dict(cfg))
            writer = _tensorboard(self.out)
        bar = _progress(self.step, cfg.optim.steps, self.rank)
        last, t0, running = {}, time.time(), []
        last_step = min(cfg.optim.steps, until or cfg.optim.steps)
        batches = StepBatches(self.train_set, self.step, last_step, self.rank, cfg.optim.batch_size,
                              self.model.dims, cfg.seed)
        workers = cfg.data.workers
        for batch in torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers,
                                                 prefetch_factor=4 if workers else None):
            running.append(self.train_step(batch))
            bar.update(1)
            if self.rank != 0:
                continue
            done = self.step == cfg.optim.steps
            if self.step % cfg.log_every == 0 or done:
                last = {"step": self.step, "loss": float(np.mean(running)), "lr": self.lr_at(self.step),
                        "sec": round(time.time() - t0, 1)}
                running = []
                bar.set_postfix(loss=f"{last['loss']:.4f}")
                self._log(last, "train", writer)
            if self.step % cfg.eval_every == 0 or done:
                val = self.validate()
                if val:
                    self._log({"step": self.step, **val}, "val", writer)
                    last.update(val)
            if self.step % cfg.checkpoint_every == 0 or done:
                self.save()
        bar.close()
        if self.rank == 0:
            if not (self.out / "model.safetensors").exists():
                self.save()
            if cfg.export and self.step == cfg.optim.steps:
                self._check_export()
                save_checkpoint(cfg.export, self.ema_model(), self.training_record(),
                                dtype=torch.float16 if cfg.export_fp16 else None)
            if writer:
                writer.close()
        return last

    def _check_export(self) -> None:
        export = self.cfg.export
        _check(self.cfg.export_overwrite or not Path(export).exists(),
               f"export: {export} already exists; set export_overwrite = true to replace it")

    def _log(self, record: dict, kind: str, writer) -> None:
        self.history.append({"kind": kind, **record})
        if writer:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    writer.add_scalar(f"{kind}/{k}", v, record["step"])


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"))


def _progress(start: int, total: int, rank: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, disable=rank != 0, desc="train", unit="step", dynamic_ncols=True)


# --- entry points ------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> dict:
    """Train (or resume) in this process, or in each torchrun process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    try:
        return Trainer(cfg, rank, world).fit()
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_arguments(parser) -> None:
    parser.add_argument("config", help="TOML or JSON training config")
    parser.add_argument("--init", default=None,
                        help="fine-tune from this checkpoint (a staged config then skips its earlier stages)")
    parser.add_argument("--out", default=None, help="run folder (overrides out_dir)")
    parser.add_argument("--steps", type=int, default=None, help="override optim.steps")
    parser.add_argument("--stage", type=int, default=None, metavar="N",
                        help="a staged config: train its stages 1 to N only (talkmotion/recipe.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set optim.lr=1e-3")


def run(args) -> int:
    overrides = parse_sets(args.set)
    if args.init:
        overrides["init"] = args.init
    if args.out:
        overrides["out_dir"] = args.out
    if args.steps is not None:
        overrides["optim.steps"] = args.steps
    from .recipe import train_recipe

    first_rank = int(os.environ.get("RANK", "0")) == 0
    cfg, last = train_recipe(args.config, overrides, train, args.stage, print if first_rank else (lambda line: None))
    if first_rank:
        summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
        print(f"train: done, {summary}; model at {Path(cfg.out_dir) / 'model.safetensors'}")
    return 0
