"""`talkmotion eval`: judge a model (or any label source) against phoneme-timed clips.

    talkmotion eval --model default --split test data/tts --out eval/
    talkmotion eval --frames out/frames/ data/tts        # frames files <clip_id>.json

Every run scores, on the same clips and with the same thresholds:
  reference  the clips' own labels (the ceiling: how well the reference meets
             the metric definitions itself),
  rules      the phoneme→viseme rule labels (talkmotion.data.visemes), when the
             clips have phonemes and the rules module is installed,
  energy     an energy-driven jaw: jawOpen = per-frame loudness (0–1, see
             metrics.loudness) × the reference's median open-vowel opening;
             every other channel 0,
  model / frames, when asked for.
It writes OUT/report.json (every metric per source, per-channel tables, the
thresholds, the targets each source meets) and OUT/eval.png (predicted and
reference curves for a few clips with phoneme segments shaded), and prints a
compact table. Metric definitions and thresholds: talkmotion/metrics.py.

A *source* is a function clip → (T, C) float32 array in labels.CHANNELS order;
`evaluate(clips, sources)` is the Python entry point (training uses it too).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from . import labels, metrics
from .data.clips import Clip, load_clip, read_dataset
from .errors import TalkmotionError
from .files import atomic_path, check_output, write_json

Source = Callable[[Clip], np.ndarray]

REPORT_FORMAT = "talkmotion.eval"
REPORT_VERSION = 1
BASELINES = ("reference", "rules", "energy")  # names reserved for the baselines
ENERGY_JAW_MAX = 0.5         # energy jaw at full loudness when the reference has no open vowels
LENGTH_TOLERANCE_FRAMES = 2  # a source may be this many frames short or long (edge padding / trimming)
FIGURE_CLIPS = 3
FIGURE_SECONDS = 4.0         # each figure row shows at most this much of its clip

# Targets for the default model on voices it never trained on (issue 11), frame-level.
# Lag is searched in whole frames, so "|lag| <= 33 ms" means at most one frame at 30 fps.
TARGETS = {
    "bilabial_closure": (">=", 0.90),
    "frame_open_closed_auc": (">=", 0.95),
    "frame_rounding_auc": (">=", 0.85),
    "openness_corr": (">=", 0.85),
    "silence_closure": (">=", 0.95),
    "abs_lag_ms": ("<=", 1000.0 / 30 + 1e-6),
}


class EvalError(TalkmotionError, ValueError):
    """Input eval cannot use; the message names the file or clip and the problem."""


# --- clips ---------------------------------------------------------------------------

def load_clips(root: str | Path, split: str | None = None, limit: int | None = None) -> list[Clip]:
    """Clips of a dataset folder, sorted by id, optionally one split (entry["split"]) and the first `limit`."""
    entries = read_dataset(root)
    if split is not None:
        found = sorted({str(e.get("split")) for e in entries.values()})
        entries = {k: e for k, e in entries.items() if e.get("split") == split}
        if not entries:
            raise EvalError(f"{root}: no clips in split {split!r}; splits present: {', '.join(found)}")
    ids = sorted(entries)[:limit] if limit is not None else sorted(entries)
    if not ids:
        raise EvalError(f"{root}: the dataset has no clips")
    return [load_clip(entries[i]["path"]) for i in ids]


MAX_REVERB_S = 3.0
NOISE_SNR_RANGE_DB = (-20.0, 80.0)   # from noise drowning the voice to noise below hearing
BOOTSTRAP_ROUNDS = 1000     # resamplings of the clips behind each AUC-gap interval


def degraded(clips: list[Clip], noise_snr_db: float | None = None, reverb_s: float | None = None,
             telephone: bool = False) -> list[Clip]:
    """The clips as a room, a microphone and a line would deliver them: a synthetic room
    with RT60 `reverb_s`, then coloured noise `noise_snr_db` dB below the speech, then
    (`telephone`) a phone line's band and 8-bit mu-law samples. Labels and timings are
    unchanged, so every source is judged against the same reference. Each clip's room and
    noise are seeded by its id: reruns hear the same audio.
    """
    from .data import augment

    low, high = NOISE_SNR_RANGE_DB
    if noise_snr_db is not None and not low <= noise_snr_db <= high:     # NaN fails this too
        raise EvalError(f"--noise-snr must be between {low:g} and {high:g} dB, got {noise_snr_db}")
    if reverb_s is not None and not 0 < reverb_s <= MAX_REVERB_S:
        raise EvalError(f"--reverb must be an RT60 in (0, {MAX_REVERB_S:g}] seconds, got {reverb_s:g}")
    out = []
    for clip in clips:
        rng = np.random.default_rng(zlib.crc32(clip.id.encode("utf-8")))
        audio = clip.audio
        if reverb_s is not None:
            audio = augment.reverb(audio, rng, reverb_s)
        if noise_snr_db is not None:
            audio = augment.add_noise(audio, rng, noise_snr_db)
        if telephone:
            audio = augment.telephone(audio)
        out.append(dataclasses.replace(clip, audio=np.clip(audio, -1.0, 1.0).astype(np.float32)))
    return out


# --- sources -------------------------------------------------------------------------

def fit_length(values: np.ndarray, num_frames: int, where: str) -> np.ndarray:
    """(T', C) → (num_frames, C): trims or repeats the last row for small differences."""
    values = np.asarray(values, np.float32)
    if values.ndim != 2 or values.shape[1] != labels.NUM_CHANNELS:
        raise EvalError(f"{where}: predicted shape {values.shape}, want (T, {labels.NUM_CHANNELS})")
    if abs(len(values) - num_frames) > LENGTH_TOLERANCE_FRAMES or len(values) == 0:
        raise EvalError(f"{where}: {len(values)} frames predicted for a clip of {num_frames} frames")
    if len(values) >= num_frames:
        return values[:num_frames]
    return np.concatenate([values, np.repeat(values[-1:], num_frames - len(values), axis=0)])


def frames_to_values(frames, clip: Clip, where: str) -> np.ndarray:
    """A Frames object at any supported fps → (T, C) rows aligned with the clip's frames."""
    if frames.fps != clip.fps:
        frames = frames.resample(clip.fps)
    return fit_length(frames.values, len(clip.labels), where)


def energy_source(jaw_max: float = ENERGY_JAW_MAX) -> Source:
    """Baseline: jawOpen = jaw_max × per-frame loudness (metrics.loudness); every other channel 0."""
    jaw = labels.index("jawOpen")

    def predict(clip: Clip) -> np.ndarray:
        values = np.zeros((len(clip.labels), labels.NUM_CHANNELS), np.float32)
        values[:, jaw] = jaw_max * metrics.loudness(clip.audio, len(values), clip.fps)
        return values

    return predict


def reference_source(clip: Clip) -> np.ndarray:
    return clip.labels


def rules_source() -> tuple[Source | None, str]:
    """The viseme rules (talkmotion.data.visemes.make_labels) as a source, or (None, why not).

    A clip whose metadata records the rules' speaking style ("style") and seed
    ("label_seed" or "seed") gets exactly those, so on a TTS corpus this source
    reproduces the reference.
    """
    try:
        from .data import visemes
    except ImportError as err:
        return None, f"talkmotion.data.visemes is not available ({err})"
    make_labels = getattr(visemes, "make_labels", None)
    if make_labels is None:
        return None, "talkmotion.data.visemes has no make_labels()"

    def predict(clip: Clip) -> np.ndarray:
        values, _ = make_labels(clip.phonemes, clip.audio, clip.fps, seed=_label_seed(clip),
                                style=_label_style(visemes, clip))
        return values

    return predict, ""


def _label_seed(clip: Clip) -> int:
    for key in ("label_seed", "seed"):
        if isinstance(clip.meta.get(key), int):
            return clip.meta[key]
    return 0


def _label_style(visemes, clip: Clip):
    import dataclasses

    saved = clip.meta.get("style")
    style_type = getattr(visemes, "Style", None)
    if not isinstance(saved, dict) or style_type is None:
        return None
    names = {f.name for f in dataclasses.fields(style_type)}
    return style_type(**{k: v for k, v in saved.items() if k in names}) if names <= set(saved) else None


def model_source(spec: str, backend: str = "auto", post: dict | None = None) -> tuple[Source, str, dict]:
    """`--model PATH` or an embedded model's name (`--model default`): the model's frames for
    each clip's audio, its name, and the post-processing it ran with: the model's defaults,
    with `post` {PostOptions field: value} (animate's flags) over them.

    One runtime (`backend`) serves every clip, so the step is traced or exported once.
    """
    try:  # imported here: eval works on label sources without the model code
        from .animate import animate_pcm
        from .runtime import load_model
    except ImportError as err:
        raise EvalError(f"--model needs the model code (talkmotion.animate, .runtime): {err}") from err

    model = load_model(spec, backend)
    options = dataclasses.replace(model.post_defaults, **(post or {}))

    def predict(clip: Clip) -> np.ndarray:
        return frames_to_values(animate_pcm(model, clip.audio, options), clip, f"model on clip {clip.id}")

    return predict, model.name, dataclasses.asdict(options)


def frames_source(folder: str | Path) -> Source:
    """`--frames DIR`: frames files named <clip_id>.json."""
    from .frames import read_frames

    folder = Path(folder)
    if not folder.is_dir():
        raise EvalError(f"{folder}: not a folder of frames files")

    def predict(clip: Clip) -> np.ndarray:
        path = folder / f"{clip.id}.json"
        if not path.is_file():
            raise EvalError(f"{path}: no frames file for clip {clip.id}")
        return frames_to_values(read_frames(path), clip, str(path))

    return predict


def baseline_sources(clips: list[Clip], thresholds: metrics.Thresholds) -> tuple[dict[str, Source], dict[str, str]]:
    """The baselines every run scores, and {name: reason} for those it cannot."""
    jaw_max = thresholds.open_level if thresholds.source == "reference" and thresholds.open_level > 0 \
        else ENERGY_JAW_MAX
    sources: dict[str, Source] = {"reference": reference_source}
    skipped = {}
    rules, why = rules_source()
    if rules is None:
        skipped["rules"] = why
    elif any(c.phonemes is None for c in clips):
        skipped["rules"] = "some clips have no phoneme timings"
    else:
        sources["rules"] = rules
    # Scaled to the reference's open-vowel aperture, so its L1 is a fair comparison.
    sources["energy"] = energy_source(jaw_max)
    return sources, skipped


# --- evaluation ----------------------------------------------------------------------

def predict_all(clips: list[Clip], sources: dict[str, Source]) -> dict[str, list[np.ndarray]]:
    """{source: [(T_k, C) per clip]}, each checked against its clip's length."""
    out = {}
    for name, predict in sources.items():
        out[name] = [fit_length(predict(c), len(c.labels), f"source {name!r} on clip {c.id}") for c in clips]
    return out


def judge(summary: dict, energy: dict | None) -> dict:
    """Which targets a source meets: each TARGETS entry, and beating the energy baseline."""
    out = {}
    for name, (op, bound) in TARGETS.items():
        v = summary.get(name)
        out[name] = None if v is None else bool(v >= bound if op == ">=" else v <= bound)
    if energy is not None:
        out["beats_energy"] = all(metrics.beats(summary, energy).values())
    return out


def report_from(clips: list[Clip], predictions: dict[str, list[np.ndarray]],
                thresholds: metrics.Thresholds | None = None) -> dict:
    """The report dict for predictions already made (see evaluate)."""
    thresholds = thresholds or metrics.thresholds_from_reference([c.labels for c in clips], clips)
    scored = {name: metrics.score(preds, clips, thresholds=thresholds) for name, preds in predictions.items()}
    energy = scored.get("energy", {}).get("summary")
    sources = {}
    for name, result in scored.items():
        entry = {"summary": result["summary"]}
        if energy is not None and name != "energy":
            entry["beats_energy"] = metrics.beats(result["summary"], energy)
            entry["open_closed_auc_gap_95"] = auc_gap(result, scored["energy"])
        entry["targets"] = judge(result["summary"], energy if name != "energy" else None)
        entry["per_channel"] = result["per_channel"]
        sources[name] = entry
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "clips": len(clips), "seconds": round(sum(c.duration for c in clips), 3),
        "fps": clips[0].fps, "clip_ids": [c.id for c in clips],
        "thresholds": thresholds.to_json(),
        "targets": {**{k: f"{op} {round(v, 3)}" for k, (op, v) in TARGETS.items()},
                    "beats_energy": f"better than energy on each of {', '.join(metrics.LIP_METRICS)}"},
        "sources": sources,
    }


def auc_gap(scored: dict, energy: dict) -> list[float] | None:
    """[low, high]: 95 % paired-bootstrap interval over clips of a source's open/closed AUC
    minus the energy jaw's, from their metrics.score results; None where a class is missing."""
    gap = metrics.auc_gap_interval(scored["segment_extremes"], energy["segment_extremes"], BOOTSTRAP_ROUNDS)
    return None if gap is None else [round(gap[0], 5), round(gap[1], 5)]


def group_summaries(clips: list[Clip], predictions: dict[str, list[np.ndarray]], key: str,
                    thresholds: metrics.Thresholds) -> dict:
    """{value of clip.meta[key]: {"clips": n, source: summary}}: the same metrics per group,
    e.g. per voice, with the whole set's closure threshold so groups compare fairly."""
    groups: dict[str, list[int]] = {}
    for k, clip in enumerate(clips):
        if key not in clip.meta:
            raise EvalError(f"clip {clip.id} has no {key!r} in its metadata; "
                            f"it has {', '.join(sorted(clip.meta)) or 'none'}")
        groups.setdefault(str(clip.meta[key]), []).append(k)
    out = {}
    for value, idx in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
        chosen = [clips[k] for k in idx]
        out[value] = {"clips": len(idx), **{name: metrics.score([preds[k] for k in idx], chosen,
                                                                thresholds=thresholds)["summary"]
                                            for name, preds in predictions.items()}}
    return out


def evaluate(clips: list[Clip], sources: dict[str, Source] | Source | None = None,
             baselines: bool = True) -> dict:
    """Score `sources` ({name: clip → (T, C)}, or one function named "model") on `clips`.

    With `baselines`, the reference, rules and energy sources are scored too.
    Returns the report dict written to report.json.
    """
    report, _ = evaluate_with_predictions(clips, sources, baselines)
    return report


def evaluate_with_predictions(clips, sources=None, baselines=True, thresholds: metrics.Thresholds | None = None):
    """evaluate(), also returning {source: [(T_k, C)]} for figures; `thresholds` if the
    caller already has them (default: from the clips' reference labels)."""
    clips = list(clips)
    if not clips:
        raise EvalError("no clips to evaluate")
    rates = sorted({c.fps for c in clips})
    if len(rates) > 1:
        raise EvalError(f"clips mix frame rates {rates}; evaluate one rate at a time")
    if callable(sources):
        sources = {"model": sources}
    sources = dict(sources or {})
    thresholds = thresholds or metrics.thresholds_from_reference([c.labels for c in clips], clips)
    skipped = {}
    if baselines:
        clash = sorted(set(BASELINES) & set(sources))
        if clash:
            raise EvalError(f"source name(s) {', '.join(clash)} are taken by the baselines")
        base, skipped = baseline_sources(clips, thresholds)
        sources = {**base, **sources}
    predictions = predict_all(clips, sources)
    report = report_from(clips, predictions, thresholds)
    report["skipped"] = skipped
    return report, predictions


# --- output --------------------------------------------------------------------------

TABLE_COLUMNS = (  # (summary key, header, format): the frame-level figures first, then segment extremes
    ("bilabial_closure", "closure", "{:.3f}"), ("frame_open_closed_auc", "open/cl AUC", "{:.3f}"),
    ("frame_rounding_auc", "round AUC", "{:.3f}"), ("openness_corr", "corr", "{:.3f}"),
    ("silence_closure", "silence", "{:.3f}"), ("lag_ms", "lag ms", "{:+.0f}"),
    ("open_closed_auc", "seg AUC", "{:.3f}"), ("rounding_auc", "seg round", "{:.3f}"),
    ("energy_lag_ms", "vs energy ms", "{:+.0f}"),
    ("jerk_ratio_mouth", "jerk x", "{:.2f}"), ("diversity_mouth", "div mouth", "{:.2f}"),
    ("diversity_head", "div head", "{:.2f}"), ("l1_mouth", "L1 mouth", "{:.4f}"),
)
TABLE_NOTE = ("closure … lag: frame by frame (the headline); seg AUC / seg round: segment extremes "
              "(peak per vowel against least per closure), lenient, kept for comparison")


def format_table(report: dict) -> str:
    """A compact text table: one row per source, key metrics and the targets met."""
    rows = [["source"] + [h for _, h, _ in TABLE_COLUMNS] + ["targets"]]
    for name, entry in report["sources"].items():
        s = entry["summary"]
        cells = ["-" if s.get(k) is None else fmt.format(s[k]) for k, _, fmt in TABLE_COLUMNS]
        met = [v for v in entry["targets"].values() if v is not None]
        rows.append([name] + cells + [f"{sum(met)}/{len(entry['targets'])}"])
    lines = aligned_rows(rows)
    th = report["thresholds"]
    lines.append(TABLE_NOTE)
    lines.append(f"{report['clips']} clips, {report['seconds']:.1f} s; closure threshold (lip aperture) "
                 f"{th['closure']:.3f} ({th['source']})")
    lines += [f"skipped {k}: {v}" for k, v in report.get("skipped", {}).items()]
    return "\n".join(lines)


GROUP_COLUMNS = ("bilabial_closure", "frame_open_closed_auc", "frame_rounding_auc", "openness_corr",
                 "silence_closure", "l1_mouth")


def format_groups(groups: dict, key: str, source: str) -> str:
    """One row per group (e.g. per voice) for one source's lip metrics."""
    rows = [[key, "clips"] + [h for k, h, _ in TABLE_COLUMNS if k in GROUP_COLUMNS]]
    for value, entry in groups.items():
        s = entry[source]
        rows.append([value, str(entry["clips"])] + ["-" if s.get(k) is None else fmt.format(s[k])
                                                    for k, _, fmt in TABLE_COLUMNS if k in GROUP_COLUMNS])
    return "\n".join([f"{source} by {key}:"] + aligned_rows(rows))


def aligned_rows(rows: list[list[str]]) -> list[str]:
    """Text table lines: first column left-aligned, the rest right-aligned, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


# Shading of phone classes in the figure.
PHONE_COLOURS = (
    (metrics.BILABIAL, "#d62728"), (metrics.OPEN_VOWELS, "#1f77b4"),
    (metrics.ROUNDED_VOWELS, "#2ca02c"), (metrics.SILENCE, "#bbbbbb"),
)
SOURCE_STYLES = {"reference": dict(color="black", lw=2.2), "rules": dict(color="#9467bd", lw=1.2, ls="--"),
                 "energy": dict(color="#ff7f0e", lw=1.0, ls=":")}


def _shade_phonemes(ax, phonemes, seconds: float, label: bool) -> None:
    for p in phonemes or ():
        if p.start >= seconds:
            break
        colour = next((c for phones, c in PHONE_COLOURS if p.phone in phones), None)
        if colour is not None:
            ax.axvspan(p.start, min(p.end, seconds), color=colour, alpha=0.15, lw=0)
        if label:
            ax.text((p.start + min(p.end, seconds)) / 2, 1.02, p.phone, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=6)


def write_figure(path: str | Path, clips: list[Clip], predictions: dict[str, list[np.ndarray]],
                 thresholds: metrics.Thresholds, num_clips: int = FIGURE_CLIPS) -> None:
    """PNG: for a few clips, jawOpen, lip aperture (with the closure threshold) and rounding over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [k for k, c in enumerate(clips) if c.phonemes][:num_clips] or list(range(min(num_clips, len(clips))))
    panels = (("jawOpen", lambda v: v[:, labels.index("jawOpen")]),
              ("lip aperture", metrics.aperture), ("funnel+pucker", metrics.rounding))
    fig, axes = plt.subplots(len(chosen) * len(panels), 1, figsize=(12, 1.9 * len(chosen) * len(panels)),
                             squeeze=False)
    for row, k in enumerate(chosen):
        clip = clips[k]
        seconds = min(clip.duration, FIGURE_SECONDS)
        n = min(len(clip.labels), int(math.ceil(seconds * clip.fps)))
        t = np.arange(n) / clip.fps
        for j, (title, signal) in enumerate(panels):
            ax = axes[row * len(panels) + j, 0]
            _shade_phonemes(ax, clip.phonemes, seconds, label=j == 0)
            for name, preds in predictions.items():
                ax.plot(t, signal(preds[k][:n]), label=name, **SOURCE_STYLES.get(name, dict(lw=1.4)))
            if title == "lip aperture":
                ax.axhline(thresholds.closure, color="grey", lw=0.8, ls="-.", label="closure threshold")
            ax.set_xlim(0, seconds)
            ax.set_ylabel(title, fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_title(clip.id, fontsize=9, pad=12)
    axes[0, 0].legend(fontsize=7, ncol=6, loc="upper right")
    axes[-1, 0].set_xlabel("seconds (red p/b/m, blue open vowels, green rounded vowels, grey silence)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


# --- command line --------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .runtime import add_backend_argument, model_argument_help   # here: scoring label sources needs no model code

    parser.add_argument("data", metavar="DATA", help="dataset folder (clips + manifest*.json)")
    parser.add_argument("--model", metavar="M", help=model_argument_help())
    parser.add_argument("--frames", metavar="DIR", help="folder of frames files named <clip_id>.json")
    add_backend_argument(parser)
    parser.add_argument("--split", help="only clips whose manifest entry has this split (default: all)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N clips (by id)")
    parser.add_argument("-o", "--out", default="eval", metavar="DIR",
                        help="writes DIR/report.json and DIR/eval.png (default ./eval)")
    parser.add_argument("--by", metavar="KEY",
                        help="also score each group of clips sharing metadata KEY (e.g. voice, source)")
    parser.add_argument("--figure-clips", type=int, default=FIGURE_CLIPS, metavar="N",
                        help=f"clips drawn in eval.png (default {FIGURE_CLIPS}; 0: no figure)")
    parser.add_argument("--noise-snr", type=float, metavar="DB",
                        help="listen through coloured noise DB decibels below the speech (e.g. 20)")
    parser.add_argument("--reverb", type=float, metavar="RT60",
                        help="listen through a synthetic room with this reverberation time in seconds (e.g. 0.4)")
    parser.add_argument("--telephone", action="store_true",
                        help="listen through a phone line: 300-3400 Hz, 8 kHz, 8-bit mu-law (after any room and noise)")
    from .postprocess import add_arguments as add_post_arguments

    add_post_arguments(parser)     # for --model: animate's post-processing flags (default: the model's)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be at least 1, got {args.limit}")
    if args.figure_clips < 0:
        raise EvalError(f"--figure-clips must be 0 (no figure) or more, got {args.figure_clips}")
    out = Path(args.out)
    check_output(out / "report.json")     # before minutes of scoring, not after
    clips = degraded(load_clips(args.data, args.split, args.limit), args.noise_snr, args.reverb, args.telephone)
    sources: dict[str, Source] = {}
    names = {}
    post = None
    if args.model:
        from .postprocess import given_options

        sources["model"], names["model"], post = model_source(args.model, args.backend, given_options(args))
    if args.frames:
        sources["frames"] = frames_source(args.frames)
        names["frames"] = str(args.frames)
    thresholds = metrics.thresholds_from_reference([c.labels for c in clips], clips)   # also for groups and figure
    report, predictions = evaluate_with_predictions(clips, sources, thresholds=thresholds)
    if args.by:
        report["groups"] = {args.by: group_summaries(clips, predictions, args.by, thresholds)}
    report.update({"data": str(args.data), "split": args.split, "limit": args.limit, "source_names": names,
                   "listening": {"noise_snr_db": args.noise_snr, "reverb_rt60_s": args.reverb,
                                 "telephone": args.telephone},
                   "post": post})
    write_json(out / "report.json", report)
    written = [out / "report.json"]
    if args.figure_clips:
        write_figure(out / "eval.png", clips, predictions, thresholds, args.figure_clips)
        written.append(out / "eval.png")
    print(format_table(report))
    for name, entry in report["sources"].items():
        if entry.get("open_closed_auc_gap_95"):
            low, high = entry["open_closed_auc_gap_95"]
            print(f"{name}: open/closed AUC minus the energy jaw's, 95 % over clips: [{low:+.4f}, {high:+.4f}]")
    for name in (n for n in ("model", "frames") if args.by and n in predictions):
        print(format_groups(report["groups"][args.by], args.by, name))
    print("wrote " + " and ".join(str(p) for p in written))
    return 0
