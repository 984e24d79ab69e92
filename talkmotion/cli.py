"""`talkmotion` command line.

Each command lives in the module that does its work, as two functions:
`add_arguments(parser)` and `run(args) -> int`. Only the chosen command's module
is imported, so `talkmotion --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import TalkmotionError

# name → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "animate": ("talkmotion.animate", "animate speech files (or stdin PCM) into frames files"),
    "train": ("talkmotion.train", "train or fine-tune a model from a config file"),
    "eval": ("talkmotion.eval", "score a model or label source against phoneme-timed clips"),
    "compare": ("talkmotion.compare", "choose between models on dev sets: figures per set, their mean, and "
                                      "each difference with a bootstrap interval"),
    "corpus": ("talkmotion.data.corpus", "build clip sets: `corpus synth` (TTS), `corpus align` "
                                         "(speech + text), `corpus teach` (speech + a teacher model)"),
    "export": ("talkmotion.runtime.export", "export a model for ONNX Runtime: a folder that runs without torch"),
    "bench": ("talkmotion.bench", "measure streaming speed, latency and memory"),
    "render": ("talkmotion.preview.render", "render an MP4 preview of frames (or speech) on an avatar, with the audio"),
    "avatar": ("talkmotion.preview.avatar", "write the built-in reference avatar (.glb and VRM 1.0 .vrm)"),
    "stream": ("talkmotion.live", "animate live audio (file, mic, stdin, WebSocket) to VMC, Live Link, WebSocket"),
    "extract": ("talkmotion.data.extract", "training clips from talking videos, labelled by MediaPipe"),
    "imitate": ("talkmotion.imitate", "track a video's face and write it as frames (compare, or export to an avatar)"),
    "fetch-dataset": ("talkmotion.data.fetch", "download AVSpeech / TalkingHead-1KH style lists with yt-dlp"),
    "serve": ("talkmotion.serve", "HTTP + WebSocket server with the browser viewer"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkmotion", description="Speech audio to ARKit face and head animation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except TalkmotionError as err:
        print(f"talkmotion {command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if (err.name or "talkmotion").split(".")[0] == "talkmotion":
            raise
        # An install without an optional part (e.g. the inference-only one, without torch).
        print(f"talkmotion {command}: error: needs the Python package {err.name.split('.')[0]!r}, which is not "
              f"installed here (README: Install without torch)", file=sys.stderr)
        return 2
    except OSError as err:   # a path the system refused (missing, not a folder, no permission, disk full)
        if err.filename is None:
            raise
        print(f"talkmotion {command}: error: {err.filename}: {err.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"talkmotion {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
