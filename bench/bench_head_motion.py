"""Head motion on a long input of a voice the model never heard, as `talkmotion animate` makes it.

    .venv/bin/python bench/bench_head_motion.py DATA [--minutes 5] [--model M] [--out out/head.json]

Joins the audio of DATA's clips (a clip set: `corpus synth` / `corpus align`, e.g. the
held-out Kokoro voices) into one WAV of `--minutes`, with the clips' own pauses, animates
it with `talkmotion animate` (default options unless --model) and prints what issue 11
asks of the head:
  mean_deg             each angle's mean (pitch, yaw, roll), want within ±2°
  moving_share         share of 5 s windows whose std is at least 0.8° (pitch, yaw), want ≥ 0.8
  first_last_min_deg   |mean of the last minute − mean of the first| per angle, want ≤ 1°
  frozen_share         share of 5 s windows where every angle's std is under 0.1° (a frozen head)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WINDOW_S = 5.0
MOVING_DEG = 0.8
FROZEN_DEG = 0.1


def long_input(data: Path, seconds: float) -> np.ndarray:
    from talkmotion.audio import SAMPLE_RATE
    from talkmotion.data.clips import load_clip, read_dataset

    parts, total = [], 0
    for entry in sorted(read_dataset(data).values(), key=lambda e: e["path"]):
        audio = load_clip(entry["path"]).audio
        parts.append(audio)
        total += audio.size
        if total >= seconds * SAMPLE_RATE:
            break
    if total < seconds * SAMPLE_RATE:
        raise SystemExit(f"{data}: only {total / SAMPLE_RATE:.0f} s of audio, {seconds:.0f} s asked")
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]


def head_figures(head: np.ndarray, fps: int) -> dict:
    """head (T, 3) degrees → the figures of the module doc."""
    w = int(WINDOW_S * fps)
    windows = head[: head.shape[0] // w * w].reshape(-1, w, 3).std(axis=1)
    minute = 60 * fps
    return {"mean_deg": head.mean(axis=0).round(3).tolist(),
            "std_deg": head.std(axis=0).round(3).tolist(),
            "moving_share": (windows >= MOVING_DEG).mean(axis=0).round(3).tolist(),
            "frozen_share": float(np.all(windows < FROZEN_DEG, axis=1).mean()),
            "first_last_min_deg": np.abs(head[-minute:].mean(axis=0) - head[:minute].mean(axis=0)).round(3).tolist(),
            "windows": int(windows.shape[0])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a clip set of voices the model never heard")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--model", default=None, help="a checkpoint or exported model (default: the default model)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    from talkmotion.audio import write_wav

    with tempfile.TemporaryDirectory() as tmp:
        wav, frames = Path(tmp) / "long.wav", Path(tmp) / "long.json"
        write_wav(wav, long_input(args.data, args.minutes * 60))
        cmd = [sys.executable, "-m", "talkmotion", "animate", str(wav), "-o", str(frames), "-q"]
        subprocess.run(cmd + (["--model", args.model] if args.model else []), check=True)
        obj = json.loads(frames.read_text())
    head = np.asarray(obj["frames"], np.float64)[:, -3:]
    figures = {"data": str(args.data), "minutes": args.minutes, "model": obj["model"], **head_figures(head, obj["fps"])}
    print(json.dumps(figures, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
