"""Line-local checks of one training-data line (chat, prompt-completion, preference).

:func:`check_line` is what :func:`finetune_kit.chat.check_record` delegates to. It walks the
raw JSON object (not the pydantic model) so that it can report *every* problem of the line,
each located with ``line``, ``message_index``, ``path`` and a stable ``code`` (the codes are
documented in data-prep.md), and returns the pydantic model when the line is usable (no
errors; warnings allowed).

Checks across lines (duplicates, leakage, differing system prompts, example counts, token
limits) live in :mod:`finetune_kit.validate`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from . import chat
from .findings import Finding

ROLES = chat.ROLES
MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "weight"})
_PLAIN_ROLES = frozenset({"system", "developer", "user"})
_PLAIN_KEYS = frozenset({"role", "content"})
_ASSISTANT_KEYS = frozenset({"role", "content", "weight"})
_TOOL_KEYS = frozenset({"role", "content", "tool_call_id"})
CHAT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", chat.METADATA_KEY})
PC_KEYS = frozenset({"prompt", "completion", chat.METADATA_KEY})
PREF_KEYS = frozenset({"input", "preferred_output", "non_preferred_output", chat.METADATA_KEY})
PREF_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
TOOL_CALL_KEYS = frozenset({"id", "type", "function"})
FUNCTION_CALL_KEYS = frozenset({"name", "arguments"})
TOOL_KEYS = frozenset({"type", "function"})

# Control tokens of chat templates / tokenizers. OpenAI rejects lines that contain its reserved
# tokens; open models' tokenizers turn them into real control tokens (the text then breaks the
# chat template). Every ``<|word|>`` form is treated as one (ChatML, Llama 3, FIM, harmony,
# Qwen, Phi ...), plus Gemma's turn markers.
SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_.\-]{1,48}\|>|<(?:start|end)_of_turn>")

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}

MAX_SCHEMA_ERRORS_PER_CALL = 3


def _jtype(v: Any) -> str:
    return _JSON_TYPES.get(type(v), type(v).__name__)


def _a(v: Any) -> str:
    """'an object', 'a string' ... for messages."""
    t = _jtype(v)
    return ("an " if t[0] in "aeiou" else "a ") + t


class _Ctx:
    """Collects findings for one line."""

    __slots__ = ("line", "findings", "n_errors")

    def __init__(self, line: int | None):
        self.line = line
        self.findings: list[Finding] = []
        self.n_errors = 0

    def err(self, code: str, message: str, hint: str, path: str | None = None,
            mi: int | None = None) -> None:
        self.findings.append(Finding(code, _printable(message), _printable(hint), self.line, mi, _printable(path),
                                     "error"))
        self.n_errors += 1

    def warn(self, code: str, message: str, hint: str, path: str | None = None,
             mi: int | None = None) -> None:
        self.findings.append(Finding(code, _printable(message), _printable(hint), self.line, mi, _printable(path),
                                     "warning"))


def _printable(s: str | None) -> str | None:
    """Messages quote ids, names and keys from the data: lone surrogates (legal in JSON escapes,
    not encodable as UTF-8) would break printing the report, so escape them."""
    if s is None or s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


# ------------------------------------------------------------------------------------ entry

def check_line(obj: Any, fmt: str | None, line: int | None = None, *, parse: bool = True
               ) -> tuple[Any, list[Finding]]:
    """Check one parsed JSON line as format ``fmt`` ("chat", "prompt-completion",
    "preference", or None/"auto" to detect it). Returns (model or None, findings).

    ``parse=False`` (the validator's hot path) skips building the pydantic model and returns
    the line's dict without unknown top-level keys instead; the checks above guarantee it
    parses (tests hold the two paths equal on fuzzed lines).
    """
    c = _Ctx(line)
    if not isinstance(obj, dict):
        c.err("not_an_object", f"the line is JSON {_a(obj)}, not an object",
              'each line must be one JSON object such as {"messages": [...]}')
        return None, c.findings
    if fmt in (None, "auto"):
        fmt = chat.detect_format(obj)
        if fmt is None:
            keys = ", ".join(sorted(map(str, obj))[:6]) or "no keys"
            c.err("unknown_format", f"not a chat, prompt-completion or preference line (keys: {keys})",
                  'use {"messages": [...]} (chat), {"prompt": ..., "completion": ...} or '
                  '{"input": ..., "preferred_output": ..., "non_preferred_output": ...}; '
                  "prepare_data.py converts common exports")
            return None, c.findings
    if fmt == "chat":
        clean = _check_chat(c, obj)
    elif fmt == "prompt-completion":
        clean = _check_prompt_completion(c, obj)
    elif fmt == "preference":
        clean = _check_preference(c, obj)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    if c.n_errors:
        return None, c.findings
    if not parse:
        return clean, c.findings
    try:
        model = chat.parse_example(clean, fmt)
    except ValidationError as exc:  # a gap between these checks and the model: still located
        for e in exc.errors()[:5]:
            c.err("schema_error", f"{e.get('msg', 'invalid')}", "fix the value at this path",
                  _loc_path(e.get("loc", ())))
        return None, c.findings
    return model, c.findings


def _loc_path(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or None


# ------------------------------------------------------------------------------------ chat

def _unknown_top_keys(c: _Ctx, obj: dict, allowed: frozenset) -> dict:
    """Warn about unknown top-level keys; return the object without them."""
    extra = [k for k in obj if k not in allowed]
    if not extra:
        return obj
    for k in extra:
        c.warn("unknown_top_level_key", f"unknown top-level key '{k}' (ignored here; providers may "
               f"reject the file)", f"remove '{k}' or move it under \"metadata\" "
               f"(this skill's provenance key, stripped before upload)", str(k))
    return {k: v for k, v in obj.items() if k in allowed}


def _check_metadata(c: _Ctx, obj: dict) -> None:
    if chat.METADATA_KEY in obj and not isinstance(obj[chat.METADATA_KEY], dict):
        c.err("metadata_not_object", f"\"metadata\" is {_a(obj[chat.METADATA_KEY])}, not an object",
              'make it an object, e.g. "metadata": {"source": "tickets-2025"}', chat.METADATA_KEY)


def _check_chat(c: _Ctx, obj: dict) -> dict:
    clean = _unknown_top_keys(c, obj, CHAT_KEYS)
    _check_metadata(c, obj)
    declared = _check_tools_field(c, obj, "")
    _check_parallel(c, obj, "")
    msgs = _check_messages_field(c, obj, "messages", "messages")
    if msgs is None:
        return clean
    state = _ToolState()
    n_assistant = n_trainable = 0
    for i, m in enumerate(msgs):
        role = _check_message(c, m, i, f"messages[{i}]", declared, state,
                              parallel=obj.get("parallel_tool_calls"))
        if role == "assistant":
            n_assistant += 1
            if isinstance(m, dict) and m.get("weight", 1) != 0:
                n_trainable += 1
    if n_assistant and all(isinstance(m, dict) and m.get("role") in ROLES for m in msgs) \
            and not any(m.get("role") == "user" for m in msgs):
        c.warn("no_user_message", "no user message: the assistant answers nothing (system + assistant only)",
               "add the user turn the answer responds to, or remove the line", "messages")
    for i, m in enumerate(msgs):
        if isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str) \
                and len(m["content"]) >= REPEAT_MIN_CHARS:
            unit = repeated_unit(m["content"])
            if unit is not None:
                c.warn("repetitive_content", f"the assistant text is one phrase repeated: {unit!r} ...",
                       "a degenerate answer (a generation loop?) teaches the model to loop; fix or remove it",
                       f"messages[{i}].content", i)
    if n_assistant == 0:
        c.err("no_assistant_message", "no assistant message: nothing to learn from this line",
              'add the answer the model should give as {"role": "assistant", "content": "..."}',
              "messages")
    elif n_trainable == 0:
        c.warn("no_trainable_message", "every assistant message has \"weight\": 0: the line trains nothing",
               "set weight 1 (or remove weight) on the assistant turn(s) to learn from", "messages")
    elif msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") in ("user", "system", "developer", "tool"):
        c.warn("last_message_not_assistant",
               f"the line ends with a {msgs[-1].get('role')} message, which is never trained on",
               "end each example with the assistant turn you want the model to produce",
               f"messages[{len(msgs) - 1}]", len(msgs) - 1)
    return clean


REPEAT_MIN_CHARS = 400      # shorter texts are not checked for repetition
REPEAT_MIN_WORDS = 60
REPEAT_MAX_DISTINCT = 0.1   # distinct word 4-grams / all 4-grams at or below this = one phrase repeated


def repeated_unit(text: str) -> str | None:
    """The repeated phrase (first 40 characters) when ``text`` is essentially one phrase repeated
    many times (distinct word 4-grams <= 10 % of all), else None. Real long answers - lists, tables,
    code - stay far above that (every row differs somewhere)."""
    words = text.split()
    if len(words) < REPEAT_MIN_WORDS:
        return None
    grams = [tuple(words[k:k + 4]) for k in range(len(words) - 3)]
    if len(set(grams)) > REPEAT_MAX_DISTINCT * len(grams):
        return None
    return " ".join(words[:8])[:40]


def _check_messages_field(c: _Ctx, obj: dict, key: str, path: str) -> list | None:
    if key not in obj:
        c.err("messages_missing", f"\"{key}\" is missing", 'add "messages": [{"role": "user", ...}, '
              '{"role": "assistant", ...}]', path)
        return None
    msgs = obj[key]
    if not isinstance(msgs, list):
        c.err("messages_not_list", f"\"{key}\" is {_a(msgs)}, not a list",
              "make it a list of message objects", path)
        return None
    if not msgs:
        c.err("messages_empty", f"\"{key}\" is an empty list", "add at least a user and an assistant message",
              path)
        return None
    return msgs


class _ToolState:
    """Tool calls seen so far in a conversation (for tool_call_id matching)."""

    __slots__ = ("seen", "pending")

    def __init__(self):
        self.seen: set[str] = set()
        self.pending: dict[str, tuple[int, str]] = {}  # id -> (message index, path)


def _check_message(c: _Ctx, m: Any, i: int, path: str, declared: dict | None, state: _ToolState,
                   *, parallel: Any = None, require_role: str | None = None) -> str | None:
    """Check one message; return its role when known."""
    if type(m) is dict and require_role is None and type(m.get("content")) is str:
        # fast path for the common shapes (same findings as the general path below)
        role = m.get("role")
        keys = m.keys()
        if type(role) is str and (
                (role in _PLAIN_ROLES and keys <= _PLAIN_KEYS)
                or (role == "assistant" and keys <= _ASSISTANT_KEYS and type(m.get("weight", 1)) is int
                    and m.get("weight", 1) in (0, 1))
                or (role == "tool" and keys <= _TOOL_KEYS and type(m.get("tool_call_id")) is str)):
            if role == "assistant" and state.pending:
                _unanswered(c, state)
            _check_content(c, m, i, path, role, False)
            if role == "tool":
                _check_tool_message(c, m, i, path, state)
            return role
    if not isinstance(m, dict):
        c.err("message_not_object", f"message is {_a(m)}, not an object",
              'each message is {"role": ..., "content": ...}', path, i)
        return None
    role = m.get("role")
    if "role" not in m:
        c.err("role_missing", "message has no \"role\"", f"add \"role\": one of {', '.join(ROLES)}",
              f"{path}.role", i)
        role = None
    elif not isinstance(role, str) or role not in ROLES:
        shown = role if isinstance(role, str) else _jtype(role)
        c.err("role_unknown", f"unknown role '{str(shown)[:40]}'",
              f"use one of {', '.join(ROLES)}", f"{path}.role", i)
        role = None
    if require_role and role is not None and role != require_role:
        c.err("preference_output_not_assistant", f"a preference output message has role '{role}'",
              "preferred_output / non_preferred_output hold exactly the assistant answer", f"{path}.role", i)

    for k in m:
        if k in MESSAGE_KEYS:
            continue
        if k == "function_call":
            c.err("legacy_function_call", "legacy \"function_call\" (deprecated OpenAI function calling)",
                  "convert to \"tool_calls\" (prepare_data.py does it) ", f"{path}.function_call", i)
        else:
            c.err("unknown_message_key", f"unknown message key '{str(k)[:40]}'",
                  f"allowed keys: {', '.join(sorted(MESSAGE_KEYS))}; remove it", f"{path}.{k}", i)

    # calls of an earlier assistant turn that got no tool answer before this assistant turn
    if role == "assistant" and state.pending:
        _unanswered(c, state)

    # tool calls first: they decide whether content may be omitted
    has_calls = False
    if "tool_calls" in m and m["tool_calls"] is not None:
        if role is not None and role != "assistant":
            c.err("tool_calls_not_assistant", f"a {role} message has \"tool_calls\"",
                  "only assistant messages call tools", f"{path}.tool_calls", i)
        has_calls = _check_tool_calls(c, m["tool_calls"], i, f"{path}.tool_calls", declared, state,
                                      parallel)

    # a legacy function_call is the assistant's call: reported once (legacy_function_call), not as missing content
    _check_content(c, m, i, path, role, has_calls or (role == "assistant" and isinstance(m.get("function_call"), dict)))

    if "name" in m and m["name"] is not None and not isinstance(m["name"], str):
        c.err("name_wrong_type", f"\"name\" is {_a(m['name'])}, not a string",
              "use a string (or remove name)", f"{path}.name", i)

    if "weight" in m:
        w = m["weight"]
        if role is not None and role != "assistant":
            c.err("weight_not_assistant", f"\"weight\" on a {role} message",
                  "weight (0 or 1) is only allowed on assistant messages; remove it", f"{path}.weight", i)
        if isinstance(w, bool) or not isinstance(w, int) or w not in (0, 1):
            c.err("weight_invalid", f"\"weight\" is {json.dumps(w)[:20]}, must be 0 or 1",
                  "use 0 (do not train on this turn) or 1 (train on it)", f"{path}.weight", i)

    if role == "tool":
        _check_tool_message(c, m, i, path, state)
    elif m.get("tool_call_id") is not None:
        c.warn("tool_call_id_not_tool", f"\"tool_call_id\" on a {role or 'non-tool'} message is ignored",
               "tool_call_id belongs on role \"tool\" messages only", f"{path}.tool_call_id", i)
    return role


def _unanswered(c: _Ctx, state: _ToolState) -> None:
    for cid, (mi, cpath) in list(state.pending.items()):
        c.warn("tool_call_unanswered",
               f"tool call '{cid[:40]}' (message {mi}) gets no tool message before the next assistant turn",
               'add {"role": "tool", "tool_call_id": "...", "content": "<result>"} right after the call',
               cpath, mi)
    state.pending.clear()


def _check_content(c: _Ctx, m: dict, i: int, path: str, role: str | None, has_calls: bool) -> None:
    cpath = f"{path}.content"
    content = m.get("content")
    if content is None:
        if role == "assistant" and has_calls:
            return
        if role == "assistant":
            c.err("content_missing", "assistant message has neither \"content\" nor \"tool_calls\"",
                  "add the answer as \"content\" (or the tool calls it makes)", cpath, i)
        else:
            c.err("content_missing", f"{role or 'the'} message has no \"content\"",
                  "add \"content\": \"...\" (a string or a list of text parts)", cpath, i)
        return
    if isinstance(content, str):
        if not content.strip() and not has_calls:
            c.warn("content_empty", f"{role or 'message'} content is empty",
                   "fill it in or remove the message (an empty assistant answer teaches silence)", cpath, i)
        _special_tokens(c, content, cpath, i)
        return
    if isinstance(content, list):
        if not content and not has_calls:
            c.warn("content_empty", f"{role or 'message'} content is an empty list",
                   "fill it in or remove the message", cpath, i)
        for j, part in enumerate(content):
            ppath = f"{cpath}[{j}]"
            if not isinstance(part, dict):
                c.err("content_part_invalid", f"content part is {_a(part)}, not an object",
                      'use {"type": "text", "text": "..."} parts (or a plain string)', ppath, i)
                continue
            ptype = part.get("type", "text")
            if ptype != "text":
                c.err("content_part_unsupported", f"content part of type '{str(ptype)[:30]}' is not supported",
                      "only text parts are supported; put images/audio in a provider-specific file", ppath, i)
                continue
            extra = [k for k in part if k not in ("type", "text")]
            for k in extra:
                c.err("unknown_key", f"unknown key '{str(k)[:40]}' in a text part",
                      'a text part is {"type": "text", "text": "..."}', f"{ppath}.{k}", i)
            text = part.get("text")
            if not isinstance(text, str):
                c.err("content_part_invalid",
                      "text part has no \"text\" string" if text is None else
                      f"text part \"text\" is {_a(text)}, not a string",
                      'use {"type": "text", "text": "..."}', f"{ppath}.text", i)
                continue
            _special_tokens(c, text, f"{ppath}.text", i)
        return
    c.err("content_wrong_type", f"\"content\" is {_a(content)}, must be a string or a list of text parts",
          "use a string; serialise structured data with json.dumps", cpath, i)


def _special_tokens(c: _Ctx, text: str, path: str, i: int | None) -> None:
    if "<|" not in text and "_of_turn>" not in text:
        return
    found = sorted(set(SPECIAL_TOKEN_RE.findall(text)))
    if found:
        shown = ", ".join(found[:4]) + (" ..." if len(found) > 4 else "")
        c.err("special_token_in_content", f"reserved special token(s) in text: {shown}",
              "remove them or break them up (e.g. '<| endoftext |>'); providers reject them and open "
              "models' tokenizers turn them into control tokens", path, i)


def _check_tool_calls(c: _Ctx, calls: Any, i: int, path: str, declared: dict | None,
                      state: _ToolState, parallel: Any) -> bool:
    """Check an assistant's tool_calls; return True if it has at least one call."""
    if not isinstance(calls, list):
        c.err("tool_calls_not_list", f"\"tool_calls\" is {_a(calls)}, not a list",
              'use "tool_calls": [{"id": ..., "type": "function", "function": {...}}]', path, i)
        return False
    if not calls:
        c.warn("tool_calls_empty", "\"tool_calls\" is an empty list", "remove it or add the call(s)", path, i)
        return False
    if len(calls) > 1 and parallel is False:
        c.warn("parallel_calls_disabled",
               f"{len(calls)} tool calls in one turn but \"parallel_tool_calls\" is false",
               "set parallel_tool_calls to true (or omit it), or split the calls into separate turns", path, i)
    for j, call in enumerate(calls):
        cp = f"{path}[{j}]"
        if not isinstance(call, dict):
            c.err("tool_call_not_object", f"tool call is {_a(call)}, not an object",
                  'use {"id": ..., "type": "function", "function": {"name": ..., "arguments": "{...}"}}', cp, i)
            continue
        for k in call:
            if k not in TOOL_CALL_KEYS:
                c.err("unknown_key", f"unknown key '{str(k)[:40]}' in a tool call",
                      "a tool call has id, type and function", f"{cp}.{k}", i)
        cid = call.get("id")
        if not isinstance(cid, str) or not cid:
            c.err("tool_call_missing_id", "tool call has no \"id\"" if cid is None else
                  f"tool call \"id\" is {json.dumps(cid)[:20]}, not a non-empty string",
                  'give every call a unique id, e.g. "call_1", and answer it with a tool message '
                  "carrying the same tool_call_id", f"{cp}.id", i)
        elif cid in state.seen:
            c.err("tool_call_id_duplicate", f"tool call id '{cid[:40]}' is used twice in this line",
                  "give every call a unique id", f"{cp}.id", i)
        else:
            state.seen.add(cid)
            state.pending[cid] = (i, cp)
        if "type" in call and call["type"] != "function":
            c.err("tool_call_wrong_type", f"tool call \"type\" is {json.dumps(call['type'])[:30]}, not \"function\"",
                  'set "type": "function"', f"{cp}.type", i)
        fn = call.get("function")
        if not isinstance(fn, dict):
            c.err("tool_call_missing_function", "tool call has no \"function\" object" if fn is None else
                  f"tool call \"function\" is {_a(fn)}, not an object",
                  'add "function": {"name": "...", "arguments": "{...}"}', f"{cp}.function", i)
            continue
        for k in fn:
            if k not in FUNCTION_CALL_KEYS:
                c.err("unknown_key", f"unknown key '{str(k)[:40]}' in a tool call's function",
                      "function has name and arguments", f"{cp}.function.{k}", i)
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            c.err("function_name_missing", "tool call has no function name",
                  'set "function": {"name": "<a declared tool>", ...}', f"{cp}.function.name", i)
            name = None
        elif declared is not None and name not in declared:
            known = ", ".join(sorted(declared)[:8]) or "none"
            c.err("function_not_declared", f"calls '{name[:60]}', which is not declared in this line's \"tools\"",
                  f"declare it in \"tools\" or call one of: {known}", f"{cp}.function.name", i)
        apath = f"{cp}.function.arguments"
        if "arguments" not in fn:
            c.err("arguments_missing", "tool call has no \"arguments\"",
                  'add "arguments": "{}" (a JSON object encoded as a string)', apath, i)
            continue
        args = fn["arguments"]
        if not isinstance(args, str):
            c.err("arguments_not_string", f"\"arguments\" is {_a(args)}, must be a JSON string",
                  "encode it: \"arguments\": json.dumps({...}) (prepare_data.py does it)", apath, i)
            continue
        _special_tokens(c, args, apath, i)
        try:
            val = json.loads(args)
        except ValueError as exc:
            msg = getattr(exc, "msg", str(exc))
            pos = getattr(exc, "pos", None)
            c.err("arguments_invalid_json", f"\"arguments\" is not valid JSON ({msg}"
                  + (f" at character {pos})" if pos is not None else ")"),
                  "fix the JSON string; it must decode to an object like {\"city\": \"Paris\"}", apath, i)
            continue
        except RecursionError:
            c.err("arguments_invalid_json", "\"arguments\" JSON is nested too deeply", "flatten it", apath, i)
            continue
        if not isinstance(val, dict):
            double = False
            if isinstance(val, str):
                try:
                    double = isinstance(json.loads(val), dict)
                except (ValueError, RecursionError):
                    double = False
            if double:
                c.err("arguments_not_object", "\"arguments\" is double-encoded: the JSON string decodes to "
                      "another string that holds the object",
                      "decode once more and re-encode: arguments = json.dumps(json.loads(json.loads(a)))",
                      apath, i)
            else:
                c.err("arguments_not_object", f"\"arguments\" decodes to JSON {_a(val)}, not an object",
                      "wrap the values in an object keyed by parameter name", apath, i)
            continue
        if name is not None and declared is not None and name in declared:
            compiled = declared[name]
            if compiled is not None:
                fast, validator = compiled
                if fast is not None and fast(val):
                    continue  # certainly valid (the fast path only says yes when jsonschema would)
                _schema_errors(c, validator, val, apath, i, name)
    return True


def _schema_errors(c: _Ctx, validator, val: dict, apath: str, i: int, name: str) -> None:
    try:
        errors = sorted(validator.iter_errors(val), key=lambda e: list(map(str, e.absolute_path)))
    except Exception as exc:  # noqa: BLE001 - a schema jsonschema cannot evaluate
        c.warn("tool_schema_unusable", f"could not check arguments against '{name}' schema: "
               f"{type(exc).__name__}", "simplify the parameters schema", apath, i)
        return
    for e in errors[:MAX_SCHEMA_ERRORS_PER_CALL]:
        c.err("arguments_schema_violation", f"'{name[:60]}' arguments: {_describe_schema_error(e)}",
              "make the arguments match the tool's declared parameters (or fix the schema)", apath, i)
    if len(errors) > MAX_SCHEMA_ERRORS_PER_CALL:
        c.err("arguments_schema_violation",
              f"'{name[:60]}' arguments: {len(errors) - MAX_SCHEMA_ERRORS_PER_CALL} more schema violation(s)",
              "make the arguments match the tool's declared parameters", apath, i)


def _describe_schema_error(e) -> str:
    """A message about a jsonschema error that names schema facts, never the argument values."""
    where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
    v, vv, inst = e.validator, e.validator_value, e.instance
    if v == "required" and isinstance(inst, dict):
        missing = [r for r in vv if r not in inst]
        return f"at {where}: missing required propert{'y' if len(missing) == 1 else 'ies'} " + \
            ", ".join(f"'{r}'" for r in missing)
    if v == "type":
        want = vv if isinstance(vv, str) else " or ".join(map(str, vv))
        return f"at {where}: expected {want}, got {_jtype(inst)}"
    if v == "enum":
        allowed = json.dumps(vv, ensure_ascii=False)
        return f"at {where}: value is not one of {allowed[:120]}"
    if v == "const":
        return f"at {where}: value must be {json.dumps(vv)[:60]}"
    if v == "additionalProperties" and isinstance(inst, dict):
        props = set((e.schema or {}).get("properties", {}))
        extra = [k for k in inst if k not in props][:5]
        return f"at {where}: unexpected propert{'y' if len(extra) == 1 else 'ies'} " + \
            ", ".join(f"'{str(k)[:30]}'" for k in extra)
    return f"at {where}: violates '{v}' ({json.dumps(vv, default=str)[:80]})"


def _check_tool_message(c: _Ctx, m: dict, i: int, path: str, state: _ToolState) -> None:
    tid = m.get("tool_call_id")
    if tid is None:
        c.err("tool_call_id_missing", "tool message has no \"tool_call_id\"",
              "set tool_call_id to the id of the assistant tool call it answers", f"{path}.tool_call_id", i)
        return
    if not isinstance(tid, str):
        c.err("tool_call_id_missing", f"\"tool_call_id\" is {_a(tid)}, not a string",
              "set tool_call_id to the id of the call it answers", f"{path}.tool_call_id", i)
        return
    if tid not in state.seen:
        c.err("tool_call_id_unknown", f"tool_call_id '{tid[:40]}' matches no earlier tool call in this line",
              "answer a call made earlier in the conversation (same id), or fix the id", f"{path}.tool_call_id", i)
        return
    state.pending.pop(tid, None)


def _check_parallel(c: _Ctx, obj: dict, prefix: str) -> None:
    if "parallel_tool_calls" in obj and obj["parallel_tool_calls"] is not None \
            and not isinstance(obj["parallel_tool_calls"], bool):
        c.err("parallel_tool_calls_not_bool",
              f"\"parallel_tool_calls\" is {_a(obj['parallel_tool_calls'])}, not true/false",
              "use true or false", f"{prefix}parallel_tool_calls")


# ------------------------------------------------------------------------------------ tools

def _check_tools_field(c: _Ctx, obj: dict, prefix: str) -> dict | None:
    """Check the line's ``tools``; return {declared name: (fast check, jsonschema validator) or None},
    or None when the line has no tools."""
    if "tools" not in obj or obj["tools"] is None:
        return None
    tools = obj["tools"]
    path = f"{prefix}tools"
    if not isinstance(tools, list):
        c.err("tools_not_list", f"\"tools\" is {_a(tools)}, not a list",
              'use "tools": [{"type": "function", "function": {"name": ..., "parameters": {...}}}]', path)
        return None
    declared, issues = _compiled_tools(tools)
    for sev, code, msg, hint, sub in issues:
        (c.err if sev == "error" else c.warn)(code, msg, hint, f"{path}{sub}")
    return declared


_RECENT_TOOLS: list[tuple[list, tuple]] = []  # most lines of a file repeat the same tool list


def _compiled_tools(tools: list):
    # deep == is a C-level comparison, much cheaper than serialising the list for a cache key
    # (it equates 1, 1.0 and true inside schemas; tool schemas differing only so are not a thing)
    for k, (t, compiled) in enumerate(_RECENT_TOOLS):
        if t == tools:
            if k:
                _RECENT_TOOLS.insert(0, _RECENT_TOOLS.pop(k))
            return compiled
    compiled = _compile_tools_obj(tools)
    _RECENT_TOOLS.insert(0, (tools, compiled))
    del _RECENT_TOOLS[8:]
    return compiled


def _compile_tools_obj(tools: list):
    """(declared {name: validator|None}, issues [(severity, code, message, hint, subpath)])."""
    from jsonschema import exceptions as js_exc
    from jsonschema import validators as js_val

    declared: dict[str, Any] = {}
    issues: list[tuple] = []
    for k, t in enumerate(tools):
        sp = f"[{k}]"
        if not isinstance(t, dict):
            issues.append(("error", "tool_definition_invalid", f"tool definition is {_a(t)}, not an object",
                           '{"type": "function", "function": {"name": ..., "parameters": {...}}}', sp))
            continue
        for key in t:
            if key not in TOOL_KEYS:
                issues.append(("error", "unknown_key", f"unknown key '{str(key)[:40]}' in a tool definition",
                               "a tool definition has type and function", f"{sp}.{key}"))
        if t.get("type", "function") != "function":
            issues.append(("error", "tool_definition_invalid",
                           f"tool \"type\" is {json.dumps(t.get('type'))[:30]}, not \"function\"",
                           'set "type": "function"', f"{sp}.type"))
        fn = t.get("function")
        if not isinstance(fn, dict):
            issues.append(("error", "tool_definition_invalid", "tool definition has no \"function\" object",
                           'add "function": {"name": ..., "description": ..., "parameters": {...}}',
                           f"{sp}.function"))
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            issues.append(("error", "tool_definition_invalid", "tool definition has no function name",
                           'add "name"', f"{sp}.function.name"))
            continue
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            issues.append(("error", "tool_definition_invalid", f"tool \"description\" is {_a(desc)}, not a string",
                           "use a string", f"{sp}.function.description"))
        if name in declared:
            issues.append(("error", "tool_name_duplicate", f"tool '{name[:60]}' is declared twice",
                           "declare each tool once", f"{sp}.function.name"))
        params = fn.get("parameters")
        validator = None
        if params is not None:
            if not isinstance(params, dict):
                issues.append(("error", "tool_schema_invalid",
                               f"\"parameters\" is {_a(params)}, not a JSON Schema object",
                               'use {"type": "object", "properties": {...}, "required": [...]}',
                               f"{sp}.function.parameters"))
            else:
                cls = js_val.validator_for(params, default=js_val.Draft202012Validator)
                try:
                    cls.check_schema(params)
                    validator = (_compile_fast(params), cls(params))
                except js_exc.SchemaError as exc:
                    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
                    issues.append(("error", "tool_schema_invalid",
                                   f"\"parameters\" is not a valid JSON Schema ({exc.validator} at "
                                   f"parameters{where})", "fix the schema (see json-schema.org)",
                                   f"{sp}.function.parameters"))
                except Exception as exc:  # noqa: BLE001 - e.g. unresolvable $ref
                    issues.append(("warning", "tool_schema_unusable",
                                   f"could not compile \"parameters\" ({type(exc).__name__})",
                                   "simplify the schema", f"{sp}.function.parameters"))
        declared[name] = validator
    return declared, issues


# A fast path for the JSON-Schema subset tool parameters nearly always use (type, properties,
# required, enum, items, additionalProperties: bool). It answers True only when jsonschema would
# accept the value; anything else (a violation, a float for "integer", a keyword it does not know)
# goes to jsonschema, which also words the errors. jsonschema alone costs ~100 us per call.
_FAST_KEYS = frozenset({"type", "properties", "required", "enum", "items", "additionalProperties",
                        "description", "title", "default", "examples", "$comment", "$schema"})
_PY_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
             "object": (dict,), "array": (list,), "null": (type(None),)}
_SCALARS = (str, int, float, bool, type(None))
_ANY = ("any",)


def _compile_fast(schema: Any):
    """A checker that says True only where jsonschema accepts the value, or None (unsupported).

    Compiled to nested tuples (types, enum, properties, required, allowed keys, items) that
    :func:`_fast_ok` walks with plain loops.
    """
    node = _compile_node(schema)
    if node is None:
        return None
    return lambda v: _fast_ok(node, v)


def _compile_node(schema: Any):
    if schema is True or schema == {}:
        return _ANY
    if not isinstance(schema, dict) or not schema.keys() <= _FAST_KEYS:
        return None
    types = None
    t = schema.get("type")
    if t is not None:
        names = [t] if isinstance(t, str) else t
        if not isinstance(names, list) or not names or not all(x in _PY_TYPES for x in names):
            return None
        types = frozenset(pt for x in names for pt in _PY_TYPES[x])
    enum = None
    if "enum" in schema:
        if not isinstance(schema["enum"], list) or not all(isinstance(e, _SCALARS) for e in schema["enum"]):
            return None
        enum = frozenset((type(e), e) for e in schema["enum"])
    props = None
    if schema.get("properties") is not None:
        if not isinstance(schema["properties"], dict):
            return None
        props = []
        for k, ps in schema["properties"].items():
            sub = _compile_node(ps)
            if sub is None:
                return None
            props.append((k, sub))
        props = tuple(props)
    req = schema.get("required")
    if req is not None:
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            return None
        req = tuple(req)
    ap = schema.get("additionalProperties")
    known = None
    if ap is False:
        known = frozenset(k for k, _ in props or ())
    elif ap is not None and ap is not True:
        return None
    items = None
    if "items" in schema:
        items = _compile_node(schema["items"])
        if items is None:
            return None
    return (types, enum, props, req, known, items)


def _fast_ok(node, v) -> bool:
    if node is _ANY:
        return True
    types, enum, props, req, known, items = node
    tv = type(v)
    if types is not None and tv not in types:
        return False
    if enum is not None and (not isinstance(v, _SCALARS) or (tv, v) not in enum):
        return False
    if tv is dict:
        if props is not None:
            for k, sub in props:
                if k in v and not _fast_ok(sub, v[k]):
                    return False
        if req is not None:
            for r in req:
                if r not in v:
                    return False
        if known is not None:
            for k in v:
                if k not in known:
                    return False
    elif tv is list and items is not None:
        for x in v:
            if not _fast_ok(items, x):
                return False
    return True


# ------------------------------------------------------------------------- prompt-completion

def _check_prompt_completion(c: _Ctx, obj: dict) -> dict:
    clean = _unknown_top_keys(c, obj, PC_KEYS)
    _check_metadata(c, obj)
    for key in ("prompt", "completion"):
        if key not in obj or obj[key] is None:
            c.err(f"{key}_missing", f"\"{key}\" is missing", f'add "{key}": "..." (a string)', key)
            continue
        v = obj[key]
        if not isinstance(v, str):
            c.err(f"{key}_wrong_type", f"\"{key}\" is {_a(v)}, not a string",
                  "use a string (serialise structured data with json.dumps)", key)
            continue
        if key == "completion" and not v.strip():
            c.warn("content_empty", "completion is empty", "give the output the model should learn", key)
        _special_tokens(c, v, key, None)
    return clean


# ------------------------------------------------------------------------------- preference

def _check_preference(c: _Ctx, obj: dict) -> dict:
    clean = _unknown_top_keys(c, obj, PREF_KEYS)
    _check_metadata(c, obj)
    declared = None
    state = _ToolState()
    inp = obj.get("input")
    if inp is None:
        c.err("preference_input_missing", "\"input\" is missing",
              'add "input": {"messages": [...]} with the prompt', "input")
    elif not isinstance(inp, dict):
        c.err("preference_input_invalid", f"\"input\" is {_a(inp)}, not an object",
              'use "input": {"messages": [...], "tools": [...]?}', "input")
    else:
        for k in inp:
            if k not in PREF_INPUT_KEYS:
                c.err("unknown_key", f"unknown key '{str(k)[:40]}' in \"input\"",
                      "input has messages, tools and parallel_tool_calls", f"input.{k}")
        declared = _check_tools_field(c, inp, "input.")
        _check_parallel(c, inp, "input.")
        msgs = _check_messages_field(c, inp, "messages", "input.messages")
        for i, m in enumerate(msgs or []):
            _check_message(c, m, i, f"input.messages[{i}]", declared, state,
                           parallel=inp.get("parallel_tool_calls"))
    outs = {}
    for key in ("preferred_output", "non_preferred_output"):
        out = obj.get(key)
        if out is None:
            c.err("preference_output_missing", f"\"{key}\" is missing",
                  f'add "{key}": [{{"role": "assistant", "content": "..."}}]', key)
            continue
        if not isinstance(out, list) or not out:
            c.err("preference_output_invalid", f"\"{key}\" must be a non-empty list of assistant messages",
                  f'use "{key}": [{{"role": "assistant", "content": "..."}}]', key)
            continue
        ostate = _ToolState()
        ostate.seen = set(state.seen)
        for i, m in enumerate(out):
            _check_message(c, m, i, f"{key}[{i}]", declared, ostate, require_role="assistant",
                           parallel=inp.get("parallel_tool_calls") if isinstance(inp, dict) else None)
        outs[key] = out
    if len(outs) == 2 and outs["preferred_output"] == outs["non_preferred_output"]:
        c.warn("preference_outputs_identical", "preferred and non-preferred outputs are identical",
               "a preference pair needs two different answers; drop or fix the line", "non_preferred_output")
    return clean
