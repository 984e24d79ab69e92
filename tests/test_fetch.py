"""`talkmotion fetch-dataset` with a local fake downloader: never the network."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from face_videos import tone, write_video
from talkmotion.audio import load_audio
from talkmotion.cli import main
from talkmotion.data.fetch import FetchError, RateLimiter, fetch, parse_rate, read_list
from talkmotion.data.video import iter_frames, probe


class FakeDownloader:
    """Copies local files as if downloaded; ids in `broken` fail like an unavailable video."""

    def __init__(self, sources: dict[str, Path], broken: tuple[str, ...] = ()):
        self.sources, self.broken, self.calls = sources, broken, []

    def fetch(self, youtube_id: str, folder: Path) -> Path:
        self.calls.append(youtube_id)
        if youtube_id in self.broken or youtube_id not in self.sources:
            raise FetchError(f"{youtube_id}: download failed (Video unavailable)")
        dst = folder / f"{youtube_id}.mp4"
        shutil.copy(self.sources[youtube_id], dst)
        return dst


class LocalDownloader:
    """Picklable, so it runs in a worker process: copies a local file; ids in `hang` never return."""

    def __init__(self, source: Path, hang: tuple[str, ...] = ()):
        self.source, self.hang = source, hang

    def fetch(self, youtube_id: str, folder: Path) -> Path:
        if youtube_id in self.hang:
            time.sleep(120)                          # killed by the batch's timeout long before this ends
        dst = folder / f"{youtube_id}.mp4"
        shutil.copy(self.source, dst)
        return dst


class FakeClock:
    """Time that moves only when slept, so rate limiting is checked without waiting."""

    def __init__(self):
        self.now, self.sleeps = 100.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A 4 s video whose frame brightness is its frame number and whose sound is a 220 Hz tone."""
    root = tmp_path_factory.mktemp("src")
    frames = ((i / 30, np.full((64, 64, 3), 2 * i, np.uint8)) for i in range(120))
    return write_video(root / "src.mp4", frames, audio=tone(4.0))


def limiter(clock: FakeClock, interval: float = 5.0) -> RateLimiter:
    return RateLimiter(interval, clock.clock, clock.sleep)


def test_avspeech_rows_are_cut_failures_recorded_and_downloads_spaced(source, tmp_path):
    rows = tmp_path / "avspeech.csv"
    rows.write_text("vidAAAAAAA1,1.0,2.5,0.5,0.4\nvidAAAAAAA1,0.0,1.0,0.5,0.4\nvidBROKEN01,3.0,4.0,0.5,0.5\n"
                    "vidCCCCCCC3,not-a-time,2.0,0.1,0.1\n")
    items, problems = read_list(rows)
    assert [i.line for i in items] == [1, 2, 3] and problems[0][0] == 4 and "avspeech.csv:4" in problems[0][1]
    fake, clock = FakeDownloader({"vidAAAAAAA1": source}, broken=("vidBROKEN01",)), FakeClock()
    report = fetch(items, tmp_path / "out", fake, limiter(clock))
    assert fake.calls == ["vidAAAAAAA1", "vidBROKEN01"]                 # one download per video
    assert clock.sleeps == [5.0]                                           # the second waited
    assert (report.tally["ok"], report.tally["failed"], report.tally["downloads"]) == (2, 1, 2)
    manifest = json.loads((tmp_path / "out" / "fetch.json").read_text())["items"]
    failed = manifest["vidBROKEN01_3.000_4.000"]
    assert failed["status"] == "failed" and "Video unavailable" in failed["error"] and failed["line"] == 3
    cut = tmp_path / "out" / manifest["vidAAAAAAA1_1.000_2.500"]["file"]
    frames = list(iter_frames(cut))
    assert len(frames) == 45                                                # 1.5 s at 30 fps
    assert abs(frames[0].rgb.mean() - 2 * 30) < 3                          # starts at source frame 30
    audio = load_audio(cut)
    assert abs(audio.size - 1.5 * 16000) <= 160 and np.sqrt(np.mean(audio[1600:-1600] ** 2)) > 0.15
    assert not list((tmp_path / "out" / "raw").iterdir())                  # downloads removed once cut


def test_rerun_skips_settled_rows_and_retries_failures_only_when_asked(source, tmp_path):
    rows = tmp_path / "ids.csv"
    rows.write_text("vidAAAAAAA1,0.0,1.0\nvidBROKEN01,0.0,1.0\n")
    items, _ = read_list(rows)
    out = tmp_path / "out"
    fetch(items, out, FakeDownloader({"vidAAAAAAA1": source}, ("vidBROKEN01",)), limiter(FakeClock()))
    again = FakeDownloader({"vidAAAAAAA1": source, "vidBROKEN01": source})
    report = fetch(items, out, again, limiter(FakeClock()))
    assert again.calls == [] and report.tally["skipped"] == 2
    report = fetch(items, out, again, limiter(FakeClock()), retry_failed=True)
    assert again.calls == ["vidBROKEN01"] and report.tally["ok"] == 1
    statuses = {k: v["status"] for k, v in json.loads((out / "fetch.json").read_text())["items"].items()}
    assert statuses == {"vidAAAAAAA1_0.000_1.000": "ok", "vidBROKEN01_0.000_1.000": "ok"}


def test_talkinghead_tubes_and_id_lists(source, tmp_path):
    tubes = tmp_path / "train_video_tubes.txt"
    tubes.write_text("-vid_AAAAA1_0000, 64, 64, 15, 44, 0, 0, 64, 64\n")
    items, problems = read_list(tubes)
    assert not problems and items[0].youtube_id == "-vid_AAAAA1" and items[0].chunk == 0
    fetch(items, tmp_path / "out", FakeDownloader({"-vid_AAAAA1": source}), limiter(FakeClock()))
    cut = tmp_path / "out" / "segments" / "-vid_AAAAA1_0000_S15_E44.mkv"
    frames = list(iter_frames(cut))
    assert len(frames) == 30 and abs(frames[0].rgb.mean() - 30) < 3       # frames 15..44 inclusive

    ids = tmp_path / "train_video_ids.txt"
    ids.write_text("vidAAAAAAA1\n")
    items, _ = read_list(ids)
    fetch(items, tmp_path / "whole", FakeDownloader({"vidAAAAAAA1": source}), limiter(FakeClock()), keep_raw=True)
    whole = tmp_path / "whole" / "segments" / "vidAAAAAAA1.mp4"
    assert whole.read_bytes() == source.read_bytes() and probe(whole).duration > 3.9
    assert (tmp_path / "whole" / "raw" / "vidAAAAAAA1.mp4").exists()


def test_segment_past_the_end_fails_clearly(source, tmp_path):
    rows = tmp_path / "late.csv"
    rows.write_text("vidAAAAAAA1,10.0,12.0\nvidAAAAAAA1,0.0,0.5\n")
    items, _ = read_list(rows)
    report = fetch(items, tmp_path / "out", FakeDownloader({"vidAAAAAAA1": source}), limiter(FakeClock()))
    entries = json.loads((tmp_path / "out" / "fetch.json").read_text())["items"]
    assert "no video frames between 10.000 and 12.000 s" in entries["vidAAAAAAA1_10.000_12.000"]["error"]
    assert (report.tally["ok"], report.tally["failed"]) == (1, 1)
    assert not list((tmp_path / "out" / "segments").glob(".*.tmp"))


def test_bad_lists_and_options(tmp_path, capsys):
    with pytest.raises(FetchError, match="missing.csv: cannot read the list"):
        read_list(tmp_path / "missing.csv")
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n")
    with pytest.raises(FetchError, match="cannot tell the list format"):
        read_list(odd)
    assert parse_rate("2M") == 2 * 1024 * 1024 and parse_rate("500K") == 500 * 1024
    with pytest.raises(FetchError, match="--rate-limit"):
        parse_rate("fast")
    assert main(["fetch-dataset", str(odd), "-o", str(tmp_path / "out")]) == 2
    assert "odd.csv" in capsys.readouterr().err


def test_cut_but_unrecorded_rows_are_recognised_and_stale_temp_files_removed(source, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("vidAAAAAAA1,0.0,1.0\nvidAAAAAAA1,1.0,2.0\n")
    items, _ = read_list(rows)
    out = tmp_path / "out"
    fetch(items, out, FakeDownloader({"vidAAAAAAA1": source}), limiter(FakeClock()))
    manifest = json.loads((out / "fetch.json").read_text())
    recorded = manifest["items"].pop("vidAAAAAAA1_1.000_2.000")    # as if killed before the manifest was saved
    (out / "fetch.json").write_text(json.dumps(manifest))
    stale = [out / ".fetch.json.99999.tmp", out / "segments" / ".vidAAAAAAA1_1.000_2.000.mkv.99999.tmp"]
    for path in stale:
        path.write_text("half written")
    stamp = (out / recorded["file"]).stat().st_mtime_ns
    again = FakeDownloader({"vidAAAAAAA1": source})
    report = fetch(items, out, again, limiter(FakeClock()))
    assert again.calls == [] and report.tally["recognised"] == 1 and report.skipped == 1
    assert json.loads((out / "fetch.json").read_text())["items"]["vidAAAAAAA1_1.000_2.000"] == recorded
    assert (out / recorded["file"]).stat().st_mtime_ns == stamp
    assert not any(path.exists() for path in stale)


@pytest.mark.slow
def test_worker_process_download_that_hangs_is_killed_and_the_rest_is_cut(source, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("vidHANGING1,0.0,1.0\nvidAAAAAAA1,0.0,1.0\nvidHANGING1,1.0,2.0\n")
    items, _ = read_list(rows)
    out = tmp_path / "out"
    report = fetch(items, out, LocalDownloader(source, hang=("vidHANGING1",)), RateLimiter(0.0), workers=1,
                   timeout=3.0)
    entries = json.loads((out / "fetch.json").read_text())["items"]
    hung = [entries["vidHANGING1_0.000_1.000"], entries["vidHANGING1_1.000_2.000"]]
    assert all(e["status"] == "failed" and "no progress for 3 s (--timeout); worker killed" in e["error"]
               for e in hung)
    assert entries["vidAAAAAAA1_0.000_1.000"]["status"] == "ok"
    assert (report.failed, report.done, report.tally["failed"], report.tally["ok"]) == (1, 1, 2, 1)
