#!/usr/bin/env bash
# One-time set-up for a fresh Debian machine: system packages, the venv, Python
# packages, the MediaPipe face model, the default model's ONNX export, the
# inference-only venv and the web viewer's npm packages.
# Idempotent: each step checks what is already there and skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng libespeak-ng1 libflite1
              libsndfile1 libportaudio2 chromium sox)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# The CPU build of torch first, so nothing below pulls a CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
echo "setup: installing talkmotion and its extras"
.venv/bin/pip install -q -e ".[all]"

.venv/bin/python -m talkmotion.assets install   # the face landmarker, Whisper, Kokoro; the embedded models exported for ONNX Runtime

# The inference-only install, as `pip install talkmotion[infer]` gives it: no torch. The tests
# animate, stream and serve from it (tests/test_infer_install.py).
if [ ! -x .venv-infer/bin/python ]; then
  echo "setup: creating .venv-infer (inference only, no torch)"
  python3 -m venv .venv-infer
  .venv-infer/bin/pip install -q --upgrade pip
fi
.venv-infer/bin/pip install -q -e ".[infer]"
if [ -f talkmotion/web/package.json ]; then
  if ! command -v npm >/dev/null; then  # the viewer's build needs Node.js 18+ and npm
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  fi
  (cd talkmotion/web && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; })
  if [ -f talkmotion/web/build.mjs ]; then (cd talkmotion/web && node build.mjs); fi
fi
echo "setup: done"
