"""`talkmotion corpus synth` end to end with the real festival, espeak-ng and flite, and its bad input."""

import json
import stat

import numpy as np
import pytest

from talkmotion import labels
from talkmotion.audio import SAMPLE_RATE, num_frames
from talkmotion.cli import main
from talkmotion.data import synth, texts, tts_espeak, tts_festival, tts_flite
from talkmotion.data.clips import load_clip, read_dataset
from talkmotion.data.phonemes import PHONES
from talkmotion.data.tts import TTSError, VoiceNotInstalled, check_text


def corpus(root, *extra):
    return main(["corpus", "synth", "-o", str(root), "--no-progress", "--workers", "1", *extra])


def manifest(root):
    return json.loads((root / "manifest.json").read_text())["clips"]


def check_clip(root, entry):
    clip = load_clip(root / entry["file"])
    assert clip.labels.shape == (num_frames(clip.audio.size), labels.NUM_CHANNELS)
    assert clip.phonemes[0].start == 0.0
    assert clip.phonemes[-1].end == pytest.approx(clip.audio.size / SAMPLE_RATE, abs=1e-4)
    assert all(p.phone in PHONES for p in clip.phonemes)
    assert all(a.end == pytest.approx(b.start, abs=1e-4) for a, b in zip(clip.phonemes, clip.phonemes[1:]))
    for key in ("source", "voice", "rate", "pitch", "text", "split"):
        assert clip.meta[key] == entry[key]
    assert entry["duration"] == pytest.approx(clip.duration, abs=1e-3)
    # closure somewhere on a bilabial, an open jaw somewhere on a vowel
    jaw = clip.labels[:, labels.index("jawOpen")]
    assert jaw.max() > 0.25 and jaw[0] < 0.05
    return clip


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["festival", "espeak-ng", "flite"])
def test_two_clip_corpus_end_to_end_and_resume(tmp_path, engine, capsys):
    root = tmp_path / engine
    assert corpus(root, "--clips", "2", "--engines", engine) == 0
    entries = manifest(root)
    assert sorted(entries) == ["tts0-000000", "tts0-000001"]
    for entry in entries.values():
        assert entry["status"] == "ok" and entry["source"] == engine
        check_clip(root, entry)
    assert len(read_dataset(root)) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "clips").iterdir()}
    capsys.readouterr()
    assert corpus(root, "--clips", "2", "--engines", engine) == 0
    assert "0 clips made, 2 already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (root / "clips").iterdir()} == mtimes


@pytest.mark.slow
def test_clips_made_but_not_recorded_are_recognised_not_remade(tmp_path, capsys):
    # A run killed between writing clip files and its next manifest save (every 2 s) left
    # clip 1 unrecorded, a half-written clip 2 and a half-written manifest.
    root = tmp_path / "c"
    assert corpus(root, "--clips", "2", "--engines", "espeak-ng") == 0
    obj = json.loads((root / "manifest.json").read_text())
    recorded = obj["clips"].pop("tts0-000001")
    (root / "manifest.json").write_text(json.dumps(obj))
    made = root / recorded["file"]
    stamp = made.stat().st_mtime_ns
    stale = [root / ".manifest.json.99999.tmp", root / "clips" / ".tts0-000002.clip.safetensors.99999.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    capsys.readouterr()
    assert corpus(root, "--clips", "3", "--engines", "espeak-ng") == 0
    assert "1 clips made, 2 already done" in capsys.readouterr().out
    assert made.stat().st_mtime_ns == stamp and manifest(root)["tts0-000001"] == recorded
    assert manifest(root)["tts0-000002"]["status"] == "ok"
    assert not any(path.exists() for path in stale)
    # a clip file that is not whole is made again
    made.write_bytes(made.read_bytes()[:1000])
    obj = json.loads((root / "manifest.json").read_text())
    del obj["clips"]["tts0-000001"]
    (root / "manifest.json").write_text(json.dumps(obj))
    capsys.readouterr()
    assert corpus(root, "--clips", "3", "--engines", "espeak-ng") == 0
    assert "1 clips made, 2 already done" in capsys.readouterr().out
    check_clip(root, manifest(root)["tts0-000001"])


def test_split_holds_out_voices_and_sentences():
    engines = ["festival", "espeak-ng"]
    pools = synth.voice_pools(engines)
    assert pools["festival"]["test"] == ["ked_diphone"] and "ked_diphone" not in pools["festival"]["train"]
    assert pools["espeak-ng"]["test"] and not set(pools["espeak-ng"]["test"]) & set(pools["espeak-ng"]["train"])
    specs = synth.plan(400, 3, engines, pools)
    by_split = {s: [c for c in specs if c.split == s] for s in ("train", "val", "test")}
    assert all(len(v) > 10 for v in by_split.values())
    test_texts = {c.text for c in by_split["test"]}
    assert not test_texts & {c.text for c in by_split["train"] + by_split["val"]}
    test_voices = {c.voice for c in by_split["test"]}
    assert not test_voices & {c.voice for c in by_split["train"] + by_split["val"]}
    assert all(synth.is_test_voice(c.engine, c.voice) for c in by_split["test"])
    # a clip's spec does not depend on how many clips are asked for (runs extend each other)
    assert synth.plan(50, 3, engines, pools) == specs[:50]


def test_flite_voices_split_and_pitch():
    pools = synth.voice_pools(["flite"])
    assert pools["flite"]["test"] == ["awb"] and set(pools["flite"]["train"]) == {"kal16", "rms", "slt"}
    specs = synth.plan(60, 0, ["flite"], pools)
    assert {c.pitch for c in specs if c.voice == "rms"} == {1.0}       # rms ignores the pitch setting
    assert len({c.pitch for c in specs if c.voice != "rms"}) > 5


def median_f0(audio):
    """Median autocorrelation pitch (Hz) over the loud 64 ms frames."""
    found = []
    for start in range(0, audio.size - 1024, 400):
        x = audio[start:start + 1024]
        if np.sqrt(np.mean(x ** 2)) > 0.02:
            ac = np.correlate(x, x, "full")[x.size - 1:]
            found.append(SAMPLE_RATE / (np.argmax(ac[40:300]) + 40))
    return float(np.median(found))


@pytest.mark.slow
def test_flite_rate_pitch_and_stress():
    text = "Peter bought a map of the old harbour."
    plain = tts_flite.synthesize(text, "slt")
    faster_higher = tts_flite.synthesize(text, "slt", rate=1.25, pitch=1.25)
    assert faster_higher.audio.size < 0.9 * plain.audio.size
    assert median_f0(faster_higher.audio) > 1.1 * median_f0(plain.audio)
    vowels = [p for p in plain.phonemes if p.phone in {"aa", "ao", "ae", "ah", "ax", "er", "iy", "ow", "uw"}]
    assert {p.stress for p in vowels} == {0, 1}                         # lexical stress comes through
    assert [p.phone for p in plain.phonemes if p.phone in ("p", "b", "m")] == ["p", "b", "m", "p", "b"]


def test_texts_give_thousands_of_distinct_sentences():
    sentences = {texts.sentence(0, i) for i in range(3000)}
    assert len(sentences) > 2900
    assert all(check_text(s) == s for s in list(sentences)[:200])


@pytest.mark.parametrize("text, message", [
    ("", "empty text"), ("   ", "empty text"), ("?!... ,;", "no words"), ("12345 678", "no words"),
    ("你好 world", "non-ASCII"), ("word " * 200, "at most 600"),
])
def test_bad_text_is_refused_clearly(text, message):
    with pytest.raises(TTSError, match=message):
        check_text(text)


def test_accents_are_folded():
    assert check_text("Café  naïve\u2019s") == "Cafe naive's"


@pytest.mark.slow
def test_voice_not_installed():
    with pytest.raises(VoiceNotInstalled, match="nope_diphone.*installed: kal_diphone"):
        tts_festival.synthesize("Hello there.", "nope_diphone")
    with pytest.raises(VoiceNotInstalled, match="en-zz"):
        tts_espeak.synthesize("Hello there.", "en-zz+f3")
    with pytest.raises(VoiceNotInstalled, match="'kal'.*installed: kal16, awb, rms, slt"):
        tts_flite.synthesize("Hello there.", "kal")


@pytest.mark.slow
def test_bad_lines_fail_and_the_rest_is_built(tmp_path, capsys):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(["Peter baked a purple pumpkin pie.", "", "!!! ???", "1234",
                                "Ni hao \u4f60\u597d", "Bob bought a map."]), encoding="utf-8")
    root = tmp_path / "c"
    assert corpus(root, "--clips", "6", "--engines", "espeak-ng", "--texts", str(lines)) == 0
    entries = manifest(root)
    ok = {e["text"] for e in entries.values() if e["status"] == "ok"}
    assert ok == {"Peter baked a purple pumpkin pie.", "Bob bought a map."}
    errors = [e["error"] for e in entries.values() if e["status"] == "failed"]
    assert len(errors) == 4 and any("empty" in e for e in errors) and any("non-ASCII" in e for e in errors)
    assert sum("no words" in e for e in errors) == 2
    err = capsys.readouterr().err
    assert err.count("failed:") == 4
    assert not list((root / "clips").glob(".*.tmp"))


@pytest.mark.slow
def test_unknown_voices(tmp_path, capsys):
    root = tmp_path / "c"
    assert corpus(root, "--clips", "1", "--engines", "festival", "--voices", "kal_diphone,no_such_voice") == 0
    assert "no_such_voice" in capsys.readouterr().err
    assert [e["voice"] for e in manifest(root).values()] == ["kal_diphone"]
    assert corpus(tmp_path / "d", "--clips", "1", "--engines", "festival", "--voices", "no_such_voice") == 2
    assert "no usable voice" in capsys.readouterr().err
    assert corpus(tmp_path / "e", "--clips", "1", "--engines", "mimic") == 2
    assert "unknown TTS engine 'mimic'; engines are festival, espeak-ng, flite" in capsys.readouterr().err


def fake_festival(tmp_path, body):
    script = tmp_path / "festival"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.slow
@pytest.mark.parametrize("body, message", [("sleep 30", "hung"), ("kill -SEGV $$", "crashed \\(signal 11\\)")])
def test_engine_that_hangs_or_crashes_is_skipped(tmp_path, monkeypatch, body, message):
    monkeypatch.setenv("TALKMOTION_FESTIVAL", fake_festival(tmp_path, body))
    root = tmp_path / "c"
    assert corpus(root, "--clips", "2", "--engines", "festival,espeak-ng", "--timeout", "4") == 0
    entries = manifest(root)
    assert entries["tts0-000001"]["status"] == "ok"               # espeak-ng still works
    failed = entries["tts0-000000"]
    assert failed["status"] == "failed" and failed["source"] == "festival"
    assert __import__("re").search(message, failed["error"])
    assert sorted(p.name for p in (root / "clips").iterdir()) == ["tts0-000001.clip.safetensors"]


@pytest.mark.slow
def test_worker_past_its_timeout_is_killed(tmp_path):
    # espeak-ng runs inside the worker, so only killing the worker stops it: a long sentence
    # (~35 s of speech, several hundred ms of work) against a 0.1 s limit takes that path
    lines = tmp_path / "long.txt"
    lines.write_text(" ".join(["Peter packed a big blue umbrella for the long voyage."] * 10) + "\n")
    root = tmp_path / "c"
    assert corpus(root, "--clips", "1", "--engines", "espeak-ng", "--timeout", "0.1", "--texts", str(lines)) == 1
    entry = manifest(root)["tts0-000000"]
    assert entry["status"] == "failed" and "worker killed" in entry["error"]
    assert not (root / "clips").exists() or not list((root / "clips").iterdir())
    # a later run with a sane timeout makes it
    assert corpus(root, "--clips", "1", "--engines", "espeak-ng", "--texts", str(lines)) == 0
    assert manifest(root)["tts0-000000"]["status"] == "ok"


@pytest.mark.slow
def test_espeak_phonemes_follow_the_audio():
    speech = tts_espeak.synthesize("Bob, map a pub.", "en-us", rate=1.0)
    bilabials = [p for p in speech.phonemes if p.phone in ("b", "m", "p")]
    assert len(bilabials) >= 5
    assert any(p.stress == 1 for p in speech.phonemes)
    # silence at the pauses is quiet, vowels are loud
    level = lambda p: np.sqrt(np.mean(speech.audio[int(p.start * SAMPLE_RATE):int(p.end * SAMPLE_RATE)] ** 2))
    vowels = [level(p) for p in speech.phonemes if p.phone in ("aa", "ae", "ah", "ax")]
    silences = [level(p) for p in speech.phonemes if p.phone == "sil" and p.end - p.start > 0.05]
    assert min(vowels) > 5 * max(silences)
