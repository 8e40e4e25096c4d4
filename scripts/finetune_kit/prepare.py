"""Raw exports and agent logs -> clean, deduplicated, leak-free train/validation/test chat JSONL.

Pipeline (``prepare(opts)``; ``scripts/prepare_data.py`` is the CLI):

1. read   every input row: JSONL lines (or the elements of a JSON array file), CSV/TSV records,
          or OpenClaw session windows. Rows that cannot be read are kept as removed records.
2. convert each row to an OpenAI chat line through the chat.py models (``chat.Message``,
          ``chat.ChatExample`` ...), normalising on the way (role aliases, object tool
          arguments -> JSON strings, legacy ``function_call``, whitespace-only turns ...) and
          counting every normalisation; ``--system`` adds/replaces the system prompt; the
          result is checked with ``chat.check_record`` (errors -> removed as unconvertible).
3. dedup  exact (normalised text) and near-duplicate (``dedup.NearDupIndex``: datasketch MinHash
          LSH on word 3-shingles of the conversation without system prompt, verified by exact
          Jaccard); the first occurrence is kept; removed
          rows go to removed.jsonl with the reason and the row they duplicate.
4. split  deterministic by seed into train/validation/test; ``--group-by`` groups and (with
          ``--keep-near-dups``) near-duplicate clusters are units that never straddle splits
          (union-find), optional ``--stratify``; never an empty train split.
5. verify leakage across splits is re-checked (exact, near-duplicate, group) and reported.
6. report data mix (multi-turn, tool calls, refusal-like answers by ``REFUSAL_PATTERNS``, tags)
          against a target mix; manifest.json; the validator library runs on the outputs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydantic import ValidationError

from . import chat, cli, jsonl
from .dedup import NUM_PERM, SHINGLE, NearDupIndex, lsh_params
from .errors import BlockingProblem, UsageError
from .spill import assign_sizes, split_targets

FORMATS = ("auto", "chat", "prompt-completion", "alpaca", "sharegpt", "csv", "tsv", "openclaw")
SPLITS = ("train", "validation", "test")
DEFAULT_TARGET_MIX = {"normal": 0.30, "edge": 0.20, "refusal": 0.20, "multi_turn": 0.15, "tool_calls": 0.15}

# Refusal-like answers (documented in data-prep.md). Matched case-insensitively against the first
# 400 characters of each assistant text; one match makes the example "refusal".
REFUSAL_PATTERNS = [
    r"\bI(?:'m| am) (?:sorry|afraid)[,.]? (?:but )?I (?:can(?:'|no)t|cannot|won't|will not|am unable|'m unable|am not able|'m not able)\b",
    r"\bI (?:can(?:'|no)?t|cannot|won't|will not) (?:help|assist|provide|do|comply|create|write|share|generate|give|support)\b(?: you)?(?: with)?",
    r"\bI(?:'m| am) (?:not able|unable) to (?:help|assist|provide|comply|do|create|write|share|generate)\b",
    r"\bI must (?:decline|refuse)\b",
    r"\bI(?:'m| am) not (?:allowed|permitted|able) to\b",
    r"\b(?:as an ai|as a language model)\b",
    r"\b(?:against|violates?) (?:my|our|the) (?:guidelines|polic(?:y|ies)|usage policy|terms)\b",
    r"\bI (?:can(?:'|no)?t|cannot|won't) (?:help|assist) with (?:that|this)\b",
]
_REFUSAL_RE = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.IGNORECASE)

ROLE_ALIASES = {
    "user": "user", "human": "user", "humans": "user", "prompter": "user", "question": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant",
    "chatgpt": "assistant", "claude": "assistant", "answer": "assistant",
    "system": "system", "developer": "developer",
    "tool": "tool", "function": "function", "observation": "tool", "function_response": "tool",
    "ipython": "tool", "toolresult": "tool", "tool_result": "tool",
    "function_call": "function_call", "tool_call": "function_call", "tool_calls": "function_call",
}
CSV_PROMPT = ("prompt", "instruction", "question", "input", "query", "user", "text")
CSV_COMPLETION = ("completion", "response", "answer", "output", "assistant", "target", "reply")
CSV_SYSTEM = ("system", "system_prompt")


class Unconvertible(Exception):
    """A row that cannot become a chat line (``code`` is stable, message says why)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------ options / rows


@dataclass
class Options:
    inputs: list[str]
    output_dir: str
    fmt: str = "auto"
    system: str | None = None
    prompt_column: str | None = None
    completion_column: str | None = None
    system_column: str | None = None
    input_column: str | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42
    group_by: str | None = None
    stratify: str | None = None
    near_dup: bool = True
    near_dup_threshold: float = 0.85
    keep_near_dups: bool = False
    tag_field: str | None = None
    target_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TARGET_MIX))
    agent_id: str | None = None
    date_range: str | None = None
    min_samples: int | None = None
    keep_inbound_metadata: bool = False
    tools_file: str | None = None
    force: bool = False
    validate: bool = True
    # "disk": the bounded-memory engine (spill.py); "memory": everything in RAM (the reference
    # implementation the tests and bench/prepare.py compare the disk engine against)
    engine: str = "disk"
    workers: int | None = None  # MinHash worker processes for the disk engine (None: cores - 1)


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


def _bump(counts: dict[str, int], key: str, n: int = 1) -> None:
    if n:
        counts[key] = counts.get(key, 0) + n


# ------------------------------------------------------------------------------ parsing helpers


def parse_split(spec: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in str(spec).split(",")]
    except ValueError as exc:
        raise UsageError(f"--split {spec!r}: expected three numbers like 0.8,0.1,0.1") from exc
    if len(parts) != 3 or any(p < 0 or math.isnan(p) for p in parts) or sum(parts) <= 0:
        raise UsageError(f"--split {spec!r}: expected three non-negative numbers like 0.8,0.1,0.1")
    if parts[0] <= 0:
        raise UsageError(f"--split {spec!r}: the train share must be > 0")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def parse_target_mix(spec: str | None) -> dict[str, float]:
    if not spec:
        return dict(DEFAULT_TARGET_MIX)
    out: dict[str, float] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError(f"--target-mix: {part!r} is not NAME=SHARE (e.g. refusal=0.2)")
        k, v = part.split("=", 1)
        try:
            f = float(v)
        except ValueError as exc:
            raise UsageError(f"--target-mix: {v!r} is not a number") from exc
        if not 0 <= f <= 1:
            raise UsageError(f"--target-mix: share for {k!r} must be between 0 and 1")
        out[_category(k.strip())] = f
    if not out:
        raise UsageError("--target-mix is empty")
    return out


def _category(name: str) -> str:
    n = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    return {"refusals": "refusal", "multiturn": "multi_turn", "multi": "multi_turn", "tool_call": "tool_calls",
            "tools": "tool_calls", "tool_use": "tool_calls", "edge_case": "edge", "edge_cases": "edge",
            "edgecase": "edge"}.get(n, n)


def lookup(fields: dict[str, Any], metadata: dict[str, Any] | None, name: str) -> Any:
    """A field for --group-by/--stratify/--tag-field: top-level of the source row, then its
    ``metadata``, then the output line's metadata; ``a.b`` walks nested objects."""
    for src in (fields, fields.get("metadata") if isinstance(fields.get("metadata"), dict) else None, metadata):
        if not isinstance(src, dict):
            continue
        cur: Any = src
        ok = True
        for part in name.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                ok = False
                break
        if ok and cur is not None:
            return cur
    return None


def _hashable(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)


# ------------------------------------------------------------------------------ normalisation


def _json_args(args: Any, counts: dict[str, int]) -> str:
    """Tool-call arguments as a JSON string that decodes to an object (when possible)."""
    if isinstance(args, (dict, list)):
        _bump(counts, "tool_arguments_object_to_string")
        return json.dumps(args, ensure_ascii=False)
    if args is None:
        _bump(counts, "tool_arguments_missing_to_empty_object")
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
                _bump(counts, "tool_arguments_double_encoded_fixed")
                return inner
        return args
    return json.dumps(args)


def _tool_call(tc: Any, counts: dict[str, int], make_id) -> dict[str, Any]:
    if not isinstance(tc, dict):
        raise Unconvertible("tool_call_not_object", "a tool call is not an object")
    fn = tc.get("function") if isinstance(tc.get("function"), dict) else None
    if fn is None:  # flat {"name", "arguments"} / {"name", "parameters"} / {"name", "input"}
        fn = {"name": tc.get("name"), "arguments": tc.get("arguments", tc.get("parameters", tc.get("input")))}
        _bump(counts, "tool_calls_flat_to_function")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Unconvertible("tool_call_without_name", "a tool call has no function name")
    cid = tc.get("id")
    if not isinstance(cid, str) or not cid:
        cid = make_id()
        _bump(counts, "tool_call_ids_added")
    if tc.get("type") not in (None, "function"):
        raise Unconvertible("tool_call_wrong_type", f"tool call type {tc.get('type')!r} is not 'function'")
    return {"id": cid, "type": "function",
            "function": {"name": name, "arguments": _json_args(fn.get("arguments"), counts)}}


def _content(value: Any, counts: dict[str, int]) -> Any:
    """A message content as a string or a list of text parts (non-text parts dropped, counted)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _bump(counts, "content_number_to_string")
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
                _bump(counts, "non_text_parts_dropped")
        if len(parts) == 1:
            return parts[0]["text"]
        return parts
    raise Unconvertible("content_wrong_type", f"message content is a {type(value).__name__}")


def _text_of(content: Any) -> str:
    return chat.content_text(content)


def _tools(value: Any, counts: dict[str, int]) -> list[dict[str, Any]] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
            _bump(counts, "tools_json_string_parsed")
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
            _bump(counts, "tools_wrapped_as_function")
        else:
            raise Unconvertible("tools_invalid", "a tool definition has no function name")
    return out


class _MessageBuilder:
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
            _bump(c, "role_aliases_mapped")
            _bump(c, f"role_alias:{role_raw.strip().lower()}->{'assistant' if role == 'function_call' else role}")
        content_key = "content" if "content" in m else "value" if "value" in m else "text" if "text" in m else None
        content = _content(m.get(content_key), c) if content_key else None
        if role == "function_call":  # ShareGPT function_call turn: value is {"name", "arguments"} JSON
            self._function_call_turn(content)
            return
        msg: dict[str, Any] = {"role": role}
        dropped = [k for k in m if k not in ("role", "from", "speaker", "content", "value", "text", "name",
                                             "tool_calls", "tool_call_id", "weight", "function_call")]
        if dropped:
            _bump(c, "message_keys_dropped", len(dropped))
        if role == "assistant":
            calls = []
            if m.get("tool_calls"):
                raw = m["tool_calls"] if isinstance(m["tool_calls"], list) else [m["tool_calls"]]
                calls = [_tool_call(tc, c, self.make_id) for tc in raw]
            if isinstance(m.get("function_call"), dict):  # legacy OpenAI function calling
                calls.append(_tool_call({"function": m["function_call"]}, c, self.make_id))
                _bump(c, "function_call_to_tool_calls")
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
                    _bump(c, "tool_results_paired_with_calls")
                else:
                    raise Unconvertible("tool_result_without_call",
                                        "a tool/function result has no tool_call_id and no preceding call")
            elif cid in self.pending:
                self.pending.remove(cid)
            if role == "function":
                _bump(c, "function_role_to_tool")
            msg["role"] = "tool"
            msg["tool_call_id"] = cid
            msg["content"] = content if content is not None else ""
            self.out.append(msg)
            return
        if isinstance(m.get("name"), str) and role in ("user", "assistant", "system", "developer"):
            msg["name"] = m["name"]
        if content is not None:
            msg["content"] = content
        if not _text_of(content).strip() and not msg.get("tool_calls"):
            _bump(c, "whitespace_turns_removed")
            return
        if role == "assistant" and msg.get("tool_calls") and not _text_of(content).strip():
            msg.pop("content", None)
        self.out.append(msg)

    def _function_call_turn(self, content: Any) -> None:
        text = _text_of(content)
        try:
            val = json.loads(text)
        except ValueError as exc:
            raise Unconvertible("function_call_invalid", "a function_call turn is not JSON "
                                "({\"name\": ..., \"arguments\": ...})") from exc
        calls = val if isinstance(val, list) else [val]
        made = [_tool_call({"function": {"name": x.get("name"), "arguments": x.get("arguments",
                                                                                     x.get("parameters"))}}
                           if isinstance(x, dict) else x, self.counts, self.make_id) for x in calls]
        _bump(self.counts, "function_call_turns_to_tool_calls")
        # merge into a directly preceding assistant text turn (ShareGPT writes them apart)
        if self.out and self.out[-1]["role"] == "assistant" and not self.out[-1].get("tool_calls"):
            self.out[-1]["tool_calls"] = made
        else:
            self.out.append({"role": "assistant", "tool_calls": made})
        self.pending.extend(tc["id"] for tc in made)


def _example(messages: list[dict[str, Any]], *, tools: Any = None, parallel: Any = None,
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


# ------------------------------------------------------------------------------ per-format conversion

TOP_CHAT = {"messages", "tools", "parallel_tool_calls", "metadata", "functions"}


def _extra_metadata(obj: dict[str, Any], used: set[str], counts: dict[str, int]) -> dict[str, Any]:
    md = dict(obj["metadata"]) if isinstance(obj.get("metadata"), dict) else {}
    extra = {k: v for k, v in obj.items() if k not in used and k != "metadata"}
    if extra:
        _bump(counts, "top_level_keys_to_metadata", len(extra))
        for k, v in extra.items():
            md.setdefault(k, v)
    return md


def detect_row_format(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("conversations"), list) or isinstance(obj.get("conversation"), list):
        return "sharegpt"
    if "messages" in obj:
        return "chat"
    if "instruction" in obj and ("output" in obj or "response" in obj):
        return "alpaca"
    if "preferred_output" in obj and "input" in obj:
        return "preference"
    if "prompt" in obj and ("completion" in obj or "response" in obj or "chosen" in obj):
        return "prompt-completion"
    if ("question" in obj and "answer" in obj) or ("query" in obj and "response" in obj):
        return "prompt-completion"
    return None


def convert_chat(obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    msgs = obj.get("messages")
    if not isinstance(msgs, list):
        raise Unconvertible("messages_not_list", "\"messages\" is not a list")
    b = _MessageBuilder(counts, key)
    for m in msgs:
        b.add(m)
    tools = _tools(obj.get("tools"), counts)
    if tools is None and obj.get("functions"):
        tools = _tools([{"type": "function", "function": f} for f in obj["functions"] if isinstance(f, dict)], counts)
        _bump(counts, "functions_to_tools")
    return _example(b.out, tools=tools, parallel=obj.get("parallel_tool_calls"),
                    metadata=_extra_metadata(obj, TOP_CHAT, counts))


def convert_sharegpt(obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    conv = obj.get("conversations", obj.get("conversation"))
    if not isinstance(conv, list):
        raise Unconvertible("conversations_not_list", "\"conversations\" is not a list")
    b = _MessageBuilder(counts, key)
    if isinstance(obj.get("system"), str) and obj["system"].strip():
        b.add({"role": "system", "content": obj["system"]})
    for m in conv:
        b.add(m)
    tools = _tools(obj.get("tools"), counts)
    return _example(b.out, tools=tools,
                    metadata=_extra_metadata(obj, {"conversations", "conversation", "system", "tools"}, counts))


def convert_alpaca(obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    instr = obj.get("instruction")
    out = obj.get("output", obj.get("response"))
    if not isinstance(instr, str) or not instr.strip():
        raise Unconvertible("instruction_missing", "\"instruction\" is missing or empty")
    if isinstance(out, list):  # some exports wrap the answer in a list
        out = out[0] if out and isinstance(out[0], str) else None
    if not isinstance(out, str) or not out.strip():
        raise Unconvertible("output_missing", "\"output\" is missing or empty: nothing to learn")
    inp = obj.get("input")
    prompt = instr if not (isinstance(inp, str) and inp.strip()) else f"{instr}\n\n{inp}"
    msgs: list[dict[str, Any]] = []
    if isinstance(obj.get("system"), str) and obj["system"].strip():
        msgs.append({"role": "system", "content": obj["system"]})
    hist = obj.get("history")
    if isinstance(hist, list):
        for pair in hist:
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair):
                msgs += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
                _bump(counts, "alpaca_history_turns")
            else:
                raise Unconvertible("history_invalid", "\"history\" must be a list of [prompt, answer] pairs")
    msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": out}]
    b = _MessageBuilder(counts, key)
    for m in msgs:
        b.add(m)
    return _example(b.out, metadata=_extra_metadata(obj, {"instruction", "input", "output", "response",
                                                          "system", "history"}, counts))


def convert_prompt_completion(obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    prompt = obj.get("prompt", obj.get("question", obj.get("query")))
    comp = obj.get("completion", obj.get("response", obj.get("answer", obj.get("chosen"))))
    if not isinstance(prompt, str) or not prompt.strip():
        raise Unconvertible("prompt_missing", "\"prompt\" is missing or empty")
    if not isinstance(comp, str) or not comp.strip():
        raise Unconvertible("completion_missing", "\"completion\" is missing or empty: nothing to learn")
    md = _extra_metadata(obj, {"prompt", "completion", "question", "answer", "query", "response", "chosen"}, counts)
    pc = chat.PromptCompletion(prompt=prompt, completion=comp, metadata=md or None)
    return pc.to_chat()


def convert_preference(obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    example, findings = chat.check_record(obj, "preference")
    if example is None:
        f = next((f for f in findings if f.severity == "error"), None)
        raise Unconvertible(f.code if f else "invalid_preference", f.message if f else "invalid preference line")
    _bump(counts, "preference_to_sft_preferred_answer")
    return chat.as_chat(example)


CONVERTERS = {"chat": convert_chat, "sharegpt": convert_sharegpt, "alpaca": convert_alpaca,
              "prompt-completion": convert_prompt_completion, "preference": convert_preference}


def apply_system(ex: chat.ChatExample, system: str | None, counts: dict[str, int]) -> chat.ChatExample:
    if system is None:
        return ex
    msgs = list(ex.messages)
    if msgs and msgs[0].role in ("system", "developer"):
        if msgs[0].text() != system:
            _bump(counts, "system_prompt_replaced")
        msgs[0] = chat.Message(role=msgs[0].role, content=system)
    else:
        msgs.insert(0, chat.Message(role="system", content=system))
        _bump(counts, "system_prompt_added")
    return ex.model_copy(update={"messages": msgs})


# ------------------------------------------------------------------------------ reading inputs


def _format_for_file(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    from . import openclaw_sessions as oc

    suffix = path.suffix.lower()
    if suffix in (".csv",):
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if path.is_dir() or suffix == ".sqlite" or oc.looks_like_openclaw(path):
        return "openclaw"
    return "json"


def _read_json_rows(path: Path, start: int) -> Iterator[Row]:
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


def _read_csv_rows(path: Path, delimiter: str, opts: Options, start: int, counts: dict[str, int]) -> Iterator[Row]:
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
            _bump(counts, "blank_records_skipped")
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


def _csv_example(row: Row, counts: dict[str, int]) -> chat.ChatExample:
    obj = row.work
    if not obj["prompt"].strip():
        raise Unconvertible("prompt_missing", "the prompt cell is empty")
    if not obj["completion"].strip():
        raise Unconvertible("completion_missing", "the completion cell is empty: nothing to learn")
    msgs = []
    if obj.get("system"):
        msgs.append({"role": "system", "content": obj["system"]})
    msgs += [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
    b = _MessageBuilder(counts, str(row.index))
    for m in msgs:
        b.add(m)
    return _example(b.out, metadata=dict(obj["extra"]) or None)


# ------------------------------------------------------------------------------ dedup / similarity


_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def exact_key(ex: chat.ChatExample) -> str:
    """sha256 of the normalised conversation (all messages incl. system, tool calls with canonical args)."""
    parts = []
    for m in ex.messages:
        s = f"{m.role}\x1f{_norm(m.text())}"
        for tc in m.tool_calls or []:
            try:
                args = json.dumps(json.loads(tc.function.arguments), sort_keys=True, ensure_ascii=False)
            except ValueError:
                args = _norm(tc.function.arguments)
            s += f"\x1e{tc.function.name}({args})"
        parts.append(s)
    return hashlib.sha256("\x1d".join(parts).encode("utf-8")).hexdigest()


def near_text(ex: chat.ChatExample) -> str:
    """The text near-duplicate detection compares: the conversation without system/developer
    prompts (a shared system prompt would make every pair look alike)."""
    out = []
    for m in ex.messages:
        if m.role in ("system", "developer"):
            continue
        out.append(f"{m.role} {m.text()}")
        for tc in m.tool_calls or []:
            out.append(f"{tc.function.name} {tc.function.arguments}")
    return "\n".join(out)


class _UnionFind:
    def __init__(self, n: int):
        self.p = list(range(n))

    def find(self, a: int) -> int:
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.p[rb] = ra
            else:
                self.p[ra] = rb


# ------------------------------------------------------------------------------ split


def assign_units(units: list[list[int]], ratios: tuple[float, float, float], rng: random.Random) -> dict[int, int]:
    """unit members -> split index (``spill.assign_sizes`` on the units' sizes: seeded shuffle,
    largest first into the split with the largest remaining deficit; groups stay whole)."""
    a = assign_sizes([len(u) for u in units], ratios, rng)
    return {i: s for u, s in zip(units, a) for i in u}


# ------------------------------------------------------------------------------ mix report


def is_refusal(ex: chat.ChatExample) -> bool:
    return any(m.role == "assistant" and _REFUSAL_RE.search(m.text()[:400]) for m in ex.messages)


def categories(ex: chat.ChatExample, tags: Iterable[str] = ()) -> set[str]:
    cats = set()
    if sum(1 for m in ex.messages if m.role == "user") >= 2:
        cats.add("multi_turn")
    if any(m.tool_calls for m in ex.messages if m.role == "assistant"):
        cats.add("tool_calls")
    if is_refusal(ex):
        cats.add("refusal")
    cats |= {_category(t) for t in tags}
    return cats


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _mix_categories(ex: chat.ChatExample, tags: list[str], target: dict[str, float]) -> set[str]:
    """The mix categories one example counts for (``normal`` = none of the measured/target ones)."""
    cats = categories(ex, tags)
    if not cats & (set(target) | {"multi_turn", "tool_calls", "refusal"}) - {"normal"}:
        cats.add("normal")
    return cats


def mix_report(examples: list[tuple[chat.ChatExample, list[str]]], target: dict[str, float],
               tag_field: str | None, tolerance: float = 0.75) -> dict[str, Any]:
    """Shares of multi-turn / tool-call / refusal-like examples (+ tags) against a target mix.

    Categories overlap (a multi-turn refusal counts for both); ``normal`` = none of them.
    ``short`` = below ``tolerance`` x target; ``add_to_reach`` = examples of that kind to add
    (keeping the others) to reach the target share.
    """
    by_key: Counter = Counter()
    for ex, tags in examples:
        by_key[(frozenset(_mix_categories(ex, tags, target)), tuple(tags))] += 1
    return mix_summary(len(examples), by_key, target, tag_field, tolerance)


def mix_summary(n: int, by_key: dict[tuple[frozenset, tuple], int], target: dict[str, float],
                tag_field: str | None, tolerance: float = 0.75) -> dict[str, Any]:
    """:func:`mix_report` from counts: ``by_key`` maps (categories, tags) to how many of the ``n``
    examples have them (the disk engine counts these without keeping the examples)."""
    counts: Counter = Counter()
    tag_counts: Counter = Counter()
    for (cats, tags), k in by_key.items():
        for c in cats:
            counts[c] += k
        for t in tags:
            tag_counts[t] += k
    measurable = {"normal", "multi_turn", "tool_calls", "refusal"}
    rows = []
    short = []
    for cat, t in target.items():
        c = counts.get(cat, 0)
        share = c / n if n else 0.0
        if cat not in measurable and not tag_field:
            status, add = "unknown", None
        else:
            add = max(0, math.ceil((t * n - c) / (1 - t))) if t < 1 and share < t else 0
            status = "short" if share < tolerance * t else "over" if t and share > t / tolerance and cat != "normal" \
                else "ok"
            if status == "short":
                short.append(cat)
        rows.append({"category": cat, "target": t, "count": c, "share": round(share, 4), "status": status,
                     "add_to_reach": add})
    return {"examples": n, "categories": rows, "short": short,
            "measured": {k: counts.get(k, 0) for k in ("multi_turn", "tool_calls", "refusal", "normal")},
            "tags": dict(sorted(tag_counts.items())) if tag_field else None, "tag_field": tag_field,
            "refusal_heuristic": "REFUSAL_PATTERNS in finetune_kit/prepare.py (see data-prep.md)"}


# ------------------------------------------------------------------------------ main pipeline


def _read_rows(opts: Options, counts: dict[str, int], oc_stats: dict[str, Any],
               tools: list[dict[str, Any]] | None) -> tuple[list[Row], list[dict]]:
    rows: list[Row] = []
    inputs_info: list[dict[str, Any]] = []
    if opts.fmt == "openclaw" and not opts.inputs:
        from . import openclaw_sessions as oc
        state = oc.default_state_dir()
        if not state.exists():
            raise UsageError(f"no OpenClaw state dir at {state} ($OPENCLAW_STATE_DIR or ~/.openclaw); "
                             "pass the sessions folder as INPUT")
        opts.inputs = [str(state)]
    if not opts.inputs:
        raise UsageError("no input: give one or more files (or --from openclaw [SESSIONS_DIR])")
    for inp in opts.inputs:
        p = Path(inp).expanduser()
        if not p.exists():
            raise UsageError(f"input not found: {p}")
        kind = _format_for_file(p, opts.fmt)
        if p.is_dir() and kind != "openclaw":
            raise UsageError(f"{p} is a directory; only --from openclaw reads directories")
        info: dict[str, Any] = {"file": p.name, "format": kind}
        before = len(rows)
        if kind == "openclaw":
            rows += _read_openclaw(p, opts, counts, oc_stats, len(rows), tools)
        elif kind in ("csv", "tsv"):
            rows += list(_read_csv_rows(p, "\t" if kind == "tsv" else ",", opts, len(rows), counts))
        else:
            for r in _read_json_rows(p, len(rows)):
                r.fmt = None if kind in ("json", "auto") else kind
                rows.append(r)
        info["rows"] = len(rows) - before
        if p.is_file():
            info["sha256"] = jsonl.sha256_file(p)
        inputs_info.append(info)
    return rows, inputs_info


def _read_openclaw(p: Path, opts: Options, counts: dict[str, int], st: dict[str, Any], start: int,
                   tools: list[dict[str, Any]] | None) -> list[Row]:
    from . import openclaw_sessions as oc

    since, until = oc.parse_date_range(opts.date_range)
    skipped: Counter = Counter()
    st.setdefault("sessions_read", 0)
    st.setdefault("sessions_qualifying", 0)
    st.setdefault("windows", 0)
    st.setdefault("feedback", {"positive": 0, "negative": 0, "other": 0})
    rows: list[Row] = []
    sys_prompt = opts.system
    for s in cli.progress(oc.iter_sessions(p, agent_id=opts.agent_id, since=since, until=until,
                                           on_skip=lambda reason, sid: skipped.update([reason])),
                          desc="sessions", unit="session"):
        st["sessions_read"] += 1
        for f in s.feedback:
            key = f.value if f.value in ("positive", "negative") else "other"
            st["feedback"][key] += 1
        if s.problems:
            _bump(counts, "openclaw_unreadable_entries", len(s.problems))
        qualifying = False
        try:
            exs = oc.session_to_chats(s, system=None, strip_metadata=not opts.keep_inbound_metadata,
                                      tools=tools, counts=counts)
        except ValidationError as exc:
            rows.append(Row(index=start + len(rows), source="openclaw", line=None, session=s.id,
                            raw=s.to_dict(messages=False), fmt="openclaw",
                            error={"reason": "unconvertible", "code": "schema_error", "detail": str(exc)[:300]}))
            continue
        if not exs:
            rows.append(Row(index=start + len(rows), source="openclaw", line=None, session=s.id, fmt="openclaw",
                            raw=s.to_dict(messages=False),
                            error={"reason": "unconvertible", "code": "no_messages",
                                   "detail": "the session has no user/assistant messages"}))
            continue
        for k, ex in enumerate(exs):
            st["windows"] += 1
            sid = s.id if len(exs) == 1 else f"{s.id}#{k}"
            md = ex.metadata or {}
            if sys_prompt is None and s.system_prompt:
                _bump(counts, "openclaw_system_prompt_from_bundle")
            row = Row(index=start + len(rows), source="openclaw", line=None, session=sid, fmt="openclaw",
                      raw=None, fields=dict(md), example=ex)
            if not any(m.role == "assistant" for m in ex.messages):
                row.error = {"reason": "unconvertible", "code": "no_assistant_message",
                             "detail": "the conversation has no assistant answer"}
                row.raw = ex.to_json()
                row.example = None
            else:
                qualifying = True
            rows.append(row)
        if qualifying:
            st["sessions_qualifying"] += 1
    st["sessions_filtered_out"] = {**st.get("sessions_filtered_out", {}), **dict(skipped)}
    st["filters"] = {"agent_id": opts.agent_id, "date_range": opts.date_range}
    return rows


def load_tools_file(path: str) -> list[dict[str, Any]]:
    """The tool definitions of a ``--tools FILE``: a JSON list (or ``{"tools": [...]}``) of objects;
    UsageError (exit 2) when unreadable or of another shape."""
    p = jsonl.check_readable(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"--tools {p}: not a JSON file ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        data = data["tools"]
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise UsageError(f"--tools {p}: expected a JSON list of tool definitions")
    return data


def _convert(row: Row, opts: Options, counts: dict[str, int], fmt_counts: Counter) -> None:
    if row.error or row.example is not None:
        if row.example is not None:
            fmt_counts[row.fmt or "openclaw"] += 1
        return
    try:
        if row.fmt in ("csv", "tsv"):
            fmt_counts[row.fmt] += 1
            ex = _csv_example(row, counts)
        else:
            obj = row.raw
            if not isinstance(obj, dict):
                raise Unconvertible("not_an_object", f"the row is JSON {type(obj).__name__}, not an object")
            fmt = row.fmt if row.fmt and row.fmt != "auto" else detect_row_format(obj)
            if fmt is None:
                keys = ", ".join(sorted(map(str, obj))[:8]) or "no keys"
                raise Unconvertible("unknown_format", f"not a supported row (keys: {keys}); supported: "
                                    "messages (chat), prompt/completion, instruction/output (alpaca), "
                                    "conversations (sharegpt)")
            if fmt not in CONVERTERS:
                raise Unconvertible("unknown_format", f"--from {fmt} cannot read a JSON row")
            row.fmt = fmt
            fmt_counts[fmt] += 1
            ex = CONVERTERS[fmt](obj, counts, str(row.index))
        row.example = ex
    except Unconvertible as exc:
        row.error = {"reason": "unconvertible", "code": exc.code, "detail": str(exc)}


def _finish_example(row: Row, opts: Options, counts: dict[str, int], warn_codes: Counter,
                    tools: list[dict[str, Any]] | None) -> None:
    """--system, provenance metadata, --tools, then the single chat parser (check_record)."""
    if row.example is None:
        return
    ex = apply_system(row.example, opts.system, counts)
    md = dict(ex.metadata or {})
    if row.source != "openclaw":
        md.setdefault("source_file", row.source)
        md.setdefault("source_line", row.line)
        md.setdefault("source_format", row.fmt)
    update: dict[str, Any] = {"metadata": md or None}
    if tools and ex.tools is None and any(m.tool_calls for m in ex.messages) and row.source != "openclaw":
        update["tools"] = [chat.Tool(**t) for t in _tools(tools, counts) or []]
        _bump(counts, "tools_attached_from_file")
    ex = ex.model_copy(update=update)
    obj = ex.to_json()
    model, findings = chat.check_record(obj, "chat", row.line)
    errors = [f for f in findings if f.severity == "error"]
    if errors or model is None:
        row.error = {"reason": "unconvertible", "code": errors[0].code if errors else "invalid",
                     "detail": errors[0].message if errors else "the converted line is not valid",
                     "findings": [f.to_dict() for f in findings]}
        row.raw = row.raw if row.raw is not None else obj
        row.example = None
        return
    for f in findings:
        warn_codes[f.code] += 1
    row.example = chat.as_chat(model)
    row.line_obj = obj


def prepare(opts: Options) -> cli.Result:
    import time

    t0 = time.time()
    counts: dict[str, int] = {}
    oc_stats: dict[str, Any] = {}
    out_dir = Path(opts.output_dir).expanduser()
    # fail fast on the output dir before doing the work
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output {out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not opts.force:
        raise UsageError(f"output directory {out_dir} already exists and is not empty; pass --force to replace it")
    if opts.fmt != "openclaw" and (opts.agent_id or opts.date_range):
        raise UsageError("--agent-id/--date-range select OpenClaw sessions; use them with --from openclaw")

    tools = load_tools_file(opts.tools_file) if opts.tools_file else None
    rows, inputs_info = _read_rows(opts, counts, oc_stats, tools)
    fmt_counts: Counter = Counter()
    warn_codes: Counter = Counter()
    for r in cli.progress(rows, desc="convert", unit="row"):
        local: dict[str, int] = {}  # normalisations count only for rows that end up converted
        _convert(r, opts, local, fmt_counts)
        _finish_example(r, opts, local, warn_codes, tools)
        if r.example is not None:
            for k, v in local.items():
                _bump(counts, k, v)

    n_input = len(rows)
    converted = [r for r in rows if r.example is not None]
    is_oc = any(i["format"] == "openclaw" for i in inputs_info)
    if n_input == 0 and not is_oc:
        raise UsageError(f"no rows in {', '.join(opts.inputs)}: the input is empty")
    if is_oc:
        need = opts.min_samples if opts.min_samples is not None else 1
        have = oc_stats.get("sessions_qualifying", 0)
        if have < need:
            raise BlockingProblem(
                f"only {have} OpenClaw session(s) qualify (need {need}): {oc_stats.get('sessions_read', 0)} read, "
                f"filtered out {oc_stats.get('sessions_filtered_out') or {}}; widen --date-range/--agent-id "
                "or collect more conversations")
    elif opts.min_samples is not None and len(converted) < opts.min_samples:
        raise BlockingProblem(f"only {len(converted)} rows converted (need {opts.min_samples})")
    if not converted:
        first = next((r for r in rows if r.error), None)
        why = f"{first.ref_text()}: {first.error.get('code')}: {first.error.get('detail')}" if first else ""
        raise UsageError(f"no row could be converted ({n_input} read; first problem {why}); supported "
                         f"formats: {', '.join(FORMATS[1:])} (see --from)")

    timings = {"read_convert": time.time() - t0}
    stages = _stages_in_memory if opts.engine == "memory" else _stages_on_disk
    st = stages(rows, opts, timings, out_dir)
    t1 = time.time()
    leakage, mix, split_sizes = st["leakage"], st["mix"], st["split_sizes"]
    n_kept = sum(split_sizes)
    n_removed = sum(st["removed_reasons"].values())

    # ---- write
    manifest: dict[str, Any] = {
        "tool": "prepare_data", "manifest_version": 1, "seed": opts.seed,
        "parameters": {
            "from": opts.fmt, "split": list(opts.split), "group_by": opts.group_by, "stratify": opts.stratify,
            "near_dup": opts.near_dup, "near_dup_threshold": opts.near_dup_threshold,
            "keep_near_dups": opts.keep_near_dups, "num_perm": NUM_PERM, "shingle_words": SHINGLE,
            "system": opts.system, "tag_field": opts.tag_field, "target_mix": opts.target_mix,
            "prompt_column": opts.prompt_column, "completion_column": opts.completion_column,
            "system_column": opts.system_column, "agent_id": opts.agent_id, "date_range": opts.date_range,
            "min_samples": opts.min_samples, "keep_inbound_metadata": opts.keep_inbound_metadata,
            "tools_file": Path(opts.tools_file).name if opts.tools_file else None},
        "inputs": inputs_info,
        "counts": {"input_rows": n_input, "converted": len(converted),
                   "unconvertible": sum(1 for r in rows if r.error),
                   "exact_duplicates": st["removed_reasons"].get("exact_duplicate", 0),
                   "near_duplicates": st["removed_reasons"].get("near_duplicate", 0),
                   "kept": n_kept, "train": split_sizes[0], "validation": split_sizes[1],
                   "test": split_sizes[2], "removed": n_removed},
        "formats": dict(sorted(fmt_counts.items())),
        "normalisation": dict(sorted(counts.items())),
        "check_warnings": dict(sorted(warn_codes.items())),
        "dedup": {"exact_removed": st["removed_reasons"].get("exact_duplicate", 0),
                  "near_removed": st["removed_reasons"].get("near_duplicate", 0),
                  "near_dup_enabled": opts.near_dup, "threshold": opts.near_dup_threshold,
                  "kept_near_dup_pairs": st["near_pairs"] if opts.keep_near_dups else 0,
                  "method": "MinHash LSH (datasketch) candidates verified by exact Jaccard of hashed word 3-shingles of the conversation without system prompt",
                  "lsh_bands_rows": list(lsh_params(opts.near_dup_threshold)) if opts.near_dup else None},
        "split": {"ratios": list(opts.split), "targets": dict(zip(SPLITS, split_targets(n_kept, opts.split))),
                  "units": st["units"], "group_by": opts.group_by,
                  "group_missing": st["group_missing"] if opts.group_by else None,
                  "stratify": st["strata"]},
        "leakage": leakage,
        "mix": mix,
        "files": {},
    }
    if is_oc:
        manifest["openclaw"] = oc_stats
    assert manifest["counts"]["input_rows"] == n_kept + n_removed, "row accounting broke"

    validation = None
    with jsonl.atomic_dir(out_dir, force=opts.force, inputs=opts.inputs) as tmp:
        names = {0: "train.jsonl", 1: "validation.jsonl", 2: "test.jsonl"}
        st["write"](tmp)
        for name in list(names.values()) + ["removed.jsonl"]:
            n = sum(1 for _ in open(tmp / name, "rb"))
            manifest["files"][name] = {"rows": n, "sha256": jsonl.sha256_file(tmp / name)}
        timings["mix_write"] = timings.get("mix", 0.0) + time.time() - t1
        t1 = time.time()
        if opts.validate:
            validation = _validate(tmp, [names[s] for s in range(3) if split_sizes[s]], out_dir)
            if validation is not None:
                manifest["validation"] = {"valid": validation.get("valid"),
                                          "errors": sum(len(f.get("errors", [])) for f in validation.get("files", [])),
                                          "warnings": sum(len(f.get("warnings", [])) for f in validation.get("files", []))}
        jsonl.write_json(tmp / "manifest.json", manifest, force=True)
    timings["validate"] = time.time() - t1
    outputs = [out_dir / n for n in ("train.jsonl", "validation.jsonl", "test.jsonl", "removed.jsonl", "manifest.json")]

    warnings = []
    try:
        from .validate import MIN_EXAMPLES
    except ImportError:
        MIN_EXAMPLES = 10
    if split_sizes[0] < MIN_EXAMPLES:
        warnings.append(f"the train split has {split_sizes[0]} examples; OpenAI fine-tuning requires at "
                        f"least {MIN_EXAMPLES} (improvements usually start at 50-100)")
    if any(split_sizes[s] == 0 for s in (1, 2)) and any(opts.split[s] > 0 for s in (1, 2)):
        warnings.append("validation and/or test split is empty (too few examples/groups for the requested split)")
    if mix["short"]:
        warnings.append("short of the target mix: " + ", ".join(mix["short"]))
    blocking = []
    if any(v for k, v in leakage.items() if k in ("exact", "near_dup", "group") and v):
        blocking.append("leakage across splits")
    if validation is not None and not validation.get("valid", True):
        blocking.append("the validator found errors")
    data = {"output_dir": str(out_dir), "files": {k: {**v, "path": str(out_dir / k)} for k, v in manifest["files"].items()},
            "counts": manifest["counts"], "formats": manifest["formats"], "normalisation": manifest["normalisation"],
            "check_warnings": manifest["check_warnings"], "dedup": manifest["dedup"], "split": manifest["split"],
            "leakage": leakage, "mix": mix, "removed_reasons": dict(st["removed_reasons"]),
            "removed_codes": dict(st["removed_codes"]),
            "openclaw": manifest.get("openclaw"), "validation": validation, "warnings": warnings,
            "blocking": blocking,
            "timings": {k: round(v, 3) for k, v in timings.items()}, "seconds": round(time.time() - t0, 2)}
    text = _human(data, manifest, validation)
    return cli.Result(data, text, exit_code=1 if blocking else 0,
                      inputs=[i for i in opts.inputs if Path(i).is_file()] + ([opts.tools_file] if opts.tools_file else []),
                      outputs=outputs,
                      summary={k: manifest["counts"][k] for k in ("input_rows", "kept", "train", "validation", "test",
                                                                 "removed")})



# ------------------------------------------------------------------------------ dedup / split / leakage / write
#
# Two engines with the same results (tests/test_prepare_streaming.py): ``_stages_on_disk``
# (default; bounded memory, spill.py) and ``_stages_in_memory`` (the reference). Each returns
# what the manifest needs plus ``write(folder)``, which writes train/validation/test/removed.jsonl.


def _removed_record(r: Row) -> dict[str, Any]:
    """The removed.jsonl record of a row that could not be read or converted."""
    rec = {"reason": r.error.get("reason", "unconvertible"), **r.ref(), "code": r.error.get("code"),
           "detail": r.error.get("detail")}
    if r.error.get("findings"):
        rec["findings"] = r.error["findings"]
    rec["raw"] = r.raw
    return rec


def _stages_in_memory(rows: list[Row], opts: Options, timings: dict[str, float], out_dir: Path) -> dict[str, Any]:
    import time

    converted = [r for r in rows if r.example is not None]
    t1 = time.time()
    # ---- dedup
    removed: list[dict[str, Any]] = []
    exact_first: dict[str, int] = {}
    keys: dict[int, str] = {}
    kept: list[Row] = []
    uf = _UnionFind(len(rows))
    near_pairs = 0
    by_index = {r.index: r for r in rows}
    survivors: list[Row] = []
    for r in converted:
        k = exact_key(r.example)
        keys[r.index] = k
        if k in exact_first:
            first = by_index[exact_first[k]]
            removed.append({"reason": "exact_duplicate", **r.ref(), "duplicate_of": first.ref(),
                            "example": r.line_obj, "_i": r.index})
            continue
        exact_first[k] = r.index
        survivors.append(r)
    index = NearDupIndex(opts.near_dup_threshold) if opts.near_dup else None
    if index is not None:
        matched = index.extend(((r.index, near_text(r.example)) for r in survivors),
                               drop_duplicates=not opts.keep_near_dups,
                               progress=lambda it: cli.progress(it, desc="near-dup", unit="ex"))
        for r in survivors:
            matches = matched.get(r.index)
            if matches and not opts.keep_near_dups:
                best, best_j = matches[0]
                removed.append({"reason": "near_duplicate", **r.ref(), "duplicate_of": by_index[best].ref(),
                                "similarity": round(best_j, 4), "example": r.line_obj, "_i": r.index})
                continue
            if matches:  # --keep-near-dups: the whole cluster goes to one split
                near_pairs += 1
                for cand, _ in matches:
                    uf.union(r.index, cand)
            kept.append(r)
    else:
        kept = survivors
    for r in rows:
        if r.error:
            removed.append({**_removed_record(r), "_i": r.index})
    removed.sort(key=lambda d: d["_i"])  # input order of the removed rows
    for d in removed:
        del d["_i"]

    timings["dedup"] = time.time() - t1
    t1 = time.time()
    # ---- groups -> units
    group_missing = 0
    if opts.group_by:
        first_of: dict[str, int] = {}
        for r in kept:
            v = lookup(r.fields, r.example.metadata, opts.group_by)
            if v is None:
                group_missing += 1
                continue
            key = _hashable(v)
            if key in first_of:
                uf.union(r.index, first_of[key])
            else:
                first_of[key] = r.index
    members: dict[int, list[int]] = defaultdict(list)
    for r in kept:
        members[uf.find(r.index)].append(r.index)
    units = [members[k] for k in sorted(members)]

    # ---- split (optionally per stratum)
    rng = random.Random(opts.seed)
    assignment: dict[int, int] = {}
    strata_report = None
    if opts.stratify:
        label_of = {r.index: _hashable(lookup(r.fields, r.example.metadata, opts.stratify)) if
                    lookup(r.fields, r.example.metadata, opts.stratify) is not None else "(none)" for r in kept}
        by_stratum: dict[str, list[list[int]]] = defaultdict(list)
        for u in units:
            lab = Counter(label_of[i] for i in u).most_common()
            best = sorted(lab, key=lambda x: (-x[1], x[0]))[0][0]
            by_stratum[best].append(u)
        strata_report = {}
        for lab in sorted(by_stratum):
            a = assign_units(by_stratum[lab], opts.split, rng)
            assignment.update(a)
            c = Counter(a.values())
            strata_report[lab] = {SPLITS[s]: c.get(s, 0) for s in range(3)}
        if not any(v == 0 for v in assignment.values()):  # never an empty train split
            first_unit = units[0]
            for i in first_unit:
                assignment[i] = 0
    else:
        assignment = assign_units(units, opts.split, rng)
    split_rows: dict[int, list[Row]] = {0: [], 1: [], 2: []}
    for r in kept:
        split_rows[assignment[r.index]].append(r)

    timings["split"] = time.time() - t1
    t1 = time.time()
    # ---- leakage re-check
    leakage = _check_leakage(split_rows, keys, index)
    if opts.group_by:
        seen: dict[str, int] = {}
        bad = set()
        for s in range(3):
            for r in split_rows[s]:
                v = lookup(r.fields, r.example.metadata, opts.group_by)
                if v is None:
                    continue
                k = _hashable(v)
                if k in seen and seen[k] != s:
                    bad.add(k)
                seen.setdefault(k, s)
        leakage["group"] = len(bad)
    else:
        leakage["group"] = None

    timings["leakage_check"] = time.time() - t1
    t1 = time.time()
    # ---- mix
    mix = mix_report([(r.example, _tags(lookup(r.fields, r.example.metadata, opts.tag_field)) if opts.tag_field else [])
                      for r in kept], opts.target_mix, opts.tag_field)

    timings["mix"] = time.time() - t1

    def write(folder: Path) -> None:
        for s, name in enumerate(("train.jsonl", "validation.jsonl", "test.jsonl")):
            jsonl.write_jsonl(folder / name, (r.line_obj for r in split_rows[s]), force=True)
        jsonl.write_jsonl(folder / "removed.jsonl", removed, force=True)

    return {"removed_reasons": Counter(d["reason"] for d in removed),
            "removed_codes": Counter(d.get("code") for d in removed if d.get("code")),
            "near_pairs": near_pairs, "units": len(units), "group_missing": group_missing, "strata": strata_report,
            "split_sizes": [len(split_rows[s]) for s in range(3)], "leakage": leakage, "mix": mix, "write": write}


def _stages_on_disk(rows: Iterable[Row], opts: Options, timings: dict[str, float], out_dir: Path) -> dict[str, Any]:
    """The same stages in bounded memory: rows are spilled to a SQLite scratch store as they come
    (``rows`` may be a generator), only compact keys stay in RAM (see spill.py)."""
    import time

    from .spill import SpillEngine

    t1 = time.time()
    eng = SpillEngine(out_dir.parent if out_dir.parent.exists() else None, near_dup=opts.near_dup,
                      threshold=opts.near_dup_threshold, keep_near_dups=opts.keep_near_dups,
                      workers=opts.workers, progress=cli.progress)
    try:
        for r in rows:
            _feed(eng, r, opts)
        n = eng.dedup()
        timings["dedup"] = time.time() - t1
        t1 = time.time()
        sp = eng.split(opts.split, opts.seed, group_by=bool(opts.group_by), stratify=bool(opts.stratify))
        timings["split"] = time.time() - t1
        t1 = time.time()
        leakage = eng.leakage(group_by=bool(opts.group_by))
        timings["leakage_check"] = time.time() - t1
        t1 = time.time()
        n_kept, by_key = eng.mix_counts()
        mix = mix_summary(n_kept, by_key, opts.target_mix, opts.tag_field)
        timings["mix"] = time.time() - t1
    except BaseException:
        eng.close()
        raise
    reasons = Counter(eng.removed_reasons)
    for k, v in (("exact_duplicate", n["exact"]), ("near_duplicate", n["near"])):
        if v:
            reasons[k] += v

    def write(folder: Path) -> None:
        try:
            eng.write(folder)
        finally:
            eng.close()

    return {"removed_reasons": reasons, "removed_codes": Counter(eng.removed_codes), "near_pairs": n["near_pairs"],
            "units": sp["units"], "group_missing": sp["group_missing"], "strata": sp["stratify"],
            "split_sizes": sp["counts"], "leakage": leakage, "mix": mix, "write": write}


def _feed(eng, r: Row, opts: Options) -> None:
    """Hand one finished row to the disk engine, with the keys its stages need."""
    if r.example is None:
        eng.add_removed(r.ref(), _removed_record(r))
        return
    ex = r.example
    group = stratum = None
    if opts.group_by:
        v = lookup(r.fields, ex.metadata, opts.group_by)
        group = _hashable(v) if v is not None else None
    if opts.stratify:
        v = lookup(r.fields, ex.metadata, opts.stratify)
        stratum = _hashable(v) if v is not None else "(none)"
    tags = _tags(lookup(r.fields, ex.metadata, opts.tag_field)) if opts.tag_field else []
    eng.add_converted(r.ref(), r.line_obj, exact_key=exact_key(ex), near_text=near_text(ex), group=group,
                      stratum=stratum, mix_key=(frozenset(_mix_categories(ex, tags, opts.target_mix)), tuple(tags)))

def _check_leakage(split_rows: dict[int, list[Row]], keys: dict[int, str],
                   index: NearDupIndex | None) -> dict[str, Any]:
    """Re-check, independently of how the split was made, that no exact or near duplicate crosses
    splits: exact keys by set intersection; near duplicates with ``NearDupIndex.pairs_across``
    (re-bands the MinHash signatures of all kept examples with numpy, not the LSH used for dedup,
    and verifies every cross-split candidate pair with the exact Jaccard)."""
    exact_sets = [set(keys[r.index] for r in split_rows[s]) for s in range(3)]
    exact = len(exact_sets[0] & exact_sets[1]) + len(exact_sets[0] & exact_sets[2]) + len(exact_sets[1] & exact_sets[2])
    out: dict[str, Any] = {"exact": exact, "near_dup": None, "checked": ["exact"]}
    if index is None:
        return out
    pairs, checked = index.pairs_across({r.index: s for s in range(3) for r in split_rows[s]})
    out["near_dup"] = len(pairs)
    out["near_dup_candidates_checked"] = checked
    out["checked"].append("near_dup")
    return out


def _validate(tmp: Path, names: list[str], final_dir: Path) -> dict[str, Any] | None:
    try:
        from .validate import validate_files
    except ImportError as exc:  # the validator library is part of the skill; say so if it is missing
        return {"valid": None, "error": f"validator unavailable ({exc})", "files": []}
    # min_examples=1: small validation/test splits are fine; prepare warns about a small train split itself
    doc = validate_files([str(tmp / n) for n in names], min_examples=1)
    for f in doc.get("files", []):
        f["file"] = str(final_dir / Path(str(f.get("file", ""))).name)
    for lk in doc.get("leakage", []):
        for k in ("file_a", "file_b"):
            if k in lk:
                lk[k] = str(final_dir / Path(str(lk[k])).name)
    return doc


def _human(data: dict[str, Any], manifest: dict[str, Any], validation: dict[str, Any] | None) -> str:
    c = data["counts"]
    lines = [f"prepared {c['kept']:,} of {c['input_rows']:,} rows -> {data['output_dir']} "
             f"(formats: {', '.join(f'{k} {v:,}' for k, v in data['formats'].items()) or '-'})", ""]
    rows = [(name, f"{v['rows']:,}", v["sha256"][:16]) for name, v in data["files"].items()]
    lines.append(cli.table(["file", "rows", "sha256"], rows, "lrl"))
    if data["removed_reasons"]:
        lines.append("")
        lines.append("removed (see removed.jsonl): " + ", ".join(f"{k} {v:,}" for k, v in
                                                               sorted(data["removed_reasons"].items())))
        if data["removed_codes"]:
            lines.append("  unconvertible because: " + ", ".join(f"{k} {v}" for k, v in
                                                                 Counter(data["removed_codes"]).most_common(6)))
    if data["normalisation"]:
        lines.append("normalised: " + ", ".join(f"{k} {v:,}" for k, v in data["normalisation"].items()
                                                  if not k.startswith("role_alias:")))
    lk = data["leakage"]
    lines.append("leakage across splits (re-checked): exact {e}, near-duplicate {n}, group {g}".format(
        e=lk["exact"], n="not checked (--no-near-dup)" if lk["near_dup"] is None else lk["near_dup"],
        g="-" if lk.get("group") is None else lk["group"]))
    oc = data.get("openclaw")
    if oc:
        fb = oc.get("feedback", {})
        lines.append(f"openclaw: {oc.get('sessions_read', 0)} sessions read, {oc.get('sessions_qualifying', 0)} "
                     f"qualify, {oc.get('windows', 0)} conversations; filtered out: "
                     f"{oc.get('sessions_filtered_out') or 'none'}; feedback +{fb.get('positive', 0)} "
                     f"-{fb.get('negative', 0)}")
    mix = data["mix"]
    lines.append("")
    lines.append(f"data mix vs target ({mix['examples']:,} examples; refusal = regex heuristic):")
    lines.append(cli.table(["category", "target", "have", "share", "status", "add to reach"],
                           [(r["category"], f"{r['target']:.0%}", r["count"], f"{r['share']:.1%}", r["status"],
                             "-" if r["add_to_reach"] is None else r["add_to_reach"]) for r in mix["categories"]],
                           "lrrrlr"))
    if data.get("warnings"):
        lines.append("")
        lines.extend(f"warning: {w}" for w in data["warnings"])
    if validation is not None:
        lines.append("")
        if validation.get("error"):
            lines.append(f"validator: {validation['error']}")
        else:
            lines.append("validator (validate_jsonl.py library):")
            for f in validation.get("files", []):
                st = f.get("stats") or {}
                tok = f", {st['total_tokens']:,} tokens ({st['trainable_tokens']:,} trainable)" \
                    if st.get("total_tokens") is not None else ""
                lines.append(f"  {Path(f['file']).name}: {'VALID' if f['valid'] else 'INVALID'} - "
                             f"{f['examples']:,} examples, {f.get('error_count', len(f['errors']))} errors, "
                             f"{f.get('warning_count', len(f['warnings']))} warnings{tok}")
            if not validation.get("valid", True):
                from .validate import format_report
                bad = {"valid": False, "files": [f for f in validation["files"] if not f["valid"]],
                       "leakage": validation.get("leakage", [])}
                lines.append(format_report(bad, max_errors=5))
            else:
                lines.append(f"  details: python3 {Path(__file__).resolve().parents[1] / 'validate_jsonl.py'} <file>")
    if data["blocking"]:
        lines.append("")
        lines.append(cli.color("BLOCKING: " + "; ".join(data["blocking"]), "red"))
    return "\n".join(lines)
