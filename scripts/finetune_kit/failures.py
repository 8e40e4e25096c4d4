"""Collect an agent's failure cases as training rows to correct (collect_failures.py; loop.md).

Sources
- OpenClaw session transcripts, read with :mod:`openclaw_sessions` (the same reader as
  prepare_data).
- ``predictions.jsonl`` written by evaluate.py (one row per test example, with the scores of
  model A and model B).
- ``--cases``: a ``needs_review.jsonl`` written by an earlier run (to apply corrections later
  without the original transcripts).

Criteria (``CRITERIA``)
- ``negative_feedback``: an explicit negative feedback event in the transcript (e.g. a
  Teams thumbs-down, ``Session.feedback`` value ``negative``), or a user turn right after an
  answer whose first ``MARKER_WINDOW`` characters match one of ``NEGATIVE_MARKERS`` (plus
  ``--feedback-pattern``). Blamed: the whole answer since the previous user turn.
- ``tool_error``: a tool result that reports an error (``isError``, a JSON ``status: "error"``
  or non-empty ``error`` field, a non-zero ``exitCode``/``exit_code``/``returncode``,
  ``(Command exited with code N)``, a Python traceback, an ``Error:`` first line). Blamed: the
  assistant message that made the call.
- ``eval_miss``: the primary metric (evaluate's, or ``--metric``) of side B (``--side``) is
  below ``--threshold``.
- ``eval_regression``: A scores >= threshold and B < threshold on that metric.

Each case is one row: ``messages`` = the conversation up to the blamed assistant turn (it
ends with a user or tool message), ``metadata.failing_answer`` = the blamed messages (never
trained), ``metadata.provenance`` = {source, source_kind, session_id, agent_id, entry_id,
line (.jsonl transcript) or seq (SQLite row), message_index, criterion, criteria, evidence}. A case with a correction becomes a
training row (context + corrected answer); a case without one goes to the review file,
whose rows have no assistant answer and therefore cannot be trained on by mistake.
Assistant turns inside the context get ``weight: 0`` (see :func:`history`): only the
corrected answer is trained.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import jsonl
from .bootstrap import lazy_module
from .errors import UsageError

chat = lazy_module(__package__ + ".chat")

CRITERIA = ("negative_feedback", "tool_error", "eval_miss", "eval_regression")
SESSION_CRITERIA = ("negative_feedback", "tool_error")
EVAL_CRITERIA = ("eval_miss", "eval_regression")

# Negative-feedback markers: (name, regex), matched case-insensitively in the first
# MARKER_WINDOW characters of a user turn that follows an assistant answer.
MARKER_WINDOW = 300
NEGATIVE_MARKERS: list[tuple[str, str]] = [
    ("thumbs_down", r"👎|:thumbsdown:|:-1:|\bthumbs?[ -]?down\b"),
    ("thats_wrong", r"\b(?:that|this|it|which|your answer|the answer)(?:'s|’s| is| was)\s+"
                    r"(?:(?:just|totally|completely|still|all|simply)\s+)?(?:wrong|incorrect|not (?:right|correct|true))\b"),
    ("you_are_wrong", r"\byou(?:'re|’re| are| were)\s+(?:(?:still|totally|completely)\s+)?(?:wrong|mistaken|incorrect)\b"),
    ("wrong_thing", r"\bwrong\s+(?:answer|result|file|command|tool|folder|directory|number|date|person|one)\b"),
    ("not_what_i_asked", r"\bnot what i (?:asked|wanted|meant|said|need(?:ed)?)\b|\bi (?:didn'?t|did not|never) ask(?:ed)? (?:for|you)\b"),
    ("didnt_work", r"\b(?:that|it|this)\s+(?:still\s+)?(?:didn'?t|doesn'?t|did not|does not|won'?t)\s+work\b"),
    ("misunderstood", r"\byou (?:misunderstood|misread|got (?:it|that) wrong|didn'?t (?:understand|read|listen))\b"),
    ("no_i_meant", r"^\W*no+\b[\s,.!-]*(?:i (?:meant|said|asked|want(?:ed)?)|that'?s not)\b"),
    ("not_helpful", r"\b(?:not|un)helpful\b|\buseless\b|\bbad (?:answer|response|reply)\b"),
]

TOOL_ERROR_SIGNALS = ("is_error", "status_error", "error_field", "exit_code", "command_failed",
                      "traceback", "error_prefix")
_EXIT_RE = re.compile(r"(?:command|process)\s+exited\s+with\s+(?:code|status)\s+(-?\d+)"
                      r"|\bexit(?:\s+code|\s+status|code)\s*[:=]?\s*(-?\d+)"
                      r"|\breturn\s*code\s*[:=]\s*(-?\d+)", re.I)
_FAILED_RE = re.compile(r"\bcommand (?:failed during launch|was terminated)\b", re.I)
_TRACEBACK_RE = re.compile(r"^Traceback \(most recent call last\):", re.M)
_ERROR_PREFIX_RE = re.compile(r"^\s*(?:error|fatal|exception|[A-Z][A-Za-z]*Error)\s*:", re.I)


def compile_markers(extra: Sequence[str] = ()) -> list[tuple[str, re.Pattern]]:
    out = [(n, re.compile(p, re.I | re.M)) for n, p in NEGATIVE_MARKERS]
    for k, p in enumerate(extra or [], start=1):
        try:
            out.append((f"custom_{k}", re.compile(p, re.I | re.M)))
        except re.error as exc:
            raise UsageError(f"--feedback-pattern {p!r} is not a valid regular expression ({exc})") from exc
    return out


def match_marker(text: str, markers: Sequence[tuple[str, re.Pattern]]) -> tuple[str, str] | None:
    """(marker name, matched phrase) of the first negative marker in ``text``'s opening."""
    head = (text or "")[:MARKER_WINDOW]
    for name, rx in markers:
        m = rx.search(head)
        if m:
            return name, m.group(0)[:60]
    return None


def tool_error_signal(text: str, is_error: bool = False) -> str | None:
    """Why a tool result counts as an error (one of ``TOOL_ERROR_SIGNALS``), or None."""
    if is_error:
        return "is_error"
    t = (text or "").strip()
    if not t:
        return None
    if t[:1] in "{[":
        try:
            obj = json.loads(t)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            status = obj.get("status")
            if isinstance(status, str) and status.lower() in ("error", "failed", "failure"):
                return "status_error"
            if obj.get("ok") is False or obj.get("success") is False:
                return "status_error"
            err = obj.get("error")
            if err not in (None, "", False, {}, []):
                return "error_field"
            for k in ("exitCode", "exit_code", "returncode", "exitcode"):
                v = obj.get(k)
                if isinstance(v, int) and not isinstance(v, bool) and v != 0:
                    return "exit_code"
    for m in _EXIT_RE.finditer(t[-2000:] if len(t) > 4000 else t):
        code = next(g for g in m.groups() if g is not None)
        if int(code) != 0:
            return "exit_code"
    if _FAILED_RE.search(t):
        return "command_failed"
    if _TRACEBACK_RE.search(t):
        return "traceback"
    if _ERROR_PREFIX_RE.match(t):
        return "error_prefix"
    return None


# ---------------------------------------------------------------- cases


@dataclass
class Case:
    id: str
    criteria: list[str]
    evidence: list[dict[str, Any]]
    provenance: dict[str, Any]
    context: list[dict[str, Any]]          # chat messages ending with a user/tool message
    failing: list[dict[str, Any]]          # the blamed messages (kept in metadata, not trained)
    tools: list[dict[str, Any]] | None = None
    reference: list[dict[str, Any]] | None = None  # eval: the test set's answer (assistant message)
    extra: dict[str, Any] = field(default_factory=dict)
    status: str = "needs_review"           # needs_review | corrected | dropped
    correction: dict[str, Any] | None = None
    correction_messages: list[dict[str, Any]] | None = None

    def add(self, criterion: str, evidence: dict[str, Any]) -> None:
        if criterion not in self.criteria:
            self.criteria.append(criterion)
        self.evidence.append({"criterion": criterion, **evidence})

    def metadata(self) -> dict[str, Any]:
        prov = dict(self.provenance)
        prov["criterion"] = self.criteria[0]
        prov["criteria"] = list(self.criteria)
        prov["evidence"] = list(self.evidence)
        md: dict[str, Any] = {"id": self.id, "source": "collect_failures", "group": self.id,
                              "provenance": prov, "failing_answer": self.failing}
        if self.reference is not None:
            md["reference_answer"] = self.reference
        md.update(self.extra)
        return md

    def review_row(self) -> dict[str, Any]:
        md = self.metadata()
        md["needs_review"] = True
        md["how_to_correct"] = ('add {"id": "%s", "content": "<the right answer>"} (or "tool_calls": [...], '
                                'or "messages": [...], or "drop": true) to the corrections file' % self.id)
        row: dict[str, Any] = {"messages": history(self.context)}
        if self.tools:
            row["tools"] = self.tools
        row["metadata"] = md
        return row

    def training_row(self) -> dict[str, Any]:
        assert self.correction_messages is not None
        md = self.metadata()
        md["needs_review"] = False
        md["correction"] = self.correction
        row: dict[str, Any] = {"messages": history(self.context) + self.correction_messages}
        if self.tools and any(m.get("tool_calls") for m in row["messages"]):
            row["tools"] = self.tools
        row["metadata"] = md
        return row


def history(context: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The context with ``weight: 0`` on its assistant turns: earlier answers were not reviewed
    (they may be failures themselves), so only the corrected final answer is trained."""
    out = []
    for m in context:
        m = dict(m)
        if m.get("role") == "assistant":
            m["weight"] = 0
        out.append(m)
    return out


def case_id(*parts: Any) -> str:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return f"f-{h[:12]}"


def _msg_json(m: chat.Message) -> dict[str, Any]:
    return m.model_dump(mode="json", exclude_none=True)


# ---------------------------------------------------------------- sessions


@dataclass
class SessionScan:
    sessions: int = 0
    sessions_with_cases: int = 0
    filtered_out: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    explicit_feedback: Counter = field(default_factory=Counter)
    unreadable_entries: int = 0


def _iso(ts) -> str | None:
    from datetime import timezone

    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if ts else None


def _convert(session, msgs, oc, system: str | None, tools) -> list[dict[str, Any]]:
    """Chat messages for a slice of a session, through the session reader's own conversion.

    ``system``: None = the session's own system prompt (export-trajectory bundles carry it),
    "" = none, else that prompt."""
    part = dataclasses.replace(session, messages=list(msgs), feedback=[])
    try:
        ex = oc.session_to_chat(part, system=system, tools=tools)
    except ValueError:
        return []
    return [_msg_json(m) for m in ex.messages]


def cases_from_sessions(path: str, *, criteria: Sequence[str], agent_id: str | None = None,
                        date_range: str | None = None, markers=None, system: str | None = None,
                        tools: list[dict] | None = None, progress=None) -> tuple[list[Case], SessionScan]:
    from . import openclaw_sessions as oc

    since, until = oc.parse_date_range(date_range)
    markers = markers if markers is not None else compile_markers()
    scan = SessionScan()
    cases: dict[tuple, Case] = {}
    it = oc.iter_sessions(path, agent_id=agent_id, since=since, until=until,
                          on_skip=lambda reason, sid: scan.filtered_out.update([reason]))
    if progress:
        it = progress(it)
    for s in it:
        scan.sessions += 1
        scan.unreadable_entries += len(s.problems)
        for f in s.feedback:
            scan.explicit_feedback[f.value] += 1
        before = len(cases)
        tool_models = oc.openai_tools(tools if tools is not None else s.tools)
        tools_json = [t.model_dump(mode="json", exclude_none=True) for t in tool_models] if tool_models else None

        def blame(start: int, end: int, criterion: str, evidence: dict) -> None:
            first = s.messages[start]
            window = [m for m in s.messages if m.window == first.window]
            ctx_msgs = [m for m in window if m.index < first.index]
            if not any(m.role == "user" for m in ctx_msgs):
                scan.skipped["no_user_turn_before_answer"] += 1
                return
            key = (s.source, s.id, first.index)
            case = cases.get(key)
            if case is None:
                context = _convert(s, ctx_msgs, oc, system, tools)
                if not context or context[-1]["role"] not in ("user", "tool"):
                    scan.skipped["context_not_convertible"] += 1
                    return
                failing = _convert(s, [m for m in window if first.index <= m.index <= s.messages[end].index],
                                   oc, "", tools)
                prov = {"source": s.source, "source_kind": f"openclaw-{s.source_kind}", "session_id": s.id,
                        "agent_id": s.agent_id, "entry_id": first.entry_id, "line": first.line, "seq": first.seq,
                        "message_index": first.index, "window": first.window,
                        "timestamp": _iso(first.timestamp)}
                case = Case(id=case_id("openclaw", s.id, first.entry_id or first.index), criteria=[],
                             evidence=[], provenance={k: v for k, v in prov.items() if v is not None},
                             context=context, failing=failing, tools=tools_json)
                cases[key] = case
            case.add(criterion, evidence)

        if "negative_feedback" in criteria:
            _scan_feedback(s, markers, blame)
        if "tool_error" in criteria:
            _scan_tool_errors(s, blame)
        if len(cases) > before:
            scan.sessions_with_cases += 1
    return list(cases.values()), scan


def _response_start(msgs, pos: int) -> int | None:
    """Position of the first assistant message of the answer that contains position ``pos``."""
    start = None
    p = pos
    while p >= 0 and msgs[p].window == msgs[pos].window:
        m = msgs[p]
        if m.role == "user":
            break
        if m.role == "assistant" and not m.is_error:
            start = p
        p -= 1
    return start


def _scan_feedback(s, markers, blame) -> None:
    msgs = s.messages
    for f in s.feedback:
        if f.value != "negative" or f.after_message_index is None:
            continue
        end = f.after_message_index  # SessionMessage.index is the position in s.messages
        start = _response_start(msgs, end)
        if start is not None:
            ev = {"kind": "feedback_event", "value": f.value, "message_index": msgs[end].index}
            if f.comment:
                ev["comment"] = f.comment[:300]
            blame(start, end, "negative_feedback", ev)
    from . import openclaw_sessions as oc

    for p, m in enumerate(msgs):
        if m.role != "user" or p == 0:
            continue
        # the previous conversational message must be an answer (assistant or tool) in the same window
        q = p - 1
        while q >= 0 and msgs[q].role in ("custom", "bash", "summary"):
            q -= 1
        if q < 0 or msgs[q].role not in ("assistant", "tool") or msgs[q].window != m.window:
            continue
        text, _ = oc.strip_inbound_metadata(m.text)
        hit = match_marker(text, markers)
        if not hit:
            continue
        end = q
        while end >= 0 and msgs[end].role != "assistant":
            end -= 1
        if end < 0:
            continue
        start = _response_start(msgs, end)
        if start is not None:
            blame(start, end, "negative_feedback",
                  {"kind": "user_marker", "marker": hit[0], "phrase": hit[1], "message_index": m.index})


def _scan_tool_errors(s, blame) -> None:
    msgs = s.messages
    for p, m in enumerate(msgs):
        if m.role != "tool":
            continue
        sig = tool_error_signal(m.text, m.is_error)
        if not sig:
            continue
        q = p - 1
        caller = None
        while q >= 0 and msgs[q].window == m.window and msgs[q].role != "user":
            if msgs[q].role == "assistant" and msgs[q].tool_calls and (
                    not m.tool_call_id or any(tc.id == m.tool_call_id for tc in msgs[q].tool_calls)):
                caller = q
                break
            q -= 1
        if caller is None or msgs[caller].is_error:
            continue
        ids = {tc.id for tc in msgs[caller].tool_calls}
        end = p
        while end + 1 < len(msgs) and msgs[end + 1].role == "tool" and msgs[end + 1].tool_call_id in ids:
            end += 1
        blame(caller, end, "tool_error",
              {"kind": "tool_error", "signal": sig, "tool": m.tool_name, "tool_call_id": m.tool_call_id,
               "message_index": m.index, "excerpt": (m.text or "")[:200]})


# ---------------------------------------------------------------- predictions


@dataclass
class PredScan:
    rows: int = 0
    metric: str | None = None
    metric_source: str | None = None
    not_scored: int = 0
    side: str = "b"
    threshold: float = 0.5


def primary_metric_for(pred_path: str, first_row: dict | None) -> tuple[str | None, str]:
    """evaluate.py's primary metric: results.json beside predictions.jsonl, else the first score."""
    res = Path(pred_path).with_name("results.json")
    if res.is_file():
        try:
            doc = json.loads(res.read_text(encoding="utf-8"))
            if isinstance(doc.get("primary_metric"), str):
                return doc["primary_metric"], "results.json"
        except (OSError, ValueError):
            pass
    if first_row and isinstance(first_row.get("scores"), dict) and first_row["scores"]:
        return next(iter(first_row["scores"])), "first score in predictions.jsonl"
    return None, "none"


def _assistant_from(text: Any, calls: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"role": "assistant"}
    if isinstance(text, str) and text.strip():
        m["content"] = text
    if calls:
        m["tool_calls"] = normalize_tool_calls(calls, "call")
    if "content" not in m and "tool_calls" not in m:
        m["content"] = text if isinstance(text, str) else ""
    return m


def normalize_tool_calls(calls: Any, prefix: str) -> list[dict[str, Any]]:
    """OpenAI-style tool_calls from {name, arguments} dicts or OpenAI dicts (arguments -> JSON string)."""
    out = []
    for k, c in enumerate(calls or []):
        if not isinstance(c, dict):
            raise ValueError("a tool call must be an object")
        fn = c.get("function") if isinstance(c.get("function"), dict) else c
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("a tool call needs a function name")
        args = fn.get("arguments", fn.get("parameters", {}))
        if not isinstance(args, str):
            args = json.dumps(args if args is not None else {}, ensure_ascii=False)
        out.append({"id": str(c.get("id") or f"{prefix}_{k + 1}"), "type": "function",
                    "function": {"name": name, "arguments": args}})
    return out


def cases_from_predictions(path: str, *, criteria: Sequence[str], metric: str | None = None,
                           side: str = "b", threshold: float = 0.5,
                           tools: list[dict] | None = None) -> tuple[list[Case], PredScan]:
    scan = PredScan(side=side, threshold=threshold)
    rows = list(jsonl.read_jsonl_objects(path))
    for line, obj in rows:
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt_messages"), list) \
                or not isinstance(obj.get("scores"), dict):
            raise UsageError(f"{path}:{line}: not an evaluate.py predictions row (needs prompt_messages and "
                             f"scores); pass the predictions.jsonl written by evaluate.py --output-dir")
    scan.rows = len(rows)
    if metric in (None, "auto"):
        metric, scan.metric_source = primary_metric_for(path, rows[0][1] if rows else None)
    else:
        scan.metric_source = "--metric"
    scan.metric = metric
    if rows and metric and not any(metric in obj["scores"] for _, obj in rows):
        known = sorted({k for _, obj in rows for k in obj["scores"]})
        raise UsageError(f"metric {metric!r} is not in {path} (has: {', '.join(known) or 'none'})")
    tools_json = None
    if tools:
        from . import openclaw_sessions as oc

        tm = oc.openai_tools(tools)
        tools_json = [t.model_dump(mode="json", exclude_none=True) for t in tm] if tm else None
    out: list[Case] = []
    for line, obj in rows:
        sc = obj["scores"].get(metric) if metric else None
        if not isinstance(sc, dict):
            scan.not_scored += 1
            continue
        a, b = sc.get("a"), sc.get("b")
        mine = a if side == "a" else b
        hits: list[tuple[str, dict]] = []
        if "eval_miss" in criteria and isinstance(mine, (int, float)) and mine < threshold:
            hits.append(("eval_miss", {"kind": "eval_miss", "metric": metric, "side": side, "score": mine,
                                       "threshold": threshold}))
        if "eval_regression" in criteria and isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                and a >= threshold > b:
            hits.append(("eval_regression", {"kind": "eval_regression", "metric": metric, "a": a, "b": b,
                                             "threshold": threshold}))
        if not isinstance(mine, (int, float)) and not isinstance(b, (int, float)):
            scan.not_scored += 1
        if not hits:
            continue
        fail_side = "b" if hits[0][0] == "eval_regression" else side
        prompt = obj["prompt_messages"]
        try:
            failing = [_assistant_from(obj.get(f"prediction_{fail_side}"), obj.get(f"tool_calls_{fail_side}"))]
            reference = [_assistant_from(obj.get("reference"), obj.get("reference_tool_calls"))]
        except ValueError as exc:
            raise UsageError(f"{path}:{line}: {exc}") from exc
        prov = {"source": str(path), "source_kind": "predictions", "line": line,
                "test_line": obj.get("line"), "index": obj.get("index")}
        case = Case(id=case_id("prompt", json.dumps(prompt, sort_keys=True, ensure_ascii=False)),
                    criteria=[], evidence=[], provenance={k: v for k, v in prov.items() if v is not None},
                    context=prompt, failing=failing, tools=tools_json, reference=reference,
                    extra={"from_eval_set": True})
        if "eval_regression" in [h[0] for h in hits] and fail_side == "b":
            case.extra["answer_a"] = _assistant_from(obj.get("prediction_a"), obj.get("tool_calls_a"))
        for crit, ev in hits:
            case.add(crit, ev)
        out.append(case)
    return out, scan


# ---------------------------------------------------------------- review files (--cases)


def cases_from_review_file(path: str, criteria: Sequence[str] | None) -> list[Case]:
    out = []
    for line, obj in jsonl.read_jsonl_objects(path):
        md = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(md, dict) or not isinstance(md.get("id"), str) or not isinstance(obj.get("messages"), list):
            raise UsageError(f"{path}:{line}: not a collect_failures review row (needs messages and metadata.id)")
        prov = dict(md.get("provenance") or {})
        crits = list(prov.pop("criteria", None) or [prov.get("criterion", "unknown")])
        prov.pop("criterion", None)
        evidence = list(prov.pop("evidence", []) or [])
        if criteria and not set(crits) & set(criteria):
            continue
        extra = {k: v for k, v in md.items() if k in ("from_eval_set", "answer_a")}
        out.append(Case(id=md["id"], criteria=crits, evidence=evidence, provenance=prov,
                        context=obj["messages"], failing=list(md.get("failing_answer") or []),
                        tools=obj.get("tools"), reference=md.get("reference_answer"), extra=extra))
    return out


# ---------------------------------------------------------------- corrections


@dataclass
class CorrectionReport:
    rows: int = 0
    applied: int = 0
    dropped: int = 0
    from_reference: int = 0
    unused_ids: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # blocking


def load_corrections(path: str) -> dict[str, tuple[int, dict]]:
    """id -> (line, correction row). Rows: {"id", "content"?, "tool_calls"?, "messages"?, "drop"?}."""
    out: dict[str, tuple[int, dict]] = {}
    for line, obj in jsonl.read_jsonl_objects(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise UsageError(f"{path}:{line}: each correction needs an \"id\" (from the review file's metadata.id)")
        if not obj.get("drop") and not any(k in obj for k in ("content", "tool_calls", "messages")):
            raise UsageError(f"{path}:{line}: correction {obj['id']} has none of content, tool_calls, "
                             f"messages or drop")
        if obj["id"] in out:
            raise UsageError(f"{path}:{line}: id {obj['id']} is corrected twice (first at line {out[obj['id']][0]})")
        out[obj["id"]] = (line, obj)
    return out


def _correction_messages(corr: dict) -> list[dict[str, Any]]:
    if "messages" in corr:
        msgs = corr["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("\"messages\" must be a non-empty list")
        msgs = copy.deepcopy(msgs)
        for m in msgs:
            if isinstance(m, dict) and m.get("role") == "assistant" and m.get("tool_calls"):
                m["tool_calls"] = normalize_tool_calls(m["tool_calls"], "fix")
        if not isinstance(msgs[0], dict) or msgs[0].get("role") != "assistant" \
                or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
            raise ValueError("\"messages\" must start and end with an assistant message")
        return msgs
    m: dict[str, Any] = {"role": "assistant"}
    content = corr.get("content")
    if content is not None:
        if not isinstance(content, str):
            raise ValueError("\"content\" must be a string")
        m["content"] = content
    if corr.get("tool_calls"):
        if not isinstance(corr["tool_calls"], list):
            raise ValueError("\"tool_calls\" must be a list")
        m["tool_calls"] = normalize_tool_calls(corr["tool_calls"], "fix")
    if not (m.get("content") or "").strip() and not m.get("tool_calls"):
        raise ValueError("the corrected answer is empty")
    return [m]


def _signature(msgs: Iterable[dict]) -> str:
    parts = []
    for m in msgs:
        if m.get("role") != "assistant":
            continue
        text = re.sub(r"\s+", " ", chat.content_text(m.get("content"))).strip().casefold()
        calls = []
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function") or {}
            try:
                args = json.dumps(json.loads(fn.get("arguments") or "{}"), sort_keys=True)
            except (ValueError, TypeError):
                args = str(fn.get("arguments"))
            calls.append(f"{fn.get('name')}({args})")
        parts.append(text + "|" + ";".join(sorted(calls)))
    return "\n".join(parts)


def apply_corrections(cases: list[Case], corrections: dict[str, tuple[int, dict]] | None, *,
                      use_reference: bool = False, corrections_path: str | None = None) -> CorrectionReport:
    rep = CorrectionReport(rows=len(corrections or {}))
    by_id = {c.id: c for c in cases}
    for c in cases:
        src: dict[str, Any] | None = None
        corr = None
        if corrections and c.id in corrections:
            line, corr = corrections[c.id]
            src = {"source": "corrections", "file": corrections_path, "line": line}
            if corr.get("drop"):
                c.status = "dropped"
                rep.dropped += 1
                continue
        elif use_reference and c.reference:
            corr = {"messages": c.reference}
            src = {"source": "reference"}
        if corr is None:
            continue
        try:
            msgs = _correction_messages(corr)
        except ValueError as exc:
            rep.problems.append({"id": c.id, "code": "invalid_correction", "message": str(exc), **src})
            continue
        if c.failing and _signature(msgs) == _signature(c.failing):
            rep.problems.append({"id": c.id, "code": "correction_repeats_failure",
                                 "message": "the corrected answer is the failing answer; it would teach the failure",
                                 **src})
            continue
        row = {"messages": history(c.context) + msgs}
        if c.tools and any(m.get("tool_calls") for m in row["messages"]):
            row["tools"] = c.tools
        ex, findings = chat.check_record(row, "chat", None)
        errors = [f for f in findings if f.severity == "error"]
        if ex is None or errors:
            f = errors[0] if errors else None
            rep.problems.append({"id": c.id, "code": "invalid_correction",
                                 "message": f"{f.code}: {f.message}" + (f" at {f.path}" if f and f.path else "")
                                 if f else "the corrected row is not a valid chat line", **src})
            continue
        c.correction_messages = msgs
        c.correction = src
        c.status = "corrected"
        if src["source"] == "reference":
            rep.from_reference += 1
        else:
            rep.applied += 1
    if corrections:
        rep.unused_ids = sorted(set(corrections) - set(by_id))
    return rep
