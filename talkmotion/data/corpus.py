"""`talkmotion corpus`: build clip sets. Four actions, each in its own module:

    talkmotion corpus synth -o DATA --clips N ...     # TTS speech, engine timings (data/synth.py)
    talkmotion corpus align INPUT -o DATA ...         # any speech + transcripts, aligner timings (data/corpus_align.py)
    talkmotion corpus teach INPUT -o DATA ...         # any speech, labels from a teacher model (data/corpus_teach.py)
    talkmotion corpus transcribe INPUT -o FOLDER ...  # speech → Whisper's transcripts for align (data/corpus_transcribe.py)
"""

from __future__ import annotations

import importlib

ACTIONS = {
    "synth": ("talkmotion.data.synth", "a phoneme-timed talking corpus from local TTS engines"),
    "align": ("talkmotion.data.corpus_align",
              "speech + transcripts (or a clip set to re-time) → clips timed by the forced aligner"),
    "teach": ("talkmotion.data.corpus_teach",
              "speech without transcripts (or a clip set) → clips labelled by a teacher model's own frames"),
    "transcribe": ("talkmotion.data.corpus_transcribe",
                   "speech without transcripts → Whisper tiny.en's transcripts, a TSV for `corpus align`"),
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (module, help_text) in ACTIONS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text, description=help_text))


def run(args) -> int:
    return importlib.import_module(ACTIONS[args.action][0]).run(args)
