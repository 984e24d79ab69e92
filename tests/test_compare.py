"""`talkmotion compare`: per-set and mean figures of several models, with paired-bootstrap
intervals that separate a real difference from what a handful of clips can move."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lipsync_clips import make_clip, make_clips
from talkmotion import compare as cmp
from talkmotion import labels, metrics
from talkmotion.cli import main
from talkmotion.data.clips import Manifest, clip_path, save_clip

JAW, CLOSE = labels.index("jawOpen"), labels.index("mouthClose")


def scored(name, clips, predictions: dict) -> cmp.ScoredSet:
    """A ScoredSet from {source: [(T, C) per clip]}, judged as compare judges a set."""
    thresholds = metrics.thresholds_from_reference([c.labels for c in clips], clips)
    parts = {s: [metrics.clip_lips(p, c, thresholds.closure) for p, c in zip(preds, clips)]
             for s, preds in predictions.items()}
    return cmp.ScoredSet(name, len(clips), sum(c.duration for c in clips), parts)


def half_open(clip) -> np.ndarray:
    """The reference with lips never closed and the jaw at half its opening: worse on closure."""
    values = clip.labels.copy()
    values[:, JAW] = 0.5 * values[:, JAW] + 0.2
    values[:, CLOSE] = 0.0
    return values


def test_a_real_difference_gets_an_interval_that_excludes_zero():
    clips = make_clips(20, seed=3)
    s = scored("set", clips, {"ref": [c.labels for c in clips], "worse": [half_open(c) for c in clips]})
    result = cmp.compare([s], ["ref", "worse"], rounds=300)
    closure = result["bilabial_closure"]
    assert closure["sets"]["set"]["values"] == [1.0, 0.0]
    gap, low, high = closure["sets"]["set"]["differences"][1]
    assert gap == -1.0 and low <= gap <= high < 0
    assert closure["sets"]["set"]["count"] > 20          # p/b/m segments behind the figure


def test_identical_sources_differ_by_exactly_zero_and_one_odd_clip_is_not_a_difference():
    clips = make_clips(30, seed=5)
    same = [c.labels for c in clips]
    one_off = [half_open(c) if k == 0 else c.labels for k, c in enumerate(clips)]
    s = scored("set", clips, {"a": same, "b": same, "c": one_off})
    result = cmp.compare([s], ["a", "b", "c"], rounds=400)
    for key, _, _ in cmp.METRICS:
        gap, low, high = result[key]["sets"]["set"]["differences"][1]
        assert gap == low == high == 0.0, key
    gap, low, high = result["bilabial_closure"]["sets"]["set"]["differences"][2]
    assert gap < 0 and low < 0 <= high       # one clip in thirty: the draws often leave it out


def test_the_mean_counts_each_set_once_and_the_same_seed_gives_the_same_intervals():
    small, large = make_clips(6, seed=1), make_clips(24, seed=2)
    sets = [scored("small", small, {"a": [c.labels for c in small], "b": [half_open(c) for c in small]}),
            scored("large", large, {"a": [c.labels for c in large], "b": [c.labels for c in large]})]
    result = cmp.compare(sets, ["a", "b"], rounds=200, seed=7)
    mean = result["bilabial_closure"]["mean"]
    assert mean["sets"] == ["small", "large"]
    assert mean["values"] == [1.0, 0.5]                   # (0 + 1) / 2, not weighted by segments
    assert mean["differences"][1][0] == -0.5
    # Six clips are too few to resample: the small set holds its figures in every draw, and
    # the large set's sources never differ, so the mean's difference is exactly -0.5 throughout.
    assert result["bilabial_closure"]["sets"]["small"]["differences"][1] == [-1.0, None, None]
    assert mean["differences"][1] == [-0.5, -0.5, -0.5]
    assert cmp.compare(sets, ["a", "b"], rounds=200, seed=7) == result


@pytest.fixture
def two_sets(tmp_path):
    roots = []
    for s in range(2):
        root = tmp_path / f"set{s}"
        manifest = Manifest(root)
        for k in range(4):
            clip = make_clip(f"clip{k:02d}", seed=100 * s + k)
            path = clip_path(root, clip.id)
            save_clip(path, clip)
            manifest.record(clip.id, "ok", save=False, file=str(path.relative_to(root)))
        manifest.save()
        roots.append(root)
    return roots


@pytest.fixture
def two_checkpoints(tmp_path):
    import torch

    from talkmotion.checkpoint import save_checkpoint
    from talkmotion.config import from_dict
    from talkmotion.model import ModelDims, TalkModel

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = TalkModel(from_dict(ModelDims, {"encoder": {"kind": "mel", "width": 16, "layers": 1}, "d_model": 16,
                                                "n_layers": 1, "n_heads": 2, "d_ff": 32}), name=f"tiny{seed}")
        paths.append(tmp_path / f"tiny{seed}.safetensors")
        save_checkpoint(paths[-1], model)
    return paths


@pytest.mark.slow
def test_compare_command_scores_two_checkpoints_and_the_energy_jaw_on_two_sets(two_sets, two_checkpoints,
                                                                              tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", *map(str, two_sets), "--model", str(two_checkpoints[0]), "--model", str(two_checkpoints[1]),
            "--energy", "--rounds", "100", "--noise-snr", "20", "-o", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["format"] == "talkmotion.compare"
    assert [s["name"] for s in report["sources"]] == ["tiny0", "tiny1", "energy jaw"]
    assert report["sources"][0]["post"]["jaw_gate_db"] == 30.0        # animate's defaults ran
    assert [s["clips"] for s in report["sets"]] == [4, 4]
    assert report["listening"]["noise_snr_db"] == 20.0
    corr = report["metrics"]["openness_corr"]
    assert set(corr["sets"]) == {str(r) for r in two_sets}
    for entry in list(corr["sets"].values()) + [corr["mean"]]:
        assert len(entry["values"]) == 3 and all(v is None or -1 <= v <= 1 for v in entry["values"])
    # the energy jaw follows the openness of these clips
    assert all(e["values"][2] > 0.3 for e in corr["sets"].values())
    closure = report["metrics"]["bilabial_closure"]["mean"]
    a, _, c = closure["values"]
    gap, low, high = closure["differences"][2]
    assert gap == pytest.approx(c - a, abs=2e-5)
    assert low is None and high is None      # four clips a set: nothing was resampled, no interval
    printed = capsys.readouterr().out
    assert "C = energy (energy jaw)" in printed and "mean over 2 sets" in printed and "B - A" in printed


@pytest.mark.parametrize("extra, message", [
    ([], "give two models or more"),
    (["--model", "M0"], "--model given twice"),
    (["--model", "M1", "--rounds", "20"], "--rounds must be from 100"),
    (["--model", "M1", "--rounds", "1000000000"], "--rounds must be from 100"),
    (["--model", "M1"], "DATA given twice"),
])
def test_compare_refuses_what_it_cannot_compare(two_sets, two_checkpoints, tmp_path, capsys, extra, message):
    names = {"M0": str(two_checkpoints[0]), "M1": str(two_checkpoints[1])}
    data = [str(two_sets[0])] * (2 if message.startswith("DATA") else 1)
    argv = ["compare", *data, "--model", names["M0"], *[names.get(a, a) for a in extra],
            "-o", str(tmp_path / "cmp")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()
