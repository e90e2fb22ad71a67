#!/usr/bin/env bash
# GPU smoke test, one GPU, under 10 minutes: bf16 SFT and GRPO steps on a tiny random Qwen2 through our real code
# (distill.training.sft.train_sft, rl.teacher.run_grpo), then vLLM generation through distill.engines.vllm where
# vLLM is installed. Offline. The python part is scripts/gpu_smoke.py; it writes OUT/smoke.json.
#
#   bash scripts/gpu-smoke.sh                             # this machine's .venv (e.g. after make setup-gpu)
#   bash scripts/gpu-smoke.sh --wheels DIR                # a bare GPU image (torch, transformers, peft,
#                                                         #   accelerate only, no network): installs DIR's
#                                                         #   wheels first (scripts/gpu-smoke-wheels.sh)
#   bash scripts/gpu-smoke.sh --cpu                       # CPU rehearsal: fp32, 1 step each
#
# Options: --wheels DIR (folders of wheels anywhere below DIR, DIR/requirements.txt; installed with
# `pip install --no-index` into the Python that runs the test), --out DIR (default .cache/gpu-smoke), --cpu,
# --vllm auto|on|off, --steps N, --timeout S (default 600). PYTHON=... picks the interpreter (default: .venv's,
# else python3). Exit status: 0 when every part that ran passed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=.cache/gpu-smoke
WHEELS=""
TIMEOUT=600
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --cpu) ARGS+=(--cpu); shift ;;
    --vllm|--steps) ARGS+=("$1" "$2"); shift 2 ;;
    *) echo "usage: $0 [--wheels DIR] [--out DIR] [--cpu] [--vllm auto|on|off] [--steps N] [--timeout S]" >&2; exit 2 ;;
  esac
done
"$PY" -c 'import torch, transformers, peft, accelerate' \
  || { echo "gpu-smoke: $PY lacks torch, transformers, peft or accelerate (the image must have them)" >&2; exit 1; }
if [ -n "$WHEELS" ]; then
  [ -f "$WHEELS/requirements.txt" ] || { echo "gpu-smoke: $WHEELS/requirements.txt missing (scripts/gpu-smoke-wheels.sh)" >&2; exit 1; }
  links=()
  while IFS= read -r d; do links+=(--find-links "$d"); done < <(find "$WHEELS" -name '*.whl' -printf '%h\n' | sort -u)
  echo "gpu-smoke: installing $(wc -l < "$WHEELS/requirements.txt") pinned wheels and r1-distill from $WHEELS (no index)"
  PIP_CONFIG_FILE=/dev/null "$PY" -m pip install -q --no-index "${links[@]}" -r "$WHEELS/requirements.txt"
  # our package without its declared dependencies (Prefect, Ray, vLLM...): the smoke path does not import them
  PIP_CONFIG_FILE=/dev/null "$PY" -m pip install -q --no-index --no-deps --force-reinstall "$(find "$WHEELS" -name 'r1_distill-*.whl' | head -1)"
fi
mkdir -p "$OUT"
echo "gpu-smoke: $($PY -c 'import sys; print(sys.executable, sys.version.split()[0])'), out $OUT, timeout ${TIMEOUT}s"
HF_HUB_OFFLINE=1 timeout --kill-after=30 "$TIMEOUT" "$PY" scripts/gpu_smoke.py --out "$OUT" "${ARGS[@]}" || {
  rc=$?; [ $rc = 124 ] && echo "gpu-smoke: timed out after ${TIMEOUT}s" >&2; exit $rc; }
