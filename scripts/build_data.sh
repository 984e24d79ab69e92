#!/usr/bin/env bash
# Rebuild every data folder the default model and its figures come from (data/ is git-ignored).
#
#   bash scripts/build_data.sh [train|eval|all]      (make data = all)
#
#   train  the training corpora of configs/default.toml: festival + espeak-ng, flite, Kokoro, and
#          real speech without transcripts labelled by the embedded quality model (`corpus teach`),
#          and the same speech written down by Whisper (`corpus transcribe`) and aligned (`corpus align`)
#   eval   the dev and test sets of BENCHMARKS.md: held-out Kokoro voices, flite awb, the
#          robotic engines' test splits and the real-speech sets, each re-timed by the
#          pocketsphinx aligner (`corpus align`)
#
# Hours on a 2-core machine (the Kokoro corpus alone is about an hour: BENCHMARKS.md, "TTS
# corpus"). Every step resumes where it stopped, so run it again after an interruption;
# finished steps cost a scan of their folder. A rerun also retries clips recorded as failed: Kokoro
# clips get 300 s each (--timeout), as a loaded machine took over 30 s for some and the dev set
# then lost clips that another run kept.
set -euo pipefail
cd "$(dirname "$0")/.."

TM=.venv/bin/talkmotion
stage="${1:-all}"
case "$stage" in train|eval|all) ;; *) echo "usage: $0 [train|eval|all]" >&2; exit 2 ;; esac

if [ "$stage" != eval ]; then
  $TM corpus synth -o data/corpus --clips 2400 --workers 2
  $TM corpus synth -o data/corpus_flite --clips 900 --engines flite --seed 1
  $TM corpus synth -o data/corpus_kokoro --engines kokoro --clips 3000 --seed 2 --workers 2 --timeout 300
  .venv/bin/python scripts/build_real_unlabelled.py          # data/real_unlabelled (make unlabelled)
  $TM corpus teach data/real_unlabelled -o data/taught_real --workers 2
  # the same speech written down by Whisper tiny.en, then timed and rule-labelled by the aligner
  $TM corpus transcribe data/real_unlabelled -o data/transcribed_real --workers 2
  $TM corpus align data/transcribed_real/transcripts.tsv -o data/aligned_real --dict data/transcribed_real/guessed.dict --split train --source transcribed_real --workers 2
fi
if [ "$stage" != train ]; then
  $TM corpus synth -o data/dev_kokoro --engines kokoro --voices 'kokoro-dev-*' --clips 300 --seed 21 --workers 2 --timeout 300
  $TM corpus synth -o data/test_kokoro --engines kokoro --voices 'kokoro-test-*' --clips 300 --seed 31 --workers 2 --timeout 300
  $TM corpus synth -o data/dev_awb --engines flite --voices awb --clips 400 --seed 11
  $TM corpus align data/dev_kokoro -o data/dev_kokoro_aligned
  $TM corpus align data/test_kokoro -o data/test_kokoro_aligned
  $TM corpus align data/dev_awb -o data/dev_awb_aligned
  # The robotic engines' test splits need the training corpora.
  if [ -d data/corpus ] && [ -d data/corpus_flite ]; then
    $TM corpus align data/corpus -o data/test_tts_aligned --input-split test --source corpus-test
    $TM corpus align data/corpus_flite -o data/test_flite_aligned --input-split test --source corpus_flite-test
  else
    echo "build_data: data/corpus and data/corpus_flite are not built: skipping their test splits (run 'train' first)"
  fi
  .venv/bin/python scripts/build_devsets.py      # data/dev_real_{mfa,misc,books,debian}
fi
echo "build_data: $stage done"
