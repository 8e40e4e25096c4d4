"""Validate training-data files in one streaming pass (the library behind validate_jsonl.py).

``validate_files(paths, fmt=..., tokenizer=..., max_tokens=..., max_errors=...)`` returns the
``--json`` document::

    {"valid": bool,
     "files": [{"file", "format", "valid", "examples", "usable_examples", "lines", "blank_lines",
                "error_count", "warning_count", "counts": {code: n},
                "errors": [finding], "warnings": [finding], "truncated_lists": bool,
                "stats": {"examples", "messages", "total_tokens", "trainable_tokens",
                          "tokens_per_example": {min,p50,p90,p99,max},
                          "trainable_per_example": {min,p50,p90,p99,max},
                          "max_tokens", "max_tokens_source",
                          "truncated_examples", "truncated_trainable_tokens", "tokenizer"}}],
     "leakage": [{"file_a", "file_b", "count", "pairs": [[line_a, line_b], ...]}],
     "tokenizer": str|None}

Memory stays flat as files grow: lines are read one at a time and tokenized in small
batches; what is kept per example is a 16-byte hash (duplicates, leakage) and two ints
(token percentiles). Findings lists are capped (``max_errors``, else ``STORE_CAP``) while the
counts stay complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import chat, cli, jsonl
from .checks import check_line
from .errors import UsageError
from .findings import Finding
from .jsonl import check_readable, iter_lines
from .tokens import raw_chat_view, raw_system_prompt

MIN_EXAMPLES = 10          # OpenAI requires at least 10 training examples
RECOMMENDED_EXAMPLES = 50  # improvements usually start at 50-100 (OpenAI guide)
STORE_CAP = 10_000         # findings kept per file and severity when --max-errors is not given
BATCH = 512                # examples tokenized together
MAX_SYSTEM_VARIANTS = 1000
LEAK_PAIRS_SHOWN = 20

_HINTS = {
    "invalid_json": ("the line is not valid JSON", "fix the JSON (one object per line; no trailing commas, "
                     "double quotes only)"),
    "invalid_utf8": ("the line is not valid UTF-8", "re-encode the file as UTF-8 "
                     "(e.g. iconv -f latin1 -t utf-8)"),
    "blank_line": ("blank line", "remove empty lines (some uploaders reject them)"),
}


class _FileState:
    def __init__(self, path: str, fmt: str, store_cap: int):
        self.path = path
        self.requested_fmt = fmt
        self.fmt: str | None = None if fmt == "auto" else fmt
        self.fmt_line: int | None = None
        self.cap = store_cap
        self.errors: list[dict] = []
        self.warnings: list[dict] = []
        self.counts: Counter = Counter()
        self.n_errors = self.n_warnings = 0
        self.lines = self.blank = self.examples = self.usable = self.messages = 0
        self.hashes: dict[bytes, int] = {}
        self.system: dict[bytes, list[int]] = {}  # hash -> [count, first line]
        self.system_overflow = False
        self.totals = array("l")
        self.trainables = array("l")
        self.total_tokens = self.trainable_tokens = 0
        self.truncated_examples = self.truncated_trainable = 0
        self.not_jsonl = False
        self.role = "train"  # "eval" for validation/test files (by name): the minimum-size rule is for training

    def add(self, f: Finding) -> None:
        self.counts[f.code] += 1
        if f.severity == "error":
            self.n_errors += 1
            if len(self.errors) < self.cap:
                self.errors.append(f.to_dict())
        else:
            self.n_warnings += 1
            if len(self.warnings) < self.cap:
                self.warnings.append(f.to_dict())


def _example_key(obj: dict, raw: bytes) -> bytes:
    """Hash identifying an exact duplicate: the line's bytes, or, when the line carries this
    skill's ``metadata``, the line re-serialised without it the way the skill writes JSONL (so a
    copy that differs only in metadata is still a duplicate). Hashing the raw bytes costs ~5 us a
    line instead of ~25 us for re-serialising every line."""
    if chat.METADATA_KEY in obj:
        raw = jsonl.dumps_line(chat.for_upload(obj)).rstrip("\n").encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw.strip(), digest_size=16).digest()


def _system_key(sp: str | None) -> bytes:
    return b"\0none" if sp is None else hashlib.blake2b(sp.encode("utf-8", "surrogatepass"),
                                                          digest_size=16).digest()


def _percentiles(values: array) -> dict[str, int] | None:
    """min / p50 / p90 / p99 / max by the nearest-rank method (always an actual example's value)."""
    if not values:
        return None
    v = sorted(values)
    n = len(v)

    def rank(q: float) -> int:
        return v[max(0, math.ceil(q * n / 100) - 1)]

    return {"min": v[0], "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": v[-1]}


def validate_files(paths: Sequence[str | os.PathLike], *, fmt: str = "auto", tokenizer: Any = None,
                   model: str | None = None, max_tokens: int | None = None, max_errors: int | None = None,
                   min_examples: int = MIN_EXAMPLES, show_progress: bool = True) -> dict:
    """Validate ``paths``; return the --json document (see module doc).

    ``tokenizer``: a spec for :func:`tokens.get_counter` (encoding name, .tiktoken file, HF
    tokenizer), a counter object, ``"none"`` to skip token statistics, or None for the
    default (cl100k_base, or what ``model`` implies).
    """
    if fmt not in ("auto",) + chat.FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; use auto, {', '.join(chat.FORMATS)}")
    if max_tokens is not None and max_tokens <= 0:
        raise UsageError("--max-tokens must be a positive number of tokens")
    if max_errors is not None and max_errors < 0:
        raise UsageError("--max-errors must be >= 0")
    files = [str(p) for p in paths]
    if not files:
        raise UsageError("no input file given")
    for p in files:
        check_readable(p)
    seen_real = {}
    for p in files:
        rp = os.path.realpath(p)
        if rp in seen_real:
            raise UsageError(f"{p} is given twice (same file as {seen_real[rp]})")
        seen_real[rp] = p

    counter = _resolve_counter(tokenizer, model)
    limit, limit_source = max_tokens, ("--max-tokens" if max_tokens else None)
    if limit is None and counter is not None and getattr(counter, "limit", None):
        limit, limit_source = counter.limit, counter.limit_source

    cap = STORE_CAP if max_errors is None else min(max_errors, STORE_CAP)
    states: list[_FileState] = []
    leakage: list[dict] = []
    for p in files:
        st = _FileState(p, fmt, cap)
        st.role = file_role(p)
        _validate_one(st, counter, limit, states, leakage, show_progress)
        _finish(st, min_examples)
        states.append(st)

    out_files = []
    for st in states:
        out_files.append({
            "file": st.path,
            "format": st.fmt,
            "role": st.role,
            "valid": st.n_errors == 0,
            "examples": st.examples,
            "usable_examples": st.usable,
            "lines": st.lines,
            "blank_lines": st.blank,
            "error_count": st.n_errors,
            "warning_count": st.n_warnings,
            "counts": dict(sorted(st.counts.items())),
            "errors": st.errors,
            "warnings": st.warnings,
            "truncated_lists": len(st.errors) < st.n_errors or len(st.warnings) < st.n_warnings,
            "stats": _stats(st, counter, limit, limit_source),
        })
        st.hashes = {}
    return {
        "valid": all(f["valid"] for f in out_files),
        "files": out_files,
        "leakage": leakage,
        "tokenizer": counter.name if counter is not None else None,
    }


def _resolve_counter(tokenizer, model):
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer  # a counter object
    if isinstance(tokenizer, str) and tokenizer.lower() == "none":
        return None
    from .tokens import get_counter

    return get_counter(str(tokenizer) if tokenizer else None, model)


def _not_jsonl(path: str) -> tuple[str, str] | None:
    """(code, description) when the file is one JSON document spread over lines - a JSON array
    (``[{...}, ...]``) or pretty-printed objects - instead of JSON Lines; None otherwise. Checked
    on the first non-blank line: JSONL's first line is a complete object."""
    with open(path, "rb") as fh:
        first = b""
        for raw in fh:
            if raw.strip():
                first = raw.strip().lstrip(b"\xef\xbb\xbf")
                break
    if not first:
        return None
    try:
        obj = json.loads(first.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        obj = None
    if isinstance(obj, dict):
        return None
    if first.startswith(b"["):
        return "json_array_file", "the file is one JSON array, not JSON Lines (one object per line)"
    if first.startswith(b"{"):
        return "pretty_printed_json", ("the file holds pretty-printed JSON (an object spread over several lines), "
                                       "not JSON Lines")
    return None


def _diagnose_not_jsonl(st: _FileState) -> bool:
    """One diagnosis (with the command that converts it) for a JSON array / pretty-printed file,
    instead of one invalid_json per physical line."""
    shape = _not_jsonl(st.path)
    if shape is None:
        return False
    prep = Path(__file__).resolve().parents[1] / "prepare_data.py"
    st.lines = sum(1 for _ in open(st.path, "rb"))
    st.add(Finding(shape[0], f"{shape[1]}; {st.lines:,} physical lines were not checked",
                   f"convert it: python3 {prep} {st.path} --output-dir DIR (reads JSON arrays and "
                   "pretty-printed files), then validate the files it writes", 1))
    st.not_jsonl = True
    return True


def _validate_one(st: _FileState, counter, limit, earlier: list[_FileState], leakage: list[dict],
                  show_progress: bool) -> None:
    if _diagnose_not_jsonl(st):
        return
    size = Path(st.path).stat().st_size
    batch: list[tuple[int, Any]] = []  # (line, ChatExample) or (line, (format, checked dict))
    leaks: dict[str, list] = {}
    bar = cli.progress(total=size, desc=Path(st.path).name, unit="B", unit_scale=True) if show_progress else None
    done = 0
    try:
        for rl in iter_lines(st.path):
            st.lines += 1
            done += len(rl.raw) + 1
            if bar is not None and st.lines % 2000 == 0:
                bar.update(done - bar.n)
            if rl.error:
                if rl.error == "blank_line":
                    st.blank += 1
                    st.add(Finding("blank_line", "blank line", _HINTS["blank_line"][1], rl.line, None, None,
                                   "warning"))
                else:
                    st.examples += 1
                    what, hint = _HINTS[rl.error]
                    st.add(Finding(rl.error, f"{what} ({rl.detail})", hint, rl.line))
                continue
            st.examples += 1
            obj = rl.obj
            line_fmt = chat.detect_format(obj)
            if line_fmt is not None:
                if st.fmt is None:
                    st.fmt, st.fmt_line = line_fmt, rl.line
                elif line_fmt != st.fmt:
                    if st.requested_fmt == "auto":
                        st.add(Finding("mixed_formats", f"{line_fmt} line in a {st.fmt} file (format set by "
                                       f"line {st.fmt_line})", "keep one format per file; convert the line or "
                                       "move it to its own file", rl.line))
                    else:
                        st.add(Finding("format_mismatch", f"this looks like a {line_fmt} line, but --format is "
                                       f"{st.fmt}", f"convert it to {st.fmt} or run with --format auto",
                                       rl.line))
                    _dup(st, obj, rl.raw, rl.line, earlier, leaks)
                    continue
            # tiktoken counters count raw checked lines (no pydantic models on the hot path)
            need_model = counter is not None and not hasattr(counter, "count_raw")
            item, findings = check_line(obj, st.fmt, rl.line, parse=need_model)
            for f in findings:
                st.add(f)
            if isinstance(obj, dict):
                _dup(st, obj, rl.raw, rl.line, earlier, leaks)
            if item is None:
                continue
            st.usable += 1
            if need_model:
                ex = chat.as_chat(item)
                st.messages += len(ex.messages)
                sp = ex.system_prompt()
                if counter is not None:
                    batch.append((rl.line, ex))
            else:
                msgs, _ = raw_chat_view(st.fmt, item)
                st.messages += len(msgs)
                sp = raw_system_prompt(msgs)
                if counter is not None:
                    batch.append((rl.line, (st.fmt, item)))
            if st.fmt != "prompt-completion":
                _system(st, sp, rl.line)
            if len(batch) >= BATCH:
                _count(st, counter, limit, batch)
                batch = []
        if batch:
            _count(st, counter, limit, batch)
    finally:
        if bar is not None:
            bar.close()
    for other_path, pairs in leaks.items():
        leakage.append({"file_a": other_path, "file_b": st.path, "count": len(pairs),
                        "pairs": pairs[:LEAK_PAIRS_SHOWN]})


def _dup(st: _FileState, obj: Any, raw: bytes, line: int, earlier: list[_FileState], leaks: dict) -> None:
    if not isinstance(obj, dict):
        return
    key = _example_key(obj, raw)
    first = st.hashes.get(key)
    if first is not None:
        st.add(Finding("duplicate_example", f"exact duplicate of line {first}",
                       "remove one copy (duplicates over-weight an example and leak across splits)",
                       line, None, None, "warning"))
    else:
        st.hashes[key] = line
    for other in earlier:
        ol = other.hashes.get(key)
        if ol is not None:
            st.add(Finding("leaked_duplicate", f"same example as {other.path} line {ol}",
                           "an example may appear in only one of train/validation/test; remove it from "
                           "one file (prepare_data.py splits without leakage)", line))
            leaks.setdefault(other.path, []).append([ol, line])
            break


def _system(st: _FileState, sp: str | None, line: int) -> None:
    key = _system_key(sp)
    v = st.system.get(key)
    if v is not None:
        v[0] += 1
    elif len(st.system) < MAX_SYSTEM_VARIANTS:
        st.system[key] = [1, line]
    else:
        st.system_overflow = True


def _count(st: _FileState, counter, limit, batch: list[tuple[int, Any]]) -> None:
    if hasattr(counter, "count_detail"):  # HF chat templates: per example, with the label builder's notes
        results = []
        for line, ex in batch:
            try:
                r, notes = counter.count_detail(ex, limit)
            except UsageError:
                raise
            except Exception as exc:  # noqa: BLE001
                st.add(_count_failed(exc, line))
                results.append(None)
                continue
            for n in notes:
                mi = n.get("message_index")
                st.add(Finding(n.get("code") or "template_note",
                               f"with this model's chat template: {n.get('message', '')}", n.get("hint", ""),
                               line, mi, f"messages[{mi}]" if mi is not None else None, "warning"))
            results.append(r)
        _tally(st, limit, batch, results)
        return
    raw = hasattr(counter, "count_raw")
    fn = counter.count_raw if raw else counter.count_chats
    try:
        results = fn([x for _, x in batch], limit)
    except UsageError:
        raise
    except Exception:  # noqa: BLE001 - count one by one to locate the example that fails
        results = []
        for line, x in batch:
            try:
                results.append(fn([x], limit)[0])
            except UsageError:
                raise
            except Exception as exc:  # noqa: BLE001
                st.add(_count_failed(exc, line))
                results.append(None)
    _tally(st, limit, batch, results)


def _count_failed(exc: Exception, line: int) -> Finding:
    return Finding("token_count_failed", f"could not tokenize ({type(exc).__name__}: "
                   f"{' '.join(str(exc).split())[:120]})",
                   "check the tokenizer/chat template supports this example", line, None, None, "warning")


def _tally(st: _FileState, limit, batch, results) -> None:
    for (line, _), r in zip(batch, results):
        if r is None:
            continue
        total, trainable, lost = r
        st.totals.append(total)
        st.trainables.append(trainable)
        st.total_tokens += total
        st.trainable_tokens += trainable
        if limit is not None and total > limit:
            st.truncated_examples += 1
            st.truncated_trainable += lost
            st.add(Finding("example_too_long", f"{total} tokens > limit {limit}: {lost} trainable token(s) "
                           "would be cut", "shorten or split the example, or raise --max-tokens if the "
                           "model allows it", line, None, None, "warning"))


EVAL_NAME = re.compile(r"(?:^|[_.\-])(?:valid|validation|val|test|eval|dev|held[_-]?out)(?:[_.\-]|$)", re.I)


def file_role(path: str) -> str:
    """``eval`` for a validation/test file (by its name: ``validation.jsonl``, ``test.jsonl``,
    ``data_val.jsonl``, ``eval-set.jsonl`` ...), else ``train``."""
    stem = Path(path).name.rsplit(".", 1)[0]
    return "eval" if EVAL_NAME.search(stem) else "train"


def _finish(st: _FileState, min_examples: int) -> None:
    n = st.examples
    if st.not_jsonl:
        return
    if n < min_examples and st.role == "eval" and n > 0:
        # providers' minimum is for training files; a small evaluation file is valid but noisy
        st.add(Finding("few_eval_examples", f"{n} evaluation example(s): every one moves a score by "
                       f"{100 / n:.0f} points", "use a larger validation/test share, or with under ~100 examples "
                       "in total evaluate by k-fold cross-validation (see data-prep.md, small data sets)",
                       severity="warning"))
    elif n < min_examples:
        st.add(Finding("too_few_examples", f"{n} example(s); at least {min_examples} are required",
                       f"add examples (OpenAI requires >= {MIN_EXAMPLES}; improvements usually start at "
                       f"{RECOMMENDED_EXAMPLES}-100)"))
    elif n < RECOMMENDED_EXAMPLES and st.role == "train":
        st.add(Finding("few_examples", f"only {n} examples", f"aim for at least {RECOMMENDED_EXAMPLES}-100 "
                       "good examples; augment_data.py can help", severity="warning"))
    if len(st.system) > 1:
        variants = sorted(st.system.items(), key=lambda kv: -kv[1][0])
        top_count, top_line = variants[0][1]
        others = sorted(v[1][1] for v in variants[1:])
        none = st.system.get(b"\0none")
        extra = f"; {none[0]} example(s) have no system prompt" if none and variants[0][0] != b"\0none" else ""
        more = "+" if st.system_overflow else ""
        st.add(Finding("system_prompts_differ",
                       f"{len(variants)}{more} different system prompts: the most common is used by {top_count} "
                       f"of {st.usable} examples (first at line {top_line}){extra}; first lines of the others: "
                       + ", ".join(map(str, others[:8])) + (" ..." if len(others) > 8 else ""),
                       "use the exact system prompt you will use in production in every example "
                       "(or none anywhere)", others[0], None, None, "warning"))


def _stats(st: _FileState, counter, limit, limit_source) -> dict:
    return {
        "examples": st.usable,
        "messages": st.messages,
        "total_tokens": st.total_tokens if counter is not None else None,
        "trainable_tokens": st.trainable_tokens if counter is not None else None,
        "tokens_per_example": _percentiles(st.totals),
        "trainable_per_example": _percentiles(st.trainables),
        "max_tokens": limit,
        "max_tokens_source": limit_source,
        "truncated_examples": st.truncated_examples if limit is not None else None,
        "truncated_trainable_tokens": st.truncated_trainable if limit is not None else None,
        "tokenizer": counter.name if counter is not None else None,
    }


# ------------------------------------------------------------------------------ human report

def format_report(doc: dict, max_errors: int | None = None) -> str:
    """The human report: a summary table per file, then the first problems with hints."""
    shown = 20 if max_errors is None else max_errors
    out: list[str] = []
    for f in doc["files"]:
        s = f["stats"]
        status = cli.color("VALID", "green") if f["valid"] else cli.color("INVALID", "red")
        out.append(f"{f['file']}: {status} ({f['format'] or 'unknown format'}, {f['examples']} examples, "
                   f"{f['error_count']} errors, {f['warning_count']} warnings)")
        rows = [("examples (usable)", f"{f['examples']:,} ({f['usable_examples']:,})"),
                ("messages", f"{s['messages']:,}")]
        if s["tokenizer"]:
            rows += [("tokens total / trainable", f"{s['total_tokens']:,} / {s['trainable_tokens']:,}")]
            for key, label in (("tokens_per_example", "tokens per example"),
                               ("trainable_per_example", "trainable per example")):
                d = s[key]
                if d:
                    rows.append((label, f"min {d['min']:,}  p50 {d['p50']:,}  p90 {d['p90']:,}  "
                                        f"p99 {d['p99']:,}  max {d['max']:,}"))
            if s["max_tokens"]:
                rows.append((f"over {s['max_tokens']:,} tokens",
                             f"{s['truncated_examples']:,} examples, {s['truncated_trainable_tokens']:,} "
                             f"trainable tokens cut ({s['max_tokens_source']})"))
            rows.append(("tokenizer", s["tokenizer"]))
        out.append(cli.table(["metric", "value"], rows, "ll"))
        if f["counts"]:
            sev = {}
            for x in f["errors"] + f["warnings"]:
                sev.setdefault(x["code"], x["severity"])
            crow = sorted(f["counts"].items(), key=lambda kv: (sev.get(kv[0]) != "error", -kv[1], kv[0]))
            out.append(cli.table(["problem", "severity", "count"],
                                 [(c, sev.get(c, "error"), n) for c, n in crow], "llr"))
        for label, items, total in (("errors", f["errors"], f["error_count"]),
                                    ("warnings", f["warnings"], f["warning_count"])):
            if not total:
                continue
            out.append(f"first {min(shown, total)} of {total} {label} ({_see_all(f['file'], total)}):"
                       if total > shown else f"{label}:")
            for x in items[:shown]:
                fd = Finding(**x)
                out.append(f"  {fd.one_line()}")
        out.append("")
    if doc.get("leakage"):
        out.append(cli.color("leakage between files:", "red"))
        for lk in doc["leakage"]:
            pairs = ", ".join(f"{a}->{b}" for a, b in lk["pairs"][:5])
            out.append(f"  {lk['count']} example(s) of {lk['file_b']} also in {lk['file_a']} (lines {pairs}"
                       f"{' ...' if lk['count'] > 5 else ''})")
        out.append("")
    verdict = "valid (warnings do not block)" if doc["valid"] else "NOT valid: fix the errors above (exit 1)"
    out.append(f"result: {verdict}")
    return "\n".join(out)


def _see_all(file: str, total: int) -> str:
    """The exact command that lists every finding of a file whose text report was cut."""
    script = Path(__file__).resolve().parents[1] / "validate_jsonl.py"
    if total > STORE_CAP:
        return (f"the first {STORE_CAP:,} of them: python3 {script} {file} --max-errors {STORE_CAP}; "
                f"fix those and rerun")
    return f"all of them: python3 {script} {file} --max-errors {total}, or add --json"


def summary(doc: dict) -> dict:
    """Short result for the audit log."""
    return {"valid": doc["valid"],
            "files": [{"file": f["file"], "examples": f["examples"], "errors": f["error_count"],
                       "warnings": f["warning_count"]} for f in doc["files"]],
            "leaked": sum(lk["count"] for lk in doc.get("leakage", []))}


def iter_usable(path: str | os.PathLike, fmt: str = "auto") -> Iterable[tuple[int, chat.Example]]:
    """Yield (line, model) for the usable lines of a file (for tools that skip bad lines)."""
    for rl in iter_lines(path):
        if rl.error:
            continue
        m, _ = check_line(rl.obj, None if fmt == "auto" else fmt, rl.line)
        if m is not None:
            yield rl.line, m
