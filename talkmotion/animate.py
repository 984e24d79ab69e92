"""Offline animation: a loop of `Animator.push`, so offline and streaming agree exactly.

    talkmotion animate speech.wav -o speech.json -o speech.csv
    talkmotion animate a.wav b.mp3 clip.mp4 -o out/          # one file per input
    arecord -f S16_LE -r 16000 | talkmotion animate - --sample-rate 16000 -o -
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from . import labels
from .audio import SAMPLE_RATE, SUPPORTED_FPS, AudioError, iter_audio, pcm16_to_float, resample
from .errors import TalkmotionError, UsageError
from .frames import Frames
from .postprocess import PostOptions
from .runtime import add_backend_argument, model_argument_help
from .stream import Animator

PROGRESS_MIN_SECONDS = 30.0   # show a progress bar for inputs longer than this
STDIN_BLOCK = 32_000          # bytes read from stdin at a time (1 s of 16 kHz 16-bit mono)
MAX_STDIN_CHANNELS = 64       # ffmpeg's own ceiling on channels in one stream


def animate_chunks(model, chunks, options: PostOptions | None = None, progress=None, style=None,
                   raw: bool = False) -> Frames:
    """Frames for an iterable of 16 kHz float chunks (the whole stream, flushed); model: a runtime
    (`talkmotion.load_model()`); `style` a StyleLayer; `raw`: the model's own frames (Animator)."""
    animator = Animator(model, options, style, raw=raw)
    parts, samples = [], 0
    for chunk in chunks:
        samples += chunk.size
        parts.append(animator.push(chunk).values)
        if progress is not None:
            progress.update(chunk.size / SAMPLE_RATE)
    parts.append(animator.flush().values)
    values = np.concatenate(parts) if parts else np.zeros((0, labels.NUM_CHANNELS), np.float32)
    return Frames(values, fps=animator.fps, latency_ms=animator.latency_ms, model=animator.name,
                  duration=samples / SAMPLE_RATE)


def animate_pcm(model, pcm: np.ndarray, options: PostOptions | None = None, raw: bool = False) -> Frames:
    """Whole 16 kHz mono float signal → Frames (`raw`: the model's own, as Animator)."""
    return animate_chunks(model, [np.asarray(pcm, np.float32)], options, raw=raw)


def animate_file(model, path, options: PostOptions | None = None, progress: bool = False, style=None,
                 allow_truncated: bool = False) -> Frames:
    """Audio or video file → Frames, decoded and animated in a stream (constant memory).

    model: a runtime (`talkmotion.load_model()`); style: a StyleLayer (emotions). A truncated
    file is an AudioError unless `allow_truncated` (then a warning). Returns Frames:
    .blendshapes (T, 52), .head (T, 3) degrees, at the model's frame rate.
    """
    bar = _progress_bar(path) if progress else None
    try:
        chunks = iter_audio(path, chunk_seconds=1.0, allow_truncated=allow_truncated)
        frames = animate_chunks(model, chunks, options, bar, style)
    finally:
        if bar is not None:
            bar.close()
    if frames.seconds == 0:
        raise AudioError(f"{path}: contains no audio samples")
    return frames


def stdin_chunks(sample_rate: int, channels: int, stream=None):
    """Raw little-endian 16-bit PCM from stdin, resampled to 16 kHz."""
    stream = stream or sys.stdin.buffer
    leftover = b""
    while True:
        block = stream.read(STDIN_BLOCK)
        if not block:
            break
        data = leftover + block
        usable = len(data) - len(data) % (2 * channels)
        leftover = data[usable:]
        yield resample(pcm16_to_float(data[:usable], channels), sample_rate, SAMPLE_RATE)


def _progress_bar(path):
    import av
    from tqdm import tqdm

    try:
        with av.open(str(path)) as container:
            seconds = (container.duration or 0) / 1_000_000
    except (av.error.FFmpegError, OSError):
        return None
    if seconds < PROGRESS_MIN_SECONDS:
        return None
    return tqdm(total=round(seconds, 1), unit="s", desc=Path(path).name, file=sys.stderr,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")


# --- outputs ----------------------------------------------------------------------------------

def plan_outputs(inputs: list[str], outs: list[str], formats: list[str]) -> list[list[tuple[str, str]]]:
    """For each input, the (path, format) pairs to write. Raises OutputFormatError on a bad plan."""
    from .files import check_output
    from .sinks import FILE_FORMATS, OutputFormatError, extension, file_format

    unknown = [f for f in formats if f not in FILE_FORMATS]
    if unknown or not formats:
        problem = f"unknown format {', '.join(unknown)}" if unknown else "names no format"
        raise OutputFormatError(f"--format {','.join(formats)!r}: {problem}"
                                f"; known formats: {', '.join(FILE_FORMATS)}")
    if len(inputs) == 1 and outs and not _is_dir(outs[0]):
        return [[(o, "json" if o == "-" else file_format(check_output(o))) for o in outs]]
    if len(outs) > 1:
        raise OutputFormatError("with several inputs give one output folder: -o DIR/")
    if outs and (outs[0] == "-" or _names_a_file(outs[0])):
        what = "stdout takes one input's frames" if outs[0] == "-" else "names a file"
        raise OutputFormatError(f"-o {outs[0]}: {what}; with {len(inputs)} inputs give an output folder: -o DIR/")
    folder = Path(outs[0]) if outs else Path(".")
    stems = [("stdin" if i == "-" else Path(i).stem) for i in inputs]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise OutputFormatError(f"several inputs share the name {', '.join(dupes)}; animate them separately")
    return [[(str(check_output(folder / f"{stem}.{extension(fmt)}")), fmt) for fmt in formats] for stem in stems]


def _names_a_file(out: str) -> bool:
    """An existing file, or a path whose extension is an output format (out.json): not a folder."""
    from .sinks import OutputFormatError, file_format

    if _is_dir(out):
        return False
    if Path(out).is_file():
        return True
    try:
        file_format(out)
    except OutputFormatError:
        return False
    return True


def _is_dir(out: str) -> bool:
    return out.endswith(("/", "\\")) or Path(out).is_dir()


def write_outputs(frames: Frames, outputs: list[tuple[str, str]], avatar: str | None = None) -> None:
    """Write every output; `avatar` is the .glb/.vrm that glTF outputs animate (default: ours)."""
    from .sinks import file_sink

    for path, fmt in outputs:
        if path == "-":
            import json

            sys.stdout.write(json.dumps(frames.to_json("stdout")) + "\n")
            continue
        sink = file_sink(path, fmt, avatar=avatar)
        sink.open(frames.fps, frames.model, frames.latency_ms)
        sink.write(frames)
        sink.close(frames.seconds)


# --- CLI ----------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    from .postprocess import add_arguments as add_post_arguments
    from .style import add_arguments as add_style_arguments

    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="audio (wav, flac, ogg, mp3, m4a) or video files, or - for 16-bit PCM on stdin")
    parser.add_argument("-o", "--out", action="append", default=[],
                        help="output file (format from its extension; repeatable) or folder; - for stdout")
    parser.add_argument("--format", default="json",
                        help="formats for folder outputs, comma-separated: json, csv, livelink, vrma, glb")
    parser.add_argument("--avatar", default=None, help=".glb/.vrm avatar that .glb outputs animate "
                        "(default: the built-in reference head)")
    parser.add_argument("--fps", type=int, default=30, choices=SUPPORTED_FPS, help="output frame rate")
    parser.add_argument("--model", default=None, help=model_argument_help())
    add_backend_argument(parser)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the model")
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help="stdin PCM sample rate")
    parser.add_argument("--channels", type=int, default=1, help="stdin PCM channels")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    parser.add_argument("--keep-going", action="store_true",
                        help="with several inputs, report a bad one and go on; exit status 2 at the end")
    parser.add_argument("--allow-truncated", action="store_true",
                        help="animate what a truncated file holds, with a warning, instead of refusing it")
    add_post_arguments(parser)
    add_style_arguments(parser)


def run(args) -> int:
    from .postprocess import options_from_args
    from .runtime import load_model
    from .style import layer_from_args

    check_flags(args)
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    plan = plan_outputs(args.inputs, args.out, formats)
    layer_from_args(args, SUPPORTED_FPS[0])  # bad emotion flags or timeline: refused before any work
    options_from_args(args)                  # bad post-processing values too
    model = load_model(args.model, args.backend, args.threads)
    options = options_from_args(args, model.post_defaults)
    failed = []
    for source, outputs in zip(args.inputs, plan):
        try:
            animate_one(args, model, options, source, outputs)
        except TalkmotionError as err:
            if not args.keep_going:
                raise
            print(f"talkmotion animate: error: {err}", file=sys.stderr)
            failed.append(source)
    if failed:
        print(f"talkmotion animate: {len(failed)} of {len(args.inputs)} inputs failed: {', '.join(failed)}",
              file=sys.stderr)
        return 2
    return 0


def check_flags(args) -> None:
    """Flags a run cannot use, refused before the model loads."""
    from .audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

    if args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be at least 1")
    if "-" in args.inputs:
        if not MIN_SAMPLE_RATE <= args.sample_rate <= MAX_SAMPLE_RATE:
            raise UsageError(f"--sample-rate {args.sample_rate}: stdin PCM must be "
                             f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
        if not 1 <= args.channels <= MAX_STDIN_CHANNELS:
            raise UsageError(f"--channels {args.channels}: stdin PCM has 1..{MAX_STDIN_CHANNELS} channels")


def animate_one(args, model, options, source: str, outputs: list[tuple[str, str]]) -> None:
    """Animate one input with `model` (a runtime) and write its outputs."""
    from .style import layer_from_args

    start = time.perf_counter()
    style = layer_from_args(args, model.timing.fps)
    if source == "-":
        frames = animate_chunks(model, stdin_chunks(args.sample_rate, args.channels), options, style=style)
        if frames.seconds == 0:
            raise AudioError("stdin: no audio samples received")
    else:
        frames = animate_file(model, source, options, progress=not args.quiet, style=style,
                              allow_truncated=args.allow_truncated)
    frames = frames.resample(args.fps)
    write_outputs(frames, outputs, args.avatar)
    if not args.quiet:
        took = time.perf_counter() - start
        print(f"{source}: {frames.seconds:.2f} s of audio → {len(frames)} frames at "
              f"{args.fps} fps, latency {frames.latency_ms:.0f} ms, {took:.2f} s "
              f"({frames.seconds / max(took, 1e-9):.0f}× real time) → {', '.join(p for p, _ in outputs)}",
              file=sys.stderr)
