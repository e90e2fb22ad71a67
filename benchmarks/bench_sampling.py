"""Sampling stage vs a bare `vllm.LLM.generate`: output tokens per second, same prompts, model and
settings, in one run, on one engine.

    R1_DISTILL_CACHE=.cache HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sampling.py            # tiny + SmolLM2
    .venv/bin/python benchmarks/bench_sampling.py --models tiny --repeats 5

Both sides use the same running `vllm.LLM`, so engine start is excluded from both (it is reported on its
own). The bare side gets the prompts already rendered to token ids and only calls `llm.generate`; the stage
side is the whole `distill.generation.sample.generate_traces` call: chat-template rendering, the engine, decoding,
assembling rows, writing parquet shards with their sha256 and commit records, and the ledger.

The stage asks vLLM not to detokenize (it decodes finished token ids once itself), which a default
`LLM.generate` call does at every step; so a second bare baseline with `detokenize=False` is measured too,
the engine doing strictly the least work. Runs rotate through the three sides so drift on a shared machine
hits all of them. The ratio is the median over rounds of (stage tok/s / bare tok/s) within a round, the
three sides of a round having run back to back (other jobs on a shared machine move whole rounds);
the tok/s columns are plain medians. Target: ratio >= 0.95.

On a shared machine wall time moves with other jobs; the CPU time of this (the driver) process does not
much, and it is all the stage adds on top of the engine (the engine core runs in its own processes):
the "driver CPU" columns are median CPU seconds per run of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

# (prompts, n, max_tokens, shard_size, kv cache GiB); on 2 idle cores a run takes ~6 s (tiny) and ~9 s (SmolLM2)
SIZES = {"tiny": (128, 4, 128, 32, 2), "smollm2": (32, 2, 64, 8, 2)}


def _model_dir(name: str, tmp: Path) -> str:
    if name == "tiny":
        from tiny_models import build_tiny_model

        return str(build_tiny_model(tmp / "tiny", arch="qwen2", seed=0))
    from distill.core.models import resolve_model

    return resolve_model("embedded:smollm2-135m-instruct")


def bench(name: str, repeats: int, tmp: Path) -> dict:
    import polars as pl
    from vllm import LLM
    from vllm import SamplingParams as VSP
    from vllm.inputs import TokensPrompt

    from distill.generation.demo_task import make_prompts
    from distill.engines.base import Request, SamplingParams, render_prompts
    from distill.engines.vllm import VLLMEngine, configure_cpu_vllm
    from distill.generation.sample import generate_traces
    from distill.generation.shards import to_messages

    n_prompts, n, max_tokens, shard_size, kv = SIZES[name]
    configure_cpu_vllm()
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv)
    model = _model_dir(name, tmp)
    train, _ = make_prompts(n_prompts, 0, seed=1)
    prompts = pl.DataFrame(train)
    params = SamplingParams(n=n, temperature=0.6, top_p=0.95, max_tokens=max_tokens, seed=0)

    t0 = time.perf_counter()
    llm = LLM(model=model, seed=0, enforce_eager=True, max_model_len=1024, dtype="auto")
    start_s = time.perf_counter() - t0
    tok = llm.get_tokenizer()
    ids = render_prompts(tok, [Request(r["prompt_id"], to_messages(r["prompt"])) for r in train])
    vsp = VSP(n=n, temperature=params.temperature, top_p=params.top_p, max_tokens=max_tokens)
    vsp_ids = VSP(n=n, temperature=params.temperature, top_p=params.top_p, max_tokens=max_tokens, detokenize=False)
    llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids[:8]], vsp, use_tqdm=False)  # warm-up

    def bare(sp) -> tuple[int, float]:
        t = time.perf_counter()
        outs = llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], sp, use_tqdm=False)
        secs = time.perf_counter() - t
        return sum(len(c.token_ids) for o in outs for c in o.outputs), secs

    def stage(k: int) -> tuple[int, float]:
        out = tmp / f"{name}-traces-{k}"
        engine = VLLMEngine.from_llm(llm)
        t = time.perf_counter()
        stats = generate_traces(prompts, out, model_label=name, params=params, engine_factory=lambda: engine, shard_size=shard_size)
        secs = time.perf_counter() - t
        assert stats["shards_generated"] == stats["shards"] and stats["rows"] == n_prompts * n
        return stats["completion_tokens"], secs

    sides = {"bare": lambda r: bare(vsp), "bare_ids": lambda r: bare(vsp_ids), "stage": stage}
    runs = {k: [] for k in sides}
    names = list(sides)
    for r in range(repeats):
        for which in names[r % 3 :] + names[: r % 3]:  # rotate the order
            cpu = time.process_time()
            tokens, secs = sides[which](r)
            cpu = time.process_time() - cpu
            runs[which].append({"tokens": tokens, "seconds": round(secs, 3), "tok_s": round(tokens / secs, 1), "driver_cpu_s": round(cpu, 3)})
            print(f"  {name} {which:8s} run {r}: {tokens} tokens in {secs:.2f} s = {tokens / secs:.1f} tok/s "
                  f"(driver CPU {cpu:.2f} s)", flush=True)
    llm.llm_engine.engine_core.shutdown()
    del llm
    med = {k: statistics.median(x["tok_s"] for x in v) for k, v in runs.items()}

    def paired(base: str) -> float:
        return statistics.median(s["tok_s"] / b["tok_s"] for s, b in zip(runs["stage"], runs[base]))

    return {
        "model": name,
        "prompts": n_prompts,
        "n": n,
        "max_tokens": max_tokens,
        "shards": -(-n_prompts // shard_size),
        "engine_start_s": round(start_s, 1),
        "bare_tok_s": round(med["bare"], 1),
        "bare_ids_tok_s": round(med["bare_ids"], 1),
        "stage_tok_s": round(med["stage"], 1),
        "ratio": round(paired("bare"), 3),
        "ratio_ids": round(paired("bare_ids"), 3),
        "driver_cpu_s": {k: round(statistics.median(x["driver_cpu_s"] for x in v), 3) for k, v in runs.items()},
        "ratio_range": [round(min(s["tok_s"] / b["tok_s"] for s, b in zip(runs["stage"], runs["bare"])), 3),
                        round(max(s["tok_s"] / b["tok_s"] for s, b in zip(runs["stage"], runs["bare"])), 3)],
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny,smollm2")
    ap.add_argument("--repeats", type=int, default=9, help="runs of each side per model (rotating order)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        for name in args.models.split(","):
            results.append(bench(name, args.repeats, Path(tmp)))
    print()
    print("| model | prompts × n | max tokens | shards | engine start (excluded) | bare LLM.generate tok/s | "
          "bare, detokenize=False | sampling stage tok/s | ratio (min–max) | ratio vs detokenize=False | driver CPU s/run: bare / stage |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['prompts']} × {r['n']} | {r['max_tokens']} | {r['shards']} | {r['engine_start_s']} s | "
              f"{r['bare_tok_s']} | {r['bare_ids_tok_s']} | {r['stage_tok_s']} | {r['ratio']} ({r['ratio_range'][0]}–{r['ratio_range'][1]}) | {r['ratio_ids']} | "
              f"{r['driver_cpu_s']['bare']} / {r['driver_cpu_s']['stage']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
