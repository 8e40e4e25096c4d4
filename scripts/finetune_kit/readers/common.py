"""What every reader shares: the row record, the normalising message builder, counters.

A reader turns one input into :class:`Row` objects; a row converter turns one source object into a
``chat.ChatExample`` through :class:`MessageBuilder`, which normalises loosely shaped messages
(role aliases, object tool arguments -> JSON strings, legacy ``function_call`` ...) and counts
every normalisation in ``counts`` (the manifest's ``normalisation`` section).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .. import chat

ROLE_ALIASES = {
    "user": "user", "human": "user", "humans": "user", "prompter": "user", "question": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant",
    "chatgpt": "assistant", "claude": "assistant", "answer": "assistant",
    "system": "system", "developer": "developer",
    "tool": "tool", "function": "function", "observation": "tool", "function_response": "tool",
    "ipython": "tool", "toolresult": "tool", "tool_result": "tool",
    "function_call": "function_call", "tool_call": "function_call", "tool_calls": "function_call",
}


class Unconvertible(Exception):
    """A row that cannot become a chat line (``code`` is stable, message says why)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Row:
    index: int                    # 0-based position over all inputs (input order)
    source: str                   # input file name (basename) or "openclaw"
    line: int | None              # 1-based line / record number (None for OpenClaw)
    fmt: str | None = None
    raw: Any = None               # the source object (dict/list) or text when unreadable
    fields: dict[str, Any] = field(default_factory=dict)  # source row fields for --group-by etc.
    example: chat.ChatExample | None = None
    error: dict[str, Any] | None = None
    session: str | None = None    # OpenClaw session id (+ window)
    line_obj: dict[str, Any] | None = None  # the output line (example.to_json()), built once
    work: dict[str, Any] | None = None  # CSV: the mapped prompt/completion/system and unused columns

    def ref(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source}
        if self.line is not None:
            d["line"] = self.line
        if self.session is not None:
            d["session"] = self.session
        return d

    def ref_text(self) -> str:
        if self.session is not None:
            return f"openclaw session {self.session}"
        return f"{self.source}:{self.line}"


def bump(counts: dict[str, int], key: str, n: int = 1) -> None:
    if n:
        counts[key] = counts.get(key, 0) + n


@dataclass
class ReadContext:
    """What a file reader may use: the options (``prepare.Options``), the run's normalisation
    counters, the OpenClaw statistics and the ``--tools`` definitions."""

    opts: Any
    counts: dict[str, int]
    stats: dict[str, Any]
    tools: list[dict[str, Any]] | None = None


# ------------------------------------------------------------------------------ normalisation


def _json_args(args: Any, counts: dict[str, int]) -> str:
    """Tool-call arguments as a JSON string that decodes to an object (when possible)."""
    if isinstance(args, (dict, list)):
        bump(counts, "tool_arguments_object_to_string")
        return json.dumps(args, ensure_ascii=False)
    if args is None:
        bump(counts, "tool_arguments_missing_to_empty_object")
        return "{}"
    if isinstance(args, str):
        try:
            inner = json.loads(args)
        except ValueError:
            return args
        if isinstance(inner, str):  # double-encoded: "\"{\\\"a\\\": 1}\""
            try:
                obj = json.loads(inner)
            except ValueError:
                return args
            if isinstance(obj, dict):
                bump(counts, "tool_arguments_double_encoded_fixed")
                return inner
        return args
    return json.dumps(args)


def _tool_call(tc: Any, counts: dict[str, int], make_id) -> dict[str, Any]:
    if not isinstance(tc, dict):
        raise Unconvertible("tool_call_not_object", "a tool call is not an object")
    fn = tc.get("function") if isinstance(tc.get("function"), dict) else None
    if fn is None:  # flat {"name", "arguments"} / {"name", "parameters"} / {"name", "input"}
        fn = {"name": tc.get("name"), "arguments": tc.get("arguments", tc.get("parameters", tc.get("input")))}
        bump(counts, "tool_calls_flat_to_function")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Unconvertible("tool_call_without_name", "a tool call has no function name")
    cid = tc.get("id")
    if not isinstance(cid, str) or not cid:
        cid = make_id()
        bump(counts, "tool_call_ids_added")
    if tc.get("type") not in (None, "function"):
        raise Unconvertible("tool_call_wrong_type", f"tool call type {tc.get('type')!r} is not 'function'")
    return {"id": cid, "type": "function",
            "function": {"name": name, "arguments": _json_args(fn.get("arguments"), counts)}}


def _content(value: Any, counts: dict[str, int]) -> Any:
    """A message content as a string or a list of text parts (non-text parts dropped, counted)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        bump(counts, "content_number_to_string")
        return str(value)
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        parts = []
        for p in value:
            if isinstance(p, str):
                parts.append({"type": "text", "text": p})
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append({"type": "text", "text": p["text"]})
            else:
                bump(counts, "non_text_parts_dropped")
        if len(parts) == 1:
            return parts[0]["text"]
        return parts
    raise Unconvertible("content_wrong_type", f"message content is a {type(value).__name__}")


def text_of(content: Any) -> str:
    return chat.content_text(content)


def normalise_tools(value: Any, counts: dict[str, int]) -> list[dict[str, Any]] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
            bump(counts, "tools_json_string_parsed")
        except ValueError as exc:
            raise Unconvertible("tools_invalid", "\"tools\" is a string that is not JSON") from exc
    if not isinstance(value, list):
        raise Unconvertible("tools_invalid", "\"tools\" is not a list")
    out = []
    for t in value:
        if not isinstance(t, dict):
            raise Unconvertible("tools_invalid", "a tool definition is not an object")
        if isinstance(t.get("function"), dict):
            out.append({"type": "function", "function": t["function"]})
        elif isinstance(t.get("name"), str):
            out.append({"type": "function", "function": t})
            bump(counts, "tools_wrapped_as_function")
        else:
            raise Unconvertible("tools_invalid", "a tool definition has no function name")
    return out


class MessageBuilder:
    """Builds chat messages from loosely-shaped message dicts, pairing tool results with calls."""

    def __init__(self, counts: dict[str, int], row_key: str):
        self.counts = counts
        self.out: list[dict[str, Any]] = []
        self.pending: list[str] = []  # tool call ids awaiting a result, in call order
        self.n_ids = 0
        self.row_key = row_key

    def make_id(self) -> str:
        self.n_ids += 1
        return f"call_{self.row_key}_{self.n_ids}"

    def add(self, m: Any) -> None:
        c = self.counts
        if not isinstance(m, dict):
            raise Unconvertible("message_not_object", "a message is not an object")
        role_raw = m.get("role", m.get("from", m.get("speaker")))
        if not isinstance(role_raw, str):
            raise Unconvertible("role_missing", "a message has no role")
        role = ROLE_ALIASES.get(role_raw.strip().lower().replace(" ", "_"))
        if role is None:
            raise Unconvertible("role_unknown", f"unknown role {role_raw[:40]!r}")
        if role != role_raw:
            bump(c, "role_aliases_mapped")
            bump(c, f"role_alias:{role_raw.strip().lower()}->{'assistant' if role == 'function_call' else role}")
        content_key = "content" if "content" in m else "value" if "value" in m else "text" if "text" in m else None
        content = _content(m.get(content_key), c) if content_key else None
        if role == "function_call":  # ShareGPT function_call turn: value is {"name", "arguments"} JSON
            self._function_call_turn(content)
            return
        msg: dict[str, Any] = {"role": role}
        dropped = [k for k in m if k not in ("role", "from", "speaker", "content", "value", "text", "name",
                                             "tool_calls", "tool_call_id", "weight", "function_call")]
        if dropped:
            bump(c, "message_keys_dropped", len(dropped))
        if role == "assistant":
            calls = []
            if m.get("tool_calls"):
                raw = m["tool_calls"] if isinstance(m["tool_calls"], list) else [m["tool_calls"]]
                calls = [_tool_call(tc, c, self.make_id) for tc in raw]
            if isinstance(m.get("function_call"), dict):  # legacy OpenAI function calling
                calls.append(_tool_call({"function": m["function_call"]}, c, self.make_id))
                bump(c, "function_call_to_tool_calls")
            if calls:
                msg["tool_calls"] = calls
                self.pending.extend(tc["id"] for tc in calls)
            if m.get("weight") in (0, 1) and not isinstance(m.get("weight"), bool):
                msg["weight"] = m["weight"]
        if role in ("tool", "function"):
            cid = m.get("tool_call_id")
            if not isinstance(cid, str) or not cid:
                if self.pending:
                    cid = self.pending.pop(0)
                    bump(c, "tool_results_paired_with_calls")
                else:
                    raise Unconvertible("tool_result_without_call",
                                        "a tool/function result has no tool_call_id and no preceding call")
            elif cid in self.pending:
                self.pending.remove(cid)
            if role == "function":
                bump(c, "function_role_to_tool")
            msg["role"] = "tool"
            msg["tool_call_id"] = cid
            msg["content"] = content if content is not None else ""
            self.out.append(msg)
            return
        if isinstance(m.get("name"), str) and role in ("user", "assistant", "system", "developer"):
            msg["name"] = m["name"]
        if content is not None:
            msg["content"] = content
        if not text_of(content).strip() and not msg.get("tool_calls"):
            bump(c, "whitespace_turns_removed")
            return
        if role == "assistant" and msg.get("tool_calls") and not text_of(content).strip():
            msg.pop("content", None)
        self.out.append(msg)

    def _function_call_turn(self, content: Any) -> None:
        text = text_of(content)
        try:
            val = json.loads(text)
        except ValueError as exc:
            raise Unconvertible("function_call_invalid", "a function_call turn is not JSON "
                                "({\"name\": ..., \"arguments\": ...})") from exc
        calls = val if isinstance(val, list) else [val]
        made = [_tool_call({"function": {"name": x.get("name"), "arguments": x.get("arguments",
                                                                                     x.get("parameters"))}}
                           if isinstance(x, dict) else x, self.counts, self.make_id) for x in calls]
        bump(self.counts, "function_call_turns_to_tool_calls")
        # merge into a directly preceding assistant text turn (ShareGPT writes them apart)
        if self.out and self.out[-1]["role"] == "assistant" and not self.out[-1].get("tool_calls"):
            self.out[-1]["tool_calls"] = made
        else:
            self.out.append({"role": "assistant", "tool_calls": made})
        self.pending.extend(tc["id"] for tc in made)


def make_example(messages: list[dict[str, Any]], *, tools: Any = None, parallel: Any = None,
             metadata: dict[str, Any] | None = None) -> chat.ChatExample:
    if not messages:
        raise Unconvertible("no_messages", "no non-empty message left")
    try:
        return chat.ChatExample(messages=[chat.Message(**m) for m in messages], tools=tools,
                                parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
                                metadata=metadata or None)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e.get("loc", ()))
        raise Unconvertible("schema_error", f"{e.get('msg', 'invalid')} at {loc}") from exc



def extra_metadata(obj: dict[str, Any], used: set[str], counts: dict[str, int]) -> dict[str, Any]:
    md = dict(obj["metadata"]) if isinstance(obj.get("metadata"), dict) else {}
    extra = {k: v for k, v in obj.items() if k not in used and k != "metadata"}
    if extra:
        bump(counts, "top_level_keys_to_metadata", len(extra))
        for k, v in extra.items():
            md.setdefault(k, v)
    return md
