"""Curation at scale: generate realistic synthetic traces, curate them, print speed and memory.

    .venv/bin/python benchmarks/bench_curate.py 20000 200000 600000        # sizes in rows
    .venv/bin/python benchmarks/bench_curate.py 2000000 --workers 2 --batch-rows 10000
    .venv/bin/python benchmarks/bench_curate.py --lid                       # language-ID accuracy/speed

Each size: synthetic traces (4-8k characters, think block + answer; 4 samples per prompt; shares of
every defect below) are written as parquet shards of 10k rows, then `distill curate`'s library function
runs in a child process while this one samples the resident memory of the child and its workers
(psutil, every 0.1 s) and reports the peak of their sum. Printed per size: wall seconds, rows/s, peak
memory, and rows/s of each measure (CPU time summed over workers: the slowest measure shows), then the
funnel's primary reasons against the defect shares that were injected.

Targets (issue 4): 600k traces in <= 10 min and <= 6 GB on 2 cores; 2M at <= 1.3x the peak of 200k.
Generated data is cached under --data-dir (default /tmp/bench_curate) by size and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import threading
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Shares of rows with each injected defect (the rest are clean; `incorrect` is independent of them).
DEFECTS = {
    "truncated": 0.05,
    "bad_think_format": 0.02,
    "wrong_language": 0.015,
    "language_mixing": 0.02,
    "repetition": 0.02,
    "chaotic": 0.015,
    "long_paragraph": 0.015,
}
INCORRECT = 0.2
SAMPLES_PER_PROMPT = 4
EXACT_DUP_PROMPTS = 0.02  # prompts that reuse another prompt's text under a new prompt_id
NEAR_DUP_PROMPTS = 0.02  # prompts that are another prompt with one word changed
CONTAMINATED_PROMPTS = 0.005  # prompts copied from the benchmark file
LANGS = {"en": 0.8, "zh": 0.12, "fr": 0.04, "ru": 0.04}
SHARD_ROWS = 10_000

# Sentences are built from clause templates whose slots draw from word lists, with fresh numbers each
# time, so that a trace does not repeat itself by accident (real traces rarely repeat 10-word runs).
EN = [
    "{con} we {verb} the {adj} {noun} of {v} and {verb2} it with {a}",
    "{con} the {noun} equals {a} when {v} is {b}, so the {noun2} must be {c}",
    "{con} I should {verb} whether the {adj} {noun} stays below {b} for every {noun2}",
    "{con} {verb_ing} {a} into the {noun} gives {c}, which {judge} the {adj} {noun2}",
    "{con} the {noun2} has {a} {noun}s, and each of them {verb3} {b} {noun2}s",
    "{con} if {v} were {a}, the {adj} {noun} would {verb} to {c} instead of {b}",
    "{con} there are {a} ways to {verb} the {noun}, because the {noun2} is {adj}",
    "{con} the {adj} {noun} of {v} and {w} is {c}, since both {noun2}s are {adj2}",
    "{con} multiplying {a} by {b} gives {c}, and the {noun} {verb3} the {adj} {noun2}",
    "{con} we still need the {noun} modulo {a}; the {adj} {noun2} tells us it is {b}",
    "{con} the {noun} is {adj} on the interval from {a} to {b}, so we {verb} the {noun2} at {v}",
    "{con} let me {verb} the {adj2} {noun} again, since {a} and {b} give different {noun2}s",
]
EN_WORDS = {
    "con": ["", "So", "Now", "Wait,", "Hmm,", "Then", "Therefore", "Next,", "Also,", "Okay,", "But", "Actually,", "First,", "Finally,", "Alternatively,"],
    "verb": ["compute", "check", "simplify", "compare", "bound", "estimate", "expand", "factor", "rewrite", "verify", "evaluate", "count", "minimize", "maximize"],
    "verb2": ["compare", "combine", "subtract", "divide", "scale", "pair", "match", "check"],
    "verb3": ["covers", "exceeds", "matches", "divides", "balances", "doubles", "shifts", "bounds"],
    "verb_ing": ["Substituting", "Plugging", "Putting", "Inserting", "Using"],
    "judge": ["confirms", "contradicts", "supports", "changes", "fixes", "settles"],
    "adj": ["total", "smallest", "largest", "remaining", "next", "first", "last", "average", "missing", "common", "positive", "integer", "expected", "final"],
    "adj2": ["equal", "odd", "even", "prime", "distinct", "symmetric", "bounded", "consistent"],
    "noun": ["sum", "product", "remainder", "quotient", "difference", "area", "perimeter", "probability", "value", "root", "term", "ratio", "angle", "length", "count"],
    "noun2": ["case", "bound", "term", "side", "factor", "coefficient", "solution", "triangle", "sequence", "interval", "digit", "pair", "step"],
}
EN_MATH = [
    "$${v}^2 + {a}{v} - {b} = 0$$",
    "$\\frac{{{a}}}{{{b}}} = {v}$",
    "$\\sum_{{i=1}}^{{{a}}} i = {c}$",
    "$\\sqrt{{{c}}} \\approx {a}$",
]
ZH = [
    "{zcon}我们{zverb}{v}的{znoun}，得到{a}",
    "{zcon}当{v}等于{b}时，{znoun}是{c}，所以{znoun2}一定是{a}",
    "{zcon}需要{zverb}每一个{znoun2}的{znoun}是否小于{b}",
    "{zcon}把{a}代入{znoun}，得到{c}，这{zjudge}了前面的{znoun2}",
    "{zcon}{znoun2}一共有{a}个，每个{znoun2}的{znoun}都是{b}",
    "{zcon}如果{v}是{a}，那么{znoun}会变成{c}而不是{b}",
    "{zcon}{a}乘以{b}等于{c}，{znoun}和{znoun2}正好{zjudge}",
    "{zcon}再{zverb}一下{znoun}除以{a}的余数，结果是{b}",
]
ZH_WORDS = {
    "zcon": ["", "所以", "然后", "等一下，", "嗯，", "因此", "接下来，", "另外，", "不过", "首先，", "最后，", "其实"],
    "zverb": ["计算", "检查", "化简", "比较", "估计", "展开", "验证", "统计", "求出", "重新算"],
    "znoun": ["和", "积", "余数", "商", "差", "面积", "周长", "概率", "取值", "根", "比值", "角度", "长度"],
    "znoun2": ["情况", "上界", "项", "边", "因子", "系数", "解", "三角形", "数列", "区间", "数字", "步骤"],
    "zjudge": ["验证", "否定", "支持", "修正", "确认", "吻合"],
}
FR = [
    "{fcon} nous devons {fverb} la {fnoun} de {v} et la comparer avec {a}",
    "{fcon} la {fnoun} vaut {a} lorsque {v} est égal à {b}, donc le {fnoun2} doit être {c}",
    "{fcon} il faut {fverb} si la {fnoun} reste inférieure à {b} pour chaque {fnoun2}",
    "{fcon} en remplaçant {v} par {a}, on obtient {c}, ce qui {fjudge} le {fnoun2}",
    "{fcon} {a} fois {b} donne {c}, et la {fnoun} dépasse le {fnoun2} précédent",
    "{fcon} si {v} valait {a}, la {fnoun} serait {c} au lieu de {b}",
]
FR_WORDS = {
    "fcon": ["", "Donc", "Maintenant", "Attends,", "Alors", "Ensuite,", "Ainsi", "Mais", "En fait,", "Enfin,"],
    "fverb": ["calculer", "vérifier", "simplifier", "comparer", "estimer", "développer", "factoriser", "compter"],
    "fnoun": ["somme", "différence", "aire", "probabilité", "valeur", "racine", "longueur", "moyenne", "borne"],
    "fnoun2": ["cas", "terme", "côté", "facteur", "coefficient", "triangle", "intervalle", "chiffre", "résultat"],
    "fjudge": ["confirme", "contredit", "corrige", "change"],
}
RU = [
    "{rcon} нужно {rverb} {rnoun} для {v} и сравнить с {a}",
    "{rcon} {rnoun} равна {a}, когда {v} равно {b}, значит {rnoun2} равен {c}",
    "{rcon} подставим {a} вместо {v} и получим {c}, что {rjudge} прежний {rnoun2}",
    "{rcon} {a} умножить на {b} равно {c}, и {rnoun} больше, чем {rnoun2}",
    "{rcon} если бы {v} было {a}, то {rnoun} была бы {c}, а не {b}",
]
RU_WORDS = {
    "rcon": ["", "Итак,", "Теперь", "Подождите,", "Тогда", "Значит,", "Однако", "Наконец,"],
    "rverb": ["вычислить", "проверить", "упростить", "оценить", "посчитать", "найти"],
    "rnoun": ["сумма", "разность", "площадь", "вероятность", "величина", "длина", "граница"],
    "rnoun2": ["случай", "член", "множитель", "коэффициент", "результат", "интервал", "шаг"],
    "rjudge": ["подтверждает", "опровергает", "исправляет", "меняет"],
}
ALL_WORDS = {**EN_WORDS, **ZH_WORDS, **FR_WORDS, **RU_WORDS}
POOLS = {"en": EN, "zh": ZH, "fr": FR, "ru": RU}
ANSWERS = {"en": "The answer is $\\boxed{{{a}}}$.", "zh": "答案是 $\\boxed{{{a}}}$。", "fr": "La réponse est $\\boxed{{{a}}}$.", "ru": "Ответ: $\\boxed{{{a}}}$."}
PROMPTS = {
    "en": [
        "A store sells {a} notebooks for {b} dollars each and offers a discount of {c} percent on orders above {a} items. "
        "How much does a customer pay for {b} notebooks, and what is the average price per notebook after the discount?",
        "Let {v} be a positive integer such that {v}^2 + {a}{v} is divisible by {b}. Find the smallest such {v} greater than {c}.",
        "A rectangle has a perimeter of {c} centimetres and one side of length {a}. Find its area and the length of its diagonal.",
        "In how many ways can {a} identical balls be placed into {b} distinct boxes so that no box holds more than {c} balls?",
        "Write a function that returns the {a}-th Fibonacci number modulo {c}, and explain its time complexity for inputs up to {b}.",
    ],
    "zh": ["一个商店以每本{b}元的价格出售{a}本笔记本，订单超过{a}本时打{c}折。顾客买{b}本需要付多少钱？",
           "设{v}是正整数，且{v}^2 + {a}{v}能被{b}整除。求大于{c}的最小的{v}。"],
    "fr": ["Un rectangle a un périmètre de {c} centimètres et un côté de longueur {a}. Calculez son aire et sa diagonale."],
    "ru": ["Прямоугольник имеет периметр {c} сантиметров и одну сторону длины {a}. Найдите его площадь и диагональ."],
}
WORDS = "apples pears boxes coins tickets marbles books chairs lamps stamps".split()
BENCHMARK_ITEMS = 500


_SLOTS: dict[str, list[str]] = {}


def _fill(t: str, rng: random.Random) -> str:
    """A template with fresh numbers and words (sentence templates get a capital and a full stop)."""
    slots = _SLOTS.get(t)
    if slots is None:
        slots = _SLOTS[t] = [name for _, name, _, _ in string.Formatter().parse(t) if name in ALL_WORDS]
    a, b = rng.randint(2, 998), rng.randint(2, 998)
    words = {k: rng.choice(ALL_WORDS[k]) for k in slots}
    text = t.format(a=a, b=b, c=a * b, v="xyzn"[a % 4], w="pqmk"[b % 4], **words).strip()
    if not slots:
        return text
    return text + "\u3002" if "zcon" in slots else text[0].upper() + text[1:] + "."


def _paragraph(lang: str, rng: random.Random, sentences: int) -> str:
    pool = POOLS[lang]
    parts = [_fill(rng.choice(pool), rng) for _ in range(sentences)]
    if lang != "zh" and rng.random() < 0.5:
        parts.insert(rng.randrange(len(parts)), _fill(rng.choice(EN_MATH), rng))
    return ("" if lang == "zh" else " ").join(parts)


def _trace(lang: str, rng: random.Random, defect: str | None) -> tuple[str, str]:
    """(completion, finish_reason) of 4-8k characters (Chinese: ~1.5-3k characters, same token count)."""
    target_chars = rng.randint(4000, 8000) // (3 if lang == "zh" else 1)
    paras, n = [], 0
    while n < target_chars:
        p = _paragraph(lang, rng, rng.randint(3, 6))
        if defect == "language_mixing" and len(paras) % 2 == 1:
            p = _paragraph("zh" if lang != "zh" else "en", rng, 3)
        paras.append(p)
        n += len(p) + 2
    if defect == "wrong_language":
        paras = [_paragraph("zh" if lang == "en" else "en", rng, 5) for _ in paras]
    if lang == "en" and rng.random() < 0.15:  # some code, closed properly
        paras.insert(1, "```python\ndef f(n):\n    return sum(range(n + 1))\n\nprint(f(10))\n```")
    if defect == "repetition":
        paras = paras[: max(2, len(paras) // 2)] + [paras[-1]] * 8
    if defect == "chaotic":
        paras.insert(2, rng.choice(CHAOS))
    body = ("\n\n" if defect != "long_paragraph" else " ").join(paras)
    answer_lang = lang if defect != "wrong_language" else ("zh" if lang == "en" else "en")
    answer = ANSWERS[answer_lang].format(a=rng.randint(1, 998))
    if defect == "bad_think_format":
        return f"{body}\n\n{answer}", "stop"
    if defect == "truncated":
        return "<think>\n" + body[: len(body) * 2 // 3], "length"
    return f"<think>\n{body}\n</think>\n\n{answer}", "stop"


CHAOS = [
    "Ã©tÃ© â€™ Ã¨ â€œ Ã  Ã§a",
    "```python\ndef f(n):\n    return n",
    "<|im_end|> <|im_start|>assistant",
    "<div><span>&nbsp;</span></div><br><br>",
]


BENCHMARK_TEMPLATES = [
    "Triangle ABC has sides {a} and {b} meeting at a right angle; a circle is inscribed in it. Determine the radius of the circle and the distance from its centre to the vertex C.",
    "A sequence starts with {a} and each later term is the previous term plus the sum of its digits. Which is the first term of the sequence that exceeds {c}?",
    "Alice and Bob take turns removing between one and {a} stones from a pile of {b} stones; whoever takes the last stone wins. Who wins with perfect play, and what is Alice's first move?",
    "Compute the number of lattice points strictly inside the ellipse whose semi-axes are {a} and {b}, centred at the origin of the coordinate plane.",
]


def _benchmark_items() -> list[str]:
    """Benchmark problems: their own templates (training prompts share no phrasing with them, except
    the CONTAMINATED_PROMPTS copied verbatim)."""
    rng = random.Random(12345)
    return [_fill(BENCHMARK_TEMPLATES[i % len(BENCHMARK_TEMPLATES)], rng) for i in range(BENCHMARK_ITEMS)]


def _base_prompt(p: int, seed: int) -> tuple[str, str]:
    """Prompt p's own text and language: a function of (p, seed) alone, so any shard can rebuild it."""
    rng = random.Random(seed * 1_000_003 + p)
    lang = rng.choices(list(LANGS), weights=list(LANGS.values()))[0]
    return _fill(rng.choice(PROMPTS[lang]), rng) + f" ({WORDS[p % 10]} #{p})", lang


def _prompt(p: int, seed: int, bench: list[str]) -> tuple[str, str]:
    """Prompt p as it appears: usually its own text; sometimes an earlier prompt's (exact duplicate),
    an earlier prompt with one word changed (near duplicate), or a benchmark item (contaminated)."""
    rng = random.Random(seed * 7_000_003 + p)
    r = rng.random()
    if p and r < EXACT_DUP_PROMPTS:
        return _base_prompt(rng.randrange(p), seed)
    if p and r < EXACT_DUP_PROMPTS + NEAR_DUP_PROMPTS:
        text, lang = _base_prompt(rng.randrange(p), seed)
        words = text.split(" ")
        i = rng.randrange(len(words))
        if not any(ch.isdigit() for ch in words[i]):
            words[i] = rng.choice(WORDS)
        return " ".join(words), lang
    if r < EXACT_DUP_PROMPTS + NEAR_DUP_PROMPTS + CONTAMINATED_PROMPTS:
        return rng.choice(bench), "en"
    return _base_prompt(p, seed)


def _shard(args: tuple[int, int, int, str]) -> None:
    first_row, n_rows, seed, path = args
    import polars as pl

    bench = _benchmark_items()
    rng = random.Random(seed * 1_000_000_007 + first_row)
    defects, weights = [*DEFECTS, None], [*DEFECTS.values(), 1 - sum(DEFECTS.values())]
    rows = []
    for i in range(first_row, first_row + n_rows):
        p, s = divmod(i, SAMPLES_PER_PROMPT)
        prompt, lang = _prompt(p, seed, bench)
        defect = rng.choices(defects, weights=weights)[0]
        completion, finish = _trace(lang, rng, defect)
        rows.append(
            {
                "id": f"t{i}", "prompt_id": f"p{p}", "sample_index": s, "prompt": prompt,
                "completion": completion, "answer": "42", "task": "math", "language": lang,
                "source": ["numina", "openr1", "code_contests"][p % 3], "finish_reason": finish,
                "correct": rng.random() >= INCORRECT, "injected": defect,
            }
        )  # fmt: skip
    pl.DataFrame(rows).write_parquet(path, row_group_size=SHARD_ROWS)


def generate(rows: int, out: Path, seed: int = 0, processes: int = 2) -> Path:
    """Parquet shards of `rows` synthetic traces under `out` (reused when complete), and the benchmark
    file they are partly contaminated with."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    done = out / "_done"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.jsonl").write_text("".join(json.dumps({"problem": t, "answer": "1"}) + "\n" for t in _benchmark_items()))
    jobs = [(start, min(SHARD_ROWS, rows - start), seed, str(out / f"part-{start // SHARD_ROWS:05d}.parquet")) for start in range(0, rows, SHARD_ROWS)]
    # spawn, not fork: after an earlier size ran, this process holds polars thread pools whose locks a
    # forked child inherits held (the workers then wait forever on a futex)
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        list(pool.map(_shard, jobs))
    done.write_text(str(rows))
    return out


def _child(data: str, out: str, workers: str, batch_rows: int) -> None:
    """Runs in the measured child process."""
    from distill.config.curate import CurateConfig
    from filters.curate import curate_file

    cfg = CurateConfig(decontam={"benchmarks": [{"name": "synthetic-bench", "path": str(Path(data) / "benchmark.jsonl"), "kind": "file"}]})
    funnel = curate_file(Path(data), Path(out), cfg, batch_rows=batch_rows, workers=None if workers == "auto" else int(workers))
    print(json.dumps(funnel))


def measure(data: Path, out: Path, workers: str, batch_rows: int) -> tuple[dict, float, float]:
    """(funnel, wall seconds without outside pauses, peak RSS in GiB of the child and its workers
    together); the funnel gets `memory` (the peak of the main process alone and of its workers alone)
    and `paused_seconds`."""
    import psutil

    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.bench_curate import _child; _child({str(data)!r}, {str(out)!r}, {workers!r}, {batch_rows})"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peak = peak_main = peak_workers = 0
    paused = 0.0
    stop = threading.Event()

    def sample() -> None:
        # Also measures pauses: on a shared machine the processes may be stopped from outside (SIGSTOP,
        # a frozen session); a stopped child, or a gap between two samples of more than a second,
        # is time the curation did not get, and is reported apart from the wall time.
        nonlocal peak, peak_main, peak_workers, paused
        p = psutil.Process(proc.pid)
        last = time.perf_counter()
        while not stop.is_set():
            try:
                main = p.memory_info().rss
                workers_rss = sum(c.memory_info().rss for c in p.children(recursive=True))
                peak, peak_main, peak_workers = max(peak, main + workers_rss), max(peak_main, main), max(peak_workers, workers_rss)
                stopped = p.status() == psutil.STATUS_STOPPED
            except psutil.Error:
                stopped = False
            time.sleep(0.1)
            now = time.perf_counter()
            gap = now - last
            if stopped:
                paused += gap
            elif gap > 1.0:
                paused += gap - 0.1
            last = now

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"curation failed:\n{stderr[-4000:]}")
    funnel = json.loads(stdout.strip().splitlines()[-1])
    funnel["memory"] = {"main_gib": round(peak_main / 2**30, 3), "workers_gib": round(peak_workers / 2**30, 3)}
    funnel["paused_seconds"] = round(paused, 1)
    wall -= paused
    return funnel, wall, peak / 2**30


def detection_table(out: Path) -> str:
    """Per injected defect: rows, share rejected at all, share with the defect's own reason; and for
    clean rows (nothing injected) the share rejected by a text measure (a false drop)."""
    import polars as pl

    text_reasons = ["wrong_language", "language_mixing", "repetition", "chaotic", "long_paragraph", "too_long", "too_short", "bad_think_format", "truncated"]
    df = pl.concat(
        [pl.scan_parquet(out / name).select("injected", "reject_reasons").collect() for name in ("kept.parquet", "rejected.parquet")]
    )
    lines = ["| injected | rows | rejected | with its reason |", "|---|---:|---:|---:|"]
    for defect in DEFECTS:
        sub = df.filter(pl.col("injected") == defect)
        rejected = (sub["reject_reasons"].list.len() > 0).mean()
        own = sub["reject_reasons"].list.contains(defect).mean()
        lines.append(f"| {defect} | {sub.height:,} | {rejected:.3f} | {own:.3f} |")
    clean = df.filter(pl.col("injected").is_null())
    false = clean["reject_reasons"].list.eval(pl.element().is_in(text_reasons)).list.any().mean()
    lines.append(f"| (clean) | {clean.height:,} | text-measure drops: {false:.4f} | |")
    return "\n".join(lines)


def lid_report() -> None:
    """Function-word profile vs langdetect on tests/data/curation/sentences.jsonl."""
    from filters.function_words import classify
    from filters.language_mixing import detect_profiled

    rows = [json.loads(line) for line in open(REPO / "tests" / "data" / "curation" / "sentences.jsonl", encoding="utf-8")]
    print(f"| method | correct | wrong | abstained | sentences/s |\n|---|---:|---:|---:|---:|")
    def combined(text: str) -> str | None:
        return classify(text) or detect_profiled(text)

    for name, fn, reps in (("function words", classify, 200), ("langdetect (seeded)", detect_profiled, 1), ("both: langdetect where the profile abstains", combined, 20)):
        got = [fn(r["text"]) for r in rows]
        t0 = time.perf_counter()
        for _ in range(reps):
            for r in rows:
                fn(r["text"])
        speed = reps * len(rows) / (time.perf_counter() - t0)
        ok = sum(g == r["lang"] for g, r in zip(got, rows))
        none = sum(g is None for g in got)
        print(f"| {name} | {ok} | {len(rows) - ok - none} | {none} | {speed:,.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="*", type=int, help="rows per run, e.g. 20000 200000 600000")
    ap.add_argument("--workers", default="auto", help="worker processes (auto: one per core)")
    ap.add_argument("--batch-rows", type=int, default=10_000)
    ap.add_argument("--data-dir", default="/tmp/bench_curate")
    ap.add_argument("--keep-output", action="store_true", help="keep kept/rejected parquet files")
    ap.add_argument("--lid", action="store_true", help="language-ID accuracy and speed table")
    args = ap.parse_args()
    if args.lid:
        lid_report()
    if not args.sizes:
        return
    results = []
    for size in args.sizes:
        data = Path(args.data_dir) / f"traces-{size}"
        t0 = time.perf_counter()
        generate(size, data)
        gen = time.perf_counter() - t0
        out = Path(args.data_dir) / f"curated-{size}"
        load_before = os.getloadavg()[0]
        funnel, wall, peak = measure(data, out, args.workers, args.batch_rows)
        funnel["load"] = (round(load_before, 1), round(os.getloadavg()[0], 1))  # other jobs share the cores
        results.append((size, gen, funnel, wall, peak))
        detection = detection_table(out)
        if not args.keep_output:
            for name in ("kept.parquet", "rejected.parquet"):
                (out / name).unlink(missing_ok=True)
        mem = funnel["memory"]
        print(
            f"size {size}: {wall:.1f} s, peak {peak:.2f} GiB (main {mem['main_gib']:.2f}, workers {mem['workers_gib']:.2f}; "
            f"generation {gen:.0f} s; load average {funnel['load'][0]} before, {funnel['load'][1]} after; "
            f"{funnel['paused_seconds']} s paused from outside, not counted)",
            flush=True,
        )

    measures = list(results[0][2]["timing"]["measures"])
    print("\n| rows | wall s | rows/s | peak GiB | workers | " + " | ".join(f"{m} rows/s" for m in measures) + " |")
    print("|---:|---:|---:|---:|---:|" + "---:|" * len(measures))
    for size, _, funnel, wall, peak in results:
        per = funnel["timing"]["measures"]
        cells = " | ".join(f"{per[m]['rows_per_s']:,}" if m in per and per[m]["rows_per_s"] else "-" for m in measures)
        print(f"| {size:,} | {wall:.1f} | {size / wall:,.0f} | {peak:.2f} | {funnel['timing']['workers']} | {cells} |")
    print(f"\nInjected defects of the {results[-1][0]:,}-row run: share rejected, and share whose reasons name the defect")
    print(detection)
    size, _, funnel, _, _ = results[-1]
    print(f"\nFunnel of the {size:,}-row run (primary reasons; injected shares in parentheses):")
    for r, n in funnel["primary_reasons"].items():
        injected = DEFECTS.get(r)
        print(f"  {r:18s} {n:>9,}  {n / size:6.2%}" + (f"  ({injected:.1%})" if injected else ""))
    print(f"  kept               {funnel['kept']:>9,}  {funnel['kept'] / size:6.2%}")
    print(f"  dedup: {json.dumps(funnel['dedup'])}")
    print(f"  decontamination: {json.dumps(funnel['decontamination'])}")


if __name__ == "__main__":
    main()
