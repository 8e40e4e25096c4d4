"""Tabular inputs: CSV and TSV files with a header row; the prompt/completion/system columns
are picked by name (``--prompt-column`` ...) or from common names."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Iterator

from .. import chat, jsonl
from ..errors import UsageError
from .common import MessageBuilder, ReadContext, Row, Unconvertible, bump, make_example

CSV_PROMPT = ("prompt", "instruction", "question", "input", "query", "user", "text")
CSV_COMPLETION = ("completion", "response", "answer", "output", "assistant", "target", "reply")
CSV_SYSTEM = ("system", "system_prompt")


def _pick(header: list[str], explicit: str | None, candidates: Iterable[str], what: str, flag: str,
          required: bool) -> str | None:
    if explicit:
        if explicit not in header:
            raise UsageError(f"{flag} {explicit!r} is not a column; columns: {', '.join(header)[:300]}")
        return explicit
    low = {h.strip().lower(): h for h in header}
    for c in candidates:
        if c in low:
            return low[c]
    if required:
        raise UsageError(f"no {what} column found (tried {', '.join(candidates)}); columns: "
                         f"{', '.join(header)[:300]}; pass {flag}")
    return None



def read_csv_rows(path: Path, delimiter: str, opts, start: int, counts: dict[str, int]) -> Iterator[Row]:
    jsonl.check_readable(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}); re-save the file as UTF-8 CSV") from exc
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{path}: empty file") from None
    except csv.Error as exc:
        raise UsageError(f"{path}: not readable as {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})") from exc
    header = [h.strip() for h in header]
    pcol = _pick(header, opts.prompt_column, CSV_PROMPT, "prompt", "--prompt-column", True)
    ccol = _pick(header, opts.completion_column, [c for c in CSV_COMPLETION if c != (pcol or "").lower()],
                 "completion", "--completion-column", True)
    scol = _pick(header, opts.system_column, CSV_SYSTEM, "system", "--system-column", False)
    icol = opts.input_column
    if icol and icol not in header:
        raise UsageError(f"--input-column {icol!r} is not a column; columns: {', '.join(header)[:300]}")
    if icol is None and pcol.lower() == "instruction" and "input" in {h.lower() for h in header}:
        icol = next(h for h in header if h.lower() == "input")
    n = start
    prev_end = reader.line_num
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise UsageError(f"{path}: line {reader.line_num + 1}: malformed {('TSV' if delimiter == chr(9) else 'CSV')} "
                             f"({exc})") from exc
        line = prev_end + 1
        prev_end = reader.line_num
        if not any(x.strip() for x in rec):
            bump(counts, "blank_records_skipped")
            continue
        fields = {h: (rec[i] if i < len(rec) else "") for i, h in enumerate(header)}
        row = Row(index=n, source=path.name, line=line, raw=fields, fields=fields,
                  fmt="tsv" if delimiter == "\t" else "csv")
        n += 1
        if len(rec) != len(header):
            row.error = {"reason": "unconvertible", "code": "csv_column_count",
                         "detail": f"{len(rec)} fields, header has {len(header)}"}
            yield row
            continue
        prompt = fields[pcol]
        if icol and fields.get(icol, "").strip():
            prompt = f"{prompt}\n\n{fields[icol]}"
        used = {pcol, ccol, scol, icol}
        row.work = {"prompt": prompt, "completion": fields[ccol],
                    "system": fields[scol] if scol and fields.get(scol, "").strip() else None,
                    "extra": {k: v for k, v in fields.items() if k not in used and v != ""}}
        yield row


def csv_example(row: Row, counts: dict[str, int]) -> chat.ChatExample:
    obj = row.work
    if not obj["prompt"].strip():
        raise Unconvertible("prompt_missing", "the prompt cell is empty")
    if not obj["completion"].strip():
        raise Unconvertible("completion_missing", "the completion cell is empty: nothing to learn")
    msgs = []
    if obj.get("system"):
        msgs.append({"role": "system", "content": obj["system"]})
    msgs += [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
    b = MessageBuilder(counts, str(row.index))
    for m in msgs:
        b.add(m)
    return make_example(b.out, metadata=dict(obj["extra"]) or None)



def read_tabular_file(path: Path, kind: str, ctx: ReadContext, start: int) -> Iterator[Row]:
    """The file reader of ``csv``/``tsv`` inputs."""
    return read_csv_rows(path, "\t" if kind == "tsv" else ",", ctx.opts, start, ctx.counts)
