"""How well and how fast talkmotion's Whisper tiny.en recogniser (asr.py) writes down speech.

    .venv/bin/python bench/bench_transcribe.py DATA [--threads 1]

DATA is a clip set with transcripts (`corpus align` output, e.g. data/dev_real_books). Each
clip of at most 30 s is transcribed on its own, as `corpus transcribe` would a pack, its
digits spelled out; prints the word error rate against the clips' own transcripts (words as
the aligner reads them: data/align.words_of) and the seconds of compute per audio second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from talkmotion.asr import MAX_TOKENS, WhisperRecognizer
    from talkmotion.data.align import words_of
    from talkmotion.data.corpus_transcribe import MAX_SECONDS, spell_numbers
    from talkmotion.eval import load_clips
    from talkmotion.timing import SAMPLE_RATE

    torch.set_num_threads(args.threads)
    recognizer = WhisperRecognizer.installed()
    errors = words = 0
    audio_s = busy_s = 0.0
    for clip in load_clips(args.data):
        seconds = len(clip.audio) / SAMPLE_RATE
        if seconds > MAX_SECONDS or not clip.meta.get("text"):
            continue
        started = time.process_time()
        heard = recognizer.transcribe([clip.audio], MAX_TOKENS)[0]
        busy_s += time.process_time() - started
        said = words_of(clip.meta["text"])
        errors += edit_distance(said, words_of(spell_numbers(heard)))
        words += len(said)
        audio_s += seconds
    if not words:
        print(f"{args.data}: no clip with a transcript of at most {MAX_SECONDS:g} s", file=sys.stderr)
        return 1
    print(f"{args.data}: word error rate {errors / words:.3f} over {words} words; {audio_s:.0f} s of audio, "
          f"{busy_s / audio_s:.2f} s of CPU per audio second ({args.threads} thread(s), one clip per window)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
