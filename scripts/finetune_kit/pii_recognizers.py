"""Recognizers that training data needs beyond presidio's defaults (see compliance.md).

Secrets leak into chat transcripts and tool-call arguments far more often than SSNs do:
API keys pasted into a support chat, a database URL with its password in a tool call, a
private key in a code review. Presidio ships none of these, so this module adds them,
plus a street-address pattern recognizer and a wider credit-card recognizer (presidio's
misses Mastercard 2-series and 19-digit cards).

Every recognizer here is self-contained: its context words are checked by the recognizer
itself in a window before the match, so scores are the same with the pattern-only engine
(which produces no tokens for presidio's context enhancer) and with a spaCy pipeline.

``EXTRA_RECOGNIZERS`` documents each one (entity, what it matches, base score); compliance.md
renders the same table.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence

from presidio_analyzer import EntityRecognizer, LocalRecognizer, RecognizerResult

Validator = Callable[[str], Optional[float]]  # value -> score override, or None to reject


@dataclass(frozen=True)
class RegexSpec:
    name: str
    regex: str
    score: float
    flags: int = 0
    validator: Optional[Callable[[str], Optional[float]]] = None  # overrides the recognizer's validator


class RegexValueRecognizer(LocalRecognizer):
    """Regex recognizer whose span is the named group ``v`` (or the whole match).

    - ``validator(value)`` may reject a match (None) or return a new score;
    - ``context`` is a regex searched in the ``context_window`` characters before the match;
      when found, ``context_boost`` is added; with ``context_required`` a match without
      context is dropped;
    - ``context_after`` is a regex matched right after the value (within ``context_after_window``);
    - ``quick`` lists substrings of which at least one must occur in the text (cheap pre-check).
    """

    def __init__(self, entity: str, specs: Sequence[RegexSpec], *, name: str,
                 supported_language: str = "en", validator: Validator | None = None,
                 context: str | None = None, context_window: int = 60, context_boost: float = 0.3,
                 context_required: bool = False, quick: Sequence[str] = (),
                 context_after: str | None = None, context_after_window: int = 20):
        # patterns with Unicode properties (\p{Lu}: an uppercase letter of any script) need `regex`
        self._specs = [(s, (_uregex().compile(s.regex, s.flags) if "\\p{" in s.regex else re.compile(s.regex, s.flags)))
                       for s in specs]
        self._validator = validator
        self._context = re.compile(context, re.I) if context else None
        self._after = re.compile(context_after, re.I) if context_after else None
        self._after_window = context_after_window
        self._window = context_window
        self._boost = context_boost
        self._required = context_required
        self._quick = tuple(quick)
        super().__init__(supported_entities=[entity], name=name, supported_language=supported_language)

    def load(self) -> None:  # nothing to load
        pass

    def analyze(self, text: str, entities: List[str], nlp_artifacts=None) -> List[RecognizerResult]:
        if self._quick and not any(q in text for q in self._quick):
            return []
        out: list[RecognizerResult] = []
        entity = self.supported_entities[0]
        for spec, rx in self._specs:
            for m in rx.finditer(text):
                grp = "v" if "v" in rx.groupindex and m.group("v") is not None else 0
                start, end = m.span(grp)
                value = text[start:end]
                if not value:
                    continue
                score = spec.score
                validator = spec.validator or self._validator
                if validator is not None:
                    v = validator(value)
                    if v is None:
                        continue
                    score = v if v > 0 else score
                if self._context is not None:
                    before = text[max(0, m.start() - self._window):m.start()]
                    if (self._context.search(before) or self._context.search(text[m.start():start])
                            or (self._after is not None and self._after.match(text, end, end + self._after_window))):
                        score = min(1.0, score + self._boost)
                    elif self._required:
                        continue
                out.append(RecognizerResult(entity, start, end, round(score, 3), recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    "pattern": spec.name}))
        return EntityRecognizer.remove_duplicates(out)


def _uregex():
    import regex  # a presidio dependency

    return regex


# ------------------------------------------------------------------ validators

_PLACEHOLDER = re.compile(r"^(?:[*xX•.#_-]+|<[^>]*>|\$\{?[A-Za-z_][\w]*\}?|\{\{?[^}]*\}\}?|%\(?\w*\)?s?"
                          r"|(?:your|my|the|some)[-_]?\w*|password|passwd|pass|pwd|secret|changeme"
                          r"|redacted|example|dummy|placeholder|null|none|token|\.{3}|…)$", re.I)
# a value that *describes* a secret instead of being one, in any language: "YOUR_API_KEY_HERE",
# "<insert token>", "你的API密钥" (your API key), "khóa_của_bạn": real credentials are ASCII
_PLACEHOLDER_WORDS = re.compile(r"(?i)your|_here\b|here$|placeholder|example|changeme|change_me|replace|insert"
                                r"|dummy|sample|redacted|xxxx|\.\.\.|…|<|>")


def is_placeholder_value(value: str) -> bool:
    """True for values that stand for a secret (placeholders in any language, templates)."""
    v = value.strip().strip("\"'`")
    if not v or _PLACEHOLDER.match(v) or _PLACEHOLDER_WORDS.search(v):
        return True
    return any(ord(c) > 127 and c.isalpha() for c in v)  # non-ASCII letters: a description, not a key


def _not_placeholder(value: str) -> Optional[float]:
    return None if _PLACEHOLDER.match(value) else 0.0


def _has_digit_and_letter(value: str) -> Optional[float]:
    if _PLACEHOLDER.match(value):
        return None
    return 0.0 if re.search(r"\d", value) and re.search(r"[A-Za-z]", value) else None


def luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


_CARD_IIN = re.compile(
    r"^(?:4\d{12}(?:\d{3}|\d{6})?"                                  # Visa 13/16/19
    r"|(?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)\d{12}"  # Mastercard incl. 2-series
    r"|3[47]\d{13}"                                                  # Amex
    r"|3(?:0[0-5]|[689]\d)\d{11,16}"                                 # Diners
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"                                 # JCB
    r"|6(?:011|4[4-9]\d|5\d{2})\d{12,15}"                            # Discover
    r"|62\d{14,17}"                                                  # UnionPay
    r"|(?:2131|1800)\d{11}"                                          # JCB 15 (legacy)
    r"|(?:50|5[6-9]|6\d|0604)\d{10,17})$")                           # Maestro 12-19


def _card(value: str) -> Optional[float]:
    digits = re.sub(r"[ -]", "", value)
    if not digits.isdigit() or not 12 <= len(digits) <= 19 or len(set(digits)) < 4:
        return None
    if not _CARD_IIN.match(digits) or not luhn_ok(digits):
        return None
    return 0.9 if len(digits) >= 13 else 0.6


def _jwt(value: str) -> Optional[float]:
    head = value.split(".", 1)[0]
    try:
        obj = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return 0.0 if isinstance(obj, dict) and ("alg" in obj or "typ" in obj) else None


def _aws_secret(value: str) -> Optional[float]:
    # 40 chars of base64 with mixed classes (a hex digest or a word is not a key)
    if re.fullmatch(r"[0-9a-f]{40}", value) or len(set(value)) < 12:
        return None
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"\d"))
    return 0.0 if classes >= 2 else None


_KNOWN_SECRET_PREFIX = re.compile(r"^(?:sk-|sk_|rk_|AKIA|ASIA|AIza|hf_|gh[pousr]_|github_pat_|xox[abprs]-|xapp-|eyJ|-----BEGIN)")


def _generic_secret(value: str) -> Optional[float]:
    if _KNOWN_SECRET_PREFIX.match(value) or "@" in value or "://" in value:
        return None  # a specific recognizer (API_KEY, GITHUB_TOKEN, URL_CREDENTIALS...) reports it
    if is_placeholder_value(value) or re.search(r"[()\[\]{}<>$]", value) or value.endswith(("=", ":")):
        return None
    if re.match(r"^(?:os\.|env\.|process\.env|getenv|config\.|settings\.|self\.|args\.)", value):
        return None
    if re.fullmatch(r"[A-Za-z_][A-Za-z_]*", value):  # a bare identifier/word, not a secret
        return None
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"\d", r"[^A-Za-z0-9]"))
    return 0.0 if classes >= 2 and len(set(value)) >= 5 else None


_CODE_VALUE = re.compile(r"^(?:os\.|env\.|process\.env|getenv|config\.|settings\.|self\.|args\.|https?://|/|\.{0,2}/)")


def _quoted_secret(value: str) -> Optional[float]:
    """A string literal assigned to a secret-named key: a secret unless it is a placeholder or a reference."""
    if _KNOWN_SECRET_PREFIX.match(value) or "@" in value or "://" in value:
        return None
    if is_placeholder_value(value) or _CODE_VALUE.match(value) or re.search(r"[(){}\[\]<>$%]", value):
        return None
    if len(set(value)) < 5:
        return None
    return 0.0


# key names that hold a credential: the secret word ENDS the key (`DB_PASSWORD`, `secret_token`,
# `authToken`, `webhookSecret`, `api_key`), so `max_tokens`, `tokenizer`, `token_type` are not keys
SECRET_KEY_NAME = (r"(?:[A-Za-z0-9_.-]*?(?i:secret|token|passw(?:or)?d|pwd|passphrase|api[_-]?key|apikey|"
                   r"private[_-]?key|access[_-]?key|credentials?))")
_SECRET_KEY_FULL = re.compile(r"^" + SECRET_KEY_NAME + r"$")


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY_FULL.match(key))


def secret_value_score(value: str) -> Optional[float]:
    """Used for JSON values under a secret-named key (tool-call arguments, metadata)."""
    return _quoted_secret(value) if len(value) >= 8 else None


# ------------------------------------------------------------------ user names in home paths

# C:\Users\<name>\..., /home/<name>/..., /Users/<name>/... (also with doubled/escaped backslashes);
# the span is the account name only, so redaction keeps the path shape
HOME_PATH = (r"(?:(?i:\b[A-Z]:(?:\\{1,2}|/)(?:Users|Documents and Settings))(?:\\{1,2}|/)"
             r"|(?<![\w.~-])/(?:home|Users)/|(?<![\w.~-])/var/home/)"
             r"(?P<v>[A-Za-z0-9._-]*[A-Za-z][A-Za-z0-9._-]*)(?=[\\/\s\"'`,;:)\]]|$)")
_NOT_A_USER = {"public", "default", "default user", "all users", "shared", "guest", "user", "username", "users",
               "name", "me", "you", "yourname", "your_name", "your-name", "runner", "root", "admin", "example",
               "someone", "foo", "bar", "jdoe", "john", "jane", "ubuntu", "vagrant", "linuxbrew", "build"}


def _home_user(value: str) -> Optional[float]:
    v = value.strip(".")
    if not v or v.lower() in _NOT_A_USER or is_placeholder_value(v) or v.startswith("$"):
        return None
    return 0.0


# ------------------------------------------------------------------ names after explicit cues

_NAME_STOP = {"team", "all", "everyone", "everybody", "there", "folks", "guys", "sir", "madam", "customer", "user",
              "support", "admin", "friend", "friends", "world", "again", "assistant", "bot", "sorry", "please",
              "thanks", "thank", "you", "the", "a", "an", "colleagues", "both", "again", "back", "hiring",
              "manager", "client", "sender", "recipient", "name", "unknown", "n/a", "none", "null", "redacted",
              "i", "i'm", "i’m", "im", "i'll", "i've", "i'd", "we", "we're", "it", "it's", "this", "that", "here",
              "good", "great", "ok", "okay", "yes", "no", "hey", "hi", "hello", "dear", "sure", "not", "sorry",
              "happy", "glad", "afraid", "available", "here", "just", "also", "still", "going", "looking", "on",
              "in", "at", "from", "with", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}


def _person_name(value: str) -> Optional[float]:
    words = value.split()
    if not words or words[0].lower().strip(".,") in _NAME_STOP:
        return None
    return 0.0 if all(w[0].isupper() for w in words) else None


_NAME = r"\p{Lu}[\p{L}'’]*(?:-\p{Lu}?\p{L}+)?"     # a capitalised name word, any script
_INITIAL = r"\p{Lu}\."
_TITLE = r"(?:(?i:mr|mrs|ms|miss|mx|dr|prof)\.?[ \t]+)?"
PERSON_RELATION = (r"(?i:\b(?:my|his|her|our|their|your)\s+(?:kid|son|daughter|child|wife|husband|partner|friend|colleague"
                   r"|boss|manager|mother|father|mom|mum|dad|brother|sister|neighbou?r|grandson|granddaughter|aunt|uncle"
                   r"|cousin|fianc[ée]e?|roommate|tenant|landlord|patient|client|employee)\s+)"
                   r"(?P<v>" + _NAME + r"(?:[ \t]+" + _NAME + r"){0,2})\b")
# a line holding only 2-3 capitalised words at the very start of a text: a signature/contact-card header
PERSON_HEADER = r"\A[ \t]*(?P<v>" + _NAME + r"(?:[ \t]+(?:" + _INITIAL + "|" + _NAME + r")){1,2})[ \t]*\r?\n"
# every cue is a whole word (`\bhi\b`: "HIV" and "MSFT" are not "Hi V" and "Ms FT"); greetings and
# sign-offs may be followed by a comma and a line break (`Best regards,\nAnna Kowalski`)
_CUE_WORDS = (r"(?:my |her |his |their |maiden |last |first |full |family )?name is|my name's|name\s*:|full name\s*:"
              r"|calls? me|known as|dear|hi|hello|hey|good (?:morning|afternoon|evening)"
              r"|thanks|thank you|mr|mrs|ms|miss|mx|dr|prof|sincerely|regards|best regards|kind regards"
              r"|warm regards|best wishes|cheers|signed|contact person\s*:|customer\s*:|recipient\s*:|attn\s*:?"
              r"|speaking with|ask for|sure|agent|account holder|holder|courier|i'm|i am|signed for by|ship to\s*:"
              r"|deliver to\s*:|attention\s*:?")
PERSON_CUE = (r"(?:(?i:\b(?:" + _CUE_WORDS + r")(?![\w'’]))\.?[ \t]*,?[ \t]*(?:\r?\n[ \t]*)?)"
              + _TITLE + r"(?P<v>" + _NAME + r"(?:[ \t]+(?:" + _INITIAL + "|" + _NAME + r")){0,3})\b")
# names after cues in Chinese (我叫 / 我是 / 姓名: + 2-4 Han characters; 王先生 / 李女士) and
# Vietnamese (tôi là / tên tôi là / anh / chị / ông / bà + capitalised words), for texts without a NER pipeline
PERSON_CUE_ZH = (r"(?:我叫|我的名字是|名字是|姓名[:：]?|联系人[:：]?|收件人[:：]?)[ \t]*(?P<v>\p{Han}{2,4}?)(?=[，,。.!！\s]|$|先生|女士|小姐)"
                 r"|(?<![\p{Han}])(?![的是了在和与给请问对您你我他她])(?P<v>\p{Han}{1,3})(?:先生|女士|小姐)")
PERSON_CUE_VI = (r"(?:(?i:\b(?:tôi là|tên tôi là|tôi tên là|tên là|tên|họ tên|người nhận|anh|chị|ông|bà|cô|chú)):?[ \t]+)"
                 r"(?P<v>\p{Lu}\p{Ll}*(?:[ \t]+\p{Lu}\p{Ll}*){0,3})\b")
# "Valery Weekers lives at ...": a full name (2-3 words) at the start of a sentence before a verb of residence
PERSON_BEFORE_VERB = (r"(?:^|(?<=[.!?:\n]\s))(?P<v>" + _NAME + r"(?:[ \t]+(?:" + _INITIAL + "|" + _NAME + r")){1,2})"
                      r"[ \t]+(?:lives|lived|is from|was born|moved|works|worked)\b")
# places after a verb of residence/travel or a place noun: "I work in Teruel", "from Wittstock to Monschau"
_PLACE_WORDS = (r"\p{Lu}[\p{L}'’.-]*(?:[ \t]+(?:(?:am|an|im|de|del|di|da|do|dos|das|du|des|la|le|sur|upon|on|van|von|der|den)"
                r"[ \t]+)?\p{Lu}[\p{L}'’.-]*){0,3}")
LOCATION_CUE = (r"(?i:\b(?:live[sd]?|living|based|located|work(?:s|ing)?|stay(?:s|ing)?|born|moved|moving|travel(?:l?ing)?"
                r"|fly(?:ing)?|driving|going|com(?:e|ing)|visit(?:ing)?|point|warehouse|office|store|branch|shop|hotel"
                r"|airport|station|depot|hub|city|town|village)[ \t]+(?:in|from|to|near|at)(?:[ \t]+the)?)[ \t]+"
                r"(?P<v>" + _PLACE_WORDS + ")")
LOCATION_FROM = r"\bfrom[ \t]+(?P<v>" + _PLACE_WORDS + r")[ \t]+to[ \t]+\p{Lu}"
LOCATION_TO = r"\bfrom[ \t]+" + _PLACE_WORDS + r"[ \t]+to[ \t]+(?P<v>" + _PLACE_WORDS + ")"
# a name addressed at the end of a greeting/thanks sentence: "Thanks for your patience, Christine!"
PERSON_VOCATIVE = (r"(?i:\b(?:thanks|thank you|hi|hello|hey|sorry|welcome|congrats|congratulations|good news|no problem"
                   r"|of course|sure|great|perfect|done|noted|got it|good (?:morning|afternoon|evening)))[^.!?\n]{0,60},[ \t]*"
                   r"(?P<v>" + _NAME + r"(?:[ \t]+" + _NAME + r")?)[ \t]*[!.?]")
# a sign-off line: "Best,\nAnna" / "-- \nAnna Kowalski" (the name alone on the next line)
PERSON_SIGNOFF = (r"(?:(?i:\b(?:best|thanks|thank you|regards|cheers|yours(?: truly| sincerely)?|take care)),?|--)[ \t]*\r?\n"
                  r"[ \t]*(?P<v>" + _NAME + r"(?:[ \t]+(?:" + _INITIAL + "|" + _NAME + r")){0,2})[ \t]*(?:\r?\n|$)")


_NOT_PLACE = {"the", "a", "an", "my", "our", "your", "this", "that", "sales", "support", "marketing", "it", "hr",
              "finance", "january", "february", "march", "april", "may", "june", "july", "august", "september",
              "october", "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday",
              "saturday", "sunday", "english", "person", "time", "order", "stock", "touch", "charge", "line"}


def _place_name(value: str) -> Optional[float]:
    w = value.split()
    if not w or w[0].lower() in _NOT_PLACE or w[0].lower() in _NAME_STOP:
        return None
    return 0.0


# ------------------------------------------------------------------ phone numbers in context

PHONE_SHAPE = (r"(?<![\w+])(?P<v>(?:\+\d{1,3}[ \t.-]?)?(?:\(\d{1,5}\)[ \t.-]?)?(?:\d{1,8}(?:[ \t.-]\d{1,8}){1,5}|\d{6,15})"
               r"(?:[ \t]?(?:x|ext\.?)[ \t]?\d{1,5})?)(?![\w])")
PHONE_CONTEXT = (r"\b(?:phone|tel|telephone|mobile|cell|cellphone|fax|call|reach|whatsapp|sms|text|desk|office|contact"
                 r"|dial|ring|messages?|answering|registered|zalo|sđt|sdt|số điện thoại|điện thoại|di động|gọi)\b"
                 r"|电话|手机|联系|致电|号码|拨打")  # + Vietnamese and Chinese phone words (no \b between CJK)
PHONE_CONTEXT_MIN_DIGITS = 6


def _phone_digits(value: str) -> Optional[float]:
    main = re.split(r"\s?(?:x|ext\.?)\s?", value)[0]
    n = sum(c.isdigit() for c in main)
    if not PHONE_CONTEXT_MIN_DIGITS <= n <= 15:
        return None
    digits = re.sub(r"\D", "", main)
    if len(digits) >= 13 and _card(digits) is not None:  # a payment card number, not a phone
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{3}-\d{2}-\d{4}|\d{1,2}\.\d{6}", main):
        # a date, a US SSN shape, seconds.microseconds
        return None
    return 0.0


# ------------------------------------------------------------------ address pattern

_STREET_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl"
                  r"|Square|Sq|Terrace|Ter|Way|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Trl|Crescent"
                  r"|Cres|Close|Grove|Gardens|Gdns|Mews|Row|Hill|Walk|Park|Alley|Loop|Plaza|Ridge|Rise"
                  r"|View|Pike|Crossing|Heights|Green|Expressway|Expy|Freeway|Fwy|Turnpike|Point|Pt"
                  r"|Run|Path|Commons|Center|Ctr|Junction|Landing|Meadows?|Pass|Port|Station|Estates?"
                  # USPS Publication 28 suffixes that are rarely ordinary words, and UK/AU ones
                  r"|Cliffs?|Divide|Tollway|Rapids?|Plains?|Greens|Parks|Alleyway|Skyway|Throughway|Trafficway"
                  r"|Stravenue|Bypass|Causeway|Crossroads?|Overpass|Underpass|Viaduct|Esplanade|Parade|Circuit|Quay"
                  r"|Wharf|Knolls?|Shoals?|Bluffs?|Burgs?|Villages?|Canyon|Creek|Ferry|Harbou?r|Hollow|Manor|Orchard"
                  r"|Prairie|Summit|Forks?|Glens?|Haven|Inlet|Isle|Lodge|Mills?|Springs?|Brooks?|Valley|Vista|Fords?"
                  r"|Shores?|Ports|Lakes?|Islands?|Grove|Heights|Trace|Trafficway|Motorway|Crest|Bend|Cove|Dale)")
_NAME_WORD = r"(?:[A-Z][A-Za-z'’.-]*|\d{1,3}(?:st|nd|rd|th)|[NSEW]\.?|Mc[A-Z][a-z]+)"
_UNIT = r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|#)\.?\s*#?\s?[A-Za-z0-9-]{1,6})"
_US_TAIL = (r"(?:,\s*[A-Z][A-Za-z.'-]+(?:\s[A-Z][A-Za-z.'-]+){0,3},?\s+"
            r"(?:[A-Z]{2}(?![A-Za-z0-9])(?:\s+\d{5}(?:-\d{4})?)?|[A-Z][a-z]+\s+\d{5}(?:-\d{4})?))")  # NW1: UK
_UK_POSTCODE = r"(?:[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2})"
_UK_TAIL = r"(?:,?\s+(?:[A-Z][A-Za-z'-]+(?:\s[A-Z][A-Za-z'-]+){0,2},?\s+)?" + _UK_POSTCODE + r")"
_EU_PREFIX = (r"(?:Via|Viale|Piazza|Corso|Largo|Rue|Avenue|Boulevard|Chemin|Calle|Avenida|Carrer|Paseo"
              r"|Plaza|Rua|Travessa|Praça|Ulica|ul\.|Straße|Strasse|C/|Ctra\.|Av\.|Avda\.|Pl\.|R\.|Rr\.|Odos|Odós"
              r"|Aleja|al\.|Stradă|Strada|Str\.|Bd\.|Bulevardul|Cesta|Trg|Ulitsa|ul\.|Đường|Phố)")
_EU_STREETWORD = (r"[A-ZÀ-ÝØÅÆ][\w'’-]*(?i:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer|steig|gade|vej"
                  r"|vägen|gatan|gata|laan|straat|plein|gracht|kade|veien|vegen|vei|veg|tie|katu|kuja|tee|väg|stræde"
                  r"|zeile|markt|utca|út|tér|sor|ulica|cesta|gränd|steeg|boulevard|singel|dreef|dijk|pad|hof)")
_HOUSE_NO = r"\d{1,5}(?:[-/]\d{1,4})?[a-zA-Z]?"
# `Viale Gianfranco, 1`, `C. de Leonor Benavente 4`, `82, rue Bernier`, `Quadra Aragão, 63`
_ROMANCE_PREFIX = (r"(?:(?i:via|viale|piazza|piazzale|corso|largo|vicolo|incrocio|contrada|borgo|canale|strada|rotonda|calle"
                   r"|avenida|avda\.|av\.|carrer|paseo|pasaje|plaza|ronda|rambla|camino|travesía|glorieta|cuesta|c\.|c/|ctra\."
                   r"|rua|travessa|praça|quadra|núcleo|setor|jardim|distrito|alameda|estrada|rodovia|vila|conjunto|lote|ladeira"
                   r"|rue|avenue|boulevard|chemin|place|allée|impasse|quai|cours|route|ul\.|al\.|pl\.|plac|aleja|ulica|osiedle))")
_ROMANCE_STREET = (r"(?<![\w-])(?:" + _ROMANCE_PREFIX + r"(?:[ \t]+(?:d[aeiou]s?|de[ls]?|la|le|les|du|della|di|del|y|[\w'’.-]+)){1,5},?"
                   r"[ \t]+" + _HOUSE_NO + r"|\d{1,5}[a-z]?,?[ \t]+" + _ROMANCE_PREFIX
                   + r"(?:[ \t]+(?:d[aeiou]s?|de[ls]?|la|le|les|du|[\w'’.-]+)){1,4})(?![\w])")

ADDRESS_SPECS = [
    RegexSpec("us_uk_street",
              r"\b(?:\d{1,6}[ \t]+)?\d{1,6}(?:-\d{1,4})?[A-Za-z]?,?\s+(?:" + _NAME_WORD + r"\s+){1,4}" + _STREET_SUFFIX
              + r"\b\.?" + _UNIT + r"?(?:" + _US_TAIL + "|" + _UK_TAIL + r")?", 0.5),
    RegexSpec("eu_street_number",
              r"\b" + _EU_PREFIX + r"\s+(?:(?:de|del|della|di|da|do|dos|das|la|le|les|du|des)\s+|[A-ZÀ-Ý0-9][\w'’.-]*\s+){1,4}\d{1,5}[a-zA-Z]?\b", 0.5),
    RegexSpec("eu_prefix_block",  # `625 50 Rue Camille des Moulins` on its own line of an address block
              r"(?<![\w.,-])\d{1,6}[ \t]+(?:\d{1,5}[ \t]+)?" + _EU_PREFIX + r"(?:[ \t]+[\w'’.-]+){1,4}"
              r"(?=[ \t]*(?:\r?\n|\}\}|\?\?\?|[ \t]{2}))", 0.5),
    RegexSpec("eu_streetword_number", r"(?<![\w-])" + _EU_STREETWORD + r"\s+" + _HOUSE_NO + r"\b", 0.5),
    RegexSpec("romance_street", _ROMANCE_STREET, 0.5),
    RegexSpec("eu_word_street_number",  # `Bécsi utca 76`, `Martin Linges veg 149`, `Slude Strand 83`
              r"(?<![\w-])(?:\d{1,6}[ \t]+)?(?:[A-ZÀ-ÝØÅÆ][\w'’.-]*[ \t]+){1,3}(?:utca|út|tér|veg|vei|vej|gade|gata|tie|katu"
              r"|strand|Strand|gasse|straat|weg|sor)\.?[ \t]+\d{1,5}[a-zA-Z]?\b", 0.5),
    RegexSpec("po_box", r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b", 0.5, re.I),
    # number + 1-4 words + number (`66131 Rua Firenza 442`, `74952 Pikk 20`): only inside an address block
    RegexSpec("number_words_number",
              r"(?<![\w.,-])\d{1,6}[ \t]+(?:[^\W\d_][\w'’./-]*[ \t]+){1,4}\d{1,5}[a-zA-Z]?\.?"
              r"(?=[ \t]*(?:\r?\n|,|\}\}|\?\?\?|[ \t]{2})[ \t\r\n]*(?:\}\}|\?\?\?)?[ \t]*(?:Apt|Suite|Unit|Flat|\p{Lu}))",
              0.45),
    RegexSpec("us_military",
              r"(?:\b(?:Unit|PSC|CMR)\s+\d{3,5},?\s+Box\s+\d{2,5}\s*|\bUS(?:NS|NV|S|CGC)\s+[^\W\d_][\w'-]*\s*)?"
              r"\b[ADF]PO\s+A[AEP]\s+\d{5}\b", 0.6),
    RegexSpec("number_words_unit",
              r"\b\d{1,6}\s+(?:[^\W\d_][\w'’.-]*\s+){1,4}\d{0,4}\s*,?\s*(?:Apt\.?|Apartment|Suite|Unit)\s+\d{1,5}\b", 0.5),
]
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]{0,6}\.?"
_DOB = (r"(?i:\b(?:d\.?o\.?b\.?|date[ \t]+of[ \t]+birth|birth[ \t]*date|birthday|born(?:[ \t]+on)?)\b)"
        r"(?:[ \t]*(?:is|was|=|:|-|–))?[ \t]*(?P<v>\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}-\d{1,2}-\d{1,2}"
        r"|\d{1,2}(?:st|nd|rd|th)?[ \t]+" + _MONTH + r",?[ \t]+\d{4}|" + _MONTH + r"[ \t]+\d{1,2}(?:st|nd|rd|th)?,?[ \t]+\d{4})"
        r"(?![\d/.-]\d)")
ADDRESS_CONTEXT = (r"\b(?:address|addr|live[sd]?|living|resid\w*|located|ship(?:ping|ped)?|deliver\w*"
                   r"|mail(?:ing)?|send|sent|billing|home|office|visit|move[sd]?|street|meet me at|enter on"
                   r"|to be sent to|courier|parcel|package)\b|địa chỉ|地址|收货")


# ------------------------------------------------------------------ countries and address blocks

def _load_countries() -> list[str]:
    from pathlib import Path

    p = Path(__file__).resolve().parent / "data" / "countries.txt"
    out = []
    for ln in p.read_text(encoding="utf-8").splitlines():
        ln = ln.strip()
        if ln and not ln.startswith("#"):
            out.append(ln)
    return out


COUNTRIES = _load_countries()
_COUNTRY_RX = "|".join(re.escape(c) for c in sorted(COUNTRIES, key=len, reverse=True))
_SEP = r"(?:[ \t]*(?:\r?\n|,|;|\}\}|\?\?\?|[ \t]{2,})[ \t]*(?:\}\}|\?\?\?)?[ \t]*)+"
_PLACE = (r"(?:\p{Lu}[\p{L}'’.-]*|d[aeiou]s?|de[ls]?|la|le|les|u|am|an|im|sur|di|del|y|i|on|upon)(?:[ \t]+(?:\p{Lu}[\p{L}'’.-]*"
          r"|d[aeiou]s?|de[ls]?|la|le|les|u|am|an|im|sur|di|del|y|i|on|upon|\d{1,2})){0,4}")
_REGION = r"(?:[ \t]*\([A-Z]{2}\)|[ \t]*/[ \t]*[A-Z]{2}|[ \t]*,?[ \t]+[A-Z]{2,3}\b)?"
_POST = r"(?:[A-Z]{1,3}[- ]?)?\d{2,6}(?:[- ]\d{3,4})?(?:[ \t]?[A-Z]{2}\b)?"
_PART = (r"(?:(?:Apt|Apartment|Appartamento|Suite|Ste|Unit|Flat|Fl|Floor|Piano|Puerta|Room|Rm|Bldg|Box|Level|#)\.?[ \t]*#?[ \t]?[A-Za-z0-9-]{1,6}"
         r"|(?:" + _COUNTRY_RX + r")(?:[ \t]+\d{3,6})?"
         r"|" + _UK_POSTCODE +
         r"|" + _POST + r"(?:[ \t]+" + _PLACE + _REGION + r")?"
         r"|" + _PLACE + _REGION + r"(?:[ \t]*,?[ \t]+" + _POST + r"|-\d{3,6})?"
         r")(?=[ \t]*(?:\r?\n|,|;|\}\}|\?\?\?|[ \t]{2,}|[.?!]|$|[ \t]+(?:for|and|to|is|in|on|at|with|please|\()\b))")
_BLOCK_TAIL = None


def extend_address(text: str, start: int, end: int, max_parts: int = 6) -> tuple[int, int]:
    """Grow an address span over the block that follows it: unit, town, region, postcode, country
    (`12 Main St\n Apt. 4\n Springfield, IL 62704\n USA`), each part separated by a line break, a
    comma or a wide gap. A part that is not address-shaped ends the block."""
    global _BLOCK_TAIL
    if _BLOCK_TAIL is None:
        _BLOCK_TAIL = _uregex().compile(_SEP + "(?P<part>" + _PART + ")")
    for _ in range(max_parts):
        m = _BLOCK_TAIL.match(text, end)
        if not m:
            break
        part = m.group("part")
        if part.split()[0].lower() in _NOT_PLACE_START or sum(c.isdigit() for c in part) >= 7 \
                or _PHONE_LABEL.match(text, m.end("part")):
            break  # a sentence, a phone number or a labelled phone/fax line is not part of the address
        end = m.end("part")
    return start, end


_PHONE_LABEL = re.compile(r"[ \t]*(?:office|fax|mobile|cell|phone|tel|home|work)\b", re.I)
_NOT_PLACE_START = {"i", "we", "you", "he", "she", "they", "it", "the", "a", "an", "and", "or", "but", "thanks", "thank",
                    "please", "can", "could", "would", "will", "is", "are", "my", "our", "your", "this", "that",
                    "bot", "user", "hi", "hello", "dear", "regards", "best", "cheers", "tel", "phone", "email",
                    "e-mail", "mobile", "card", "iban", "ssn", "office", "fax", "cell", "phone:", "tel:"}


# ------------------------------------------------------------------ the catalogue

@dataclass(frozen=True)
class ExtraRecognizer:
    entity: str
    name: str
    description: str
    score: str
    build: Callable[[str], EntityRecognizer]


def _catalogue() -> list[ExtraRecognizer]:
    b = r"(?<![A-Za-z0-9_])"   # left boundary that also works next to '_' and '-'
    e = r"(?![A-Za-z0-9_])"
    return [
        ExtraRecognizer(
            "AWS_ACCESS_KEY", "AwsAccessKeyRecognizer",
            "AWS access key id: AKIA/ASIA/ABIA/ACCA + 16 uppercase letters or digits", "0.9",
            lambda lang: RegexValueRecognizer("AWS_ACCESS_KEY", [
                RegexSpec("aws_key_id", b + r"(?P<v>(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})" + e, 0.9)],
                name="AwsAccessKeyRecognizer", supported_language=lang, quick=("AKIA", "ASIA", "ABIA", "ACCA"))),
        ExtraRecognizer(
            "AWS_SECRET_KEY", "AwsSecretKeyRecognizer",
            "AWS secret access key: 40 base64 characters with context (aws/secret/AKIA... within 80 "
            "characters before, or an `aws_secret_access_key`-style assignment)", "0.8 (0.9 in an assignment)",
            lambda lang: RegexValueRecognizer("AWS_SECRET_KEY", [
                RegexSpec("aws_secret_assignment",
                          r"(?i:aws_?secret(?:_?access)?_?key|secret_?access_?key|SecretAccessKey)[\"']?\s*[:=]\s*[\"']?"
                          r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])", 0.9),
                RegexSpec("aws_secret_near_context", r"(?<![A-Za-z0-9/+=])(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])", 0.5)],
                name="AwsSecretKeyRecognizer", supported_language=lang, validator=_aws_secret,
                context=r"aws|secret|(?:AKIA|ASIA)[A-Z0-9]{16}", context_window=80, context_boost=0.3,
                context_required=True)),
        ExtraRecognizer(
            "API_KEY", "ApiKeyRecognizer",
            "provider API keys: `sk-`/`sk-proj-`/`sk-ant-` style (OpenAI, Anthropic, DeepSeek...), Stripe "
            "`sk_live_`/`rk_live_`, Google `AIza...`, Hugging Face `hf_...`", "0.85-0.95",
            lambda lang: RegexValueRecognizer("API_KEY", [
                RegexSpec("sk_dash", b + r"(?P<v>sk-(?:proj-|svcacct-|admin-|ant-(?:api\d\d-|admin\d\d-)?)?[A-Za-z0-9_-]{20,})" + e, 0.9),
                RegexSpec("stripe", b + r"(?P<v>(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,})" + e, 0.95),
                RegexSpec("google", b + r"(?P<v>AIza[0-9A-Za-z_-]{35})" + e, 0.9),
                RegexSpec("huggingface", b + r"(?P<v>hf_[A-Za-z0-9]{30,})" + e, 0.85)],
                name="ApiKeyRecognizer", supported_language=lang, validator=_has_digit_and_letter,
                quick=("sk-", "sk_", "rk_", "AIza", "hf_"))),
        ExtraRecognizer(
            "GITHUB_TOKEN", "GithubTokenRecognizer",
            "GitHub tokens: `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 36+ characters, fine-grained `github_pat_...`",
            "0.95",
            lambda lang: RegexValueRecognizer("GITHUB_TOKEN", [
                RegexSpec("classic", b + r"(?P<v>gh[pousr]_[A-Za-z0-9]{36,255})" + e, 0.95),
                RegexSpec("fine_grained", b + r"(?P<v>github_pat_[A-Za-z0-9_]{22,255})" + e, 0.95)],
                name="GithubTokenRecognizer", supported_language=lang,
                quick=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"))),
        ExtraRecognizer(
            "SLACK_TOKEN", "SlackTokenRecognizer",
            "Slack tokens `xoxb-`/`xoxp-`/`xoxa-`/`xoxr-`/`xoxs-`, app tokens `xapp-`, incoming-webhook URLs",
            "0.95",
            lambda lang: RegexValueRecognizer("SLACK_TOKEN", [
                RegexSpec("token", b + r"(?P<v>xox[abprs]-[A-Za-z0-9-]{10,})" + e, 0.95),
                RegexSpec("app_token", b + r"(?P<v>xapp-\d-[A-Za-z0-9-]{10,})" + e, 0.95),
                RegexSpec("webhook", r"(?P<v>https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+)", 0.95)],
                name="SlackTokenRecognizer", supported_language=lang, quick=("xox", "xapp-", "hooks.slack.com"))),
        ExtraRecognizer(
            "PRIVATE_KEY", "PrivateKeyRecognizer",
            "PEM private-key blocks (`-----BEGIN ... PRIVATE KEY-----` to END, or to the end of the "
            "base64 body when truncated), incl. OpenSSH and PGP private key blocks", "1.0",
            lambda lang: RegexValueRecognizer("PRIVATE_KEY", [
                RegexSpec("pem_block",
                          r"-----BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----[\s\S]*?-----END (?P=kind)-----", 1.0),
                RegexSpec("pem_truncated",  # no END line: the header and the base64 body that follows
                          r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?![\s\S]*-----END [A-Z0-9 ]*PRIVATE KEY)"
                          r"(?:(?:\\[nr]|\s)+[A-Za-z0-9+/=:,.-]+)*", 0.9)],
                name="PrivateKeyRecognizer", supported_language=lang, quick=("PRIVATE KEY",))),
        ExtraRecognizer(
            "JWT", "JwtRecognizer",
            "JSON Web Tokens `eyJ<header>.eyJ<payload>.<signature>` whose header decodes to JSON with alg/typ",
            "0.9",
            lambda lang: RegexValueRecognizer("JWT", [
                RegexSpec("jwt", b + r"(?P<v>eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)" + e, 0.9)],
                name="JwtRecognizer", supported_language=lang, validator=_jwt, quick=("eyJ",))),
        ExtraRecognizer(
            "URL_CREDENTIALS", "UrlCredentialsRecognizer",
            "`user:password` inside a URL (`scheme://user:password@host`); placeholders like "
            "`user:password`, `${PASS}`, `***` are ignored", "0.9",
            lambda lang: RegexValueRecognizer("URL_CREDENTIALS", [
                RegexSpec("url_userinfo",
                          r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://(?P<v>[^:@/\s\"'<>]{1,128}:(?P<pw>[^@/\s\"'<>]{1,256}))@[A-Za-z0-9\[]", 0.9)],
                name="UrlCredentialsRecognizer", supported_language=lang,
                validator=lambda v: _not_placeholder(v.split(":", 1)[1]), quick=("://",))),
        ExtraRecognizer(
            "SECRET", "SecretAssignmentRecognizer",
            "a value assigned to a key whose name ends in secret/token/password/pwd/passphrase/api_key/"
            "private_key/access_key/credentials (`DB_PASSWORD=`, `secret_token = \"...\"`, `\"authToken\": \"...\"`, "
            "`api_key:` in YAML/env/code/JSON): a quoted value of 8+ characters, or an unquoted one of 6+ mixing "
            "character classes; identifiers, env lookups and placeholders in any language (`YOUR_API_KEY`, "
            "`<token>`, `你的API密钥`) are ignored. Lower precision than the specific recognizers", "0.5 (quoted 0.6)",
            lambda lang: RegexValueRecognizer("SECRET", [
                RegexSpec("quoted_assignment",
                          r"(?<![\w.-])" + SECRET_KEY_NAME + r"[\"']?[ \t]*(?:=|:=|=>|:)[ \t]*(?P<q>[\"'])"
                          r"(?P<v>[^\s\"']{8,200})(?P=q)", 0.6, validator=_quoted_secret),
                RegexSpec("assignment",
                          r"(?<![\w.-])" + SECRET_KEY_NAME + r"[\"']?[ \t]*(?:=|:=|=>|:)[ \t]*"
                          r"(?P<v>[^\s\"',;]{6,200})", 0.5)],
                name="SecretAssignmentRecognizer", supported_language=lang, validator=_generic_secret)),
        ExtraRecognizer(
            "USERNAME", "HomePathUserRecognizer",
            "the account name in a home-directory path (`C:\\Users\\<name>\\`, `/home/<name>/`, `/Users/<name>/`); "
            "only the name is the span, so redaction keeps the path shape; generic accounts (Public, "
            "runner, root, ubuntu...) and placeholders are ignored", "0.8",
            lambda lang: RegexValueRecognizer("USERNAME", [RegexSpec("home_path", HOME_PATH, 0.8)],
                                              name="HomePathUserRecognizer", supported_language=lang,
                                              validator=_home_user, quick=("Users", "home/", "USERS", "users"))),
        ExtraRecognizer(
            "PERSON", "PersonCueRecognizer",
            "capitalised name after an explicit cue (`My name is`, `Name:`, `Dear`, `Hi`, `Mr./Ms./Dr.`, "
            "`Regards,`, `my son/wife/colleague ...`), or 2-3 capitalised words alone on the first line of a text "
            "(signature/contact-card header): catches names spaCy misses and gives pattern-only mode some "
            "name coverage", "0.6 (header line 0.45)",
            lambda lang: RegexValueRecognizer("PERSON", [RegexSpec("name_after_cue", PERSON_CUE, 0.6),
                                                         RegexSpec("name_after_signoff", PERSON_SIGNOFF, 0.6),
                                                         RegexSpec("name_before_verb", PERSON_BEFORE_VERB, 0.5),
                                                         RegexSpec("name_vocative", PERSON_VOCATIVE, 0.5),
                                                         RegexSpec("name_after_cue_zh", PERSON_CUE_ZH, 0.6,
                                                                   validator=lambda v: 0.0),
                                                         RegexSpec("name_after_cue_vi", PERSON_CUE_VI, 0.6,
                                                                   validator=lambda v: 0.0),
                                                         RegexSpec("name_after_relation", PERSON_RELATION, 0.6),
                                                         RegexSpec("name_header_line", PERSON_HEADER, 0.45)],
                                              name="PersonCueRecognizer", supported_language=lang,
                                              validator=_person_name)),
        ExtraRecognizer(
            "PHONE_NUMBER", "PhoneContextRecognizer",
            "phone-shaped digit groups (6-15 digits, optional +country code, (area), extension) with a phone "
            "word within 40 characters before (phone, call, mobile, fax, tel, reach...) or right after "
            "(`office`, `fax`, `mobile`); catches numbers of regions not in --phone-regions and numbers "
            "outside the allocated ranges libphonenumber knows", "0.5",
            lambda lang: RegexValueRecognizer("PHONE_NUMBER", [RegexSpec("phone_in_context", PHONE_SHAPE, 0.2)],
                                              name="PhoneContextRecognizer", supported_language=lang,
                                              validator=_phone_digits, context=PHONE_CONTEXT, context_window=40,
                                              context_boost=0.3, context_required=True,
                                              context_after=r"[\s-]*(?:office|fax|mobile|cell|home|work|desk|phone)\b")),
        ExtraRecognizer(
            "LOCATION", "PlaceCueRecognizer",
            "capitalised place after a verb of residence or travel or a place noun (`I work in Teruel`, "
            "`based in`, `from Wittstock to Monschau`, `pickup point in`): towns a small NER model does not know",
            "0.5",
            lambda lang: RegexValueRecognizer("LOCATION", [RegexSpec("place_after_cue", LOCATION_CUE, 0.5),
                                                           RegexSpec("place_from", LOCATION_FROM, 0.5),
                                                           RegexSpec("place_to", LOCATION_TO, 0.5)],
                                              name="PlaceCueRecognizer", supported_language=lang,
                                              validator=_place_name)),
        ExtraRecognizer(
            "LOCATION", "CountryRecognizer",
            "country names (English, common endonyms; data/countries.txt), capitalised as written; works "
            "without a NER pipeline", "0.6",
            lambda lang: RegexValueRecognizer("LOCATION", [
                RegexSpec("country", r"(?<![\w-])(?P<v>" + _COUNTRY_RX + r")(?![\w-])", 0.6)],
                name="CountryRecognizer", supported_language=lang)),
        ExtraRecognizer(
            "STREET_ADDRESS", "StreetAddressRecognizer",
            "street addresses: US/UK `12 Baker Street[, Apt 4][, City, ST 12345 | London NW1 6XE]`, "
            "continental `Via Roma 12` / `Hauptstraße 5`, P.O. boxes; +0.3 when a context word "
            "(address, live, ship to, deliver...) precedes", "0.5 (0.8 with context)",
            lambda lang: RegexValueRecognizer("STREET_ADDRESS", ADDRESS_SPECS, name="StreetAddressRecognizer",
                                              supported_language=lang, context=ADDRESS_CONTEXT,
                                              context_window=40, context_boost=0.3)),
        ExtraRecognizer(
            "DATE_OF_BIRTH", "DateOfBirthRecognizer",
            "a date right after a birth cue (`DOB`, `D.O.B.`, `date of birth`, `birth date`, `birthday`, `born on`): "
            "`12/03/1988`, `1988-03-12`, `12 March 1988`, `March 12, 1988`; other dates are not reported by default",
            "0.85",
            lambda lang: RegexValueRecognizer("DATE_OF_BIRTH", [RegexSpec("dob", _DOB, 0.85)],
                                              name="DateOfBirthRecognizer", supported_language=lang)),
        ExtraRecognizer(
            "CREDIT_CARD", "CardNumberRecognizer",
            "payment cards presidio's recognizer misses (Mastercard 2221-2720, 17-19 digit Visa/Maestro/"
            "UnionPay): 12-19 digits in groups, known issuer prefix and a valid Luhn checksum", "0.9 (0.6 for 12 digits)",
            lambda lang: RegexValueRecognizer("CREDIT_CARD", [
                RegexSpec("card", r"(?<![\d-])(?P<v>\d{4}(?:[ -]?\d{2,4}){2,4}(?:[ -]?\d{1,3})?)(?![\d])", 0.9)],
                name="CardNumberRecognizer", supported_language=lang, validator=_card)),
    ]


EXTRA_RECOGNIZERS: list[ExtraRecognizer] = _catalogue()
SECRET_ENTITIES = ["AWS_ACCESS_KEY", "AWS_SECRET_KEY", "API_KEY", "GITHUB_TOKEN", "SLACK_TOKEN",
                   "PRIVATE_KEY", "JWT", "URL_CREDENTIALS", "SECRET"]
EXTRA_ENTITIES = sorted({r.entity for r in EXTRA_RECOGNIZERS})


def build_extra_recognizers(language: str = "en", entities: Iterable[str] | None = None) -> list[EntityRecognizer]:
    wanted = None if entities is None else set(entities)
    return [r.build(language) for r in EXTRA_RECOGNIZERS if wanted is None or r.entity in wanted]
