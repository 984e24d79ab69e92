"""Training: `talkmotion train CONFIG.toml [--init CKPT] [--set key=value ...]`.

Masked smooth-L1 on normalised labels plus a velocity term; optionally a phone loss
that teaches the audio encoder the phones of clips with timings. Scheduled sampling two
ways (config `sampling.mode`):
  autoregressive  the seed's loop: frame by frame through the KV-cached step, each
                  frame fed the ground truth with probability p, else the model's own
                  previous output;
  parallel        two passes: a teacher-forced pass predicts every frame at once, then
                  a second pass is fed the ground truth with probability p, else those
                  predictions. Much faster per step; same idea.
p falls from `tf_start` to `tf_end` over `tf_ramp_steps`.

AdamW with warm-up and cosine decay, gradient clipping, EMA weights (the exported
model), mixed precision where the device has it, a checkpoint every N steps with
exact resume (weights, EMA, optimizer, RNG, step — the data is a function of the
step), TensorBoard scalars, validation loss and lip metrics. Data-parallel under
`torchrun` (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import labels
from .checkpoint import load_model, save_model
from .config import ConfigError, load as load_config, to_dict
from .data.dataset import ClipSet, DataConfig, StepBatches, whole_clip_batch
from .data.phonemes import NO_PHONE, PHONE_CLASSES
from .files import atomic_path, write_json
from .metrics import summary_metrics
from .model import ModelDims, TalkModel, shift_previous

MOUTH_CLOSE = labels.index("mouthClose")


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 4000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05      # cosine decay floor, as a share of lr
    grad_clip: float = 1.0
    ema_decay: float = 0.998
    amp: str = "auto"               # "auto": bf16 autocast on CUDA when supported; "off"; "bf16"


@dataclass(frozen=True)
class SamplingConfig:
    mode: str = "parallel"          # "parallel" (two-pass) or "autoregressive" (the seed's loop)
    tf_start: float = 1.0           # teacher-forcing probability at step 0
    tf_end: float = 0.2             # ... after tf_ramp_steps (the seed's published model used 0.2)
    tf_ramp_steps: int = 2000


@dataclass(frozen=True)
class LossConfig:
    beta: float = 0.1               # smooth-L1 transition, in normalised units
    velocity_weight: float = 0.5    # frame-to-frame difference term
    std_floor: float = 0.05         # normalising scale never below this (blendshape units)
    closure_weight: float = 0.0     # extra weight on frames whose target closes the lips (p/b/m):
                                    # rare, short, and what a viewer checks first
    closure_level: float = 0.1      # target mouthClose at or above which a frame counts as a closure
    phone_weight: float = 0.0       # cross-entropy of a phone classifier on the audio features, for
                                    # clips with phone timings: teaches the encoder what is said.
                                    # The classifier exists only in training; models never carry it

    def __post_init__(self):
        for name in ("beta", "velocity_weight", "std_floor", "closure_weight", "closure_level", "phone_weight"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"loss.{name} must be a finite number, got {getattr(self, name)}")
        for name in ("velocity_weight", "closure_weight", "phone_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("beta", "std_floor"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"loss.{name} must be above 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    name: str = "talkmotion"
    out_dir: str = "runs/talkmotion"
    seed: int = 0
    threads: int = 0                # torch threads per process; 0 = leave torch's default
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    init: str = ""                  # fine-tune from this checkpoint (its dims win)
    export: str = ""                # also write the final EMA model here (e.g. the default model path)
    export_fp16: bool = True        # store exported weights as float16 (half the size)
    model: ModelDims = field(default_factory=ModelDims)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    loss: LossConfig = field(default_factory=LossConfig)


# --- loss and scheduled sampling -----------------------------------------------------------

def masked_loss(pred, target, mask, scale, cfg: LossConfig) -> torch.Tensor:
    """Smooth-L1 on (pred - target) / scale where mask, plus the same on frame differences.

    With closure_weight w, frames whose target lips are closed count 1 + w times.
    """
    m = mask.float()
    weighted = m
    if cfg.closure_weight:
        closed = (target[..., MOUTH_CLOSE] >= cfg.closure_level).float()[..., None]   # (B, T, 1)
        weighted = m * (1 + cfg.closure_weight * closed)
    err = F.smooth_l1_loss(pred / scale, target / scale, beta=cfg.beta, reduction="none")
    loss = (err * weighted).sum() / weighted.sum().clamp(min=1)
    if cfg.velocity_weight:
        mv = m[:, 1:] * m[:, :-1]
        dp, dt = (pred[:, 1:] - pred[:, :-1]) / scale, (target[:, 1:] - target[:, :-1]) / scale
        verr = F.smooth_l1_loss(dp, dt, beta=cfg.beta, reduction="none")
        loss = loss + cfg.velocity_weight * (verr * mv).sum() / mv.sum().clamp(min=1)
    return loss


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


def teacher_forcing(step: int, cfg: SamplingConfig) -> float:
    ramp = min(1.0, step / max(1, cfg.tf_ramp_steps))
    return cfg.tf_start + (cfg.tf_end - cfg.tf_start) * ramp


def parallel_pass(model: TalkModel, memory, targets, p_tf: float, gen: torch.Generator):
    """Two-pass scheduled sampling: (B, T, C) predictions with gradients."""
    prev_gt = shift_previous(targets)
    with torch.no_grad():
        first = model(prev_gt, memory.detach())
    use_gt = torch.rand(targets.shape[:2] + (1,), generator=gen) < p_tf
    return model(torch.where(use_gt, prev_gt, shift_previous(first)), memory)


def autoregressive_pass(model: TalkModel, memory, targets, p_tf: float, gen: torch.Generator):
    """The seed's loop: frame by frame through the cached step, feeding truth or own output."""
    d = model.dims
    b, t, c = targets.shape
    kv = model.decoder.memory_kv(memory)                                   # (L, B, H, J, 2*dh)
    cache = kv.new_zeros(d.n_layers, b, d.n_heads, d.self_window - 1, kv.shape[-1])
    cache_valid = torch.zeros(b, d.self_window - 1, dtype=torch.bool)
    prev = torch.zeros(b, 1, c)
    outputs = []
    for i in range(t):
        last = int(d.last_feature_for_frame(i))
        idx = torch.arange(last - d.audio_window + 1, last + 1)
        valid = (idx >= 0).expand(b, -1)
        window = kv[:, :, :, idx.clamp(min=0)]
        out, cache = model.decoder.step(model.normalise(prev), window, valid, cache, cache_valid)
        out = model.finish(out)
        cache_valid = torch.cat([cache_valid[:, 1:], torch.ones(b, 1, dtype=torch.bool)], dim=1)
        outputs.append(out)
        use_gt = torch.rand(b, 1, 1, generator=gen) < p_tf
        prev = torch.where(use_gt, targets[:, i:i + 1], out)
    return torch.cat(outputs, dim=1)


# --- the loop --------------------------------------------------------------------------------

class Trainer:
    def __init__(self, cfg: TrainConfig, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.out = Path(cfg.out_dir)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.train_set = ClipSet(cfg.data, cfg.data.train_split)
        self.val_set = self._val_set()
        self.model = self._build_model()
        self.phone_head = PhoneHead(self.model.dims.d_model) if cfg.loss.phone_weight else None
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.ddp = self._wrap_ddp()
        self.params = list(self.model.parameters()) + (list(self.phone_head.parameters()) if self.phone_head else [])
        self.optim = torch.optim.AdamW(self.params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.step = 0
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
        self.writer = None
        self.history: list[dict] = []

    def _val_set(self):
        try:
            return ClipSet(self.cfg.data, self.cfg.data.val_split, limit=self.cfg.data.max_val_clips)
        except ValueError:
            return None

    def _build_model(self) -> TalkModel:
        cfg = self.cfg
        if cfg.init:
            return self._fine_tune_start(cfg.init)
        model = TalkModel(cfg.model).train()
        mean, std, valid = self.train_set.label_stats()
        model.label_mean.copy_(torch.from_numpy(mean))
        model.label_std.copy_(torch.from_numpy(np.maximum(std, cfg.loss.std_floor)))
        model.trained.copy_(torch.from_numpy(valid))
        if cfg.model.encoder == "mel":
            mel_mean, mel_std = self.train_set.mel_stats()
            model.encoder.mel_mean.copy_(torch.from_numpy(mel_mean))
            model.encoder.mel_std.copy_(torch.from_numpy(mel_std))
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
        model = load_model(path).train()
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

    def _wrap_ddp(self):
        if self.world == 1:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        for buf in self.model.buffers():   # same normalisation everywhere: rank 0's
            torch.distributed.broadcast(buf, 0)
        for p in self.phone_head.parameters() if self.phone_head else ():   # outside DDP: same start
            torch.distributed.broadcast(p.data, 0)
        return DistributedDataParallel(self.model, find_unused_parameters=True)

    # --- one step ---
    def lr_at(self, step: int) -> float:
        o = self.cfg.optim
        if step < o.warmup_steps:
            return o.lr * (step + 1) / o.warmup_steps
        progress = (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * cosine)

    def loss_on(self, batch, p_tf: float) -> torch.Tensor:
        model = self.model
        scale = model.label_std
        targets = torch.where(batch["mask"], batch["labels"], model.label_mean)
        with self._autocast():
            memory = model.audio_features(batch["pcm"], batch["mel"])
            if self.cfg.sampling.mode == "parallel":
                pred = parallel_pass(self.ddp, memory, targets, p_tf, self.gen)
            elif self.cfg.sampling.mode == "autoregressive":
                pred = autoregressive_pass(model, memory, targets, p_tf, self.gen)
            else:
                raise ConfigError(f"sampling.mode must be 'parallel' or 'autoregressive', "
                                  f"not {self.cfg.sampling.mode!r}")
        loss = masked_loss(pred.float(), batch["labels"], batch["mask"], scale, self.cfg.loss)
        if self.phone_head is not None:
            loss = loss + self.cfg.loss.phone_weight * self.phone_head.loss(memory.float(), batch["phones"])
        return loss

    def _autocast(self):
        amp = self.cfg.optim.amp
        on_cuda = torch.cuda.is_available()
        if amp == "bf16" or (amp == "auto" and on_cuda and torch.cuda.is_bf16_supported()):
            return torch.autocast("cuda" if on_cuda else "cpu", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def batches(self, last: int):
        """Batches for steps self.step .. last-1, prepared ahead by loader workers."""
        cfg = self.cfg
        steps = StepBatches(self.train_set, self.step, last, self.rank, cfg.optim.batch_size, self.model.dims,
                            cfg.seed)
        workers = cfg.data.workers
        return iter(torch.utils.data.DataLoader(steps, batch_size=None, num_workers=workers,
                                                prefetch_factor=4 if workers else None,
                                                persistent_workers=False))

    def train_step(self, batch) -> float:
        cfg = self.cfg
        for group in self.optim.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = self.loss_on(batch, teacher_forcing(self.step, cfg.sampling))
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self._average_phone_head_grads()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
        self.optim.step()
        self._update_ema()
        self.step += 1
        return loss.item()

    def _average_phone_head_grads(self) -> None:
        """DDP averages the model's gradients; the phone head lives outside it."""
        if self.world == 1 or self.phone_head is None:
            return
        for p in self.phone_head.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world

    @torch.no_grad()
    def _update_ema(self):
        decay = min(self.cfg.optim.ema_decay, (1 + self.step) / (10 + self.step))
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.ema[k].copy_(v)

    # --- validation ---
    @torch.no_grad()
    def validate(self) -> dict:
        """Free-running (no teacher forcing) loss and lip metrics on validation clips, EMA weights."""
        if self.val_set is None:
            return {}
        model = self.ema_model()
        losses, preds, phones_right, phones_known = [], [], 0, 0
        clips = self.val_set.clips
        for clip in clips:
            batch = whole_clip_batch(clip, model.dims)
            memory = model.audio_features(batch["pcm"], batch["mel"])
            pred = autoregressive_pass(model, memory, batch["labels"], 0.0, self.gen)
            losses.append(float(masked_loss(pred, batch["labels"], batch["mask"], model.label_std,
                                            self.cfg.loss)))
            preds.append(pred[0].numpy())
            if self.phone_head is not None:
                right, known = self.phone_head.hits(memory, batch["phones"])
                phones_right, phones_known = phones_right + right, phones_known + known
        report = {"val_loss": float(np.mean(losses))}
        if phones_known:
            report["phone_accuracy"] = phones_right / phones_known
        report.update(summary_metrics(clips, preds))
        return report

    def ema_model(self) -> TalkModel:
        model = TalkModel(self.model.dims)
        model.load_state_dict(self.ema)
        model.name = self.cfg.name
        return model.eval()

    # --- checkpoints ---
    def save_state(self) -> None:
        """Everything needed to continue exactly: weights, EMA, optimizer, RNG, step."""
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.contiguous() for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{k}": v.contiguous() for k, v in self.ema.items()})
        optim_state = self.optim.state_dict()
        for i, st in optim_state["state"].items():
            for name, value in st.items():
                tensors[f"optim.{i}.{name}"] = torch.as_tensor(value).contiguous()
        if self.phone_head is not None:
            tensors.update({f"phone_head.{k}": v.contiguous() for k, v in self.phone_head.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.gen"] = self.gen.get_state()
        meta = {"step": self.step, "param_groups": optim_state["param_groups"], "history": self.history,
                "config": to_dict(self.cfg)}
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "state.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"talkmotion.train": json.dumps(meta)})
        save_model(self.out / "model.safetensors", self.ema_model(), self.cfg.name, self.training_record())

    def load_state(self) -> bool:
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = self.out / "state.safetensors"
        if not path.exists():
            return False
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["talkmotion.train"])
        self._check_resumable(path, meta["config"])
        t = load_file(str(path))
        self.model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        self.ema = {k[4:]: v for k, v in t.items() if k.startswith("ema.")}
        head = {k[11:]: v for k, v in t.items() if k.startswith("phone_head.")}
        if self.phone_head is not None and head:
            self.phone_head.load_state_dict(head)
        state: dict = {}
        for k, v in t.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        self.optim.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(t["rng.torch"])
        self.gen.set_state(t["rng.gen"])
        self.step, self.history = meta["step"], meta["history"]
        return True

    def _check_resumable(self, path: Path, saved: dict) -> None:
        """The saved run's parameters must be this run's: same model, same start, phone loss on or off alike."""
        now = to_dict(self.cfg)
        differ = [key for key in ("model", "init") if json.dumps(saved.get(key)) != json.dumps(now[key])]
        if (saved.get("loss", {}).get("phone_weight", 0) > 0) != (self.phone_head is not None):
            differ.append("loss.phone_weight (on or off)")
        if differ:
            raise ConfigError(f"{path}: cannot resume, the run was started with other {', '.join(differ)}; "
                              f"use the same settings or another out_dir")

    def training_record(self) -> dict:
        return {"steps": self.step, "config": to_dict(self.cfg), "history": self.history[-20:],
                "sources": [s.path for s in self.cfg.data.sources], "world_size": self.world}

    # --- run ---
    def fit(self, until: int | None = None) -> dict:
        """Train to `optim.steps` (or stop early at step `until`, as a killed run would)."""
        cfg = self.cfg
        if self.load_state() and self.rank == 0:
            print(f"train: resumed {self.out} at step {self.step}")
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", to_dict(cfg))
            self.writer = _tensorboard(self.out)
        bar = _progress(self.step, cfg.optim.steps, self.rank)
        last = {}
        t0, running = time.time(), []
        last_step = min(cfg.optim.steps, until or cfg.optim.steps)
        for batch in self.batches(last_step):
            running.append(self.train_step(batch))
            bar.update(1)
            if self.rank != 0:
                continue
            if self.step % cfg.log_every == 0 or self.step == cfg.optim.steps:
                last = {"step": self.step, "loss": float(np.mean(running)), "lr": self.lr_at(self.step),
                        "tf": teacher_forcing(self.step, cfg.sampling), "sec": round(time.time() - t0, 1)}
                running = []
                bar.set_postfix(loss=f"{last['loss']:.4f}")
                self._log(last, "train")
            if self.step % cfg.eval_every == 0 or self.step == cfg.optim.steps:
                val = self.validate()
                if val:
                    self._log({"step": self.step, **val}, "val")
                    last.update(val)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.optim.steps:
                self.save_state()
        bar.close()
        if self.rank == 0:
            if not (self.out / "model.safetensors").exists():
                self.save_state()
            if cfg.export:
                dtype = torch.float16 if cfg.export_fp16 else None
                save_model(cfg.export, self.ema_model(), cfg.name, self.training_record(), dtype=dtype)
            if self.writer:
                self.writer.close()
        return last

    def _log(self, record: dict, kind: str) -> None:
        self.history.append({"kind": kind, **record})
        if self.writer:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{kind}/{k}", v, record["step"])


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
    parser.add_argument("--init", default=None, help="fine-tune from this checkpoint")
    parser.add_argument("--out", default=None, help="run folder (overrides out_dir)")
    parser.add_argument("--steps", type=int, default=None, help="override optim.steps")
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
    cfg = load_config(TrainConfig, args.config, overrides)
    last = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
        print(f"train: done, {summary}; model at {Path(cfg.out_dir) / 'model.safetensors'}")
    return 0


