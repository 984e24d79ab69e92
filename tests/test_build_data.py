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
