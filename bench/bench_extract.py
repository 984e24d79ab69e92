"""Extraction speed and memory: real time factor per CPU core, peak RSS for a short and a long video.

    .venv/bin/python bench/bench_extract.py [--seconds 10 600] [--core 0]

Makes 640x360 30 fps H.264 videos of a real face (scikit-image's astronaut,
turning in-plane) with an audio track, then extracts each in a fresh process
pinned to one CPU core (taskset), calling the same extract_video() the
workers run. Prints, per video: real time factor (video seconds / wall
seconds), video seconds per CPU second (robust when other jobs share the
machine), and the extracting process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT, FPS = 640, 360, 30
CYCLE_FRAMES = 60                 # the face's motion repeats every 2 s, so frames are made once


def face_frames(seconds: float):
    """(time, rgb) for `seconds` of 640x360 video: the face turning on a plain background."""
    from face_videos import astronaut_face, roll_angle, rotated

    face = rotated(astronaut_face(), 0.0, 300)
    cycle = []
    for i in range(CYCLE_FRAMES):
        canvas = np.full((HEIGHT, WIDTH, 3), 96, np.uint8)
        turned = rotated(face, roll_angle(i / FPS), 300)
        top, left = (HEIGHT - 300) // 2, (WIDTH - 300) // 2 + int(40 * np.sin(2 * np.pi * i / CYCLE_FRAMES))
        canvas[top:top + 300, left:left + 300] = turned
        cycle.append(canvas)
    for i in range(int(seconds * FPS)):
        yield i / FPS, cycle[i % CYCLE_FRAMES]


def make_video(path: Path, seconds: float) -> Path:
    from face_videos import tone, write_video

    return write_video(path, face_frames(seconds), FPS, tone(seconds))


def peak_rss_mib() -> float:
    """This process's peak resident memory since exec (VmHWM). Not ru_maxrss: Linux carries that
    over from the forking parent, which here held the generated video's audio."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_child(video: str, out: str) -> None:
    """Runs in the pinned process: extract one video, print the figures as JSON.

    Imports (a worker's one-time start, mostly mediapipe) are timed apart from the video.
    """
    started = time.perf_counter()
    import mediapipe  # noqa: F401  (imported by the tracker; here so its one-time cost is not the video's)

    from talkmotion.assets import LANDMARKER
    from talkmotion.data.extract import video_id
    from talkmotion.data.video_clips import VideoJob, extract_video

    import_s = time.perf_counter() - started

    job = VideoJob(path=video, video_id=video_id(Path(video)), split="train", out=out,
                   landmarker=str(LANDMARKER), clip_seconds=20)
    clips = []
    wall, cpu = time.perf_counter(), time.process_time()
    facts = extract_video(job, lambda status, cid, entry: clips.append(status))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_mib = peak_rss_mib()
    print(json.dumps({"video_s": facts["decoded_seconds"], "wall_s": wall, "cpu_s": cpu, "clips": len(clips),
                      "ok": clips.count("ok"), "peak_rss_mib": peak_mib, "import_s": import_s}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 600], help="video lengths")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin the extraction to")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure_child(*args.child)
        return 0
    print(f"bench_extract: {WIDTH}x{HEIGHT} {FPS} fps H.264 + AAC, one process pinned to core {args.core}, "
          f"CPU: {os.cpu_count()} cores")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            video = make_video(Path(tmp) / f"face_{int(seconds)}s.mp4", seconds)
            cmd = ["taskset", "-c", str(args.core), sys.executable, __file__, "--child", str(video),
                   str(Path(tmp) / f"data_{int(seconds)}")]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(line)
            results.append(r)
            print(f"  {seconds:>6.0f} s video: {r['video_s'] / r['wall_s']:.2f}x real time (wall), "
                  f"{r['video_s'] / r['cpu_s']:.2f} video s per CPU s, {r['wall_s'] / (r['video_s'] * FPS) * 1000:.1f} "
                  f"ms/frame, peak RSS {r['peak_rss_mib']:.0f} MiB, {r['ok']}/{r['clips']} clips kept "
                  f"(worker start-up {r['import_s']:.1f} s, once per worker)")
    if len(results) > 1:
        ratio = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
        print(f"  peak RSS, longest / shortest video: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
