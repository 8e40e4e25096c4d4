"""Render chat examples with a model's chat template and build exact training labels.

Only assistant turns are trained - their content, their tool calls and the end-of-turn
token that closes them - and an assistant message with ``weight: 0`` stays in the context
but is not trained. Everything else (system, user, tool results, role headers, the
whitespace between turns, padding) gets the label ``-100``.

How spans are found (no ``{% generation %}`` markers needed, so any template works):

1. The whole conversation is rendered once (``full``).
2. For each assistant message *i*, the conversation is rendered again up to the message
   before it with the generation prompt (``gen``), and up to and including it (``upto``).
   When ``upto`` is a prefix of ``full``, the assistant span is ``full[common(gen, upto):
   len(upto)]`` - whatever the template writes for that turn after its header.
3. If the template renders a turn differently when it is the last one (or raises on a
   partial conversation), the content text is searched in ``full`` after the previous span.
4. Spans are mapped to tokens with the fast tokenizer's offsets (or, for slow tokenizers,
   by tokenizing prefixes). Inside a span, tokens up to and including the *last*
   end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, eos, ...) are
   trainable; what follows it (the newline before the next turn) is not.

An example whose assistant turn cannot be located, whose tool calls the template drops,
or whose every assistant turn has ``weight: 0`` raises :class:`LabelError` with a stable
``code``; :func:`build_example` never silently returns an all-masked example unless the
caller asks for it (``allow_empty=True``).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Any

from .chat import ChatExample, Message, content_text

IGNORE_INDEX = -100

# Special tokens that close a turn in common chat templates (only those in the vocabulary count).
END_OF_TURN_CANDIDATES = (
    "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "</s>", "<|end_of_text|>", "<|return|>", "<|call|>", "<|END_OF_TURN_TOKEN|>", "<turn|>",
)

PROBE_TOOL = "zz_probe_lookup_order"


class LabelError(ValueError):
    """An example (or a template) for which correct labels cannot be built."""

    def __init__(self, code: str, message: str, hint: str = "", message_index: int | None = None):
        super().__init__(message)
        self.code = code
        self.hint = hint
        self.message_index = message_index

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "hint": self.hint,
                "message_index": self.message_index}


@dataclass
class Span:
    message_index: int
    start: int            # char offset in the rendered text
    end: int              # char offset (exclusive)
    trainable: bool
    method: str           # "prefix" | "search"
    tool_call_names: list[str] = field(default_factory=list)


# ----------------------------------------------------------------- message conversion

def template_messages(example: ChatExample | list, *, inline_tool_calls: bool = False) -> list[dict[str, Any]]:
    """The messages (of an example, or a list of messages/dicts) as HF chat templates expect.

    ``developer`` becomes ``system`` and legacy ``function`` becomes ``tool``; content parts
    are joined to a string (``""`` when absent, since many templates concatenate it);
    tool-call ``arguments`` are passed decoded (templates apply ``tojson`` themselves).
    ``inline_tool_calls`` is for templates that do not render tool calls (evaluation
    prompts): each call becomes a ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
    line of the content, a shape ``metrics.parse_tool_calls`` reads back.
    """
    messages = example.messages if isinstance(example, ChatExample) else [
        m if isinstance(m, Message) else Message.model_validate(m) for m in example]
    out = []
    for m in messages:
        role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
        d: dict[str, Any] = {"role": role, "content": content_text(m.content)}
        if m.name is not None:
            d["name"] = m.name
        if m.tool_calls:
            calls = []
            for tc in m.tool_calls:
                try:
                    args = json.loads(tc.function.arguments)
                except ValueError:
                    args = tc.function.arguments
                calls.append({"id": tc.id, "type": "function",
                              "function": {"name": tc.function.name, "arguments": args}})
            if inline_tool_calls:
                inline = "\n".join("<tool_call>" + json.dumps(c["function"], ensure_ascii=False)
                                   + "</tool_call>" for c in calls)
                d["content"] = (d["content"] + "\n" + inline) if d["content"] else inline
            else:
                d["tool_calls"] = calls
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def template_tools(example: ChatExample) -> list[dict[str, Any]] | None:
    if not example.tools:
        return None
    return [t.model_dump(mode="json", exclude_none=True) for t in example.tools]


# ----------------------------------------------------------------- tokenizer facts

def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def end_of_turn_ids(tokenizer) -> set[int]:
    """Token ids that can close an assistant turn for this tokenizer (special tokens only)."""
    key = (id(tokenizer), tokenizer.eos_token, len(tokenizer))
    if key in _END_CACHE:
        return _END_CACHE[key]
    ids: set[int] = set()
    names = list(END_OF_TURN_CANDIDATES)
    if tokenizer.eos_token:
        names.append(tokenizer.eos_token)
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    added = set(getattr(tokenizer, "get_added_vocab", lambda: {})().keys())
    for n in names:
        if n not in special and n not in added:
            continue
        i = tokenizer.convert_tokens_to_ids(n)
        if isinstance(i, int) and i >= 0 and tokenizer.convert_ids_to_tokens(i) == n:
            ids.add(i)
    _END_CACHE[key] = ids
    return ids


_END_CACHE: dict[tuple, set[int]] = {}


def render(tokenizer, messages: list[dict], tools: list[dict] | None = None, *,
           add_generation_prompt: bool = False) -> str:
    kw: dict[str, Any] = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
    if tools:
        kw["tools"] = tools
    text = tokenizer.apply_chat_template(messages, **kw)
    if not isinstance(text, str):  # some versions return a list for batched input
        text = text[0]
    return text


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# ----------------------------------------------------------------- template probing

@dataclass
class TemplateInfo:
    has_template: bool
    supports_tools: bool = False       # renders the line-level `tools` definitions
    renders_tool_calls: bool = False   # renders assistant tool_calls
    end_tokens: list[str] = field(default_factory=list)
    marks_assistant: bool = False      # the probe conversation got exact labels
    problem: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"has_template": self.has_template, "supports_tools": self.supports_tools,
                "renders_tool_calls": self.renders_tool_calls, "end_of_turn_tokens": self.end_tokens,
                "marks_assistant_spans": self.marks_assistant, "problem": self.problem}


def inspect_template(tokenizer) -> TemplateInfo:
    """Probe what the tokenizer's chat template can do (cached per template string)."""
    return _inspect(tokenizer, getattr(tokenizer, "chat_template", None) or "")


_INSPECT_CACHE: dict[tuple[int, str], TemplateInfo] = {}


def _inspect(tokenizer, template: str) -> TemplateInfo:
    key = (id(tokenizer), template)
    if key in _INSPECT_CACHE:
        return _INSPECT_CACHE[key]
    if not template:
        info = TemplateInfo(False, problem={
            "code": "missing_chat_template",
            "message": "the tokenizer has no chat template, so chat examples cannot be rendered",
            "hint": "use an instruct/chat model, or pass --chat-template FILE.jinja (e.g. the template of the "
                    "model family's instruct variant)"})
        _INSPECT_CACHE[key] = info
        return info
    info = TemplateInfo(True)
    info.end_tokens = sorted(tokenizer.convert_ids_to_tokens(i) for i in end_of_turn_ids(tokenizer))
    probe_tool = {"type": "function", "function": {
        "name": PROBE_TOOL, "description": "probe",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                       "required": ["order_id"]}}}
    base = [{"role": "user", "content": "Where is order 17?"}]
    try:
        with_tools = render(tokenizer, base, [probe_tool], add_generation_prompt=True)
        info.supports_tools = PROBE_TOOL in with_tools
    except Exception:  # noqa: BLE001 - a template may reject tools outright
        info.supports_tools = False
    try:
        call_msgs = base + [{"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": PROBE_TOOL, "arguments": {"order_id": "17"}}}]}]
        text = render(tokenizer, call_msgs, [probe_tool] if info.supports_tools else None)
        info.renders_tool_calls = PROBE_TOOL in text
    except Exception:  # noqa: BLE001
        info.renders_tool_calls = False
    _INSPECT_CACHE[key] = info  # the probe below renders through assistant_spans, which reads it
    probe = ChatExample.model_validate({"messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say alpha."},
        {"role": "assistant", "content": "alpha"},
        {"role": "user", "content": "Say beta."},
        {"role": "assistant", "content": "beta"}]})
    try:
        r = build_example(tokenizer, probe, None)
        trained = tokenizer.decode([t for t in r["labels"] if t != IGNORE_INDEX])
        info.marks_assistant = ("alpha" in trained and "beta" in trained and "Say" not in trained
                                and "terse" not in trained)
        if not info.marks_assistant:
            info.problem = {"code": "template_cannot_mark_assistant",
                            "message": f"on a probe conversation the trainable text was {trained!r}",
                            "hint": "pass --chat-template FILE.jinja with a template that renders each "
                                    "assistant turn in place"}
    except LabelError as exc:
        info.problem = {"code": "template_cannot_mark_assistant", "message": str(exc), "hint": exc.hint}
    _INSPECT_CACHE[key] = info
    return info


# ----------------------------------------------------------------- span finding

def assistant_spans(tokenizer, example: ChatExample) -> tuple[str, list[Span], list[dict]]:
    """Render ``example`` and locate every assistant turn in the text.

    Returns (rendered text, spans, per-example warnings). Raises LabelError when the
    template fails or an assistant turn cannot be located.
    """
    info = inspect_template(tokenizer)
    if not info.has_template:
        p = info.problem
        raise LabelError(p["code"], p["message"], p["hint"])
    msgs = template_messages(example)
    tools = template_tools(example) if info.supports_tools else None
    warnings: list[dict] = []
    try:
        full = render(tokenizer, msgs, tools)
    except Exception as exc:  # noqa: BLE001 - jinja raise_exception(), TypeError on None, ...
        raise LabelError("template_error", f"the chat template failed on this example: {exc}",
                         "check role order (many templates require user/assistant alternation) or pass "
                         "--chat-template FILE.jinja") from exc
    spans: list[Span] = []
    cursor = 0
    end_texts = [t for t in tokenizer.convert_ids_to_tokens(sorted(end_of_turn_ids(tokenizer))) if t]
    for i, m in enumerate(example.messages):
        if m.role != "assistant":
            continue
        trainable = m.weight != 0
        span = _span_by_prefix(tokenizer, msgs, tools, i, full, cursor)
        if span is None:
            span = _span_by_search(m, i, full, cursor, end_texts)
        if span is None:
            what = "its tool calls" if m.tool_calls and not m.text().strip() else "its content"
            raise LabelError("template_cannot_mark_assistant",
                             f"cannot locate assistant message {i} in the rendered text ({what} not found "
                             f"where the template puts it)",
                             "this chat template renders turns differently depending on what follows; pass "
                             "--chat-template FILE.jinja with a template that renders each turn in place",
                             message_index=i)
        span.trainable = trainable
        if m.tool_calls:
            seg = full[span.start:span.end]
            names = [tc.function.name for tc in m.tool_calls]
            missing = [n for n in names if n not in seg]
            if missing:
                code = "template_drops_tool_calls"
                msg = (f"the chat template does not render the tool calls of assistant message {i} "
                       f"({', '.join(missing)}): the model would learn an empty or partial answer")
                hint = ("use a base model whose chat template supports tool calls (e.g. Qwen2.5/Qwen3, "
                        "Llama-3.1+ Instruct) or pass --chat-template FILE.jinja that renders tool_calls")
                if trainable:
                    raise LabelError(code, msg, hint, message_index=i)
                warnings.append({"code": code, "message": msg, "hint": hint, "message_index": i})
            span.tool_call_names = names
        spans.append(span)
        cursor = span.end
    if example.tools and not info.supports_tools:
        warnings.append({"code": "template_ignores_tools",
                         "message": "the chat template does not render the line's `tools` definitions; the model "
                                    "will not see the tool descriptions it is trained to call",
                         "hint": "use a model whose template supports tools, or put the tool descriptions in the "
                                 "system prompt", "message_index": None})
    return full, spans, warnings


def _span_by_prefix(tokenizer, msgs, tools, i, full, cursor) -> Span | None:
    try:
        upto = render(tokenizer, msgs[:i + 1], tools)
        gen = render(tokenizer, msgs[:i], tools, add_generation_prompt=True) if i > 0 else ""
    except Exception:  # noqa: BLE001 - templates that refuse partial conversations
        return None
    if not full.startswith(upto):
        return None
    start = _common_prefix(gen, upto) if gen else 0
    if i == 0 and not gen:
        return None  # an assistant-first conversation: no header to anchor on
    if start < cursor or start >= len(upto):
        return None
    return Span(i, start, len(upto), True, "prefix")


def _span_by_search(message, i, full, cursor, end_texts: list[str]) -> Span | None:
    """Find the message content as a whole turn: the match must be followed (after optional
    whitespace) by an end-of-turn token or the end of the text - so a user message quoting the
    answer ("Say alpha.") is not mistaken for it."""
    text = message.text().strip()
    if not text:
        return None
    idx = full.find(text, cursor)
    while idx >= 0:
        rest = full[idx + len(text):].lstrip()
        if not rest or any(rest.startswith(e) for e in end_texts):
            return Span(i, idx, idx + len(text), True, "search")
        idx = full.find(text, idx + 1)
    return None


# ----------------------------------------------------------------- token alignment

def _tokenize_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    enc = tokenizer(text, add_special_tokens=False)
    return list(enc["input_ids"]), None


def _token_index_at(tokenizer, text: str, ids: list[int], pos: int) -> int:
    """Slow-tokenizer fallback: index of the first token at or after char ``pos``."""
    pre = tokenizer(text[:pos], add_special_tokens=False)["input_ids"]
    n = 0
    for a, b in zip(pre, ids):
        if a != b:
            break
        n += 1
    return n


def build_example(tokenizer, example: ChatExample, max_length: int | None, *,
                  allow_empty: bool = False) -> dict[str, Any]:
    """Render ``example`` with the chat template and build its labels.

    Returns ``{"input_ids", "labels", "n_tokens", "n_trainable", "n_trainable_full", "truncated",
    "trainable_lost", "warnings", "spans"}`` where ``labels[j] == input_ids[j]`` for trained
    tokens and ``-100`` otherwise (unshifted, as HF causal-LM losses expect). ``n_tokens`` and
    ``n_trainable_full`` are before truncation; ``n_trainable`` after it; ``trainable_lost``
    is the difference. Truncation keeps the start (``max_length`` tokens).

    Raises :class:`LabelError` (``code``: missing_chat_template, template_error,
    template_cannot_mark_assistant, template_drops_tool_calls, no_trainable_tokens).
    """
    full, spans, warnings = assistant_spans(tokenizer, example)
    ids, offsets = _tokenize_with_offsets(tokenizer, full)
    ends = end_of_turn_ids(tokenizer)
    labels = [IGNORE_INDEX] * len(ids)
    if offsets is not None:
        starts = [o[0] for o in offsets]
        tok_ends = [o[1] for o in offsets]
    span_tokens: list[tuple[Span, int, int]] = []
    straddles: list[int] = []
    for sp in spans:
        if offsets is not None:
            # first token overlapping the span: a token can straddle the boundary when the generation
            # prompt ends mid-token (e.g. "ASSISTANT: " + "Hello" -> " Hello"); it is trained
            a = bisect.bisect_right(tok_ends, sp.start)
            b = max(a, bisect.bisect_left(starts, sp.end))
            if a < len(ids) and starts[a] < sp.start and sp.trainable:
                straddles.append(sp.message_index)
        else:
            a = _token_index_at(tokenizer, full, ids, sp.start)
            b = _token_index_at(tokenizer, full, ids, sp.end)
        span_tokens.append((sp, a, b))
    no_end_turns = []
    for n_sp, (sp, a, b) in enumerate(span_tokens):
        last_end = max((k for k in range(a, b) if ids[k] in ends), default=None)
        if last_end is None and sp.method == "search":
            # the content was found by search: the turn's end token follows it (maybe after whitespace)
            nxt = span_tokens[n_sp + 1][1] if n_sp + 1 < len(span_tokens) else len(ids)
            for k in range(b, min(nxt, b + 4)):
                if ids[k] in ends:
                    last_end = k
                    break
                if offsets is not None and full[starts[k]:tok_ends[k]].strip():
                    break
        if last_end is not None:
            b = last_end + 1
        else:
            # no end-of-turn token: drop trailing whitespace-only tokens, train the rest
            while b > a and offsets is not None and not full[starts[b - 1]:tok_ends[b - 1]].strip():
                b -= 1
            no_end_turns.append(sp.message_index)
        if sp.trainable:
            for k in range(a, b):
                labels[k] = ids[k]
    if straddles:
        warnings.append({"code": "prompt_boundary_merge",
                         "message": f"the first token of assistant turn(s) {straddles} also covers the end of the "
                                    "generation prompt (e.g. a trailing space): at inference the prompt is "
                                    "tokenized differently than in training",
                         "hint": "prefer a chat template whose generation prompt ends with a newline or a special "
                                 "token", "message_index": straddles[0]})
    if no_end_turns:
        warnings.append({"code": "no_end_of_turn_token",
                         "message": f"assistant turn(s) {no_end_turns} end without an end-of-turn/eos token in "
                                    "the template: the model may not learn to stop",
                         "hint": "use a chat template that closes assistant turns with the eos token",
                         "message_index": no_end_turns[0]})
    n_trainable_full = sum(1 for t in labels if t != IGNORE_INDEX)
    if n_trainable_full == 0 and not allow_empty:
        all_w0 = spans and all(not s.trainable for s in spans)
        raise LabelError("no_trainable_tokens",
                         "every assistant message has weight 0" if all_w0 else
                         "the example has no trainable tokens",
                         "give at least one assistant message weight 1 (or drop the line)" if all_w0 else
                         "each example needs an assistant turn with content or tool calls")
    n_tokens = len(ids)
    truncated = max_length is not None and n_tokens > max_length
    if truncated:
        ids = ids[:max_length]
        labels = labels[:max_length]
    n_trainable = sum(1 for t in labels if t != IGNORE_INDEX)
    return {
        "input_ids": ids,
        "labels": labels,
        "n_tokens": n_tokens,
        "n_trainable": n_trainable,
        "n_trainable_full": n_trainable_full,
        "truncated": truncated,
        "trainable_lost": n_trainable_full - n_trainable,
        "warnings": warnings,
        "spans": [(s.message_index, s.method, s.trainable) for s, _, _ in span_tokens],
    }


def trained_text(tokenizer, built: dict[str, Any]) -> list[str]:
    """The decoded trainable stretches of a built example (for reports and tests)."""
    out, cur = [], []
    for tok, lab in zip(built["input_ids"], built["labels"]):
        if lab != IGNORE_INDEX:
            cur.append(tok)
        elif cur:
            out.append(tokenizer.decode(cur))
            cur = []
    if cur:
        out.append(tokenizer.decode(cur))
    return out
