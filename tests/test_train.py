"""Training: overfits a clip, resumes exactly, runs under torchrun, rejects bad configs."""

import json
import os
import re
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, make_dataset
from talkmotion.checkpoint import load_checkpoint, read_header
from talkmotion.config import ConfigError, load
from talkmotion.errors import TalkmotionError
from talkmotion.model import stream_timing
from talkmotion.train import TrainConfig, Trainer, TrainingError, train

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py


def write_config(path, data_dir, out_dir, **extra):
    cfg = {
        "out_dir": str(out_dir), "log_every": 5, "eval_every": 1000, "checkpoint_every": 10,
        "model": TINY,
        "data": {"sources": [{"path": str(data_dir)}], "crop_seconds": 1.5, "augment": {"enabled": False},
                 "workers": 0},
        "optim": {"steps": 20, "batch_size": 4, "warmup_steps": 5, "lr": 3e-3},
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
        "optim.steps": 150, "optim.batch_size": 2, "loss.velocity_weight": 0.0,
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
    a, b = load_checkpoint(tmp_path / "a" / "model.safetensors"), load_checkpoint(tmp_path / "b" / "model.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)


def test_fine_tune_from_checkpoint_keeps_its_dims(tmp_path):
    data = make_dataset(tmp_path / "d", count=3)
    train(load(TrainConfig, write_config(tmp_path / "c.json", data, tmp_path / "base", **{"optim.steps": 5})))
    base = tmp_path / "base" / "model.safetensors"
    cfg = load(TrainConfig, write_config(tmp_path / "f.json", data, tmp_path / "ft", **{"optim.steps": 5}),
               {"init": str(base), "model.d_model": 64})
    train(cfg)
    tuned = load_checkpoint(tmp_path / "ft" / "model.safetensors")
    assert tuned.dims.d_model == TINY["d_model"]
    before = load_checkpoint(base).state_dict()["decoder.inp.weight"]
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


def torchrun(*args, port: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_torchrun_two_processes(tmp_path):
    data = make_dataset(tmp_path / "d", count=4)
    cfg = write_config(tmp_path / "c.json", data, tmp_path / "ddp", **{"optim.steps": 6, "optim.batch_size": 2,
                                                                     "loss.phone_weight": 0.5})
    proc = torchrun("-m", "talkmotion", "train", cfg, port=29533)
    assert proc.returncode == 0, proc.stderr[-2000:]
    training = read_header(tmp_path / "ddp" / "model.safetensors")["training"]
    assert training["world_size"] == 2 and training["steps"] == 6


def test_data_parallel_processes_end_with_equal_weights(tmp_path):
    """Each process trains on other crops; only averaged gradients keep their weights equal
    (a training mode that once ran outside DDP drifted apart by 0.017 in 4 steps)."""
    data = make_dataset(tmp_path / "d", count=4)
    cfg = write_config(tmp_path / "c.json", data, tmp_path / "ddp", **{
        "optim.steps": 4, "optim.batch_size": 2, "loss.phone_weight": 0.5})
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = torchrun(worker, cfg, port=29534)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = [load_file(str(tmp_path / "ddp" / f"rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and any(k.startswith("phone_head.") for k in ranks[0])
    for key, value in ranks[0].items():
        torch.testing.assert_close(value, ranks[1][key], rtol=0, atol=1e-6, msg=key)
    start = Trainer(load(TrainConfig, cfg)).objective.state_dict()   # the same seed builds the same start
    moved = [k for k, v in start.items() if v.is_floating_point() and not torch.equal(v, ranks[0][k])]
    assert len(moved) > len(start) // 2                           # they trained, and stayed together


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


def test_closure_weight_on_mouth_close_alone_leaves_the_jaw_unweighted():
    import torch

    from talkmotion import labels
    from talkmotion.train import LossConfig, masked_loss

    close, jaw = labels.index("mouthClose"), labels.index("jawOpen")
    target = torch.zeros(1, 4, labels.NUM_CHANNELS)
    target[0, 1, close] = 0.4                                   # frame 1 closes the lips
    mask, scale = torch.ones_like(target, dtype=torch.bool), torch.ones(labels.NUM_CHANNELS)
    cfg = LossConfig(velocity_weight=0.0, closure_weight=2.0, closure_channels="mouthClose")

    def loss_with_error_on(frame, channel):
        pred = target.clone()
        pred[0, frame, channel] += 0.5
        return float(masked_loss(pred, target, mask, scale, cfg))

    # On the closure frame an error in mouthClose costs three times one in the jaw...
    assert loss_with_error_on(1, close) == pytest.approx(3 * loss_with_error_on(1, jaw))
    # ...and the jaw's error costs the same there as on an open frame.
    assert loss_with_error_on(1, jaw) == pytest.approx(loss_with_error_on(2, jaw))
    assert loss_with_error_on(2, close) == pytest.approx(loss_with_error_on(2, jaw))


def test_aperture_corr_loss_follows_the_shape_of_the_aperture_not_its_scale():
    import torch

    from talkmotion import labels
    from talkmotion.train import aperture_corr_loss

    jaw, close = labels.index("jawOpen"), labels.index("mouthClose")
    target = torch.zeros(2, 12, labels.NUM_CHANNELS)
    target[0, :, jaw] = torch.tensor([0.0, 0.3, 0.5, 0.2, 0.0, 0.0, 0.4, 0.6, 0.3, 0.1, 0.0, 0.2])
    target[0, [4, 5], close] = 0.4                         # a closure: aperture below zero
    mask = torch.ones_like(target, dtype=torch.bool)      # crop 1 is a pause: flat, left out

    def loss(pred, m=mask):
        return float(aperture_corr_loss(pred, target, m))

    assert loss(target) < 0.01                            # r = 1, less the floor's bias
    louder = target.clone()
    louder[..., jaw] = 2 * target[..., jaw] + 0.1
    louder[..., close] = 2 * target[..., close]
    assert loss(louder) == pytest.approx(loss(target), abs=0.005)   # scale and offset do not matter
    assert loss(-target) > 1.98                           # the opposite shape: r = -1
    shuffled = target[:, torch.randperm(12, generator=torch.Generator().manual_seed(0))]
    assert 0.5 < loss(shuffled) < 1.9
    # Frames the mask leaves out do not count, however wrong.
    wrong = target.clone()
    wrong[0, 7, jaw] = -5.0
    masked = mask.clone()
    masked[0, 7, jaw] = False
    assert loss(wrong, masked) < 0.01 and loss(wrong) > 0.5
    # Only pauses: nothing to follow. A flat prediction still gets a finite gradient.
    assert float(aperture_corr_loss(target[1:], target[1:], mask[1:])) == 0.0
    flat = torch.zeros_like(target, requires_grad=True)
    aperture_corr_loss(flat, target, mask).backward()
    assert torch.isfinite(flat.grad).all() and flat.grad[0, :, jaw].abs().sum() > 0


def test_aperture_corr_weight_reaches_the_training_loss(tmp_path):
    data = make_dataset(tmp_path / "d", count=3)
    first = {}
    for weight in (0.0, 2.0):
        run = tmp_path / f"run{weight}"
        train(load(TrainConfig, write_config(tmp_path / f"c{weight}.json", data, run, **{
            "optim.steps": 2, "loss.aperture_corr_weight": weight})))
        first[weight] = losses(run)[0]
    # The same seed gives the same first batch and prediction; an untrained model's aperture
    # is far from the target's shape, so the term adds most of its weight.
    assert first[2.0] - first[0.0] > 0.5


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
    frame = (stream_timing(tiny_dims).features.centre(np.arange(phones.shape[1])) * FPS // SAMPLE_RATE)
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
    saved = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert not any("phone" in k for k in saved.state_dict())


def test_teacher_targets_are_read_where_each_crop_feature_was_in_the_clean_clip(tiny_dataset, tiny_dims):
    """A teacher track whose feature k holds k: after speed and tempo changes, each crop
    feature's target is the index of the clean clip's feature at the same moment of speech."""
    from talkmotion.data import teacher
    from talkmotion.data.augment import AugmentConfig
    from talkmotion.data.clips import read_dataset
    from talkmotion.data.dataset import ClipSet, DataConfig, SourceConfig

    spec = teacher.TeacherConfig()
    for entry in read_dataset(tiny_dataset).values():
        from talkmotion.data.clips import load_clip

        clip = load_clip(entry["path"])
        count = teacher.compute_track(clip.audio[:4000], spec).shape[1]           # the real width
        ramp = np.repeat(np.arange(clip.audio.size // 320 + 1, dtype=np.float16)[:, None], count, axis=1)
        path = teacher.track_path(tiny_dataset, clip.id, spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, ramp)
    cfg = DataConfig(sources=(SourceConfig(str(tiny_dataset)),), crop_seconds=1.0,
                     augment=AugmentConfig(speed_prob=1.0, speed_range=(0.8, 0.8), tempo_prob=1.0,
                                           tempo_range=(1.25, 1.25), noise_prob=0, reverb_prob=0))
    clips = ClipSet(cfg, "train", teacher=spec)
    example = clips._example(np.random.default_rng(5), tiny_dims, train=True)    # played 0.8 × 1.25 = 1.0
    slow = DataConfig(sources=cfg.sources, crop_seconds=1.0, augment=AugmentConfig(
        speed_prob=1.0, speed_range=(0.8, 0.8), noise_prob=0, reverb_prob=0, eq_prob=0, timbre_prob=0))
    played = ClipSet(slow, "train", teacher=spec)._example(np.random.default_rng(5), tiny_dims, train=True)
    for ex, factor in ((example, 1.0), (played, 0.8)):
        expected = np.rint(((ex["first_sample"] + ex["feature_centres"]) * factor - 40) / 320)
        got = ex["teacher"][:, 0].astype(np.float64)
        assert ex["teacher_valid"].mean() > 0.5
        np.testing.assert_array_equal(got[ex["teacher_valid"]], expected[ex["teacher_valid"]])


def test_an_unusable_cached_teacher_track_is_rebuilt(tiny_dataset):
    """Truncated, another width, another clip's length, NaN: each is recomputed, not read."""
    from talkmotion.data import teacher
    from talkmotion.data.clips import load_clip, read_dataset

    spec = teacher.TeacherConfig()
    clip = load_clip(next(iter(read_dataset(tiny_dataset).values()))["path"])
    good = np.asarray(teacher.load_track(tiny_dataset, clip, spec)).copy()
    path = teacher.track_path(tiny_dataset, clip.id, spec)
    nan = good.copy()
    nan[0, 0] = np.nan
    for bad in (path.read_bytes()[:100], good[:, :10], good[: len(good) // 2], nan):
        if isinstance(bad, bytes):
            path.write_bytes(bad)
        else:
            np.save(path, bad)
        np.testing.assert_array_equal(teacher.load_track(tiny_dataset, clip, spec), good)


def test_distillation_teaches_a_head_the_model_never_carries(tmp_path):
    data = make_dataset(tmp_path / "d", count=4, val=1)
    cfg = load(TrainConfig, write_config(tmp_path / "c.json", data, tmp_path / "run", **{
        "optim.steps": 40, "loss.distill_weight": 1.0, "loss.velocity_weight": 0.0}))
    trainer = Trainer(cfg)
    head = trainer.objective.distill_head
    batch = trainer.train_set.batch(0, 0, 4, trainer.model.dims, 0)
    with torch.no_grad():
        before = float(head.loss(trainer.model.features(batch), batch["teacher"], batch["teacher_valid"]))
    trainer.fit()
    with torch.no_grad():
        after = float(head.loss(trainer.model.features(batch), batch["teacher"], batch["teacher_valid"]))
    assert after < 0.85 * before
    assert not any("distill" in k for k in load_checkpoint(tmp_path / "run" / "model.safetensors").state_dict())
    off = load(TrainConfig, write_config(tmp_path / "c2.json", data, tmp_path / "run", **{"optim.steps": 50}))
    with pytest.raises(ConfigError, match=r"loss.distill_weight \(on or off\)"):
        Trainer(off).fit()


@pytest.mark.parametrize("field, value", [("closure_weight", -1.0), ("velocity_weight", -0.5), ("beta", 0.0),
                                          ("phone_weight", -0.1), ("phone_weight", float("nan")),
                                          ("closure_weight", float("inf")), ("aperture_corr_weight", -1.0)])
def test_loss_weights_out_of_range_are_refused(field, value):
    from talkmotion.config import from_dict
    from talkmotion.train import TrainConfig

    with pytest.raises(ConfigError, match=f"loss.{field} must be"):
        from_dict(TrainConfig, {"loss": {field: value}})


@pytest.mark.parametrize("name", ["default.toml", "finetune_video.toml", "quality.toml"])
def test_shipped_configs_load(name):
    from pathlib import Path

    from talkmotion.recipe import Recipe

    recipe = Recipe(Path(__file__).resolve().parents[1] / "configs" / name, _earlier_stage(name))
    recipe.check()
    cfg = recipe.config(-1)
    assert cfg.data.sources and cfg.optim.steps > 0


def _earlier_stage(config: str) -> dict:
    """A last stage fine-tunes an earlier stage's output, which a test machine has not trained:
    the embedded model it became stands in for it (`init` must name a file)."""
    from talkmotion.assets import DEFAULT_MODEL, QUALITY_MODEL
    from talkmotion.config import read_config_file

    data = read_config_file(Path(__file__).resolve().parents[1] / "configs" / config)
    stand_in = DEFAULT_MODEL if config.startswith("default") else QUALITY_MODEL
    return {"init": str(stand_in)} if data.get("init") or data.get("stage") else {}


@pytest.mark.parametrize("name, config", [("default", "default.toml"), ("quality", "quality.toml")])
def test_each_embedded_models_config_is_the_recipe_it_was_trained_with(name, config):
    """`talkmotion train configs/CONFIG` retrains the embedded model: its last stage has the same
    model, data, optimiser and loss as the run recorded in the model's header (read as a config
    now reads it, so a setting added since then counts at its default)."""
    from pathlib import Path

    from talkmotion.assets import EMBEDDED_MODELS
    from talkmotion.checkpoint import read_header
    from talkmotion.recipe import RECIPE_SECTIONS, Recipe, config_json, recorded_config

    shipped = EMBEDDED_MODELS[name].checkpoint
    cfg = config_json(Recipe(Path(__file__).resolve().parents[1] / "configs" / config,
                             _earlier_stage(config)).config(-1))
    trained = config_json(recorded_config(shipped))
    assert not cfg["export"].startswith("talkmotion/")      # a run never writes into the package
    for section in RECIPE_SECTIONS:
        assert cfg[section] == trained[section], section
    assert read_header(shipped)["training"]["steps"] == cfg["optim"]["steps"]
    assert read_header(shipped)["name"] == cfg["name"]


@pytest.mark.parametrize("setting, message", [
    ("optim.batch_size=0", "optim.batch_size must be at least 1"),
    ("optim.lr=NaN", "optim.lr must be a finite number above 0"),
    ("optim.steps=0", "optim.steps must be at least 1"),
    ("optim.amp=fp8", "optim.amp: 'fp8' is not one of 'auto', 'off', 'bf16'"),
    ("model.n_heads=3", r"model.d_model \(32\) must be divisible by n_heads \(3\)"),
    ("model.fps=29", "model.fps must be one of 24, 25, 30, 60"),
    ("model.lookahead_ms=-10", "model.lookahead_ms must be 0 or more"),
    ("model.encoder.kind=wav", "model.encoder.kind: 'wav' is not one of mel, pretrained"),
    ("model.encoder.width=0", "model.encoder.width must be at least 1"),
    ('model.encoder={"kind": "pretrained", "model": "/nowhere/hubert"}', "is not a folder holding a transformers"),
    ("data.crop_seconds=0", "data.crop_seconds must be above 0"),
    ('data.sources=[{"path": "d", "weight": -1}]', "d: weight must be a finite number, 0 or more"),
    ("init=missing.safetensors", "init: no such checkpoint"),
    ("init=" + "x" * 300, "init: no such checkpoint"),              # a name too long for the file system
    ('model.encoder={"kind": ["mel"]}', "model.encoder.kind: \\['mel'\\] is not one of"),
])
def test_absurd_config_values_are_one_line_errors(tmp_path, setting, message):
    data = make_dataset(tmp_path / "d", count=2)
    path = write_config(tmp_path / "c.json", data, tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "talkmotion", "train", str(path), "--set", setting],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert re.search(message, proc.stderr) and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_broken_validation_clip_is_an_error_naming_it(tmp_path):
    data = make_dataset(tmp_path / "d", count=3, val=1)
    val_clip = next(p for p in (data / "clips").iterdir() if p.name.startswith("syn000"))
    val_clip.write_bytes(b"not a clip")
    cfg = load(TrainConfig, write_config(tmp_path / "c.json", data, tmp_path / "run"))
    with pytest.raises(TalkmotionError, match="syn000"):
        Trainer(cfg)


def test_a_loss_that_is_not_finite_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "d", count=3)
    cfg = load(TrainConfig, write_config(tmp_path / "c.json", data, tmp_path / "run", **{"optim.steps": 30}))
    trainer = Trainer(cfg)
    trainer.fit(until=10)                                   # a checkpoint at step 10
    saved = (tmp_path / "run" / "state.safetensors").read_bytes()
    trainer = Trainer(cfg)
    real_forward = trainer.objective.forward
    monkeypatch.setattr(trainer.objective, "forward",
                        lambda batch: real_forward(batch) * (float("nan") if trainer.step >= 13 else 1))
    with pytest.raises(TrainingError, match=r"step 14: the loss \(nan\).*state.safetensors keeps the last checkpoint"):
        trainer.fit()
    assert (tmp_path / "run" / "state.safetensors").read_bytes() == saved
    assert all(torch.isfinite(v).all() for v in load_checkpoint(tmp_path / "run" / "model.safetensors")
               .state_dict().values() if v.is_floating_point())


def test_norms_biases_and_position_tables_are_not_decayed(tiny_model):
    from talkmotion.train import param_groups

    decay, keep = param_groups(tiny_model, 0.01)
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    kept = {names[id(p)] for p in keep["params"]}
    assert {"decoder.self_pos", "decoder.cross_pos", "decoder.norm.weight", "decoder.inp.bias"} <= kept
    assert all(p.ndim == 2 for p in decay["params"]) and "decoder.inp.weight" not in kept
    assert keep["weight_decay"] == 0 and decay["weight_decay"] == 0.01
    assert len(decay["params"]) + len(keep["params"]) == len(list(tiny_model.parameters()))


def test_a_run_never_exports_over_a_file_unless_told(tmp_path):
    data = make_dataset(tmp_path / "d", count=3)
    target = tmp_path / "shipped.safetensors"
    target.write_bytes(b"the shipped model")
    cfg = load(TrainConfig, write_config(tmp_path / "c.json", data, tmp_path / "run", **{
        "optim.steps": 3, "export": str(target)}))
    with pytest.raises(ConfigError, match="already exists; set export_overwrite"):
        Trainer(cfg).fit()
    assert target.read_bytes() == b"the shipped model" and not (tmp_path / "run" / "state.safetensors").exists()
    cfg = load(TrainConfig, write_config(tmp_path / "c.json", data, tmp_path / "run", **{
        "optim.steps": 3, "export": str(target), "export_overwrite": True}))
    Trainer(cfg).fit()
    assert load_checkpoint(target).dims == cfg.model


