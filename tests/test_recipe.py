"""Staged recipes: one config, one `talkmotion train`, a base stage then its fine-tune."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import make_dataset
from talkmotion.checkpoint import load_checkpoint, read_header
from talkmotion.config import ConfigError
from talkmotion.recipe import Recipe
from test_train import write_config

pytestmark = pytest.mark.slow   # trains tiny models


def staged_config(tmp_path, data, **final):
    """A two-stage recipe as JSON: 6 steps from scratch, then 4 more from its export."""
    path = write_config(tmp_path / "recipe.json", data, tmp_path / "final", **{
        "name": "final-model", "export": str(tmp_path / "final" / "export.safetensors"),
        "optim.steps": 4, "optim.lr": 1e-3, **final})
    cfg = json.loads(path.read_text())
    cfg["stage"] = [{"name": "base-model", "out_dir": str(tmp_path / "base"),
                     "export": str(tmp_path / "base" / "export.safetensors"), "optim": {"steps": 6}}]
    path.write_text(json.dumps(cfg))
    return path


def train_cli(*args):
    return subprocess.run([sys.executable, "-m", "talkmotion", "train", *map(str, args)],
                          capture_output=True, text=True)


def test_one_command_trains_each_stage_from_the_one_before_and_skips_a_finished_stage(tmp_path):
    data = make_dataset(tmp_path / "d", count=3)
    path = staged_config(tmp_path, data)
    proc = train_cli(path)
    assert proc.returncode == 0, proc.stderr
    assert "stage 1 of 2 (base-model)" in proc.stdout and "stage 2 of 2 (final-model)" in proc.stdout
    base = read_header(tmp_path / "base" / "export.safetensors")
    final = read_header(tmp_path / "final" / "export.safetensors")
    # the stage's [optim] table replaced steps and kept the file's lr: tables merge key by key
    assert (base["name"], base["training"]["steps"]) == ("base-model", 6)
    assert base["training"]["config"]["optim"]["lr"] == 1e-3
    assert base["training"]["config"]["init"] == ""
    assert (final["name"], final["training"]["steps"]) == ("final-model", 4)
    assert final["training"]["config"]["init"] == str(tmp_path / "base" / "export.safetensors")
    start = load_checkpoint(tmp_path / "base" / "export.safetensors").state_dict()
    tuned = load_checkpoint(tmp_path / "final" / "export.safetensors").state_dict()
    assert any(not torch.equal(start[k], tuned[k]) for k in start)

    base_bytes = (tmp_path / "base" / "export.safetensors").read_bytes()
    (tmp_path / "final" / "export.safetensors").unlink()
    for name in ("model.safetensors", "state.safetensors"):
        (tmp_path / "final" / name).unlink()
    proc = train_cli(path)                      # the base is done: only the fine-tune runs again
    assert proc.returncode == 0, proc.stderr
    assert "stage 1 of 2 (base-model) is done" in proc.stdout
    assert (tmp_path / "base" / "export.safetensors").read_bytes() == base_bytes
    assert read_header(tmp_path / "final" / "export.safetensors")["training"]["steps"] == 4

    changed = json.loads(path.read_text())
    changed["stage"][0]["optim"]["steps"] = 7   # the base's export no longer fits the recipe
    path.write_text(json.dumps(changed))
    proc = train_cli(path)
    assert proc.returncode == 2
    assert "[[stage]] 1: export" in proc.stderr and "was trained with other optim" in proc.stderr


def test_an_init_given_on_the_command_line_skips_the_earlier_stages(tmp_path):
    data = make_dataset(tmp_path / "d", count=3)
    write_config(tmp_path / "other.json", data, tmp_path / "other", **{"optim.steps": 3})
    assert train_cli(tmp_path / "other.json").returncode == 0
    path = staged_config(tmp_path, data)
    proc = train_cli(path, "--init", tmp_path / "other" / "model.safetensors")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "base").exists() and "stage 1" not in proc.stdout
    assert "stage 2 of 2 (final-model)" in proc.stdout
    assert read_header(tmp_path / "final" / "export.safetensors")["training"]["config"]["init"] == \
        str(tmp_path / "other" / "model.safetensors")


def test_stage_n_trains_the_first_stages_alone_and_overrides_reach_every_stage(tmp_path):
    data = make_dataset(tmp_path / "d", count=3)
    path = staged_config(tmp_path, data)
    proc = train_cli(path, "--stage", 1, "--set", f"out_dir={tmp_path / 'v6'}", "--set",
                     f"export={tmp_path / 'v6' / 'export.safetensors'}", "--set", "optim.steps=3")
    assert proc.returncode == 0, proc.stderr
    header = read_header(tmp_path / "v6" / "export.safetensors")
    assert (header["name"], header["training"]["steps"]) == ("base-model", 3)   # over the stage's own 6
    assert not (tmp_path / "base").exists() and not (tmp_path / "final").exists()
    proc = train_cli(path, "--set", f"out_dir={tmp_path / 'v6'}")
    assert proc.returncode == 2 and "is also an earlier stage's" in proc.stderr
    proc = train_cli(path, "--set", "export=")          # stage 2 would start from nothing
    assert proc.returncode == 2 and "left this stage without an export" in proc.stderr
    proc = train_cli(path, "--stage", 3)
    assert proc.returncode == 2 and "there is no stage 3; its stages are 1 to 2" in proc.stderr


@pytest.mark.parametrize("change, message", [
    (lambda c: c["stage"][0].pop("export"), r"\[\[stage\]\] 1: needs its own export"),
    (lambda c: c.update(init="x.safetensors"), "init cannot be set beside"),
    (lambda c: c["stage"][0].pop("out_dir"), "needs its own out_dir"),
    (lambda c: c["stage"][0].update(out_dir=c["out_dir"]), "out_dir .* is also an earlier stage's"),
    (lambda c: c["stage"].append({"init": "y", "out_dir": "o2", "export": "o2/e"}),
     "only the first stage may set init"),
    (lambda c: c.update(stage={"name": "x"}), "stage must be an array of tables"),
    (lambda c: (c["optim"].update(batch_size=0), c["stage"][0]["optim"].update(batch_size=2)),
     "optim.batch_size must be at least 1"),                           # the last stage's mistake...
])
def test_a_bad_recipe_is_a_one_line_error_before_any_stage_trains(tmp_path, change, message):
    data = make_dataset(tmp_path / "d", count=2)
    path = staged_config(tmp_path, data)
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=message):
        Recipe(path).check()
    proc = train_cli(path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "base").exists()     # ...is found before the first stage's hours
