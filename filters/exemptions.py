"""Exemptions: what the task asks for is not counted against a trace's language.

In a translation task the requested language counts as target, quoted phrases are the translation and
the answer is not measured; in any task a phrase quoted from the prompt is the prompt's
(`exempt_task_text`, `requested_languages`).
"""

from __future__ import annotations

import re

_TRANSLATION = re.compile(
    r"translat|traduc|traduz|traduç|übersetz|uebersetz|vertaal|перев[еоё]д|翻译|翻譯|翻訳|번역|ترجم", re.I
)
# Language names (in English, Chinese, and the language itself) a translation prompt may ask for.
_LANGUAGE_NAMES: dict[str, str] = {
    "english": "en", "anglais": "en", "englisch": "en", "inglés": "en", "ingles": "en", "inglese": "en",
    "inglês": "en", "engels": "en", "английск": "en", "英文": "en", "英语": "en", "英語": "en",
    "chinese": "zh", "mandarin": "zh", "chinois": "zh", "chinesisch": "zh", "chino": "zh", "cinese": "zh",
    "китайск": "zh", "中文": "zh", "汉语": "zh", "漢語": "zh", "中国語": "zh",
    "french": "fr", "français": "fr", "francais": "fr", "französisch": "fr", "francés": "fr",
    "francese": "fr", "francês": "fr", "frans": "fr", "французск": "fr", "法语": "fr", "法文": "fr",
    "german": "de", "allemand": "de", "deutsch": "de", "alemán": "de", "tedesco": "de", "alemão": "de",
    "duits": "de", "немецк": "de", "德语": "de", "德文": "de",
    "spanish": "es", "espagnol": "es", "spanisch": "es", "español": "es", "spagnolo": "es",
    "espanhol": "es", "spaans": "es", "испанск": "es", "西班牙语": "es", "西班牙文": "es",
    "italian": "it", "italien": "it", "italienisch": "it", "italiano": "it", "italiaans": "it",
    "итальянск": "it", "意大利语": "it",
    "portuguese": "pt", "portugais": "pt", "portugiesisch": "pt", "portugués": "pt", "portoghese": "pt",
    "português": "pt", "portugees": "pt", "葡萄牙语": "pt",
    "dutch": "nl", "néerlandais": "nl", "niederländisch": "nl", "nederlands": "nl", "荷兰语": "nl",
    "russian": "ru", "russe": "ru", "russisch": "ru", "ruso": "ru", "russo": "ru", "русск": "ru",
    "俄语": "ru", "俄文": "ru",
    "japanese": "ja", "japonais": "ja", "japanisch": "ja", "japonés": "ja", "giapponese": "ja",
    "японск": "ja", "日语": "ja", "日文": "ja", "日本語": "ja",
    "korean": "ko", "coréen": "ko", "koreanisch": "ko", "coreano": "ko", "корейск": "ko", "韩语": "ko",
    "韩文": "ko", "韓国語": "ko", "한국어": "ko", "영어": "en", "중국어": "zh",
    "arabic": "ar", "arabe": "ar", "arabisch": "ar", "árabe": "ar", "阿拉伯语": "ar",
    "bangla": "bn", "bengali": "bn", "বাংলা": "bn", "telugu": "te", "తెలుగు": "te", "swahili": "sw",
    "kiswahili": "sw", "thai": "th", "ภาษาไทย": "th", "vietnamese": "vi", "tiếng việt": "vi",
    "indonesian": "id", "bahasa indonesia": "id", "hindi": "hi", "हिंदी": "hi", "हिन्दी": "hi",
}  # fmt: skip
_LANGUAGE_NAME = re.compile("|".join(sorted(map(re.escape, _LANGUAGE_NAMES), key=len, reverse=True)), re.I)
# Quoted phrases: straight and curly double quotes, guillemets, CJK corner brackets, and single quotes
# that are not apostrophes (not between letters).
_QUOTED = re.compile(
    r'"[^"\n]{1,400}"|\u201c[^\u201d\n]{1,400}\u201d|\u00ab[^\u00bb\n]{1,400}\u00bb|\u201e[^\u201c\u201d\n]{1,400}[\u201c\u201d]'
    r"|\u300c[^\u300d\n]{1,400}\u300d|\u300e[^\u300f\n]{1,400}\u300f|\u2018[^\u2019\n]{1,400}\u2019"
    r"|(?<!\w)'[^'\n]{1,400}'(?!\w)"
)
QUOTE_CHARS = "\"'\u201c\u201e\u00ab\u300c\u300e\u2018"


# An explicit request for the language to think (or answer) in: "think in French", "reason in
# Swahili", "Please respond in Japanese", "用中文思考", "日本語で考えて".
_REQUEST = re.compile(
    r"\b(?:think|thinking|reason|reasoning|respond|response|answer|reply|write|explain)\w*\b[^.\n]{0,30}?\bin\s+("
    + _LANGUAGE_NAME.pattern + r")\b|用(" + _LANGUAGE_NAME.pattern + r")(?:思考|推理|回答)|(" + _LANGUAGE_NAME.pattern + r")で(?:考え|推論|答え)",
    re.I,
)


def requested_language(prompt: str) -> str | None:
    """The language a prompt explicitly asks to think or answer in ("think in X"), the last such
    request winning (a system prompt comes first, a user's request after it); None without one."""
    found = None
    for m in _REQUEST.finditer(prompt or ""):
        name = next(g for g in m.groups() if g)
        found = _LANGUAGE_NAMES.get(name.lower(), found)
    return found


def is_translation_prompt(prompt: str) -> bool:
    return bool(_TRANSLATION.search(prompt or ""))


def requested_languages(prompt: str) -> frozenset[str]:
    """Languages a translation prompt names ("Translate into French" -> {"fr"}); empty otherwise."""
    if not is_translation_prompt(prompt):
        return frozenset()
    return frozenset(_LANGUAGE_NAMES[m.group().lower()] for m in _LANGUAGE_NAME.finditer(prompt))


def exempt_task_text(text: str, prompt: str, translation: bool) -> str:
    """Remove what the task asks for from the text whose language is measured.

    A translation task's quoted phrases are the translation (or its source); phrases quoted from the
    prompt are the prompt's, whatever the task. Both are removed. Everything else stays.
    """
    text = text or ""
    if not any(q in text for q in QUOTE_CHARS):
        return text
    prompt = prompt or ""

    def drop(m: re.Match[str]) -> str:
        inner = m.group()[1:-1].strip()
        return " " * len(m.group()) if translation or (inner and inner in prompt) else m.group()  # offsets kept

    return _QUOTED.sub(drop, text)


