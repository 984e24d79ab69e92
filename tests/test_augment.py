"""Training-time augmentation: labels follow the audio in time, levels and lengths hold."""

import numpy as np
import pytest
from scipy.signal import welch

from talkmotion.audio import FPS, SAMPLE_RATE, num_frames
from talkmotion.data import augment as aug


def tone_burst(seconds=2.0, at=1.0):
    """Quiet noise with a loud 50 ms burst at `at` seconds, and labels that peak on the same frame."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 0.01).astype(np.float32)
    start = int(at * SAMPLE_RATE)
    audio[start:start + 800] += np.sin(np.arange(800) * 0.3).astype(np.float32)
    labels = np.zeros((num_frames(audio.size), 55), np.float32)
    labels[int(at * FPS), 0] = 1.0
    return audio, labels, np.ones_like(labels, bool)


def tones(seconds=2.0, f0=220.0):
    """A harmonic tone: its strongest partial is f0."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * f0 * t) + 0.2 * np.sin(2 * np.pi * 3 * f0 * t)).astype(np.float32)


def strongest_hz(audio):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@pytest.mark.parametrize("transform", [aug.speed, aug.tempo])
@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_speed_and_tempo_retime_labels_with_the_audio(transform, factor):
    audio, labels, mask = tone_burst()
    out, new_labels, new_mask = transform(audio, labels, mask, factor)
    assert new_labels.shape[0] == num_frames(out.size) == new_mask.shape[0]
    burst_s = np.argmax(np.abs(out)) / SAMPLE_RATE
    label_s = np.argmax(new_labels[:, 0]) / FPS
    assert burst_s == pytest.approx(1.0 / factor, abs=0.03)
    assert label_s == pytest.approx(burst_s, abs=1.5 / FPS)


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_time_stretch_changes_length_and_keeps_pitch(rate):
    audio = tones()
    out = aug.time_stretch(audio, rate)
    assert out.size == round(audio.size / rate) and out.dtype == np.float32
    assert strongest_hz(out[2000:-2000]) == pytest.approx(220.0, abs=3)
    # Where nothing moves, WSOLA gives the signal back.
    np.testing.assert_allclose(aug.time_stretch(audio, 1.0)[600:-600], audio[600:-600], atol=1e-5)


@pytest.mark.parametrize("semitones", [-4.0, 3.0])
def test_pitch_shift_moves_pitch_and_keeps_timing(semitones):
    audio = tones()
    out = aug.pitch_shift(audio, semitones)
    assert out.shape == audio.shape
    assert strongest_hz(out[2000:-2000]) == pytest.approx(220.0 * 2 ** (semitones / 12), abs=3)
    burst, labels, _ = tone_burst()
    shifted = aug.pitch_shift(burst, semitones)   # the 50 ms burst stays where its labels are
    within = 0.05 + aug.WSOLA_TOLERANCE / SAMPLE_RATE
    assert np.argmax(np.abs(shifted)) / SAMPLE_RATE == pytest.approx(np.argmax(labels[:, 0]) / FPS, abs=within)
    assert aug.pitch_shift(np.zeros(0, np.float32), semitones).size == 0      # an empty crop stays empty


def test_timbre_eq_recolours_the_spectrum_at_the_same_loudness():
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(SAMPLE_RATE * 2) * 0.1).astype(np.float32)
    out = aug.timbre_eq(audio, np.random.default_rng(2), db=8.0)
    assert out.shape == audio.shape and out.dtype == np.float32
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(audio ** 2)), rel=1e-3)
    f, before = welch(audio, SAMPLE_RATE, nperseg=1024)
    _, after = welch(out, SAMPLE_RATE, nperseg=1024)
    band = (f > 150) & (f < 7500)
    change_db = 10 * np.log10(after[band] / before[band])
    assert change_db.max() - change_db.min() > 6        # peaks and dips, not a flat gain
    assert np.abs(change_db).max() < 8 + 6              # within the asked range (plus level match)


def periodicity(audio, frame=640):
    """Median over loud 40 ms frames of the autocorrelation peak at pitch lags (2.5–12.5 ms):
    near 1 for a voice, low for noise."""
    peaks = []
    for start in range(0, audio.size - frame, frame // 2):
        f = audio[start:start + frame] - audio[start:start + frame].mean()
        if np.sqrt(np.mean(f ** 2)) > 0.05 * np.abs(audio).max():
            r = np.correlate(f, f, "full")[frame - 1:]
            peaks.append(r[40:200].max() / r[0])
    return float(np.median(peaks))


def test_whispering_drops_the_voicing_and_keeps_the_envelope_and_timing():
    audio, labels, _ = tone_burst()
    voice = tones(2.0) * np.hanning(2 * SAMPLE_RATE).astype(np.float32)   # a voiced swell
    out = aug.whispered(voice, np.random.default_rng(0))
    assert out.shape == voice.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert periodicity(voice) > 0.8 and periodicity(out) < 0.4                 # no pitch left
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(voice ** 2)), rel=1e-3)
    f, before = welch(voice, SAMPLE_RATE, nperseg=1024)
    _, after = welch(out, SAMPLE_RATE, nperseg=1024)
    assert f[np.argmax(after)] == pytest.approx(220.0, abs=aug.WHISPER_SMOOTH_HZ)   # energy where the voice's was
    assert after[f > 2000].sum() < 0.05 * after.sum()
    halves = [np.sqrt(np.mean(x ** 2)) for x in np.split(out, 8)]           # loud where the swell is
    assert np.argmax(halves) in (3, 4) and halves[0] < 0.3 * max(halves)
    burst = aug.whispered(audio, np.random.default_rng(1))                   # the burst stays on its frame
    assert np.argmax(np.abs(burst)) / SAMPLE_RATE == pytest.approx(np.argmax(labels[:, 0]) / FPS, abs=0.05)
    np.testing.assert_allclose(aug.whispered(voice, np.random.default_rng(0), mix=0.0), voice, atol=1e-5)


def test_augment_is_reproducible_per_seed_and_keeps_labels_aligned():
    audio, labels, mask = tone_burst()
    cfg = aug.AugmentConfig(timbre_prob=0.5, pitch_prob=0.5, tempo_prob=0.5, whisper_prob=0.5)
    runs = [aug.augment(audio, labels, mask, np.random.default_rng(7), cfg) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for out, lab, msk, _, _ in runs[:1] + [aug.augment(audio, labels, mask, np.random.default_rng(s), cfg)
                                           for s in range(8)]:
        assert lab.shape[0] == num_frames(out.size) == msk.shape[0]
        assert np.abs(out).max() <= 1.0 + 1e-6 and np.isfinite(out).all()



@pytest.mark.parametrize("field, value", [("tempo_range", (0.0, 1.2)), ("speed_range", (1.2, 0.9)),
                                          ("pitch_prob", 1.5), ("pitch_semitones", (3.0, -3.0)),
                                          ("pitch_semitones", (-24.0, 0.0)), ("pitch_semitones", (0.0, float("nan"))),
                                          ("whisper_prob", -0.1), ("whisper_mix", (0.5, 1.5))])
def test_augment_settings_out_of_range_are_refused(field, value):
    from talkmotion.config import ConfigError

    with pytest.raises(ConfigError, match=f"data.augment.{field} must be"):
        aug.AugmentConfig(**{field: value})


def test_phone_track_is_retimed_with_the_audio_and_labels():
    """After speed and tempo changes, the phone under each label frame is still the one the
    labels show: bursts ('aa', jaw open) and pauses ('sil', mouth closed)."""
    from conftest import synthetic_clip
    from talkmotion import labels as channels
    from talkmotion.data.phonemes import PHONE_CLASSES, phone_track, track_at

    clip = synthetic_clip("retime", 4.0, seed=3)
    cfg = aug.AugmentConfig(speed_prob=1.0, speed_range=(0.8, 0.8), tempo_prob=1.0, tempo_range=(1.1, 1.1),
                            eq_prob=0, noise_prob=0, reverb_prob=0, band_limit_prob=0)
    track = phone_track(clip.phonemes, clip.audio.size)
    out, lab, _, moved, played = aug.augment(clip.audio, clip.labels, clip.mask, np.random.default_rng(0), cfg,
                                             track)
    assert played == pytest.approx(0.88) and moved.size == pytest.approx(track.size / 0.88, abs=2)   # 0.8 × 1.1
    centres = (np.arange(lab.shape[0]) + 0.5) * SAMPLE_RATE / FPS
    phone = track_at(moved, centres)
    jaw = lab[:, channels.index("jawOpen")]
    aa, sil = PHONE_CLASSES.index("aa"), PHONE_CLASSES.index("sil")
    assert np.mean(phone[jaw > 0.3] == aa) > 0.95
    assert np.mean(phone[(jaw < 0.01) & (phone >= 0)] == sil) > 0.95   # the clip's ends have no timings
    # Without the retiming the track would disagree with the moved labels somewhere.
    unmoved = track_at(track, centres[:min(lab.shape[0], clip.labels.shape[0])])
    assert not np.array_equal(unmoved, phone[:unmoved.size])


@pytest.mark.parametrize("timing, message", [(["zz", 0.0, 0.1, 0], "unknown phone 'zz'"),
                                             (["aa", "0.1", 0.2, 0], "both must be seconds"),
                                             (["aa", 0.1], "missing")])
def test_clip_with_bad_phoneme_timings_is_refused_by_name(tmp_path, timing, message):
    """The phone track (and the rules and metrics) need known phones and numeric times: a
    hand-edited clip that breaks that is refused when it is loaded, naming the file."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import save_file

    from conftest import synthetic_clip
    from talkmotion.data.clips import ClipError, load_clip, save_clip

    good = tmp_path / "good.clip.safetensors"
    save_clip(good, synthetic_clip("c", 1.0, seed=0))
    with safe_open(str(good), framework="numpy") as f:
        header = json.loads(f.metadata()["talkmotion"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header["phonemes"][1] = timing
    bad = tmp_path / "bad.clip.safetensors"
    save_file(tensors, str(bad), metadata={"talkmotion": json.dumps(header)})
    assert load_clip(good).phone_track is not None
    with pytest.raises(ClipError, match=f"{bad}: bad phoneme timings.*{message}"):
        load_clip(bad)


def test_a_phone_line_keeps_its_band_and_256_levels_at_the_same_loudness():
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(SAMPLE_RATE) * 0.1).astype(np.float32)       # white: every frequency
    line = aug.telephone(audio)
    assert line.shape == audio.shape and line.dtype == np.float32 and np.isfinite(line).all()
    assert np.sqrt(np.mean(line ** 2)) == pytest.approx(np.sqrt(np.mean(audio ** 2)), rel=0.05)
    power = np.abs(np.fft.rfft(line)) ** 2
    hz = np.fft.rfftfreq(line.size, 1 / SAMPLE_RATE)
    in_band = power[(hz > 500) & (hz < 3000)].mean()
    assert power[hz > 4200].mean() < 1e-3 * in_band          # nothing above the line's Nyquist
    assert power[hz < 100].mean() < 1e-2 * in_band           # nor the hum band
    coded = aug.mu_law_8bit(np.linspace(-1, 1, 100_001))
    assert len(np.unique(coded)) == 256
    steps = np.diff(np.unique(coded))
    assert steps[127] < steps[0] / 50                        # fine near zero, coarse at full scale
    quiet = np.linspace(-0.01, 0.01, 101)
    assert np.abs(aug.mu_law_8bit(quiet) - quiet).max() < 3e-4
