"""Clip i of a TTS corpus is decided by (seed, i) alone: not by how many workers made the
corpus, which clips a worker made before it, or whether the run was resumed (issue 13, item 10).

espeak-ng's library carries state from one utterance to the next, so the same call gave
other audio after other calls; each utterance is now spoken in a fresh copy of the library.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from talkmotion.cli import main
from talkmotion.data import tts_espeak
from talkmotion.data.clips import Manifest, load_clip
from talkmotion.data.tts import TTSError

FIRST = ("hello there, how are you doing today", "en-gb-x-rp+f2", 0.8, 0.9, 40)
SECOND = ("the quick brown fox jumps over the lazy dog", "en-us+m3", 1.3, 1.1, 70)


def speak(text, voice, rate, pitch, intonation):
    return tts_espeak.synthesize(text, voice, rate, pitch, pitch_range=intonation)


def test_an_utterance_does_not_depend_on_what_was_spoken_before():
    alone = speak(*SECOND)
    speak(*FIRST)
    after_another = speak(*SECOND)
    again = speak(*SECOND)
    for other in (after_another, again):
        np.testing.assert_array_equal(other.audio, alone.audio)
        assert [(p.phone, p.start, p.end, p.stress) for p in other.phonemes] == \
               [(p.phone, p.start, p.end, p.stress) for p in alone.phonemes]


def test_a_synthesis_that_hangs_is_stopped_at_its_timeout():
    start = time.monotonic()
    with pytest.raises(TTSError, match="took more than 0.5 s; stopped"):
        tts_espeak._in_fresh_copy(lambda: time.sleep(30), 0.5, "espeak-ng (test)")
    assert time.monotonic() - start < 20           # killed, not waited for


def test_errors_in_the_copy_come_back_as_errors():
    def refuse():
        raise TTSError("espeak-ng (x) produced no audio")

    with pytest.raises(TTSError, match=r"produced no audio"):
        tts_espeak._in_fresh_copy(refuse, 10, "espeak-ng (x)")


def corpus(root, clips: int, workers: int) -> dict[str, tuple]:
    """`corpus synth` of espeak-ng clips; {clip id: (audio, labels, phonemes)}."""
    assert main(["corpus", "synth", "-o", str(root), "--clips", str(clips), "--engines", "espeak-ng",
                 "--workers", str(workers), "--seed", "3", "--no-progress"]) == 0
    manifest = Manifest(root)
    out = {}
    for clip_id, entry in sorted(manifest.entries.items()):
        assert entry["status"] == "ok", entry
        clip = load_clip(root / entry["file"])
        out[clip_id] = (clip.audio, clip.labels, [(p.phone, p.start, p.end) for p in clip.phonemes])
    return out


@pytest.mark.slow
def test_clips_are_the_same_whatever_the_workers_and_resumes(tmp_path):
    one = corpus(tmp_path / "one", 8, workers=1)
    two = corpus(tmp_path / "two", 8, workers=2)
    corpus(tmp_path / "resumed", 3, workers=2)
    resumed = corpus(tmp_path / "resumed", 8, workers=2)     # extends the 3-clip run
    assert len(one) == 8 and one.keys() == two.keys() == resumed.keys()
    for clip_id, (audio, labels, phonemes) in one.items():
        for other in (two, resumed):
            np.testing.assert_array_equal(other[clip_id][0], audio, err_msg=clip_id)
            np.testing.assert_array_equal(other[clip_id][1], labels, err_msg=clip_id)
            assert other[clip_id][2] == phonemes, clip_id
