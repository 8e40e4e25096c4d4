"""Input readers behind a small registry: one module per source family.

- ``chat_jsonl``  JSON/JSONL container; OpenAI chat lines and ShareGPT/FastChat conversations
- ``instruction`` Alpaca / prompt-completion / preference rows (inside a JSON/JSONL file)
- ``tabular``     CSV / TSV files
- ``openclaw``    OpenClaw agent sessions (parsing: ``finetune_kit/openclaw_sessions.py``)

Two registries:

- :data:`FILE_READERS`: input kind (``json``, ``csv``, ``tsv``, ``openclaw``) -> reader
  ``(path, kind, ReadContext, start_index) -> Iterable[Row]``; :func:`file_kind` picks the kind.
- :data:`ROW_FORMATS`: row format name -> :class:`RowFormat` (``detect(obj) -> bool`` and
  ``convert(obj, counts, key) -> chat.ChatExample``), tried in registration order by
  :func:`detect_row_format` when ``--from auto``.

Adding a format = one module that calls :func:`register_row_format` / :func:`register_file_reader`
and one import line below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import chat
from .common import (ROLE_ALIASES, MessageBuilder, ReadContext, Row, Unconvertible, bump, extra_metadata,
                     make_example, normalise_tools, text_of)

Converter = Callable[[dict, dict, str], chat.ChatExample]
FileReader = Callable[[Path, str, ReadContext, int], Iterable[Row]]


@dataclass(frozen=True)
class RowFormat:
    name: str
    detect: Callable[[dict[str, Any]], bool]
    convert: Converter


ROW_FORMATS: dict[str, RowFormat] = {}
FILE_READERS: dict[str, FileReader] = {}


def register_row_format(name: str, detect: Callable[[dict[str, Any]], bool], convert: Converter) -> None:
    ROW_FORMATS[name] = RowFormat(name, detect, convert)


def register_file_reader(kind: str, reader: FileReader) -> None:
    FILE_READERS[kind] = reader


def detect_row_format(obj: Any) -> str | None:
    """The first registered row format whose ``detect`` accepts ``obj`` (None: no format fits)."""
    if not isinstance(obj, dict):
        return None
    for f in ROW_FORMATS.values():
        if f.detect(obj):
            return f.name
    return None


def convert_row(fmt: str, obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    if fmt not in ROW_FORMATS:
        raise Unconvertible("unknown_format", f"--from {fmt} cannot read a JSON row")
    return ROW_FORMATS[fmt].convert(obj, counts, key)


def file_kind(path: Path, fmt: str) -> str:
    """The reader for an input: ``--from`` when given, else by suffix / content (``json`` default)."""
    if fmt != "auto":
        return fmt
    from .. import openclaw_sessions as oc

    suffix = path.suffix.lower()
    if suffix in (".csv",):
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if path.is_dir() or suffix == ".sqlite" or oc.looks_like_openclaw(path):
        return "openclaw"
    return "json"


def reader_for(kind: str) -> FileReader:
    """The file reader of an input kind; every row format is read by the JSON/JSONL container."""
    return FILE_READERS.get(kind) or FILE_READERS["json"]


# ---- registrations (order of the row formats = order of auto-detection)
from . import chat_jsonl, instruction, openclaw, tabular  # noqa: E402

register_row_format("sharegpt", chat_jsonl.detect_sharegpt, chat_jsonl.convert_sharegpt)
register_row_format("chat", chat_jsonl.detect_chat, chat_jsonl.convert_chat)
register_row_format("alpaca", instruction.detect_alpaca, instruction.convert_alpaca)
register_row_format("preference", instruction.detect_preference, instruction.convert_preference)
register_row_format("prompt-completion", instruction.detect_prompt_completion, instruction.convert_prompt_completion)
register_file_reader("json", chat_jsonl.read_json_file)
register_file_reader("csv", tabular.read_tabular_file)
register_file_reader("tsv", tabular.read_tabular_file)
register_file_reader("openclaw", openclaw.read_openclaw_input)

__all__ = ["ROLE_ALIASES", "FILE_READERS", "ROW_FORMATS", "MessageBuilder", "ReadContext", "Row", "RowFormat",
           "Unconvertible", "bump", "convert_row", "detect_row_format", "extra_metadata", "file_kind",
           "make_example", "normalise_tools", "reader_for", "register_file_reader", "register_row_format",
           "text_of"]
