"""Function-word profiles: which Latin-script language a sentence is in, without a model.

Unicode scripts cannot tell English from French. Function words can: every sentence of running text
holds a few (articles, pronouns, prepositions, auxiliaries), they are the most frequent words of each
language, and a short list per language covers them. A word shared by two of the listed languages
("la", "que", "in", "die") says nothing and is left out, so each list below keeps only the words no
other list has.

Measured on tests/data/curation/sentences.jsonl (84 hand-written reasoning sentences in en, fr, de, es,
it, pt, nl; `benchmarks/bench_curate.py --lid`): the profile labels 78 correctly, none wrongly, and
abstains on 6 (too few function words); langdetect (seeded) labels all 84 correctly but is ~1,000x
slower (~70-240 sentences/s here against ~75,000-320,000). So the profile decides, and langdetect is
asked only about sentences the profile leaves open that show a foreign function word
(filters.language.latin_language_scores): both together label all 84, at langdetect's cost for a few
sentences per mixed trace only.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

_WORDS: dict[str, str] = {
    "en": """the and of to is that this with for are we it be was were have has had which from by not
        then so let can will would should there their they what when where how if our each these those
        now must into because since been its than but or do does an at you your all any get gives find
        need us here just only both other same such while between after first next up out about it's
        let's i'm don't doesn't isn't can't we're that's there's shall could might whether which
        also on per come door man um son car pour bin hat war die see more most very over under in met
        ai ci""",
    "fr": """le la les des un une est et dans pour avec nous sont cette ce mais aussi donc alors être leur
        qui que pas sur ils elle du au aux ces ont très peut fait comme on ne se sa son ses notre vous
        ou où si puis chaque tous toutes tout doit faut ainsi donne car dont leurs depuis à été cela
        ceci je obtient obtenons avons sommes devons peut-être soit en de un ne peux pouvons il""",
    "de": """der die und nicht ist das ein eine mit sich auch auf dem den zu von für wir sind wird werden
        oder aber wenn noch nach bei kann muss dass diese dieser dieses also es ich sie wie hat haben
        ergibt daher dann damit jetzt durch einen einem einer unsere nun können müssen man im zum zur
        über aus weil deshalb jede jeder jedes sollte darf erhält des dieselbe denn""",
    "es": """el los las una por para con del que es se pero como más esta este son muy también entonces
        cuando porque sus hay ser sobre tiene lo le al y su ya eso esto ahora cada podemos debemos
        tenemos obtenemos luego así donde sin ni nos todos mismo misma voy estos estas debería
        quizás de en un no a puede pueden sea sean tanto hace aquí""",
    "it": """il gli della delle che non sono una per con questo questa anche come più dei degli nel nella
        alla è ma quindi allora perché di da lo la le si ci abbiamo otteniamo ogni poi dove ora cosa
        essere stato tra fra sia dello sul sulla al ai nei dobbiamo possiamo viene questi queste dovrei
        cioè perciò dà stessa stesso un a in forse può possono qui quello quella altro altra nell dell
        sull all""",
    "pt": """os as não uma com para por mais está são também então isso este esta ele ela pelo pela dos das
        no na ao muito seu sua um em do da e é que se temos podemos obtemos cada onde quando porque
        agora isto depois assim nos nas foi ser há vou precisamos desses dessas dá mesma mesmo eu de
        como o a talvez você pode podem seja sejam aqui portanto outra outro""",
    "nl": """het een van en niet zijn dat wat ook maar voor met op te dan deze wordt worden naar nog bij kan
        moet dus als is de die er we hebben heeft uit door om geen veel hier waar waarom krijgen nu
        alle elke onze moeten kunnen ik dit hetzelfde want daarom misschien omdat aan zal mijn hun zich
        tot wel""",
}  # fmt: skip

PROFILED_LANGS: tuple[str, ...] = tuple(_WORDS)


# Words that are also mathematical function names ("sin i" in a radial-velocity formula is not Spanish,
# "Im z" is not German): never evidence of a language.
MATH_NAMES = frozenset({"sin", "im"})


def _exclusive(words: dict[str, str]) -> dict[str, str]:
    """word -> language, for words that appear in exactly one language's list (math names left out)."""
    seen: Counter[str] = Counter()
    # Unaccented single letters ("y", "e", "o", "a") are variable names as often as words.
    sets = {lang: {w for w in ws.split() if len(w) > 1 or not w.isascii()} for lang, ws in words.items()}
    for s in sets.values():
        seen.update(s)
    return {w: lang for lang, s in sets.items() for w in s if seen[w] == 1 and w not in MATH_NAMES}


WORD_LANG: dict[str, str] = _exclusive(_WORDS)

# Lower-case words of Latin letters (apostrophes split "l'équation" into "l" and "équation").
_WORD = re.compile(r"[a-zà-öø-ÿœß]+(?:'[st])?")

# A sentence gets a language only with at least this many of its function words and at least this many
# times as many as of any other language; otherwise it abstains (too short or too mixed to say).
MIN_HITS = 2
MARGIN = 2.0


def foreign_words_pattern(lang: str) -> str:
    """A regex (for polars' Rust engine: ASCII word boundaries) matching every exclusive function word
    of the profiled languages other than `lang` — a cheap gate before the per-sentence pass."""
    words = sorted((w for w, lg in WORD_LANG.items() if lg != lang), key=len, reverse=True)
    return r"(?i-u:\b)(?:" + "|".join(re.escape(w) for w in words) + r")(?-u:\b)"


def function_word_counts(text: str) -> Counter[str]:
    """Function-word hits per language in `text` (case-insensitive)."""
    counts: Counter[str] = Counter()
    for w in _WORD.findall(text.lower()):
        lang = WORD_LANG.get(w)
        if lang is not None:
            counts[lang] += 1
    return counts


def decide(counts: dict[str, int]) -> str | None:
    """The language of a sentence from its function-word hits per language, or None when they do not
    decide it (fewer than MIN_HITS, or not MARGIN times as many as any other language)."""
    best, n, runner_up = None, 0, 0
    for lang, c in counts.items():
        if c > n:
            best, n, runner_up = lang, c, n
        elif c > runner_up:
            runner_up = c
    if n >= MIN_HITS and n >= MARGIN * runner_up:
        return best
    return None


def classify(text: str) -> str | None:
    """The language of one sentence by its function words alone, or None."""
    return decide(function_word_counts(text))


@functools.lru_cache(maxsize=None)
def is_profiled(lang: str | None) -> bool:
    return lang in _WORDS
