"""Thread settings for CPU training, quiet and beside one busy neighbour (issue 17): a benchmark, not a test.

    .venv/bin/python scripts/bench_threads.py                 # small Llama (SmolLM2's layer shape, 6 layers)
    .venv/bin/python scripts/bench_threads.py --preset smollm2 --steps 4   # the demo's 135M shape, slower
    .venv/bin/python scripts/bench_threads.py --quick         # does it work: tiny model, 2 steps

Each setting runs in a fresh Python (OpenMP reads its variables once, when torch loads it) that times a
few training steps of a LoRA-adapted Llama (forward + backward + AdamW, as the demo's cold-start SFT and
GRPO updates do) and a short `generate` (GRPO's rollouts: many small ops, where waiting threads matter
most). It runs every setting quiet, then again beside one `python -c "while True: pass"` that it starts
and stops itself, and prints each time against the quiet baseline (threads = cores, OpenMP defaults) of
the same run. Torch here uses GNU OpenMP (libgomp): KMP_BLOCKTIME means nothing to it; its equivalents
are OMP_WAIT_POLICY and GOMP_SPINCOUNT. The `iomp` settings preload Intel's libiomp5 (which serves
libgomp's entry points) where one is installed, to compare KMP_BLOCKTIME=0.

The machine must otherwise be idle for the numbers to mean anything: the load average is printed at the
start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.core.threads import busy_cores, free_cores, usable_cores  # noqa: E402

PRESETS = {  # hidden, layers, heads, kv heads, intermediate, vocab, batch, sequence, new tokens
    "tiny": (128, 2, 4, 2, 256, 2048, 4, 64, 8),
    "small": (576, 6, 9, 3, 1536, 49152, 4, 128, 16),
    "smollm2": (576, 30, 9, 3, 1536, 49152, 8, 128, 32),
}


def worker(preset: str, steps: int, warmup: int) -> dict:
    """Time `steps` LoRA training steps and generate calls of a random Llama (in this process, as configured)."""
    import torch  # heavy: the benchmark's subject
    from peft import LoraConfig, get_peft_model  # heavy: as the demo trains (LoRA on every linear layer)
    from transformers import LlamaConfig, LlamaForCausalLM  # heavy: the demo's model family

    hidden, layers, heads, kv, inter, vocab, batch, seq, new = PRESETS[preset]
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                      intermediate_size=inter, vocab_size=vocab, max_position_embeddings=2048, tie_word_embeddings=True)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, vocab, (batch, seq))
    train, gen = [], []
    for i in range(warmup + steps):
        t = time.perf_counter()
        model.train()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= warmup:
            train.append(time.perf_counter() - t)
        t = time.perf_counter()
        model.eval()
        with torch.no_grad():
            model.generate(input_ids=ids[:, :16], max_new_tokens=new, min_new_tokens=new, do_sample=True, pad_token_id=0)
        if i >= warmup:
            gen.append(time.perf_counter() - t)
    return {"train_s": statistics.median(train), "generate_s": statistics.median(gen), "threads": torch.get_num_threads()}


def settings(cores: int, free: int) -> dict[str, dict[str, str]]:
    """name -> environment of each setting compared (free: cores free when the scenario started)."""
    out = {
        f"threads={cores} (cores), OpenMP defaults": {"OMP_NUM_THREADS": str(cores)},
        f"threads={cores}, OMP_WAIT_POLICY=PASSIVE": {"OMP_NUM_THREADS": str(cores), "OMP_WAIT_POLICY": "PASSIVE"},
        f"threads={cores}, GOMP_SPINCOUNT=0": {"OMP_NUM_THREADS": str(cores), "GOMP_SPINCOUNT": "0"},
        f"threads={free} (free at start)": {"OMP_NUM_THREADS": str(free)},
        f"threads={free} (free at start), PASSIVE": {"OMP_NUM_THREADS": str(free), "OMP_WAIT_POLICY": "PASSIVE"},
    }
    iomp = next((p for p in (Path(sys.prefix) / "lib" / "libiomp5.so", REPO / ".venv" / "lib" / "libiomp5.so") if p.is_file()), None)
    if iomp is not None:
        out[f"threads={cores}, Intel OpenMP (preloaded), KMP_BLOCKTIME=0"] = {
            "OMP_NUM_THREADS": str(cores), "LD_PRELOAD": str(iomp), "KMP_BLOCKTIME": "0"}
    return out


def run_setting(env_extra: dict[str, str], args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env.update(env_extra, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, __file__, "--worker", "--preset", args.preset, "--steps", str(args.steps),
                          "--warmup", str(args.warmup)], env=env, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    except OSError:
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny model, 2 steps, no warm-up: check that it works")
    p.add_argument("--only", help="run only the settings whose name contains this text")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per setting")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.preset, args.steps, args.warmup = "tiny", 2, 0
    if args.worker:
        print(json.dumps(worker(args.preset, args.steps, args.warmup)))
        return 0

    cores = usable_cores()
    print(f"cores {cores}, preset {args.preset}, {args.steps} steps after {args.warmup} warm-up; load average at start {loadavg()}")
    results: dict[str, dict[str, dict]] = {}
    for scenario in ("quiet", "busy"):
        neighbour = None
        if scenario == "busy":
            neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            busy = busy_cores(0.5)
            free = free_cores(cores, busy)
            print(f"\n[{scenario}] other processes keep {busy if busy is None else round(busy, 2)} cores busy -> {free} free", flush=True)
            for name, env in settings(cores, free).items():
                if args.only and args.only not in name:
                    continue
                key = name.replace(f"threads={free} (free", "threads=free (free")
                r = run_setting(env, args)
                results.setdefault(key, {})[scenario] = r | {"label": name}
                print(f"  {name:58s} " + (r["error"] if "error" in r else f"train {r['train_s']:7.2f} s/step   generate {r['generate_s']:7.2f} s"), flush=True)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()

    base = next(iter(results.values())).get("quiet", {})
    print(f"\nratios against the quiet baseline ({next(iter(results))}): train / generate")
    print(f"  {'setting':58s} {'quiet':>15s} {'busy':>15s}")
    for key, by in results.items():
        cells = []
        for scenario in ("quiet", "busy"):
            r = by.get(scenario, {})
            if "train_s" in r and "train_s" in base:
                cells.append(f"{r['train_s'] / base['train_s']:5.2f} / {r['generate_s'] / base['generate_s']:5.2f}")
            else:
                cells.append(f"{'-':>15s}")
        print(f"  {key:58s} {cells[0]:>15s} {cells[1]:>15s}")
    print(f"\nload average at the end {loadavg()} (the busy runs add 1 to it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
