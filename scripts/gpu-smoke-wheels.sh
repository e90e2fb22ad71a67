#!/usr/bin/env bash
# The wheels scripts/gpu-smoke.sh needs on a GPU machine that has torch, transformers, peft and accelerate but
# nothing else of ours and no network: this project as a wheel, plus TRL and the rest of the SFT/GRPO import path
# (datasets, pyarrow, pandas, polars, pydantic, math-verify, tensorboard, ...), at the GPU lock's versions, for
# Linux x86_64 and one CPython. Runs here (needs the package registry), not on the GPU machine.
#
#   bash scripts/gpu-smoke-wheels.sh [--out .cache/gpu-smoke-wheels] [--python 3.11] [--part-mib 60]
#
# What the image already has is taken to be torch, transformers, peft, accelerate and their dependencies as
# gpu.lock resolves them; everything else on the path is downloaded. The wheels go into OUT/part-N folders of at
# most --part-mib each (carry them in as many calls), with OUT/requirements.txt naming the pins to install.
# Sizes (CPython 3.11, measured): pyarrow 55 MB, polars' runtime 54 MB, pandas 12 MB, the rest ~10 MB: ~130 MB,
# over 64 MiB whatever the versions (pyarrow >= 21 for TRL, pandas and pyarrow imported by datasets and TRL,
# polars by our storage layer): hence the parts.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.cache/gpu-smoke-wheels
PYV=3.11
PART_MIB=60
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --python) PYV=$2; shift 2 ;;
    --part-mib) PART_MIB=$2; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--python 3.11|3.12] [--part-mib N]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
rm -rf "$OUT" && mkdir -p "$OUT"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" .
"$PY" - "$OUT" "$PYV" "$PART_MIB" <<'EOF'
import importlib.util, subprocess, sys, tempfile
from pathlib import Path

out, pyv, part_mib = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
spec = importlib.util.spec_from_file_location("gpu_lock", "requirements/gpu_lock.py")
gl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gl)
BASE = ["torch", "transformers", "peft", "accelerate"]
# the SFT/GRPO path: distill.training.sft, rl.teacher (polars, tensorboard's SummaryWriter), rl.rewards (math-verify)
NEED = BASE + ["trl", "datasets", "pyarrow", "pandas", "polars", "pydantic", "pyyaml", "math-verify", "tensorboard", "tqdm"]


def closure(names):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(f"-c {gl.LOCK}\n" + "\n".join(names) + "\n")
    return gl.resolve(Path(f.name), pyv)


base, need = closure(BASE), closure(NEED)
carry = sorted((n, v) for k, (n, v) in need.items() if k not in base)
pins = [f"{n}=={v}" for n, v in carry]
tmp = out / "download"
cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", pyv,
       "--implementation", "cp", "-d", str(tmp), *pins]
for tag in gl.platforms():
    cmd += ["--platform", tag]
subprocess.run(cmd, env=gl.pip_env(), check=True, timeout=900)
wheels = sorted(tmp.glob("*.whl"), key=lambda p: -p.stat().st_size) + sorted(out.glob("r1_distill-*.whl"))
limit, parts = part_mib * 2**20, []
for w in wheels:  # first fit, largest first
    size = w.stat().st_size
    if size > limit:
        sys.exit(f"gpu-smoke-wheels: {w.name} alone is {size / 2**20:.1f} MiB, over --part-mib {part_mib}")
    for p in parts:
        if p["size"] + size <= limit:
            break
    else:
        p = {"size": 0, "files": []}
        parts.append(p)
    p["size"] += size
    p["files"].append(w)
for i, p in enumerate(parts, 1):
    d = out / f"part-{i}"
    d.mkdir()
    for w in p["files"]:
        w.rename(d / w.name)
    print(f"gpu-smoke-wheels: {d}: {len(p['files'])} wheels, {p['size'] / 2**20:.1f} MiB")
tmp.rmdir()
(out / "requirements.txt").write_text("".join(f"{x}\n" for x in pins))
total = sum(p["size"] for p in parts) / 2**20
print(f"gpu-smoke-wheels: {len(pins)} pins + r1-distill for CPython {pyv}, {total:.1f} MiB in {len(parts)} part(s): "
      f"{', '.join(pins)}")
EOF
