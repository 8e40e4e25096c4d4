"""Per-example metrics for evaluate.py (definitions are documented in evaluation.md).

Every metric maps (prediction, reference) to a number for ONE example, or ``None`` when
the metric does not apply to that example (such pairs are left out of the comparison
and ``n`` in the report says how many examples were scored).

Text normalisation (exact_match, token_f1, rouge_l): Unicode casefold, whitespace
collapsed, leading/trailing whitespace stripped. Tokens are ``\\w+`` runs of the
normalised text (punctuation is ignored by token_f1 and rouge_l, not by exact_match).

Tool calls are compared after parsing: a call is ``(name, arguments)`` with the
arguments decoded from their JSON string (double-encoded strings are decoded again), so
key order and whitespace do not matter; the calls of one turn are compared as a
multiset (order-insensitive). Accepted shapes in generated text (see
:func:`parse_tool_calls`): ``<tool_call>{...}</tool_call>`` blocks (Hermes/Qwen style);
a JSON object ``{"name": ..., "arguments": {...}}`` (``parameters`` is accepted for
``arguments``, Llama-3.1 style); ``{"function": {"name", "arguments"}}``; an OpenAI
message/list ``{"tool_calls": [...]}`` or ``[{"type": "function", "function": {...}}, ...]``;
a JSON list of any of those; optionally inside a ```json fence or after some prose
(the first JSON value of one of these shapes counts).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional

# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class MetricInfo:
    name: str
    binary: bool             # 0/1 per example -> McNemar exact p
    higher_is_better: bool
    quality: bool            # counts for the verdict / forgetting flags (latency does not)
    description: str


METRICS: dict[str, MetricInfo] = {m.name: m for m in [
    MetricInfo("exact_match", True, True, True,
               "1 if the normalised prediction equals the normalised reference text"),
    MetricInfo("token_f1", False, True, True,
               "SQuAD-style F1 of the word-token multisets"),
    MetricInfo("rouge_l", False, True, True,
               "ROUGE-L F1: longest common subsequence of word tokens"),
    MetricInfo("json_valid", True, True, True,
               "1 if the output is JSON (one optional ```json fence) and, with --json-schema, validates"),
    MetricInfo("json_match", True, True, True,
               "1 if the output parses to the same JSON value as the reference"),
    MetricInfo("tool_call", True, True, True,
               "1 if the predicted tool calls equal the reference calls (names and parsed arguments); "
               "for references without tool calls: 1 if no call was made"),
    MetricInfo("tool_name", True, True, True,
               "1 if the predicted tool names equal the reference names (arguments ignored)"),
    MetricInfo("judge", True, True, True,
               "1 if the LLM judge says the answer is as correct as the reference (--judge-url)"),
    MetricInfo("latency_ms", False, False, False,
               "generation wall time per example in ms (batch time / batch size; exact with --batch-size 1)"),
    MetricInfo("output_tokens", False, False, False,
               "generated tokens, end-of-turn token excluded"),
]}

TEXT_METRICS = ("exact_match", "token_f1", "rouge_l")


def info(name: str) -> MetricInfo:
    return METRICS[name]


# ---------------------------------------------------------------- text metrics

_WS = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+")


def normalize_text(s: str | None) -> str:
    s = unicodedata.normalize("NFKC", s or "").casefold()
    return _WS.sub(" ", s).strip()


def tokens(s: str | None) -> list[str]:
    return _TOKEN.findall(normalize_text(s))


def exact_match(pred: str | None, ref: str | None) -> float:
    return 1.0 if normalize_text(pred) == normalize_text(ref) else 0.0


def token_f1(pred: str | None, ref: str | None) -> float:
    p, r = tokens(pred), tokens(ref)
    if not p and not r:
        return 1.0
    if not p or not r:
        return 0.0
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (O(len(a)*len(b)) time, O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(pred: str | None, ref: str | None) -> float:
    p, r = tokens(pred), tokens(ref)
    if not p and not r:
        return 1.0
    if not p or not r:
        return 0.0
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------- JSON

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```$", re.S)
_MISSING = object()


def strip_fence(text: str) -> str:
    t = (text or "").strip()
    m = _FENCE.match(t)
    return m.group(1).strip() if m else t


def parse_json_output(text: str | None) -> Any:
    """The JSON value of an output (whole text, or one fenced block), or _MISSING."""
    try:
        return json.loads(strip_fence(text or ""))
    except (ValueError, RecursionError):
        return _MISSING


def is_json_container(text: str | None) -> bool:
    v = parse_json_output(text)
    return isinstance(v, (dict, list))


def load_schema_validator(schema: dict) -> Callable[[Any], bool]:
    """A ``value -> bool`` validator for a JSON Schema (draft taken from ``$schema``)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # raises jsonschema.SchemaError
    v = cls(schema)
    return v.is_valid


def json_valid(pred: str | None, validator: Optional[Callable[[Any], bool]] = None) -> float:
    v = parse_json_output(pred)
    if v is _MISSING:
        return 0.0
    if validator is not None and not validator(v):
        return 0.0
    return 1.0


def json_match(pred: str | None, ref: str | None) -> float | None:
    r = parse_json_output(ref)
    if r is _MISSING:
        return None  # not a JSON reference: metric does not apply
    p = parse_json_output(pred)
    return 1.0 if p is not _MISSING and _canon(p) == _canon(r) else 0.0


# ---------------------------------------------------------------- tool calls

def _decode_args(args: Any) -> Any:
    for _ in range(3):  # a JSON string, possibly double-encoded (seen in real data)
        if not isinstance(args, str):
            break
        try:
            args = json.loads(args)
        except ValueError:
            break
    return {} if args is None else args


def _one_call(obj: Any) -> dict | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    if "arguments" in obj:
        args = obj["arguments"]
    elif "parameters" in obj:
        args = obj["parameters"]
    else:
        args = {}
    return {"name": name, "arguments": _decode_args(args)}


def normalize_tool_calls(value: Any) -> list[dict] | None:
    """Tool calls of one turn as ``[{"name", "arguments"}]``; None if ``value`` has no such shape."""
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        value = value["tool_calls"]
    if isinstance(value, dict):
        c = _one_call(value)
        return [c] if c else None
    if isinstance(value, list):
        calls = [_one_call(v) for v in value]
        if calls and all(calls):
            return calls  # type: ignore[return-value]
        return [] if not value else None
    return None


_TOOL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def parse_tool_calls(text: str | None) -> list[dict]:
    """Tool calls found in generated text (shapes in the module docstring); [] when none."""
    text = text or ""
    tagged = _TOOL_TAG.findall(text)
    if tagged:
        calls = []
        for body in tagged:
            v = parse_json_output(body)
            got = normalize_tool_calls(v) if v is not _MISSING else None
            if got:
                calls.extend(got)
        return calls
    v = parse_json_output(text)
    if v is not _MISSING:
        return normalize_tool_calls(v) or []
    dec = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):  # the first JSON value of a tool-call shape
        try:
            val, _end = dec.raw_decode(text, m.start())
        except ValueError:
            continue
        got = normalize_tool_calls(val)
        if got:
            return got
    return []


def _canon(v: Any) -> Any:
    """A hashable canonical form: dict keys sorted, 2.0 == 2."""
    if isinstance(v, dict):
        return tuple(sorted((str(k), _canon(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("__list__",) + tuple(_canon(x) for x in v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def tool_call_match(pred_calls: list[dict] | None, ref_calls: list[dict] | None) -> float:
    pred, ref = pred_calls or [], ref_calls or []
    a = Counter((c["name"], _canon(c["arguments"])) for c in pred)
    b = Counter((c["name"], _canon(c["arguments"])) for c in ref)
    return 1.0 if a == b else 0.0


def tool_name_match(pred_calls: list[dict] | None, ref_calls: list[dict] | None) -> float:
    a = Counter(c["name"] for c in pred_calls or [])
    b = Counter(c["name"] for c in ref_calls or [])
    return 1.0 if a == b else 0.0


# ---------------------------------------------------------------- scoring one example

def score_example(metric: str, *, prediction: str | None, reference: str | None,
                  pred_calls: list[dict] | None, ref_calls: list[dict] | None,
                  schema_validator: Optional[Callable[[Any], bool]] = None,
                  extra: dict | None = None) -> float | None:
    """Score one example for ``metric``; None when the metric does not apply.

    Text metrics do not apply to tool-call turns without text in the reference.
    ``extra`` carries measured values (latency_ms, output_tokens, judge).
    """
    extra = extra or {}
    if metric in TEXT_METRICS:
        if ref_calls and not (reference or "").strip():
            return None
        return {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}[metric](
            prediction, reference)
    if metric == "json_valid":
        if ref_calls:
            return None
        return json_valid(prediction, schema_validator)
    if metric == "json_match":
        return None if ref_calls else json_match(prediction, reference)
    if metric == "tool_call":
        return tool_call_match(pred_calls, ref_calls)
    if metric == "tool_name":
        return tool_name_match(pred_calls, ref_calls)
    if metric in ("latency_ms", "output_tokens", "judge"):
        v = extra.get(metric)
        return None if v is None else float(v)
    raise KeyError(metric)
