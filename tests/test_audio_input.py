"""The shared decoder (audio.iter_audio) against damaged and hostile files: headers that lie
about the sample rate or the length, files cut short, and channel layouts ffmpeg cannot mix."""

from __future__ import annotations

import logging
import struct
import subprocess

import av
import numpy as np
import pytest
import soundfile as sf

from talkmotion.audio import SAMPLE_RATE, AudioError, AudioTooLong, iter_audio, load_audio
from talkmotion.cli import main


def tone(seconds: float, sr: int = SAMPLE_RATE, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_wav(path, pcm, sr: int = SAMPLE_RATE):
    sf.write(str(path), pcm, sr, subtype="PCM_16")
    return path


def patch_wav(path, rate: int | None = None, data_size: int | None = None):
    """Rewrite a WAV header's sample rate (and byte rate) or its data chunk's size."""
    data = bytearray(path.read_bytes())
    if rate is not None:
        fmt = data.find(b"fmt ")
        block_align = struct.unpack_from("<H", data, fmt + 20)[0]
        struct.pack_into("<II", data, fmt + 12, rate, rate * block_align)
    if data_size is not None:
        struct.pack_into("<I", data, data.find(b"data") + 4, data_size)
    path.write_bytes(bytes(data))
    return path


def write_mp3(path, pcm: np.ndarray, sr: int = SAMPLE_RATE, length_header: bool = True):
    """MP3 through ffmpeg's LAME; `length_header` writes the Xing/Info frame that states the length."""
    with av.open(str(path), "w", format="mp3", options={} if length_header else {"write_xing": "0"}) as out:
        stream = out.add_stream("libmp3lame", rate=sr, layout="mono")
        for i in range(0, pcm.size, 1152):
            frame = av.AudioFrame.from_ndarray(pcm[None, i:i + 1152], format="flt", layout="mono")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def seconds(path, **kw) -> float:
    return sum(c.size for c in iter_audio(path, **kw)) / SAMPLE_RATE


# --- item 1: lying sample rates and lengths ------------------------------------------------------

@pytest.mark.parametrize("rate", [1, 8, 3999, 384_001, 2**31 - 1])
def test_absurd_header_sample_rates_are_refused_before_decoding(tmp_path, rate):
    path = patch_wav(write_wav(tmp_path / "liar.wav", tone(0.5)), rate=rate)
    with pytest.raises(AudioError, match=rf"liar.wav: sample rate {rate} Hz is outside 4000..384000 Hz"):
        next(iter_audio(path))


def test_the_edges_of_the_sample_rate_range_decode(tmp_path):
    for rate in (4000, 384_000):
        path = write_wav(tmp_path / f"r{rate}.wav", tone(0.25, rate), rate)
        assert seconds(path) == pytest.approx(0.25, abs=0.002)


def test_a_header_declaring_more_than_the_limit_is_refused_before_any_sample(tmp_path):
    path = write_wav(tmp_path / "long.wav", tone(3.0))
    chunks = iter_audio(path, max_seconds=2.0)
    with pytest.raises(AudioTooLong, match="long.wav: its header declares 3 s of audio, over the limit of 2 s"):
        next(chunks)


def test_the_limit_holds_while_decoding_where_no_header_states_the_length(tmp_path):
    """An MP3 without a Xing header: ffmpeg only estimates its length, so decoding enforces it."""
    path = write_mp3(tmp_path / "plain.mp3", tone(4.0), length_header=False)
    got = []
    with pytest.raises(AudioTooLong, match="plain.mp3: more than 2.5 s of audio"):
        for chunk in iter_audio(path, chunk_seconds=0.5, max_seconds=2.5):
            got.append(chunk.size)
    assert 2.0 <= sum(got) / SAMPLE_RATE <= 2.5      # it stopped at the limit, not at the end
    assert seconds(path, max_seconds=5.0) == pytest.approx(4.0, abs=0.15)   # MP3 pads the end


# --- item 11: truncated files ----------------------------------------------------------------

def test_a_truncated_wav_is_an_error_or_with_allow_truncated_a_warning(tmp_path, caplog):
    whole = write_wav(tmp_path / "whole.wav", tone(6.3))
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])
    with pytest.raises(AudioError, match=r"cut.wav: truncated: its header declares 6.30 s of audio, "
                                         r"the file holds 3.1\d s \(animate --allow-truncated"):
        load_audio(cut)
    with caplog.at_level(logging.WARNING, logger="talkmotion.audio"):
        assert load_audio(cut, allow_truncated=True).size / SAMPLE_RATE == pytest.approx(3.15, abs=0.01)
    assert "cut.wav: truncated" in caplog.text
    assert seconds(whole) == pytest.approx(6.3)


def test_a_truncated_mp3_is_an_error(tmp_path):
    whole = write_mp3(tmp_path / "whole.mp3", tone(6.3))
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])
    with pytest.raises(AudioError, match=r"cut.mp3: truncated: its header declares 6.30 s"):
        load_audio(cut)
    assert seconds(whole) == pytest.approx(6.3, abs=0.05)


@pytest.mark.slow
def test_lengths_that_are_only_estimates_or_placeholders_are_not_truncation(tmp_path):
    """A Xing-less MP3 cut in half, and WAVs streamed with a placeholder size, decode as they are."""
    plain = write_mp3(tmp_path / "plain.mp3", tone(6.0), length_header=False)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(plain.read_bytes()[:len(plain.read_bytes()) // 2])
    assert seconds(cut) == pytest.approx(3.0, abs=0.15)
    for size in (0, 0x7FFFF000, 0xFFFFFFFF):
        path = patch_wav(write_wav(tmp_path / f"stream{size}.wav", tone(1.0)), data_size=size)
        assert seconds(path) == pytest.approx(1.0, abs=0.01)
    piped = tmp_path / "espeak.wav"   # espeak-ng writing to a pipe puts 0x7FFFF000 in the header
    piped.write_bytes(subprocess.run(["espeak-ng", "--stdout", "hello"], check=True, capture_output=True).stdout)
    assert 0.2 < seconds(piped) < 3


@pytest.mark.slow
def test_animate_refuses_a_truncated_file_and_allow_truncated_animates_it(tmp_path, capsys):
    whole = write_wav(tmp_path / "whole.wav", tone(2.0))
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])
    out = tmp_path / "cut.json"
    assert main(["animate", str(cut), "-o", str(out), "-q"]) == 2
    assert "cut.wav: truncated" in capsys.readouterr().err and not out.exists()
    assert main(["animate", str(cut), "-o", str(out), "-q", "--allow-truncated"]) == 0
    assert out.exists()


# --- item 14: many channels ------------------------------------------------------------------

@pytest.mark.parametrize("channels", [3, 9, 32])
def test_many_channels_are_mixed_not_called_truncated(tmp_path, channels):
    """ffmpeg cannot build a mix for a 9- or 32-channel WAV without a channel order; it is
    averaged here. Each channel holds the same tone, so the mix is that tone."""
    pcm = tone(0.5)
    path = tmp_path / f"c{channels}.wav"
    sf.write(str(path), np.repeat(pcm[:, None], channels, axis=1), SAMPLE_RATE, subtype="PCM_16")
    mono = load_audio(path)
    np.testing.assert_allclose(mono, pcm, atol=1e-3)
