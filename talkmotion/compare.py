"""`talkmotion compare`: choose between models on dev sets, and say how sure the choice is.

    talkmotion compare --model default --model runs/x/model.safetensors \\
        data/dev_kokoro_aligned data/dev_real_mfa data/dev_real_books --noise-snr 10

Every model animates every clip of every set as `animate` runs it (the model's
own post-processing), through the same listening conditions as `eval`
(--noise-snr, --reverb, --telephone). For each frame-level lip metric
(metrics.lip_summary: closure, open/closed AUC, rounding AUC, openness
correlation, silence) it reports each set's figure for each model, their mean
over the sets (each set counts once, as BENCHMARKS.md's "means over the dev
sets" do), and each model's difference from the first model with a paired
bootstrap interval: the clips of each set are drawn with replacement, the same
draws for every model, `--rounds` times, and the interval holds the middle
`LEVEL` of the differences. An interval that excludes zero is a difference these
sets can tell apart; one that holds zero is not: one of the MFA set's 79 p/b/m
segments moves its closure by 0.013.

A set of fewer than FEW_CLIPS clips is not resampled: its figures count in the
mean as they are, without a spread of their own. Each set keeps its own closure
threshold (from its reference labels), as in `eval`. `--energy` adds the energy
jaw (eval's baseline) as one more column. Writes OUT/compare.json.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics
from .data.clips import Clip
from .errors import TalkmotionError
from .eval import aligned_rows, baseline_sources, degraded, load_clips, predict_all
from .files import check_output, write_json

REPORT_FORMAT = "talkmotion.compare"
REPORT_VERSION = 1
ROUNDS = 1000
MAX_ROUNDS = 100_000   # the draws are held in memory: rounds x sources x metrics per set
LEVEL = 0.95
# (summary key, what it counts, table heading), in the order eval prints them
METRICS = (
    ("bilabial_closure", "bilabial_segments", "closure (share of p/b/m segments closed)"),
    ("frame_open_closed_auc", "closure_frames", "open/closed AUC (open-vowel frames against p/b/m frames)"),
    ("frame_rounding_auc", "rounded_frames", "rounding AUC (rounded against spread vowel frames)"),
    ("openness_corr", "openness_frames", "correlation of aperture with phone openness"),
    ("silence_closure", "silence_frames", "silence (share of pause frames closed)"),
)
ENERGY = "energy"
FEW_CLIPS = 10      # a set with fewer clips is not resampled: its figures hold in every draw


class CompareError(TalkmotionError, ValueError):
    """A comparison that cannot be made; the message says what is wrong."""


@dataclass(frozen=True)
class ScoredSet:
    """One dev set: its name and clip count, and each source's ClipLips per clip (same clip order)."""
    name: str
    clips: int
    seconds: float
    parts: dict[str, list[metrics.ClipLips]]


def score_set(name: str, clips: list[Clip], sources: dict, energy: bool) -> ScoredSet:
    """Every source's ClipLips on one set, judged by the set's own closure threshold."""
    thresholds = metrics.thresholds_from_reference([c.labels for c in clips], clips)
    if energy:
        sources = {**sources, ENERGY: baseline_sources(clips, thresholds)[0][ENERGY]}
    predictions = predict_all(clips, sources)
    parts = {}
    for source, preds in predictions.items():
        parts[source] = []
        for pred, clip in zip(preds, clips):
            pred = metrics.check_prediction(pred, clip.labels, f"source {source!r} on clip {clip.id}")
            parts[source].append(metrics.clip_lips(pred, clip, thresholds.closure))
    return ScoredSet(name, len(clips), round(sum(c.duration for c in clips), 3), parts)


def figures(summary: dict) -> np.ndarray:
    """(len(METRICS),) the METRICS of a metrics.lip_summary, NaN where undefined."""
    return np.array([math.nan if summary[k] is None else summary[k] for k, _, _ in METRICS])


def bootstrap(scored: ScoredSet, names: list[str], point: np.ndarray, rounds: int,
              rng: np.random.Generator) -> np.ndarray:
    """(rounds, sources, metrics): the figures on `rounds` draws of the set's clips with
    replacement, the same draw for every source. A set of fewer than FEW_CLIPS clips keeps
    its own figures `point` (sources, metrics) in every draw: two clips drawn with replacement
    say nothing about spread."""
    if scored.clips < FEW_CLIPS:
        return np.broadcast_to(point, (rounds, *point.shape))
    out = np.empty((rounds, len(names), len(METRICS)))
    for r in range(rounds):
        pick = rng.integers(scored.clips, size=scored.clips)
        for s, name in enumerate(names):
            out[r, s] = figures(metrics.lip_summary([scored.parts[name][k] for k in pick]))
    return out


def interval(draws: np.ndarray) -> list[float] | None:
    """The middle LEVEL of the finite draws, or None if fewer than half are finite."""
    finite = draws[np.isfinite(draws)]
    if finite.size < max(len(draws) / 2, 1):
        return None
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [round(float(low), 5), round(float(high), 5)]


def compare(sets: list[ScoredSet], names: list[str], rounds: int = ROUNDS, seed: int = 0) -> dict:
    """{metric: {"sets": {set: entry}, "mean": entry}}, each entry holding every source's figure
    ("values", None where undefined) and each later source's difference from the first with
    its interval ("differences": [None, [difference, low, high] or None, ...])."""
    rng = np.random.default_rng(seed)
    summaries = {s.name: [metrics.lip_summary(s.parts[n]) for n in names] for s in sets}
    points = {name: np.array([figures(x) for x in found]) for name, found in summaries.items()}  # (sources, metrics)
    draws = {s.name: bootstrap(s, names, points[s.name], rounds, rng) for s in sets}  # (rounds, sources, metrics)
    counts = {name: found[0] for name, found in summaries.items()}     # the first source's counts
    out = {}
    for m, (key, count_key, _) in enumerate(METRICS):
        per_set = {s.name: _entry(points[s.name][:, m], draws[s.name][:, :, m], s.clips >= FEW_CLIPS)
                   | {"count": counts[s.name][count_key]} for s in sets}
        defined = [s for s in sets if np.isfinite(points[s.name][:, m]).all()]
        mean = {"sets": [s.name for s in defined], "values": [None] * len(names), "differences": [None] * len(names)}
        if defined:
            mean |= _entry(np.mean([points[s.name][:, m] for s in defined], axis=0),
                           np.mean([draws[s.name][:, :, m] for s in defined], axis=0),
                           any(s.clips >= FEW_CLIPS for s in defined))
        out[key] = {"sets": per_set, "mean": mean}
    return out


def _entry(point: np.ndarray, draws: np.ndarray, resampled: bool = True) -> dict:
    """Figures (sources,) and their bootstrap draws (rounds, sources) → values and differences,
    each [difference, low, high], with low and high None for a set that was not resampled."""
    values = [None if not np.isfinite(v) else round(float(v), 5) for v in point]
    differences: list = [None]
    for s in range(1, len(point)):
        gap = point[s] - point[0]
        spread = interval(draws[:, s] - draws[:, 0]) if resampled else [None, None]
        differences.append(None if not np.isfinite(gap) or spread is None else [round(float(gap), 5)] + spread)
    return {"values": values, "differences": differences}


# --- output --------------------------------------------------------------------------

def letters(count: int) -> list[str]:
    return [chr(ord("A") + k) for k in range(count)]


def format_report(report: dict) -> str:
    """Text tables, one per metric: a row per set and the mean, a column per source, then each
    later source's difference from the first with its interval."""
    tags = letters(len(report["sources"]))
    lines = [f"{t} = {s['spec']} ({s['name']})" for t, s in zip(tags, report["sources"])]
    lines.append(f"differences from A with {round(report['level'] * 100)} % paired-bootstrap intervals "
                 f"over clips ({report['rounds']} draws); an interval holding 0 is not a difference these sets tell")
    few = [f"{s['data']} ({s['clips']})" for s in report["sets"] if s["clips"] < FEW_CLIPS]
    if few:
        lines.append(f"not resampled (fewer than {FEW_CLIPS} clips; their figures count in the mean "
                     f"but add no spread): {', '.join(few)}")
    for key, count_key, heading in METRICS:
        block = report["metrics"][key]
        head = [heading, "n"] + tags + [f"{t} - A" for t in tags[1:]]
        rows = [head] + [[name, str(e["count"])] + _cells(e) for name, e in block["sets"].items()]
        rows.append([f"mean over {len(block['mean']['sets'])} sets", ""] + _cells(block["mean"]))
        lines += [""] + aligned_rows(rows)
    return "\n".join(lines)


def _cells(entry: dict) -> list[str]:
    values = ["-" if v is None else f"{v:.3f}" for v in entry["values"]]
    gaps = ["-" if d is None else f"{d[0]:+.3f}" + ("" if d[1] is None else f" [{d[1]:+.3f}, {d[2]:+.3f}]")
            for d in entry["differences"][1:]]
    return values + gaps


# --- command -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .runtime import add_backend_argument, model_argument_help

    parser.add_argument("data", nargs="+", metavar="DATA", help="dev set folders (clips + manifest*.json)")
    parser.add_argument("--model", action="append", required=True, metavar="M",
                        help="a model to compare, given twice or more (the first is the one the others "
                             "are measured against); " + model_argument_help())
    parser.add_argument("--energy", action="store_true", help="also the energy jaw (eval's baseline)")
    add_backend_argument(parser)
    parser.add_argument("--rounds", type=int, default=ROUNDS, metavar="N",
                        help=f"bootstrap draws of each set's clips (default {ROUNDS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws (default 0)")
    parser.add_argument("-o", "--out", default="compare", metavar="DIR", help="writes DIR/compare.json")
    parser.add_argument("--noise-snr", type=float, metavar="DB", help="as eval: coloured noise DB below the speech")
    parser.add_argument("--reverb", type=float, metavar="RT60", help="as eval: a synthetic room's RT60 in seconds")
    parser.add_argument("--telephone", action="store_true", help="as eval: a phone line")


def run(args: argparse.Namespace) -> int:
    from .eval import model_source

    if args.energy and ENERGY in args.model:
        raise CompareError(f"--model {ENERGY} and --energy would share a column name; rename the model file")
    if len(args.model) + args.energy < 2:
        raise CompareError("give two models or more (--model A --model B), or one with --energy")
    if not 100 <= args.rounds <= MAX_ROUNDS:
        raise CompareError(f"--rounds must be from 100 (for a {round(LEVEL * 100)} % interval) "
                           f"to {MAX_ROUNDS}, got {args.rounds}")
    for what, given in (("--model", args.model), ("DATA", [str(Path(d).resolve()) for d in args.data])):
        twice = sorted({g for g in given if given.count(g) > 1})
        if twice:
            raise CompareError(f"{what} given twice: {', '.join(twice)}")
    out = Path(args.out)
    check_output(out / "compare.json")
    loaded = [(d, degraded(load_clips(d), args.noise_snr, args.reverb, args.telephone)) for d in args.data]
    sources, described = {}, []
    for spec in args.model:
        sources[spec], name, post = model_source(spec, args.backend)
        described.append({"spec": spec, "name": name, "post": post})
    if args.energy:
        described.append({"spec": ENERGY, "name": "energy jaw", "post": None})
    sets = [score_set(str(d), clips, sources, args.energy) for d, clips in loaded]
    names = [d["spec"] for d in described]
    report = {"format": REPORT_FORMAT, "version": REPORT_VERSION, "sources": described,
              "sets": [{"data": s.name, "clips": s.clips, "seconds": s.seconds} for s in sets],
              "listening": {"noise_snr_db": args.noise_snr, "reverb_rt60_s": args.reverb, "telephone": args.telephone},
              "rounds": args.rounds, "seed": args.seed, "level": LEVEL,
              "metrics": compare(sets, names, args.rounds, args.seed)}
    write_json(out / "compare.json", report)
    print(format_report(report))
    print(f"wrote {out / 'compare.json'}")
    return 0
