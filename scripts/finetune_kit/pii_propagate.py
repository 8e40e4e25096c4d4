"""Whole, consistent redaction: what is kept from the detector, and where else a value occurs.

A detector finds a value in *some* texts; the same order id, name or phone number in another
message, tool argument or file must be redacted too, with the same pseudonym. This module holds
the steps between detection and redaction (see ``pii.scan_files``):

- :func:`refine` drops findings that are not PII: the skill's own placeholders (``<PERSON_1>``),
  id-shaped tokens tagged as names/places (``ORD-10002``, ``order_id``, ``MSFT``), allow-listed
  values;
- :class:`ValueIndex` collects every kept value (plus the user's deny-list) and finds all their
  occurrences in any text (a trie-compiled regex, whole words only);
- :func:`name_aliases` gives the first and last word of a detected full name the full name's
  pseudonym within the same example ("Anna Kowalski" ... "Thanks, Anna").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import UsageError

# the placeholders every redaction mode writes: <PERSON_3>, <EMAIL_ADDRESS>, <PHONE_NUMBER:3f9a1c2b7d4e>
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*?(?:_\d+|:[0-9a-f]{12})?>")
NAME_TYPES = {"PERSON", "LOCATION", "NRP", "ORGANIZATION"}
_ID_SHAPED = re.compile(r"^(?=.*\d)[\w.-]+$|^[\w-]*_[\w-]*$|^[a-z]+[A-Z]\w*$|^[A-Z0-9]{2,}(?:[-_.][A-Z0-9]+)+$")
_TITLES = {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "dear", "hi", "hello"}
_POSSESSIVE = re.compile(r"(?:['’]s?|[.,;:!?])$")
MIN_PROPAGATE = 3          # shorter values are not searched elsewhere (too many accidental matches)


def is_id_shaped(value: str, entity: str = "PERSON") -> bool:
    """Ids, keys and tickers are not names or places: digits, underscores, camelCase, CODE-123;
    a lone all-caps word (MSFT, HIV) is not a person (it may be a place: USA, NYC)."""
    v = value.strip()
    if _ID_SHAPED.match(v):
        return True
    return entity == "PERSON" and v.isupper() and " " not in v and 1 < len(v) <= 6 and v.isalpha()


def placeholder_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in PLACEHOLDER.finditer(text)] if "<" in text else []


# ------------------------------------------------------------------ user lists


@dataclass
class UserLists:
    """--allow-list (values never reported) and --deny-list (values always redacted)."""

    allow: set[str] = field(default_factory=set)            # casefolded
    deny: list[tuple[str, str]] = field(default_factory=list)  # (entity, value)

    def allowed(self, value: str) -> bool:
        return bool(self.allow) and " ".join(value.split()).casefold() in self.allow


def read_list(path: str, flag: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{flag} {path}: no such file (one value per line)")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{flag} {path}: cannot read it as UTF-8 text ({exc})") from exc
    out = [ln.strip() for ln in text.splitlines()]
    return [ln for ln in out if ln and not ln.startswith("#")]


_TYPE_PREFIX = re.compile(r"^([A-Z][A-Z0-9_]{1,40})\t(.+)$")


def load_user_lists(allow_file: str | None, deny_file: str | None, default_deny_type: str = "PERSON") -> UserLists:
    """Allow-list: one value per line. Deny-list: one value per line, ``TYPE<TAB>value`` to set its type."""
    lists = UserLists()
    if allow_file:
        lists.allow = {" ".join(v.split()).casefold() for v in read_list(allow_file, "--allow-list")}
    if deny_file:
        for ln in read_list(deny_file, "--deny-list"):
            m = _TYPE_PREFIX.match(ln)
            ent, val = (m.group(1), m.group(2).strip()) if m else (default_deny_type, ln)
            if len(val) < 2:
                raise UsageError(f"--deny-list {deny_file}: value {val!r} is too short (2+ characters)")
            lists.deny.append((ent, val))
    return lists


def parse_patterns(specs: Sequence[str]) -> list[tuple[str, str]]:
    """--pattern NAME=REGEX (repeatable) -> [(NAME, REGEX)], validated."""
    out = []
    for spec in specs or ():
        name, sep, rx = spec.partition("=")
        name = name.strip().upper()
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]{1,40}", name) or not rx:
            raise UsageError(f"--pattern {spec!r}: use NAME=REGEX with NAME like ORDER_ID (letters, digits, _)")
        try:
            re.compile(rx)
        except re.error as exc:
            raise UsageError(f"--pattern {name}: invalid regular expression: {exc}") from exc
        out.append((name, rx))
    return out


# ------------------------------------------------------------------ refine detections


_JSON_KEY = re.compile(r'"((?:[^"\\\n]|\\.){1,200})"\s*:')


def json_key_spans(text: str) -> list[tuple[int, int]]:
    """Spans of ``"key":`` in JSON-looking text (keys are structure, not free text)."""
    return [m.span(1) for m in _JSON_KEY.finditer(text)] if '":' in text or '" :' in text else []


def refine(text: str, hits: Sequence, lists: UserLists | None = None) -> list:
    """Detector findings minus placeholders, JSON keys, id-shaped names/places and allow-listed values."""
    if not hits:
        return []
    ph = placeholder_spans(text)
    keys = json_key_spans(text)
    out = []
    for h in hits:
        if ph and any(s < h.end and h.start < e for s, e in ph):
            continue
        if keys and any(s <= h.start and h.end <= e for s, e in keys):
            continue
        value = text[h.start:h.end]
        if h.entity_type in NAME_TYPES:
            m = _POSSESSIVE.search(value)
            if m:  # "Anna Kowalski's" -> "Anna Kowalski" (one value, one pseudonym; the 's stays)
                h = type(h)(h.start, h.start + m.start(), h.entity_type, h.score, h.source, h.canonical)
                value = text[h.start:h.end]
            if not value or is_id_shaped(value, h.entity_type):
                continue
            h = _trim_name(text, h)
            if h is None:
                continue
            value = text[h.start:h.end]
        if lists is not None and lists.allowed(value):
            continue
        out.append(h)
    return _resolve_overlaps(text, out)


_CONTAINERS = {  # a finding inside one of these is part of it, not a finding of its own
    "PHONE_NUMBER": {"IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "STREET_ADDRESS", "EMAIL_ADDRESS", "URL"},
    "PERSON": {"STREET_ADDRESS", "EMAIL_ADDRESS", "URL", "LOCATION"},
    "LOCATION": {"STREET_ADDRESS", "EMAIL_ADDRESS", "URL"},
    "URL": {"EMAIL_ADDRESS"},
}


_ID_BEFORE = re.compile(r"(?:[#A-Za-z]-?|(?i:order|ticket|invoice|ref|no\.?|nr\.?)[ \t]?#?)\Z")


def _is_country(value: str) -> bool:
    from .pii_recognizers import COUNTRIES

    global _COUNTRY_SET
    if _COUNTRY_SET is None:
        _COUNTRY_SET = {c.casefold() for c in COUNTRIES}
    return value.strip().casefold() in _COUNTRY_SET


_COUNTRY_SET = None


def _loses(h, rival, value: str) -> bool:
    """PERSON vs LOCATION on the same span: a country is a place; otherwise explicit context (a cue
    recognizer, scored below spaCy's fixed 0.85) beats the small NER model's label."""
    if _is_country(value):
        return h.entity_type == "PERSON"
    h_ner, r_ner = h.score == NER_SCORE, rival.score == NER_SCORE
    if h_ner != r_ner:
        return h_ner
    return h.entity_type == "LOCATION"


NER_SCORE = 0.85  # presidio's SpacyRecognizer score


def _trim_name(text: str, h):
    """Cut id-shaped tokens and dashes off the ends of a NER name/place ("TCK-52648 - Carina" -> "Carina",
    "Order ORD-566726" -> nothing)."""
    value = text[h.start:h.end]
    if "\n" in value.strip():  # a name never spans a line break ("Kevin Liu\nSent from my iPhone")
        lines = [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", value) if any(c.isalpha() for c in m.group())]
        if not lines:
            return None
        h = type(h)(h.start + lines[0][0], h.start + lines[0][1], h.entity_type, h.score, h.source, h.canonical)
        value = text[h.start:h.end]
    toks = [(m.start(), m.end()) for m in re.finditer(r"\S+", value)]
    while len(toks) > 1 and value[toks[0][0]:toks[0][1]].strip(",.!:;").casefold() in _LEAD_WORDS:
        toks.pop(0)  # "Sorry Anna", "Dear Mr Smith" -> the name only
    while toks and (is_id_shaped(value[toks[0][0]:toks[0][1]]) or not any(c.isalpha() for c in value[toks[0][0]:toks[0][1]])):
        toks.pop(0)
    while toks and (is_id_shaped(value[toks[-1][0]:toks[-1][1]]) or not any(c.isalpha() for c in value[toks[-1][0]:toks[-1][1]])
                    or (len(toks) > 1 and value[toks[-1][0]:toks[-1][1]].strip(":,.").casefold() in _LABELS)):
        toks.pop()
    if not toks:
        return None
    if len(toks) == 1 and value[toks[0][0]:toks[0][1]].casefold() in _NOT_NAMES:
        return None
    s, e = h.start + toks[0][0], h.start + toks[-1][1]
    return h if (s, e) == (h.start, h.end) else type(h)(s, e, h.entity_type, h.score, h.source, h.canonical)


_LEAD_WORDS = {"sorry", "hi", "hello", "hey", "dear", "thanks", "thank", "welcome", "sure", "ok", "okay", "yes", "no",
               "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "good", "morning", "congrats", "great"}
_LABELS = {"phone", "email", "e-mail", "tel", "mobile", "fax", "address", "office", "cell", "date", "name"}
_NOT_NAMES = {"order", "card", "studio", "ticket", "invoice", "agent", "customer", "sku", "item", "flat", "suite", "apt",
              "level", "unit", "hey", "hi", "hello", "thanks", "dear", "phone", "email", "e-mail", "tel", "mobile",
              "fax", "address", "name", "office"}


def _resolve_overlaps(text: str, hits: list) -> list:
    """Street addresses grown over their address block; findings contained in a larger finding of a
    type that explains them dropped (a phone-shaped run inside an IP, a street name tagged PERSON)."""
    if not hits:
        return hits
    if any(h.entity_type == "STREET_ADDRESS" for h in hits):
        from .pii_recognizers import extend_address

        grown = []
        for h in hits:
            if h.entity_type == "STREET_ADDRESS":
                s, e = extend_address(text, h.start, h.end)
                if e != h.end:
                    h = type(h)(s, e, h.entity_type, h.score, h.source, h.canonical)
            grown.append(h)
        hits = grown
    if len(hits) == 1:
        return hits
    out = []
    for h in hits:
        boxes = _CONTAINERS.get(h.entity_type)
        if boxes and any(o is not h and o.entity_type in boxes and o.start <= h.start and h.end <= o.end
                         and ((o.end - o.start) > (h.end - h.start) or h.entity_type == "PHONE_NUMBER")
                         for o in hits):
            continue
        other = {"PERSON": "LOCATION", "LOCATION": "PERSON"}.get(h.entity_type)
        rival = [o for o in hits if other and o.entity_type == other and o.start == h.start and o.end == h.end]
        if rival and _loses(h, rival[0], text[h.start:h.end]):
            continue
        if h.entity_type == "PHONE_NUMBER" and _ID_BEFORE.search(text, max(0, h.start - 12), h.start):
            continue  # the digits of an id: #363329, ORD-353685
        out.append(h)
    return out


# ------------------------------------------------------------------ the value index


def _trie_regex(words: Iterable[str]) -> str:
    """One regex alternation for many literals, factored by common prefixes (fast to match)."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = True

    def build(node: dict) -> str:
        end = "" in node
        alts = [re.escape(ch) + build(sub) for ch, sub in sorted(node.items()) if ch != ""]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if end else body

    return build(trie)


@dataclass
class Known:
    entity: str
    canonical: str
    score: float = 1.0
    source: str = "propagated"      # or "deny_list"


class ValueIndex:
    """Every value to redact wherever it occurs, each with one entity type and one canonical form."""

    def __init__(self, lists: UserLists | None = None):
        self.lists = lists or UserLists()
        self._exact: dict[str, Known] = {}
        self._folded: dict[str, Known] = {}     # deny-list values: matched case-insensitively
        self._rx = None
        self._rx_i = None
        for ent, val in self.lists.deny:
            self._folded.setdefault(val.casefold(), Known(ent, val, 1.0, "deny_list"))

    def __len__(self) -> int:
        return len(self._exact) + len(self._folded)

    def add(self, entity: str, value: str, score: float = 1.0) -> None:
        v = value.strip()
        if len(v) < MIN_PROPAGATE or not any(c.isalnum() for c in v) or self.lists.allowed(v):
            return
        if entity in NAME_TYPES and (not v[:1].isupper() or is_id_shaped(v, entity)):
            return  # lower-case NER guesses are too unreliable to search for everywhere
        if entity in NAME_TYPES and score == NER_SCORE and " " not in v:
            return  # a one-word NER guess ("Slack", "Casual") is not searched for in the whole dataset
        if v not in self._exact:
            self._exact[v] = Known(entity, v, score)
            self._rx = None

    def resolve(self, value: str) -> Known | None:
        v = value.strip()
        return self._exact.get(v) or self._folded.get(v.casefold())

    def _compile(self) -> None:
        b, e = r"(?<![A-Za-z0-9_])", r"(?![A-Za-z0-9_])"
        self._rx = re.compile(b + "(?:" + _trie_regex(self._exact) + ")" + e) if self._exact else False
        self._rx_i = (re.compile(b + "(?:" + _trie_regex(self._folded) + ")" + e, re.I) if self._folded else False)

    def find(self, text: str) -> list[tuple[int, int, Known]]:
        """Occurrences of known values in ``text`` (whole words; never inside a placeholder)."""
        if self._rx is None:
            self._compile()
        out = []
        for rx, table, fold in ((self._rx, self._exact, False), (self._rx_i, self._folded, True)):
            if not rx:
                continue
            for m in rx.finditer(text):
                k = table.get(m.group(0).casefold() if fold else m.group(0))
                if k is not None:
                    out.append((m.start(), m.end(), k))
        if out and "<" in text:
            ph = placeholder_spans(text)
            out = [o for o in out if not any(s < o[1] and o[0] < e for s, e in ph)]
        return out


def name_aliases(full_names: Iterable[str]) -> dict[str, str]:
    """First and last word of each detected multi-word name -> that full name (one example)."""
    out: dict[str, str] = {}
    for full in full_names:
        words = [w.strip(".,") for w in full.split()]
        words = [w for w in words if w.casefold() not in _TITLES]
        if len(words) < 2:
            continue
        for w in (words[0], words[-1]):
            if len(w) >= MIN_PROPAGATE and w[:1].isupper() and not is_id_shaped(w):
                out.setdefault(w, full)
    return out


def alias_matches(text: str, aliases: dict[str, str]) -> list[tuple[int, int, str]]:
    if not aliases:
        return []
    rx = re.compile(r"(?<![\w])(?:" + _trie_regex(aliases) + r")(?![\w])")
    return [(m.start(), m.end(), aliases[m.group(0)]) for m in rx.finditer(text) if m.group(0) in aliases]
