"""Language of each text, for language-aware PII scanning (see compliance.md, multilingual data).

Named-entity models are per language: an English spaCy pipeline run over Chinese or Vietnamese
text tags random tokens as PERSON/LOCATION and misses the real names. So every text is assigned a
language first, and NER runs only with a pipeline for that language; other texts get the
language-independent recognizers (e-mail, phone, cards, IBAN, IP, secrets, home paths, custom
patterns, deny-list values) and are counted as "no name detection" per language.

Detector: PyPI ``py3langid`` (a maintained fork of ``langid.py``, Lui & Baldwin 2012): the
model ships inside the wheel (works offline), it is deterministic (``langdetect`` is random unless
seeded) and classifies a short message in ~0.2 ms on one core, against ~4 ms for spaCy NER.
Short or letter-poor texts are decided by script (Han/Kana/Hangul, Vietnamese diacritics) and
otherwise given the scan's main language: a 3-word ASCII reply is not worth guessing about.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_SAMPLE = 400            # characters given to the classifier
MIN_LETTERS = 12          # fewer letters: decided by script, else the main language
# langid's codes that we fold into one pipeline language
_FOLD = {"yue": "zh", "wuu": "zh", "zh-cn": "zh", "zh-tw": "zh", "nb": "no", "nn": "no"}
_VI_MARKS = re.compile(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", re.I)
# spaCy's trained pipelines (spacy.io/models, read 2026-11-30): language -> package to install
SPACY_PIPELINES = {
    "ca": "ca_core_news_sm", "zh": "zh_core_web_sm", "hr": "hr_core_news_sm", "da": "da_core_news_sm",
    "nl": "nl_core_news_sm", "en": "en_core_web_sm", "fi": "fi_core_news_sm", "fr": "fr_core_news_sm",
    "de": "de_core_news_sm", "el": "el_core_news_sm", "it": "it_core_news_sm", "ja": "ja_core_news_sm",
    "ko": "ko_core_news_sm", "lt": "lt_core_news_sm", "mk": "mk_core_news_sm", "no": "nb_core_news_sm",
    "pl": "pl_core_news_sm", "pt": "pt_core_news_sm", "ro": "ro_core_news_sm", "ru": "ru_core_news_sm",
    "sl": "sl_core_news_sm", "es": "es_core_news_sm", "sv": "sv_core_news_sm", "uk": "uk_core_news_sm",
}


def available() -> bool:
    try:
        import py3langid  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _script_language(text: str) -> str | None:
    han = kana = hangul = 0
    for ch in text:
        o = ord(ch)
        if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF:
            han += 1
        elif 0x3040 <= o <= 0x30FF:
            kana += 1
        elif 0xAC00 <= o <= 0xD7AF:
            hangul += 1
    if kana:
        return "ja"
    if hangul:
        return "ko"
    if han:
        return "zh"
    if _VI_MARKS.search(text):
        return "vi"
    return None


def detect(text: str, default: str = "en") -> str:
    """ISO 639-1 code of the text's language (``default`` when the text is too short to tell)."""
    letters = sum(1 for ch in text[:_SAMPLE] if ch.isalpha())
    if letters < MIN_LETTERS:
        return _script_language(text) or default
    # the letters of CJK text are few characters but many words: langid copes; code/markup does not
    # matter (it only moves a text between "NER" and "patterns only", patterns run on every text)
    lang, prob = _identifier().classify(text[:_SAMPLE])  # the start of a text tells its language
    lang = _FOLD.get(lang, lang)
    if prob < 0.5:
        return _script_language(text) or default
    if lang != default and prob < 0.9 and _latin_only(text) and default_is_latin(default) \
            and not (lang == "vi" and _VI_MARKS.search(text)):
        return default  # unsure between Latin-script languages: keep the scan's language
    return lang


def default_is_latin(lang: str) -> bool:
    return lang not in {"zh", "ja", "ko", "ru", "uk", "el", "mk", "ar", "he", "hi", "th", "fa"}


def _latin_only(text: str) -> bool:
    for ch in text:
        if ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN"):
            return False
    return True


def install_hint(lang: str) -> str:
    """What to install so that texts in ``lang`` get name detection."""
    pkg = SPACY_PIPELINES.get(lang)
    if pkg:
        return (f"`<skill>/.venv/bin/python -m spacy download {pkg}` then --nlp en_core_web_sm,{pkg} (or a multilingual "
                f"model: xx_ent_wiki_sm, or --nlp hf:<token-classification model>)")
    return ("no spaCy pipeline for this language: `<skill>/.venv/bin/python -m spacy download xx_ent_wiki_sm` (multilingual "
            "PER/LOC) and --nlp en_core_web_sm,xx_ent_wiki_sm, or a multilingual transformers NER model "
            "via --nlp hf:<model> (e.g. a XLM-RoBERTa NER model)")
