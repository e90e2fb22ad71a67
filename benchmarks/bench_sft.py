"""SFT stage: real-token fraction of its batches with packing vs padding, and its step time vs a bare TRL
`SFTTrainer` with the same settings, in one run.

    R1_DISTILL_CACHE=.cache HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sft.py
    .venv/bin/python benchmarks/bench_sft.py --rounds 6 --steps 12 --max-length 1024 --hidden 256 --layers 4

Data: R1-like rows, reasoning completions with log-normal token lengths (median max_length/8, long tail,
clipped to fit) and 25% short non-reasoning answers, rendered with a tiny ChatML tokenizer.

1. Token fractions: every batch the stage's own trainer (`distill.training.sft.build_sft_trainer`) would feed the
   model, with `packing: true` (TRL's best-fit decreasing packing, padding-free) and with `packing: false`
   (padding to the longest row of the batch). "real/computed" is real tokens over the positions the model
   computes; "fill" is real tokens over batch size x max_length, the budget a run is sized for (what
   `distill plan` assumes). Goal: >= 0.97 with packing.
2. Step time: `build_sft_trainer` + `train()` (our stage: template lint, defaults, resume check, step
   counter) against a bare `SFTTrainer` given a copy of the very same `SFTConfig`, model and rows. Rounds
   alternate which side goes first; per round the ratio bare/ours of median step times (steps after the
   first two); the table shows the median ratio and its spread over rounds. Goal: ratio >= 0.95. Wall time
   on a shared machine moves with other jobs; torch runs one thread here, so the CPU time of this process
   per step is also shown (it moves much less) and gives a second ratio.
"""

from __future__ import annotations

import argparse
import copy
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

WORDS = ("so the sum is then we check each step carefully and the value equals plus minus times wait "
         "let me verify that again first second next therefore hence").split()


def build_model(out: Path, hidden: int, layers: int) -> Path:
    """A small random Qwen2 with the tests' ChatML tokenizer (no download)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from tiny_models import IM_END, ENDOFTEXT, build_tokenizer

    tok = build_tokenizer(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=hidden * 3, max_position_embeddings=4096,
                      tie_word_embeddings=True, eos_token_id=tok.convert_tokens_to_ids(IM_END),
                      pad_token_id=tok.convert_tokens_to_ids(ENDOFTEXT), bos_token_id=None)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_rows(tokenizer, n: int, max_length: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = f"What is {rng.randint(10, 99)} + {rng.randint(10, 99)}? Think step by step."
        if rng.random() < 0.25:  # non-reasoning: short, no think block
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
            rows.append({"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": answer}]})
            continue
        target = min(int(rng.lognormvariate(0, 0.8) * max_length / 8), max_length - 64)
        words = []
        while len(tokenizer(" ".join(words))["input_ids"]) < target:
            words.extend(rng.choice(WORDS) for _ in range(32))
        text = f"<think>\n{' '.join(words)}\n</think>\nThe answer is \\boxed{{{i}}}."
        rows.append({"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": text}]})
    return rows


def token_fractions(model: str, rows: list[dict], out: Path, *, packing: bool, batch: int, max_length: int) -> dict:
    from distill.config.hardware import LoraConfig
    from distill.training.sft import build_sft_trainer

    trainer, _ = build_sft_trainer(model, rows, out, lora=LoraConfig(enabled=False), training_args={
        "packing": packing, "per_device_train_batch_size": batch, "max_length": max_length, "max_steps": 1})
    real = computed = 0
    for b in trainer.get_train_dataloader():
        computed += b["input_ids"].numel()
        # padding: the mask marks real tokens; padding-free packing: one flat row with no pad positions
        real += int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
    data_tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    budget = len(trainer.train_dataset) * max_length  # rows (packed bins, or samples) x max_length
    return {"real": real, "computed": computed, "budget": budget, "data_tokens": data_tokens,
            "rows": len(trainer.train_dataset), "batches": len(trainer.get_train_dataloader())}


class StepTimes:
    def __init__(self):
        from transformers import TrainerCallback

        times = self.times = []  # (wall seconds, CPU seconds of this process) per optimizer step

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                self.t = (time.perf_counter(), time.process_time())

            def on_step_end(self, args, state, control, **kw):
                times.append((time.perf_counter() - self.t[0], time.process_time() - self.t[1]))

        self.callback = CB()


def run_ours(model, rows, out, args_dict):
    from distill.config.hardware import LoraConfig
    from distill.training.sft import build_sft_trainer

    trainer, _ = build_sft_trainer(model, rows, out, lora=LoraConfig(enabled=False), training_args=args_dict)
    st = StepTimes()
    trainer.add_callback(st.callback)
    trainer.train()
    return trainer, st.times


def run_bare(model, rows, args):
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    trainer = SFTTrainer(model=model, args=copy.deepcopy(args), train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(model))
    st = StepTimes()
    trainer.add_callback(st.callback)
    trainer.train()
    return st.times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=128)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--skip-timing", action="store_true")
    a = p.parse_args()
    import datasets
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(build_model(tmp / "model", a.hidden, a.layers))
        tok = AutoTokenizer.from_pretrained(model)
        rows = make_rows(tok, a.rows, a.max_length, seed=0)
        print(f"model: Qwen2 hidden {a.hidden} x {a.layers} layers, {sum(p.numel() for p in __import__('transformers').AutoModelForCausalLM.from_pretrained(model).parameters()) / 1e6:.1f}M params; "
              f"{len(rows)} rows, max_length {a.max_length}, per-device batch {a.batch}")
        print("\n1. token fractions of the sft stage's batches")
        print(f"{'mode':10} {'rows':>6} {'batches':>8} {'tokens':>9} {'real/computed':>14} {'fill':>7}")
        for packing in (True, False):
            f = token_fractions(model, rows, tmp / f"frac{packing}" / "m", packing=packing, batch=a.batch, max_length=a.max_length)
            print(f"{'packing' if packing else 'padding':10} {f['rows']:>6} {f['batches']:>8} {f['real']:>9} "
                  f"{f['real'] / f['computed']:>14.4f} {f['real'] / f['budget']:>7.4f}")
        if a.skip_timing:
            return 0
        print(f"\n2. step time, ours vs bare SFTTrainer (packing, {a.steps} steps, medians after step 2), {a.rounds} rounds")
        settings = {"packing": True, "per_device_train_batch_size": a.batch, "max_length": a.max_length,
                    "max_steps": a.steps, "learning_rate": 1e-4, "logging_steps": 10**6}
        ratios, cpu_ratios, ours_all, bare_all, ours_cpu, bare_cpu = [], [], [], [], [], []
        from distill.config.hardware import LoraConfig
        from distill.training.sft import build_sft_trainer

        for r in range(a.rounds):
            out = tmp / f"r{r}" / "m"
            # the SFTConfig our stage builds, from a trainer built before either side runs (the same object
            # whichever side goes first)
            fresh = build_sft_trainer(model, rows, out, lora=LoraConfig(enabled=False), training_args=settings)[0]
            args = copy.deepcopy(fresh.args)
            del fresh
            res = {}
            for side in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):
                gc.collect()  # the previous side's trainer, not this side's steps, pays for its cleanup
                times = run_ours(model, rows, out, settings)[1] if side == "ours" else run_bare(model, rows, args)
                res[side] = statistics.median(t[0] for t in times[2:])
                res[side + "_cpu"] = statistics.median(t[1] for t in times[2:])
            ratios.append(res["bare"] / res["ours"])
            cpu_ratios.append(res["bare_cpu"] / res["ours_cpu"])
            ours_all.append(res["ours"])
            bare_all.append(res["bare"])
            ours_cpu.append(res["ours_cpu"])
            bare_cpu.append(res["bare_cpu"])
            print(f"  round {r}: wall ours {res['ours'] * 1000:.1f} / bare {res['bare'] * 1000:.1f} ms/step, ratio {ratios[-1]:.3f}; "
                  f"CPU ours {res['ours_cpu'] * 1000:.1f} / bare {res['bare_cpu'] * 1000:.1f} ms/step, ratio {cpu_ratios[-1]:.3f}")
        print(f"\n{'side':6} {'wall ms/step':>13} {'min':>8} {'max':>8} {'CPU ms/step':>12} {'min':>8} {'max':>8}")
        for name, xs, cs in (("ours", ours_all, ours_cpu), ("bare", bare_all, bare_cpu)):
            print(f"{name:6} {statistics.median(xs) * 1000:>13.1f} {min(xs) * 1000:>8.1f} {max(xs) * 1000:>8.1f} "
                  f"{statistics.median(cs) * 1000:>12.1f} {min(cs) * 1000:>8.1f} {max(cs) * 1000:>8.1f}")
        for label, rs in (("wall", ratios), ("CPU", cpu_ratios)):
            print(f"ratio bare/ours ({label}): median {statistics.median(rs):.3f}, min {min(rs):.3f}, max {max(rs):.3f} (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
