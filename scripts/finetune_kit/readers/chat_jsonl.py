"""Chat-shaped JSON rows: OpenAI chat lines (``messages``) and ShareGPT/FastChat
(``conversations`` with ``from``/``value``), plus the container every JSON row format shares:
a JSONL file, or one JSON array."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .. import chat, jsonl
from .common import (MessageBuilder, ReadContext, Row, Unconvertible, bump, extra_metadata, make_example,
                     normalise_tools)

TOP_CHAT = {"messages", "tools", "parallel_tool_calls", "metadata", "functions"}


def read_json_rows(path: Path, start: int) -> Iterator[Row]:
    """JSONL lines, or the elements of a file holding one JSON array (line = 1-based element index)."""
    jsonl.check_readable(path)
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"["):
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, list):
            for i, obj in enumerate(data):
                yield Row(index=start + i, source=path.name, line=i + 1, raw=obj,
                          fields=obj if isinstance(obj, dict) else {})
            return
    n = start
    for rl in jsonl.iter_lines(path):
        if rl.error == "blank_line":
            continue
        if rl.error:
            text = rl.text if rl.text is not None else rl.raw.decode("utf-8", "replace")
            yield Row(index=n, source=path.name, line=rl.line, raw=text,
                      error={"reason": "unreadable", "code": rl.error, "detail": rl.detail})
        else:
            yield Row(index=n, source=path.name, line=rl.line, raw=rl.obj,
                      fields=rl.obj if isinstance(rl.obj, dict) else {})
        n += 1


def read_json_file(path: Path, kind: str, ctx: ReadContext, start: int) -> Iterator[Row]:
    """The file reader of JSON/JSONL inputs: rows carry ``fmt`` when ``--from`` names a row format."""
    for r in read_json_rows(path, start):
        r.fmt = None if kind in ("json", "auto") else kind
        yield r


def detect_chat(obj: dict[str, Any]) -> bool:
    return "messages" in obj


def detect_sharegpt(obj: dict[str, Any]) -> bool:
    return isinstance(obj.get("conversations"), list) or isinstance(obj.get("conversation"), list)


def convert_chat(obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    msgs = obj.get("messages")
    if not isinstance(msgs, list):
        raise Unconvertible("messages_not_list", "\"messages\" is not a list")
    b = MessageBuilder(counts, key)
    for m in msgs:
        b.add(m)
    tools = normalise_tools(obj.get("tools"), counts)
    if tools is None and obj.get("functions"):
        tools = normalise_tools([{"type": "function", "function": f} for f in obj["functions"] if isinstance(f, dict)], counts)
        bump(counts, "functions_to_tools")
    return make_example(b.out, tools=tools, parallel=obj.get("parallel_tool_calls"),
                    metadata=extra_metadata(obj, TOP_CHAT, counts))


def convert_sharegpt(obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    conv = obj.get("conversations", obj.get("conversation"))
    if not isinstance(conv, list):
        raise Unconvertible("conversations_not_list", "\"conversations\" is not a list")
    b = MessageBuilder(counts, key)
    if isinstance(obj.get("system"), str) and obj["system"].strip():
        b.add({"role": "system", "content": obj["system"]})
    for m in conv:
        b.add(m)
    tools = normalise_tools(obj.get("tools"), counts)
    return make_example(b.out, tools=tools,
                    metadata=extra_metadata(obj, {"conversations", "conversation", "system", "tools"}, counts))
