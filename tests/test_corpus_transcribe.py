"""Whisper tiny.en as a recogniser (asr.py, the installed weights) and `corpus transcribe`:
packs of recordings written down, resumed, bad files reported, and the TSV timed by `corpus align`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile

from talkmotion.asr import Vocabulary, WhisperRecognizer
from talkmotion.assets import SAMPLE_SPEECH, WHISPER_TINY_EN, WHISPER_TINY_EN_VOCABULARY
from talkmotion.audio import load_audio, write_wav
from talkmotion.cli import main
from talkmotion.data.clips import load_clip, read_dataset
from talkmotion.data.corpus_transcribe import CorpusTranscribeError, plan_packs, spell_numbers
from talkmotion.data.corpus_teach import TeachJob
from talkmotion.whisper import WhisperError

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

needs_weights = pytest.mark.skipif(not (WHISPER_TINY_EN.path.is_file() and WHISPER_TINY_EN_VOCABULARY.path.is_file()),
                                   reason="set-up installs Whisper tiny.en")

# What the sample speech says (talkmotion/assets/samples/speech.wav, README).
SAMPLE_TEXT = ("Hello, I am talkmotion. I turn your voice into a face that speaks along with you in real time. "
               "Try it with your own avatar and watch the lips close on every B and M.")


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower().replace("talkmotion", "talk motion")).split()


def word_errors(said: str, heard: str) -> float:
    """Word error rate by edit distance."""
    a, b = words(said), words(heard)
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1] / len(a)


@pytest.fixture(scope="module")
def recognizer():
    return WhisperRecognizer.installed()


@needs_weights
def test_recogniser_writes_down_the_sample_speech(recognizer):
    speech = load_audio(SAMPLE_SPEECH)
    heard, silent = recognizer.transcribe([speech, np.zeros(16000, np.float32)])
    assert word_errors(SAMPLE_TEXT, heard) <= 0.1, heard
    assert len(words(silent)) <= 2            # no invented speech for a second of silence


@needs_weights
def test_a_shorter_window_still_hears_a_short_clip():
    speech = load_audio(SAMPLE_SPEECH)
    first = speech[: int(2.5 * 16000)]           # "Hello, I am talkmotion."
    short = WhisperRecognizer.installed(context_s=10.0)
    heard = short.transcribe([first])[0]
    assert word_errors("Hello, I am talkmotion.", heard) <= 0.25, heard
    with pytest.raises(ValueError, match="longer than the 10 s window"):
        short.transcribe([speech[:11 * 16000]])


def test_tokens_decode_through_the_byte_alphabet():
    vocabulary = Vocabulary(["Ġcaf", "Ã©", "!"])
    assert vocabulary.decode([0, 1, 2]) == "café!"


def test_a_file_that_is_not_the_vocabulary_is_named(tmp_path):
    bad = tmp_path / "vocabulary.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(WhisperError, match="vocabulary.txt: not Whisper tiny.en's vocabulary"):
        Vocabulary.read(bad)
    with pytest.raises(WhisperError, match="missing.txt: cannot read"):
        Vocabulary.read(tmp_path / "missing.txt")


def test_digits_are_spelled_for_the_aligner():
    assert spell_numbers("I have 6 apples.") == "I have six apples."
    assert spell_numbers("1,200 men and 19 women") == "one thousand two hundred men and nineteen women"
    assert spell_numbers("in 2024") == "in two thousand twenty four"
    assert spell_numbers("5, 4, 3, 2, 1, go! 1,200, then") == "five, four, three, two, one, go! " \
                                                                 "one thousand two hundred, then"
    assert spell_numbers("the 3rd of 2.5 ways, K9") == "the 3rd of 2.5 ways, K9"    # left for the aligner to refuse


def test_packs_keep_each_speakers_order_and_length(tmp_path):
    files = []
    for speaker, seconds in (("ann", [4.0, 5.0, 9.0, 2.0]), ("bob", [3.0])):
        for n, s in enumerate(seconds):
            path = tmp_path / speaker / f"{n}.wav"
            path.parent.mkdir(exist_ok=True)
            write_wav(path, np.zeros(int(s * 16000), np.float32))
            files.append(TeachJob(f"{speaker}-{n}", str(path), speaker))
    packs = plan_packs(files, pack_seconds=10.0)
    assert [p.id for p in packs] == ["ann/00000", "ann/00001", "ann/00002", "bob/00000"]
    # 4 + 0.5 + 5 fits in 10 s; 9 + 0.5 + 2 does not
    assert [[m.rpartition("/")[2] for m in p.members] for p in packs] == [["0.wav", "1.wav"], ["2.wav"], ["3.wav"],
                                                                           ["0.wav"]]
    long = tmp_path / "long.wav"
    write_wav(long, np.zeros(31 * 16000, np.float32))
    with pytest.raises(CorpusTranscribeError, match="long.wav: 31.0 s is longer"):
        plan_packs([TeachJob("long", str(long), "x")], 20.0)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """The sample speech cut at its first pause into two files of one speaker with a third whose
    samples are NaN, and a broken file."""
    root = tmp_path_factory.mktemp("transcribe") / "speech"
    speech = load_audio(SAMPLE_SPEECH)
    cut = int(2.5 * 16000)
    (root / "ann").mkdir(parents=True)
    write_wav(root / "ann" / "a.wav", speech[:cut])
    write_wav(root / "ann" / "b.wav", speech[cut:])
    soundfile.write(root / "ann" / "c.wav", np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    (root / "bob").mkdir()
    (root / "bob" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    return root


def transcribe(source, out) -> int:
    return main(["corpus", "transcribe", str(source), "-o", str(out), "--workers", "1", "--no-progress"])


@needs_weights
def test_transcribed_packs_are_aligned_into_rule_labelled_clips(recordings, tmp_path, capsys):
    out = tmp_path / "written"
    assert transcribe(recordings, out) == 0
    printed = capsys.readouterr()
    assert "1 packs transcribed" in printed.out and "1 failed" in printed.out and "broken.wav" in printed.err
    assert "1 undecodable files left out" in printed.out and "c.wav: 8000 samples are NaN" in printed.err
    pack = json.loads((out / "manifest.json").read_text())["packs"]["ann/00000"]
    assert [m.rpartition("/")[2] for m in pack["members"]] == ["a.wav", "b.wav", "c.wav"]
    assert len(pack["dropped"]) == 1 and "c.wav" in pack["dropped"][0]
    rows = [line.split("\t") for line in (out / "transcripts.tsv").read_text().splitlines()
            if not line.startswith("#")]
    assert len(rows) == 1 and rows[0][0] == "packs/ann/00000.wav" and rows[0][2] == "ann"
    assert word_errors(SAMPLE_TEXT, rows[0][1]) <= 0.1
    assert len(load_audio(out / rows[0][0])) == len(load_audio(SAMPLE_SPEECH)) + 8000   # the 0.5 s gap

    assert transcribe(recordings, out) == 0                       # resumed: nothing heard twice
    assert "0 packs transcribed, 1 already done" in capsys.readouterr().out

    aligned = tmp_path / "aligned"
    assert main(["corpus", "align", str(out / "transcripts.tsv"), "-o", str(aligned), "--split", "train",
                 "--workers", "1", "--no-progress"]) == 0
    (entry,) = read_dataset(aligned).values()
    clip = load_clip(entry["path"])
    assert clip.meta["speaker"] == "ann" and clip.meta["split"] == "train"
    assert {"b", "m"} <= {p.phone for p in clip.phonemes}       # "... on every B and M"


def test_a_clip_set_and_a_bad_pack_length_are_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "manifest.json").write_text("{}")
    assert main(["corpus", "transcribe", str(tmp_path / "set"), "-o", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'set'}: a clip set" in capsys.readouterr().err
    assert main(["corpus", "transcribe", str(tmp_path), "-o", str(tmp_path / "out"), "--pack-seconds", "40"]) == 2
    assert "--pack-seconds must be in (0, 30]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_flite_guesses_a_word_the_aligner_lacks(tmp_path):
    from talkmotion.data.align import Aligner
    from talkmotion.data.guess_words import unknown_words, write_guesses

    texts = ["Meet Shreveman by the gate.", "The gate, Shreveman!"]
    assert unknown_words(texts) == ["shreveman"]
    guessed = write_guesses(tmp_path / "guessed.dict", ["shreveman"])
    phones = guessed["shreveman"]
    assert phones[:2] == ["SH", "R"] and "M" in phones and phones[-1] == "N"
    assert Aligner(pronunciations=tmp_path / "guessed.dict").unknown_words(["shreveman"]) == []


def test_lengthened_words_are_looked_up_shortened_not_spelled(tmp_path):
    """Whisper writes held sounds as letters said many times; flite would spell "mmm" as "em em em"."""
    from talkmotion.data.align import Aligner
    from talkmotion.data.guess_words import shortened_forms, write_guesses

    assert shortened_forms("aaaahhh") == ["aahh", "ah"]
    aligner = Aligner()
    words = ["ooooh", "aaaahhh", "mmm", "waaaasps", "shhhh"]
    guessed = write_guesses(tmp_path / "guessed.dict", words, aligner)
    assert guessed["ooooh"] == aligner.stressed["ooh"][0]
    assert guessed["aaaahhh"] == aligner.stressed["ah"][0]
    assert guessed["mmm"] == ["M"]
    assert guessed["waaaasps"] == aligner.stressed["wasps"][0]
    assert "SH" in guessed["shhhh"] and len(guessed["shhhh"]) <= 2
    assert Aligner(pronunciations=tmp_path / "guessed.dict").unknown_words(words) == []
