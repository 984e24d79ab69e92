"""`talkmotion stream`: live audio in, frames out in real time to VMC, Live Link, WebSocket and files.

Sources: an audio/video file, the microphone (`mic`, via sounddevice), raw PCM on
stdin (`-`), or a WebSocket URL sending binary PCM (`ws://...`). That server may
also send text {"type": "style", "emotions": {"joy": 0.6}, "attack_s": 0.3,
"release_s": 0.6} to change the emotion live, from the next frame (style.py); a bad
one is answered with {"type": "error", "message": ...} and the stream goes on.

Pacing. Audio is never consumed faster than real time: chunk k is pushed no
earlier than t0 + (its first sample)/16000, so a file plays like a microphone.
Frames leave no earlier than t0 + i/fps + latency, where latency is the
animator's stated look-ahead: the model hands frames over in small groups, and
the pacer spreads them back out to one every 1/fps, each at the same delay
behind the audio it belongs to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import numpy as np

from .audio import SAMPLE_RATE, SUPPORTED_FPS, check_pcm, iter_audio, pcm16_to_float
from .errors import TalkmotionError
from .frames import Frames
from .sinks import Sink
from .sinks.udp import SinkError

CHUNK_SECONDS = 0.02   # 20 ms: small enough that chunking adds no visible delay
FAST_CHUNK_SECONDS = 1.0   # --fast on a file or stdin: nothing is paced, so chunks as large as animate's
PCM_FORMATS = ("s16le", "f32le")
BYTES_PER_SAMPLE = {"s16le": 2, "f32le": 4}
log = logging.getLogger(__name__)
# A frame leaving later than this behind its due time counts as late in the stats.
LATE_TOLERANCE_S = 1 / 30


class SourceError(TalkmotionError, ValueError):
    """An audio source that cannot be opened or read; the message names it."""


# --- sources ----------------------------------------------------------------

def decode_pcm(data: bytes, fmt: str, source: str) -> np.ndarray:
    """Raw mono PCM bytes (s16le or f32le) → float32 samples; NaN/inf refused."""
    if fmt not in PCM_FORMATS:
        raise SourceError(f"{source}: unknown PCM format {fmt!r}; use one of {', '.join(PCM_FORMATS)}")
    width = BYTES_PER_SAMPLE[fmt]
    if len(data) % width:
        raise SourceError(f"{source}: {len(data)} bytes is not a whole number of {width}-byte {fmt} samples")
    if fmt == "s16le":
        return pcm16_to_float(data)
    return check_pcm(np.frombuffer(data, dtype="<f4").copy(), source)


async def file_source(path: str | Path, chunk_seconds: float = CHUNK_SECONDS) -> AsyncIterator[np.ndarray]:
    """An audio or video file's first audio track, 16 kHz mono, in small chunks."""
    for chunk in iter_audio(path, chunk_seconds=chunk_seconds):
        yield chunk
        await asyncio.sleep(0)


async def stdin_source(fmt: str = "s16le", chunk_seconds: float = CHUNK_SECONDS, stream=None) -> AsyncIterator[np.ndarray]:
    """Raw 16 kHz mono PCM from stdin (or `stream`) until end of input."""
    if fmt not in PCM_FORMATS:
        raise SourceError(f"stdin: unknown PCM format {fmt!r}; use one of {', '.join(PCM_FORMATS)}")
    stream = stream if stream is not None else sys.stdin.buffer
    width = BYTES_PER_SAMPLE[fmt]
    size = int(chunk_seconds * SAMPLE_RATE) * width
    leftover = b""
    while True:
        data = await asyncio.to_thread(stream.read, size)
        if not data:
            break
        data = leftover + data  # a pipe may split a sample between reads
        usable = len(data) - len(data) % width
        leftover = data[usable:]
        yield decode_pcm(data[:usable], fmt, "stdin")


async def mic_source(device: str | int | None = None, chunk_seconds: float = CHUNK_SECONDS,
                     seconds: float | None = None) -> AsyncIterator[np.ndarray]:
    """The microphone (sounddevice/PortAudio) at 16 kHz mono, for `seconds` or until interrupted."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as err:  # OSError: the PortAudio library itself is missing
        raise SourceError(f"microphone: sounddevice is not usable ({err}); install talkmotion[live] "
                          "and libportaudio2") from None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def on_audio(block, frames, time_info, status):  # runs on PortAudio's thread
        loop.call_soon_threadsafe(queue.put_nowait, block[:, 0].copy())

    try:
        stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", device=device,
                                blocksize=int(chunk_seconds * SAMPLE_RATE), callback=on_audio)
    except (sd.PortAudioError, ValueError) as err:
        raise SourceError(f"microphone {device if device is not None else '(default)'}: cannot open ({err})") from None
    total = 0
    limit = None if seconds is None else int(seconds * SAMPLE_RATE)
    with stream:
        while limit is None or total < limit:
            chunk = await queue.get()
            total += chunk.size
            yield chunk


async def websocket_source(url: str, fmt: str = "s16le",
                           on_text: Callable[[str], str | None] | None = None) -> AsyncIterator[np.ndarray]:
    """Binary PCM messages from a WebSocket server (16 kHz mono) until it closes.

    on_text: called with each text message; what it returns (if anything) is sent back.
    """
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, heartbeat=30) as ws:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        yield decode_pcm(msg.data, fmt, url)
                    elif msg.type == aiohttp.WSMsgType.ERROR:
                        raise SourceError(f"{url}: connection failed ({ws.exception()})")
                    elif msg.type == aiohttp.WSMsgType.TEXT and on_text is not None:
                        reply = on_text(msg.data)
                        if reply is not None:
                            await ws.send_str(reply)
    except (aiohttp.ClientError, OSError) as err:
        raise SourceError(f"{url}: cannot connect ({err})") from None


def open_source(spec: str, fmt: str = "s16le", device: str | None = None,
                seconds: float | None = None, on_text=None,
                chunk_seconds: float = CHUNK_SECONDS) -> AsyncIterator[np.ndarray]:
    """'mic', '-', 'ws://…'/'wss://…' or a file path → an async iterator of 16 kHz chunks.
    on_text: a WebSocket source's text-message handler (websocket_source); chunk_seconds: the
    chunks a file or stdin is read in (a microphone and a WebSocket send their own)."""
    if spec == "mic":
        return mic_source(int(device) if device and device.isdigit() else device, seconds=seconds)
    if spec == "-":
        return stdin_source(fmt, chunk_seconds)
    if spec.startswith(("ws://", "wss://")):
        return websocket_source(spec, fmt, on_text)
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"{spec}: no such file (inputs are a file, 'mic', '-' for stdin, or ws://…)")
    return file_source(path, chunk_seconds)


# --- pacing -----------------------------------------------------------------

@dataclass
class StreamStats:
    """What a stream did, for the CLI's summary and the load test."""

    frames: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    compute_seconds: float = 0.0     # time inside animator.push/flush
    late_frames: int = 0             # frames that left more than LATE_TOLERANCE_S after their due time
    max_lag_seconds: float = 0.0     # worst delay behind due time

    @property
    def real_time_factor(self) -> float:
        """Audio seconds animated per second of compute (>1 keeps up with real time)."""
        return self.audio_seconds / self.compute_seconds if self.compute_seconds > 0 else float("inf")


class Pacer:
    """Hands frames to a callback no earlier than t0 + i/fps + delay each (delay None: at once)."""

    def __init__(self, fps: float, delay_s: float | None, emit: Callable[[Frames], None],
                 clock: Callable[[], float] = time.monotonic, stats: StreamStats | None = None,
                 sleep: Callable[[float], Awaitable] = asyncio.sleep):
        self.fps, self.delay_s, self.emit, self.clock, self.sleep = fps, delay_s, emit, clock, sleep
        self.stats = stats or StreamStats()
        self.t0: float | None = None

    def start(self, already_heard_s: float = 0.0) -> None:
        """Start the clock; `already_heard_s` of audio were heard before this moment."""
        self.t0 = self.clock() - already_heard_s

    def due(self, index: int) -> float:
        return self.t0 + index / self.fps + self.delay_s

    async def wait_audio(self, sample: int) -> None:
        """Sleep until the audio sample `sample` would have been heard."""
        wait = self.t0 + sample / SAMPLE_RATE - self.clock()
        if wait > 0:
            await self.sleep(wait)

    async def send(self, frames: Frames) -> None:
        """Emit each row at its due time; rows already due go out together."""
        if self.delay_s is None:  # unpaced: everything at once
            if len(frames):
                self.emit(frames)
                self.stats.frames += len(frames)
            return
        k = 0
        while k < len(frames):
            now = self.clock()
            wait = self.due(frames.start + k) - now
            if wait > 0:
                await self.sleep(wait)
                now = self.clock()
            ready = k + 1
            while ready < len(frames) and self.due(frames.start + ready) <= now:
                ready += 1
            lag = now - self.due(frames.start + k)
            self.stats.max_lag_seconds = max(self.stats.max_lag_seconds, lag)
            self.stats.late_frames += int(sum(now - self.due(frames.start + j) > LATE_TOLERANCE_S
                                              for j in range(k, ready)))
            self.emit(dataclasses.replace(frames, values=frames.values[k:ready], start=frames.start + k))
            self.stats.frames += ready - k
            k = ready


async def run_stream(source: AsyncIterator[np.ndarray], animator, sinks: list[Sink], realtime: bool = True,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], Awaitable] = asyncio.sleep) -> StreamStats:
    """Push `source` through `animator` and deliver its frames to `sinks`, paced in real time.

    animator: talkmotion.stream.Animator-like (push, flush, fps, latency_ms).
    With realtime=False nothing waits: frames go out as fast as they are made.
    """
    stats = StreamStats()

    def emit(frames: Frames) -> None:
        for sink in sinks:
            sink.write(frames)

    pacer = Pacer(animator.fps, animator.latency_ms / 1000 if realtime else None, emit, clock, stats, sleep)
    samples = 0
    async for chunk in source:
        if pacer.t0 is None:
            # The clock starts with the first audio: a microphone takes a while to open,
            # and its first chunk was recorded over the chunk's length before it arrived.
            pacer.start(chunk.size / SAMPLE_RATE)
        if realtime:
            await pacer.wait_audio(samples)
        samples += chunk.size
        started = time.perf_counter()
        frames = await asyncio.to_thread(animator.push, chunk)
        stats.compute_seconds += time.perf_counter() - started
        await pacer.send(frames)
    if pacer.t0 is None:  # a source without audio
        pacer.start()
    started = time.perf_counter()
    frames = animator.flush()
    stats.compute_seconds += time.perf_counter() - started
    await pacer.send(frames)
    stats.audio_seconds = samples / SAMPLE_RATE
    stats.wall_seconds = clock() - pacer.t0
    return stats


# --- command ----------------------------------------------------------------

def add_arguments(parser) -> None:
    from .runtime import add_backend_argument, model_argument_help

    parser.add_argument("input", help="audio/video file, 'mic', '-' (raw PCM on stdin) or ws://host:port/path")
    parser.add_argument("--model", help=model_argument_help())
    parser.add_argument("--vmc", metavar="HOST:PORT", action="append", default=[],
                        help="send VMC protocol (repeatable; default port 39539 for a marionette, "
                             "39540 for a performer)")
    parser.add_argument("--vmc-role", choices=("marionette", "performer"), default="marionette",
                        help="marionette: expressions + neck/head bones (VSeeFace, VMagicMirror, Warudo, VNyan "
                             "receivers); performer: expressions + gaze only (VirtualMotionCapture)")
    parser.add_argument("--vmc-names", choices=("both", "perfect-sync", "vrm0"), default="both",
                        help="expression names sent over VMC: ARKit PascalCase, VRM 0.x presets, or both")
    parser.add_argument("--livelink", metavar="HOST:PORT", action="append", default=[],
                        help="send Live Link Face UDP to Unreal (default port 11111; repeatable)")
    parser.add_argument("--livelink-subject", default="talkmotion", help="Live Link subject name")
    parser.add_argument("--ws", metavar="HOST:PORT", help="serve WebSocket JSON frames at ws://HOST:PORT/")
    parser.add_argument("-o", "--output", action="append", default=[],
                        help="also write a file (.json, .csv, … by extension), written when the stream ends")
    parser.add_argument("--pcm-format", choices=PCM_FORMATS, default="s16le",
                        help="sample format of stdin / WebSocket input (16 kHz mono)")
    parser.add_argument("--device", help="microphone (sounddevice name or index)")
    parser.add_argument("--seconds", type=float, help="stop the microphone after this many seconds")
    parser.add_argument("--fast", action="store_true", help="no real-time pacing: as fast as possible")
    add_backend_argument(parser)
    from .postprocess import add_arguments as add_post_arguments
    from .style import add_arguments as add_style_arguments

    add_post_arguments(parser)
    add_style_arguments(parser)


class StyleInbox:
    """A WebSocket source's text messages → `animator.set_style`; other messages are ignored.

    Called with each text message; returns the error message to send back for a style
    message that cannot be used. `animator` is set once the model is loaded, before
    the source yields anything.
    """

    def __init__(self, animator=None):
        self.animator = animator

    def __call__(self, text: str) -> str | None:
        import json

        from .sinks.websocket import error_message
        from .style import StyleError, parse_style_message

        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return None  # not a control message: greetings, status
        if not isinstance(obj, dict) or obj.get("type") != "style":
            return None
        try:
            emotions, attack, release = parse_style_message(obj)
        except StyleError as err:
            log.warning("%s", err)
            return error_message(str(err))
        self.animator.set_style(emotions, attack, release)
        return None


def build_sinks(args) -> list[Sink]:
    from .sinks import file_sink
    from .sinks.livelink_udp import LiveLinkUdpSink
    from .sinks.vmc import VmcSink
    from .sinks.websocket import WebSocketBroadcastSink

    sinks: list[Sink] = [VmcSink(a, names=args.vmc_names, role=args.vmc_role) for a in args.vmc]
    sinks += [LiveLinkUdpSink(a, subject=args.livelink_subject) for a in args.livelink]
    if args.ws:
        sinks.append(WebSocketBroadcastSink(args.ws))
    from .files import check_output

    try:
        sinks += [file_sink(check_output(p)) for p in args.output]
    except ValueError as err:  # an unknown file extension, or a path under a file
        raise SinkError(str(err)) from None
    return sinks


def run(args) -> int:
    from .postprocess import options_from_args
    from .runtime import load_model
    from .stream import Animator

    from .style import layer_from_args

    sinks = build_sinks(args)
    if not sinks:
        raise SinkError("no output given; use --vmc, --livelink, --ws or -o FILE")
    layer_from_args(args, SUPPORTED_FPS[0])  # bad emotion flags or timeline: refused before any work
    inbox = StyleInbox()
    # the input is checked before the slow model load
    source = open_source(args.input, args.pcm_format, args.device, args.seconds, on_text=inbox,
                         chunk_seconds=FAST_CHUNK_SECONDS if args.fast else CHUNK_SECONDS)
    model = load_model(args.model, args.backend)
    animator = Animator(model, options_from_args(args, model.post_defaults),
                        style=layer_from_args(args, model.timing.fps))
    inbox.animator = animator
    logging.basicConfig(level=logging.WARNING, format="talkmotion stream: %(message)s")
    stats = asyncio.run(_stream(source, animator, sinks, realtime=not args.fast, model_name=animator.name))
    print(f"talkmotion stream: {stats.frames} frames, {stats.audio_seconds:.2f} s of audio in "
          f"{stats.wall_seconds:.2f} s; {stats.real_time_factor:.1f}× real time compute; "
          f"{stats.late_frames} late frames", file=sys.stderr)
    return 0


async def _until_interrupted(source: AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
    """The source until Ctrl-C, which ends a microphone stream like end of input: files still get written."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        pass
    try:
        async for chunk in source:
            yield chunk
            if stop.is_set():
                print("talkmotion stream: stopping at Ctrl-C; finishing the outputs", file=sys.stderr)
                break
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _stream(source, animator, sinks: list[Sink], realtime: bool, model_name: str) -> StreamStats:
    from .sinks.websocket import WebSocketBroadcastSink

    opened: list[Sink] = []
    try:
        for sink in sinks:
            sink.open(animator.fps, model_name, animator.latency_ms)
            opened.append(sink)
            if isinstance(sink, WebSocketBroadcastSink):
                await sink.start()
                print(f"talkmotion stream: WebSocket frames at ws://{sink.host}:{sink.port}/", file=sys.stderr)
        stats = await run_stream(_until_interrupted(source), animator, sinks, realtime=realtime)
    except BaseException:
        for sink in opened:
            sink.abort()
            if isinstance(sink, WebSocketBroadcastSink):
                await sink.stop()
        raise
    for sink in opened:
        sink.close(stats.audio_seconds)
        if isinstance(sink, WebSocketBroadcastSink):
            await sink.stop()
    return stats
