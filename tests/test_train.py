"""Training: overfits a clip, resumes exactly, runs under torchrun, rejects bad configs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY, make_dataset
from talkmotion.checkpoint import load_model
from talkmotion.config import ConfigError, load
from talkmotion.train import TrainConfig, Trainer, train


def write_config(path, data_dir, out_dir, **extra):
    cfg = {
        "out_dir": str(out_dir), "log_every": 5, "eval_every": 1000, "checkpoint_every": 10,
        "model": TINY,
        "data": {"sources": [{"path": str(data_dir)}], "crop_seconds": 1.5, "augment": {"enabled": False},
                 "workers": 0},
        "optim": {"steps": 20, "batch_size": 4, "warmup_steps": 5, "lr": 3e-3},
        "sampling": {"tf_ramp_steps": 10},
    }
    for key, value in extra.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(json.dumps(cfg))
    return path


def losses(out_dir):
    state = json.loads((out_dir / "config.json").read_text())
    assert state["out_dir"] == str(out_dir)
    from safetensors import safe_open

    with safe_open(str(out_dir / "state.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["talkmotion.train"])
    return [h["loss"] for h in meta["history"] if h["kind"] == "train"]


def test_tiny_model_overfits_one_clip(tmp_path):
    data = make_dataset(tmp_path / "d", count=2, val=1)   # one training clip
    cfg_path = write_config(tmp_path / "c.json", data, tmp_path / "run", **{
        "optim.steps": 150, "optim.batch_size": 2, "sampling.tf_end": 1.0, "loss.velocity_weight": 0.0,
        "model.dropout": 0.0, "optim.ema_decay": 0.9})
    cfg = load(TrainConfig, cfg_path)
    train(cfg)
    history = losses(tmp_path / "run")
    assert history[-1] < 0.03 * history[0]
    assert history[-1] < 0.2


@pytest.mark.parametrize("phone_weight", [0.0, 0.5])
def test_resume_continues_the_same_loss_curve(tmp_path, phone_weight):
    data = make_dataset(tmp_path / "d", count=3)
    # The straight run prepares batches in a loader worker, the interrupted one in-process:
    # the data depend on the step only, so both must match. With the phone loss, the
    # phone classifier's weights must come back too.
    straight = load(TrainConfig, write_config(tmp_path / "a.json", data, tmp_path / "a", **{
        "data.workers": 1, "loss.phone_weight": phone_weight}))
    train(straight)
    halves = load(TrainConfig, write_config(tmp_path / "b.json", data, tmp_path / "b",
                                            **{"loss.phone_weight": phone_weight}))
    Trainer(halves).fit(until=10)        # as if killed right after the step-10 checkpoint
    Trainer(halves).fit()
    np.testing.assert_allclose(losses(tmp_path / "b"), losses(tmp_path / "a"), rtol=1e-5)
    a, b = load_model(tmp_path / "a" / "model.safetensors"), load_model(tmp_path / "b" / "model.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)


def test_autoregressive_mode_trains(tmp_path):
    data = make_dataset(tmp_path / "d", count=3)
    cfg = load(TrainConfig, write_config(tmp_path / "c.json", data, tmp_path / "r", **{
        "sampling.mode": "autoregressive", "optim.steps": 10}))
    last = train(cfg)
    assert np.isfinite(last["loss"])
    assert (tmp_path / "r" / "model.safetensors").exists()


def test_fine_tune_from_checkpoint_keeps_its_dims(tmp_path):
    data = make_dataset(tmp_path / "d", count=3)
    train(load(TrainConfig, write_config(tmp_path / "c.json", data, tmp_path / "base", **{"optim.steps": 5})))
    base = tmp_path / "base" / "model.safetensors"
    cfg = load(TrainConfig, write_config(tmp_path / "f.json", data, tmp_path / "ft", **{"optim.steps": 5}),
               {"init": str(base), "model.d_model": 64})
    train(cfg)
    tuned = load_model(tmp_path / "ft" / "model.safetensors")
    assert tuned.dims.d_model == TINY["d_model"]
    before = load_model(base).state_dict()["decoder.inp.weight"]
    assert not torch.equal(tuned.state_dict()["decoder.inp.weight"], before)


def test_unknown_config_key_names_valid_ones(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nstpes = 10\n')
    with pytest.raises(ConfigError, match="stpes.*valid keys are.*steps"):
        load(TrainConfig, path)


def test_cli_reports_config_errors_in_one_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('bogus = 1\n')
    proc = subprocess.run([sys.executable, "-m", "talkmotion", "train", str(path)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "unknown key(s) bogus" in proc.stderr and "Traceback" not in proc.stderr


def test_torchrun_two_processes(tmp_path):
    data = make_dataset(tmp_path / "d", count=4)
    cfg = write_config(tmp_path / "c.json", data, tmp_path / "ddp", **{"optim.steps": 6, "optim.batch_size": 2,
                                                                     "loss.phone_weight": 0.5})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29533", "-m", "talkmotion", "train", str(cfg)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = load_model(tmp_path / "ddp" / "model.safetensors")
    assert model.header["training"]["world_size"] == 2
    assert model.header["training"]["steps"] == 6


def test_closure_weight_counts_lip_closure_frames_more():
    import torch

    from talkmotion import labels
    from talkmotion.train import LossConfig, masked_loss

    close = labels.index("mouthClose")
    target = torch.zeros(1, 4, labels.NUM_CHANNELS)
    target[0, 1, close] = 0.4                                   # frame 1 closes the lips
    mask, scale = torch.ones_like(target, dtype=torch.bool), torch.ones(labels.NUM_CHANNELS)
    plain = LossConfig(velocity_weight=0.0)
    weighted = LossConfig(velocity_weight=0.0, closure_weight=2.0)

    def loss_with_error_on(frame, cfg):
        pred = target.clone()
        pred[0, frame, labels.index("jawOpen")] += 0.5
        return float(masked_loss(pred, target, mask, scale, cfg))

    assert loss_with_error_on(1, plain) == pytest.approx(loss_with_error_on(2, plain))
    # The same error costs three times as much on the closure frame as on an open one.
    assert loss_with_error_on(1, weighted) == pytest.approx(3 * loss_with_error_on(2, weighted))
    assert loss_with_error_on(2, weighted) < loss_with_error_on(2, plain)   # a weighted mean


@pytest.mark.parametrize("first, then", [(0.0, 0.5), (0.5, 0.0)])
def test_resuming_with_the_phone_loss_switched_is_refused_by_name(tmp_path, first, then):
    """The phone classifier's weights and optimiser state exist in one run and not the other."""
    data = make_dataset(tmp_path / "d", count=3)
    Trainer(load(TrainConfig, write_config(tmp_path / "a.json", data, tmp_path / "run", **{
        "optim.steps": 5, "loss.phone_weight": first}))).fit()
    again = load(TrainConfig, write_config(tmp_path / "b.json", data, tmp_path / "run", **{
        "optim.steps": 10, "loss.phone_weight": then}))
    with pytest.raises(ConfigError, match=r"state.safetensors: cannot resume.*loss.phone_weight"):
        Trainer(again).fit()
    assert len(losses(tmp_path / "run")) == 1         # the saved run is untouched (logged at step 5 only)


def test_batch_phone_targets_match_the_labels_they_came_with(tiny_dataset, tiny_dims):
    """Each audio feature's phone target is the phone under that feature's audio: with speed
    and tempo on, 'aa' where the crop's labels open the jaw and 'sil' where they rest."""
    from talkmotion import labels as channels
    from talkmotion.audio import FPS, SAMPLE_RATE
    from talkmotion.data.augment import AugmentConfig
    from talkmotion.data.dataset import ClipSet, DataConfig, SourceConfig
    from talkmotion.data.phonemes import PHONE_CLASSES

    cfg = DataConfig(sources=(SourceConfig(str(tiny_dataset)),), crop_seconds=1.5,
                     augment=AugmentConfig(speed_prob=1.0, tempo_prob=1.0, noise_prob=0, reverb_prob=0))
    batch = ClipSet(cfg, "train").batch(step=3, rank=0, size=6, dims=tiny_dims, seed=0)
    jaw = batch["labels"][..., channels.index("jawOpen")].numpy()
    phones = batch["phones"].numpy()
    frame = (tiny_dims.feature_centre(np.arange(phones.shape[1])) * FPS // SAMPLE_RATE)
    inside = frame < jaw.shape[1]
    jaw_at_feature = jaw[:, frame[inside]]
    target = phones[:, inside]
    assert (target >= 0).mean() > 0.8
    assert np.mean(target[jaw_at_feature > 0.3] == PHONE_CLASSES.index("aa")) > 0.9
    assert np.mean(target[(jaw_at_feature < 0.01) & (target >= 0)] == PHONE_CLASSES.index("sil")) > 0.9


def test_phone_loss_teaches_the_encoder_and_stays_out_of_the_model(tmp_path):
    data = make_dataset(tmp_path / "d", count=5, val=2)
    cfg = load(TrainConfig, write_config(tmp_path / "c.json", data, tmp_path / "run", **{
        "optim.steps": 60, "eval_every": 60, "loss.phone_weight": 1.0}))
    trainer = Trainer(cfg)
    report = trainer.fit()
    # Two classes here, bursts ('aa') and pauses ('sil'); always guessing the commoner one
    # scores its share of the features with a known phone.
    right, known = 0, 0
    from talkmotion.data.dataset import whole_clip_batch

    for clip in trainer.val_set.clips:
        p = whole_clip_batch(clip, trainer.model.dims)["phones"]
        right, known = right + max(int((p == 0).sum()), int((p > 0).sum())), known + int((p >= 0).sum())
    assert report["phone_accuracy"] > right / known + 0.1
    saved = load_model(tmp_path / "run" / "model.safetensors")
    assert not any("phone" in k for k in saved.state_dict())


@pytest.mark.parametrize("field, value", [("closure_weight", -1.0), ("velocity_weight", -0.5), ("beta", 0.0),
                                          ("phone_weight", -0.1), ("phone_weight", float("nan")),
                                          ("closure_weight", float("inf"))])
def test_loss_weights_out_of_range_are_refused(field, value):
    from talkmotion.config import from_dict
    from talkmotion.train import TrainConfig

    with pytest.raises(ConfigError, match=f"loss.{field} must be"):
        from_dict(TrainConfig, {"loss": {field: value}})


@pytest.mark.parametrize("name", ["default.toml", "finetune_video.toml"])
def test_shipped_configs_load(name):
    from pathlib import Path

    from talkmotion.config import load
    from talkmotion.train import TrainConfig

    cfg = load(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / name)
    assert cfg.data.sources and cfg.optim.steps > 0


def test_default_config_is_the_recipe_of_the_shipped_model():
    """`talkmotion train configs/default.toml` retrains the embedded model: same model, data,
    optimiser, sampling and loss as the run recorded in the model's header."""
    from pathlib import Path

    from talkmotion.assets import DEFAULT_MODEL
    from talkmotion.checkpoint import read_header
    from talkmotion.config import load, to_dict
    from talkmotion.train import TrainConfig

    cfg = to_dict(load(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "default.toml"))
    cfg = json.loads(json.dumps(cfg))                    # tuples as the header's JSON lists
    trained = read_header(DEFAULT_MODEL)["training"]["config"]
    assert cfg["export"] == "talkmotion/assets/default_model.safetensors"
    for section in ("model", "data", "optim", "sampling", "loss", "seed"):
        assert cfg[section] == trained[section], section
    assert read_header(DEFAULT_MODEL)["training"]["steps"] == cfg["optim"]["steps"]
