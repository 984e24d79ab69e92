"""The forced aligner and `corpus align` on real TTS speech (espeak-ng, festival, flite), and the
frame-level yardstick on clips timed by it: rule labels near perfect, the energy jaw worse, a
prediction half a second late near chance; unknown words and mismatching transcripts are skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from talkmotion import eval as ev
from talkmotion import metrics
from talkmotion.audio import SAMPLE_RATE, write_wav
from talkmotion.cli import main
from talkmotion.data import align, tts_espeak
from talkmotion.data.clips import Phoneme, load_clip, read_dataset
from talkmotion.data.phonemes import BILABIAL, PHONES

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

SENTENCES = ("Maybe the baby will open both windows.", "Bob bought a map of the park.",
             "Put the blue boat by the pool.", "A big brown bear ate my apple pie.")


@pytest.fixture(scope="module")
def aligner():
    return align.Aligner()


def espeak(text: str, voice: str = "en-us"):
    return tts_espeak.synthesize(text, voice, 1.0, 1.0, timeout=20)


def pairs_folder(root, items):
    """NAME.wav + NAME.txt for each (name, spoken, transcript)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, spoken, transcript in items:
        write_wav(root / f"{name}.wav", espeak(spoken).audio)
        (root / f"{name}.txt").write_text(transcript + "\n", encoding="utf-8")
    return root


def manifest(root):
    return json.loads((root / "manifest.json").read_text())["clips"]


# --- the aligner ----------------------------------------------------------------------

def test_aligned_bilabials_land_near_the_engines_own(aligner):
    speech = espeak(SENTENCES[0])
    result = aligner.align(speech.audio, SENTENCES[0])
    assert [w.text for w in result.words] == align.words_of(SENTENCES[0])
    phones = result.phonemes
    assert phones[0].start == 0.0 and phones[-1].end == pytest.approx(speech.audio.size / SAMPLE_RATE, abs=1e-4)
    assert all(a.end == pytest.approx(b.start, abs=1e-6) for a, b in zip(phones, phones[1:]))
    assert {p.phone for p in phones} <= PHONES
    ours = [p for p in phones if p.phone in BILABIAL]
    theirs = [p for p in speech.phonemes if p.phone in BILABIAL]
    assert [p.phone for p in ours] == [p.phone for p in theirs]          # m b b b: "maybe the baby ... both"
    centres = [abs((a.start + a.end) - (b.start + b.end)) / 2 for a, b in zip(ours, theirs)]
    assert np.median(centres) < 0.03, centres
    # stress from the CMU dictionary: "BAY1 BIY0", and the unstressed AH of "the" is the schwa
    baby = next(w for w in result.words if w.text == "baby")
    vowels = [p for p in phones if baby.start <= p.start < baby.end and p.phone in ("ey", "iy")]
    assert [p.stress for p in vowels] == [1, 0]
    the = next(w for w in result.words if w.text == "the")
    assert [p.phone for p in phones if the.start <= p.start < the.end] in (["dh", "ax"], ["dh", "iy"])


def test_unknown_words_are_named_and_a_user_dictionary_adds_them(tmp_path, aligner):
    speech = espeak("The zorblax is purple.")
    with pytest.raises(align.UnknownWords, match="zorblax"):
        aligner.align(speech.audio, "The zorblax is purple.")
    extra = tmp_path / "extra.dict"
    extra.write_text(";;; made up\nZORBLAX  Z AO1 R B L AE0 K S\n", encoding="utf-8")
    result = align.Aligner(pronunciations=extra).align(speech.audio, "The zorblax is purple.")
    assert [w.text for w in result.words] == ["the", "zorblax", "is", "purple"]
    assert any(p.phone == "ao" and p.stress == 1 for p in result.phonemes)


def test_a_bad_pronunciation_file_names_the_line(tmp_path):
    bad = tmp_path / "bad.dict"
    bad.write_text("HELLO  HH AH0 L OW1\nWORLD  W ER1 QQ D\n", encoding="utf-8")
    with pytest.raises(align.AlignError, match=r"bad.dict:2: .*'WORLD  W ER1 QQ D'"):
        align.read_pronunciations(bad)


def test_a_transcript_of_another_sentence_is_refused(aligner):
    speech = espeak("Please close the door after we finish the meeting.")
    with pytest.raises(align.AlignmentFailed):
        aligner.align(speech.audio, "A bright rocket flew over my house yesterday at noon.")


def test_speech_the_transcript_lacks_fails_the_sanity_check(aligner):
    speech = espeak("The cat sat on the mat by the door and then it went to sleep.")
    with pytest.raises(align.AlignmentFailed):
        aligner.align(speech.audio, "The cat sat on the mat.")


def test_words_of_normalises_like_a_dictionary_lookup():
    assert align.words_of("Don\u2019t stop -- the well-known caf\u00e9's \"menu\"!") == \
        ["don't", "stop", "the", "well", "known", "cafe's", "menu"]


# --- corpus align -------------------------------------------------------------------------

def test_corpus_align_builds_what_it_can_and_reports_the_rest(tmp_path, capsys):
    inputs = pairs_folder(tmp_path / "in" / "speaker1", [
        ("good", SENTENCES[1], SENTENCES[1]),
        ("unknown", "The zorblax pumpkin is purple.", "The zorblax pumpkin is purple."),
        ("mismatch", "Please close the door after we finish the meeting.",
         "A bright rocket flew over my house yesterday at noon."),
    ]).parent
    out = tmp_path / "out"
    args = ["corpus", "align", str(inputs), "-o", str(out), "--speaker", "espeak-us", "--workers", "1",
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 clips made, 2 skipped" in printed
    entries = manifest(out)
    assert entries["speaker1-good"]["status"] == "ok"
    assert entries["speaker1-unknown"]["status"] == "skipped"
    assert "zorblax" in entries["speaker1-unknown"]["error"]
    assert entries["speaker1-mismatch"]["status"] == "skipped"
    skipped = (out / "skipped.tsv").read_text().splitlines()
    assert skipped[0] == "id\taudio\treason" and len(skipped) == 3
    assert any(line.startswith("speaker1-unknown\t") and "zorblax" in line for line in skipped)
    clip = load_clip(out / entries["speaker1-good"]["file"])
    assert clip.meta["speaker"] == clip.meta["voice"] == "espeak-us" and clip.meta["split"] == "dev"
    assert clip.meta["aligner"].startswith("pocketsphinx") and clip.meta["text"] == SENTENCES[1]
    assert [w[0] for w in clip.meta["words"]] == align.words_of(SENTENCES[1])
    assert any(p.phone in BILABIAL for p in clip.phonemes)
    aperture = metrics.aperture(clip.labels)
    assert aperture.max() > 0.2 and set(read_dataset(out)) == {"speaker1-good"}
    # resumed: the made clip is kept as it is
    stamp = (out / entries["speaker1-good"]["file"]).stat().st_mtime_ns
    assert main(args) == 0
    assert "0 clips made, 2 skipped" in capsys.readouterr().out
    assert (out / entries["speaker1-good"]["file"]).stat().st_mtime_ns == stamp


def test_salvage_keeps_the_part_a_short_transcript_fits(tmp_path, capsys, aligner):
    first, second = SENTENCES[0] + " Then it rained.", "The cat sat on the mat by the door and then it went to sleep."
    spoken = np.concatenate([espeak(first).audio, np.zeros(SAMPLE_RATE // 2, np.float32), espeak(second).audio])
    heard = first + " The cat sat on the mat."          # a recogniser that lost the second half
    folder = tmp_path / "in"
    folder.mkdir()
    write_wav(folder / "pack.wav", spoken)
    (folder / "pack.txt").write_text(heard + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["corpus", "align", str(folder), "-o", str(out), "--workers", "1", "--no-progress"]
    assert main(args) == 0
    assert "0 clips made, 1 skipped" in capsys.readouterr().out
    assert "loud audio aligned to the silence" in manifest(out)["pack"]["error"]

    assert main(args + ["--salvage"]) == 0           # the skipped clip is tried again
    assert "1 clips made (1 of them the part of their clip that fits), 0 skipped" in capsys.readouterr().out
    entry = manifest(out)["pack"]
    clip = load_clip(out / entry["file"])
    assert clip.meta["text"] == " ".join(align.words_of(first))
    cut = clip.meta["salvaged"]
    assert cut["transcript"] == heard and cut["start_s"] == 0.0 and "loud audio" in cut["reason"]
    assert clip.duration == pytest.approx(cut["end_s"], abs=0.01) and clip.duration < len(spoken) / SAMPLE_RATE / 2
    np.testing.assert_allclose(clip.audio, spoken[:clip.audio.size], atol=1e-4)   # the pack's own samples
    alone = aligner.align(espeak(first).audio, first)     # the part's timings are the sentence's own
    assert [w[0] for w in clip.meta["words"]] == [w.text for w in alone.words]
    assert max(abs(w[1] - a.start) for w, a in zip(clip.meta["words"], alone.words)) <= 0.03
    assert set(read_dataset(out)) == {"pack"}
    assert main(args + ["--salvage"]) == 0           # resumed: the part made is this job's
    printed = capsys.readouterr().out
    assert "0 clips made, 0 skipped" in printed and "1 already done" in printed


def test_no_part_is_kept_when_none_lasts_long_enough(aligner):
    speech = espeak("The cat sat on the mat by the door and then it went to sleep.")
    with pytest.raises(align.MisfitAlignment) as failed:
        aligner.align(speech.audio, "The cat sat on the mat.")
    assert failed.value.alignment.words[-1].text == "mat"
    assert aligner.align_fitting_part(speech.audio, failed.value, min_seconds=2.0) is None


def _path_of(stretches, pauses):
    """An Alignment of speech stretches [(word, start, end, phone seconds)] with silences between, and
    audio that is loud in speech and in the pauses named loud in `pauses` ({start: loud})."""
    phonemes, words = [], []
    audio = np.zeros(int(stretches[-1][2] * SAMPLE_RATE), np.float32)
    noise = np.random.default_rng(0).normal(0, 0.3, audio.size).astype(np.float32)
    for word, start, end, step in stretches:
        if phonemes and phonemes[-1].end < start:
            phonemes.append(Phoneme("sil", phonemes[-1].end, start))
            if pauses.get(phonemes[-1].start):
                audio[int(phonemes[-1].start * SAMPLE_RATE):int(start * SAMPLE_RATE)] = 0.3
        times = list(np.arange(start, end - 1e-9, step)) + [end]
        phonemes += [Phoneme("aa", a, b) for a, b in zip(times, times[1:])]
        words.append(align.Word(word, start, end))
        audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)] = noise[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]
    return align.Alignment(phonemes, words), audio


def test_the_fitting_span_is_the_longest_run_of_good_stretches_between_quiet_pauses():
    config = align.AlignConfig()
    stretches = [("one", 0.0, 2.5, 0.25), ("two", 3.0, 5.5, 0.25), ("three", 6.0, 7.0, 0.5 + 0.3),
                 ("four", 7.5, 8.5, 0.25)]                     # "three" holds a phone of 0.8 s
    path, audio = _path_of(stretches, {})
    loud = align._loud_frames(audio, config.loud_db)
    assert align.misfit(path.phonemes, path.words, loud, config).startswith("phone 'aa' of 'three' lasts 0.80 s")
    span = align.fitting_span(path, loud, config, min_seconds=2.0)
    assert (span.start, span.words) == (0.0, ("one", "two"))
    assert span.end == pytest.approx(5.5 + align.SPAN_MARGIN_S)   # into the pause after "two", not across it
    assert align.fitting_span(path, loud, config, min_seconds=6.0) is None
    path, audio = _path_of(stretches, {2.5: True})                 # speech in the pause between one and two
    loud = align._loud_frames(audio, config.loud_db)
    assert align.fitting_span(path, loud, config, min_seconds=2.0) is None   # both spoilt; "four" is short
    assert align.fitting_span(path, loud, config, min_seconds=1.0).words == ("four",)


def test_corpus_align_reads_a_tsv_list(tmp_path):
    folder = pairs_folder(tmp_path / "audio", [("a", SENTENCES[2], SENTENCES[2])])
    listing = tmp_path / "list.tsv"
    listing.write_text(f"# audio, text, speaker\naudio/a.wav\t{SENTENCES[2]}\tsomeone\n", encoding="utf-8")
    assert folder.is_dir()
    out = tmp_path / "out"
    assert main(["corpus", "align", str(listing), "-o", str(out), "--workers", "1", "--no-progress"]) == 0
    clip = load_clip(out / manifest(out)["a"]["file"])
    assert clip.meta["voice"] == "someone" and clip.meta["source"] == "list"


def test_a_malformed_tsv_line_is_a_one_line_error(tmp_path, capsys):
    listing = tmp_path / "list.tsv"
    listing.write_text("only-one-column\n", encoding="utf-8")
    assert main(["corpus", "align", str(listing), "-o", str(tmp_path / "out")]) == 2
    assert "list.tsv:1: want `audio<TAB>transcript" in capsys.readouterr().err


# --- re-timing a TTS clip set, and the frame-level yardstick on it ------------------------

@pytest.fixture(scope="module")
def retimed(tmp_path_factory):
    """A 6-clip festival/espeak-ng/flite corpus, re-timed by the aligner."""
    root = tmp_path_factory.mktemp("yardstick")
    tts, out = root / "tts", root / "aligned"
    assert main(["corpus", "synth", "-o", str(tts), "--clips", "6", "--engines", "festival,espeak-ng,flite",
                 "--workers", "1", "--no-progress"]) == 0
    assert main(["corpus", "align", str(tts), "-o", str(out), "--workers", "1", "--no-progress"]) == 0
    return tts, out


def test_retiming_keeps_the_clip_and_replaces_only_the_timings(retimed):
    tts, out = retimed
    made = read_dataset(out)
    assert len(made) >= 5                     # the aligner may refuse an odd voice; never silently
    for clip_id, entry in made.items():
        old, new = load_clip(read_dataset(tts)[clip_id]["path"]), load_clip(entry["path"])
        assert np.array_equal(old.audio, new.audio)
        for key in ("source", "voice", "split", "seed", "style", "text"):
            assert new.meta[key] == old.meta[key], key
        assert new.meta["timings"] == "aligner" and new.phonemes != old.phonemes
        # the same words, so the same bilabials, at times of the aligner's own
        assert [p.phone for p in new.phonemes if p.phone in BILABIAL] == \
            [p.phone for p in old.phonemes if p.phone in BILABIAL]


def test_input_split_picks_the_clips_of_one_split_to_retime(retimed):
    from talkmotion.data.corpus_align import CorpusAlignError, find_jobs

    tts, _ = retimed
    splits = {k: e["split"] for k, e in read_dataset(tts).items()}
    for split in set(splits.values()):
        assert {j.id for j in find_jobs(tts, input_split=split)} == {k for k, v in splits.items() if v == split}
    with pytest.raises(CorpusAlignError, match="no clips in split 'nowhere'"):
        find_jobs(tts, input_split="nowhere")


def _late(values: np.ndarray, frames: int) -> np.ndarray:
    return np.concatenate([np.repeat(values[:1], frames, 0), values[:-frames]])


def test_frame_level_yardstick_rules_near_perfect_energy_worse_late_near_chance(retimed):
    _, out = retimed
    clips = ev.load_clips(out)
    half_second = round(0.5 * clips[0].fps)
    report = ev.evaluate(clips, {"late": lambda c: _late(c.labels, half_second)})
    rules = report["sources"]["rules"]["summary"]
    energy = report["sources"]["energy"]["summary"]
    late = report["sources"]["late"]["summary"]
    assert rules["bilabial_closure"] == 1.0 and rules["silence_closure"] == 1.0
    assert rules["frame_open_closed_auc"] >= 0.93 and rules["frame_rounding_auc"] >= 0.9
    assert rules["openness_corr"] >= 0.75
    assert energy["bilabial_closure"] < 0.6
    for key in ("frame_open_closed_auc", "frame_rounding_auc", "openness_corr"):
        assert energy[key] < rules[key] - 0.05, key
    assert abs(late["frame_open_closed_auc"] - 0.5) < 0.15
    assert abs(late["frame_rounding_auc"] - 0.5) < 0.3           # few rounded vowels in 6 clips
    assert abs(late["openness_corr"]) < 0.25
    assert late["bilabial_closure"] < rules["bilabial_closure"] - 0.3
    assert report["sources"]["rules"]["beats_energy"]["openness_corr"]


def test_openness_covers_every_phone_and_its_curve_follows_the_phones():
    assert set(metrics.OPENNESS) == PHONES
    from talkmotion.data.clips import Phoneme

    phones = [Phoneme("sil", 0.0, 0.5), Phoneme("aa", 0.5, 1.0), Phoneme("m", 1.0, 1.5), Phoneme("sil", 1.5, 2.0)]
    curve = metrics.openness_curve(phones, 60, 30)
    assert curve[22] == pytest.approx(metrics.OPENNESS["aa"], abs=1e-3)     # mid-vowel: the table's value
    assert curve[5] == pytest.approx(0.0, abs=1e-6) and curve[37] == pytest.approx(0.0, abs=1e-6)
    # frames 14 and 15 sit either side of the 0.5 s boundary: half way on average
    assert (curve[14] + curve[15]) / 2 == pytest.approx(metrics.OPENNESS["aa"] / 2, abs=0.01)
    assert np.all(np.diff(curve[16:22]) >= 0) and np.all(np.diff(curve[23:35]) <= 1e-12)
