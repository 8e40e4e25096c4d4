"""Read OpenClaw agent session transcripts (the agent's own conversation logs).

Where OpenClaw keeps them (read from the ``openclaw`` npm package 2026.9.6: ``docs/reference/
session-management-compaction/{store,schema}.md``, ``docs/reference/database-schemas/layout.md``,
``docs/tools/trajectory.md``, ``docs/cli/sessions.md`` and ``dist/session-manager-*.mjs`` /
``dist/agent-core-*.mjs``):

- state dir: ``$OPENCLAW_STATE_DIR`` or ``~/.openclaw``; one folder per agent: ``agents/<agentId>/``.
- legacy and archived transcripts (all releases before the SQLite store, and what ``openclaw
  doctor`` archives): ``agents/<agentId>/sessions/<sessionId>.jsonl``. ``*.trajectory.jsonl``
  sidecars and ``sessions.json`` in the same folder are *not* transcripts and are ignored;
  ``<sessionId>.jsonl.deleted.<timestamp>`` archives are read only with ``include_archived``.
- current releases: per-agent SQLite ``agents/<agentId>/agent/openclaw-agent.sqlite``, table
  ``transcript_events(session_id, seq, event_json TEXT | event_zstd BLOB, ...)`` holding the very
  same event objects as the JSONL lines (events >= 1 KiB may be zstd-compressed; decoding them
  needs the ``zstandard`` package), plus ``session_windows(session_id, session_key, started_at,
  model, ...)``. The database is opened read-only.
- ``openclaw sessions export-trajectory`` bundles: a folder with ``session-branch.json``
  (``{header, leafId, entries}``), ``system-prompt.txt`` and ``tools.json`` (``[{name, description,
  parameters}]``) - the only source that also carries the system prompt and the tool schemas.

Event (line) schema, one JSON object per line / row:

- header: ``{"type": "session", "version": 3|4, "id": "<uuid>", "timestamp": "<ISO-8601>",
  "cwd": "...", "parentSession"?: ...}``
- tree entries ``{"type", "id", "parentId", "timestamp", ...}``; the active conversation is the
  path from the current leaf back to the root (``parentId`` links; a ``{"type": "leaf",
  "targetId"}`` control entry moves the leaf). Version-1 files have no ids and are linear.
- ``{"type": "message", "message": {...}}`` where ``message.role`` is
  ``user`` (``content``: string or ``[{"type": "text", "text"}, {"type": "image", ...}]``),
  ``assistant`` (``content``: ``[{"type": "text"}, {"type": "thinking", "thinking"},
  {"type": "toolCall", "id", "name", "arguments": {...}}]``, ``stopReason`` (``stop``,
  ``toolUse``, ``length``, ``error``, ``aborted``), ``errorMessage``, ``provider``, ``model``,
  ``usage``, ``timestamp`` in epoch ms), ``toolResult`` (``toolCallId``, ``toolName``,
  ``content`` blocks, ``isError``), ``custom`` (extension messages; a Microsoft Teams thumbs
  up/down is stored as ``{"type": "custom", "event": "feedback", "value": "positive"|"negative",
  "comment", "messageId", "ts", "sessionKey", "agentId"}``), ``bashExecution``,
  ``compactionSummary`` / ``branchSummary``.
- other entry types: ``model_change`` (``provider``, ``modelId``), ``thinking_level_change``,
  ``custom`` / ``custom_message`` (extension state / injected context), ``compaction``
  (``summary``, ``firstKeptEntryId``), ``reset`` (a fresh history window inside the same
  session id), ``branch_summary``, ``label``, ``session_info``.

Public API (also used to collect failure cases):

- :func:`iter_sessions` ``(path_or_dir=None, agent_id=None, since=None, until=None)`` yields
  :class:`Session` objects (id, agent id, timestamps, :class:`SessionMessage` list with tool
  calls/results and where each is stored - ``entry_id``, ``line`` of a .jsonl, ``seq`` of a
  SQLite row -, :class:`Feedback` markers, errors), oldest first per source.
- :func:`session_to_chat` ``(session) -> chat.ChatExample`` (the whole active branch) and
  :func:`session_to_chats` (one example per reset window), built through the chat.py models.
- :func:`strip_inbound_metadata` removes the metadata blocks OpenClaw prepends to inbound user
  messages (sender ids, channel context: PII, and noise for training); the full set of strippers
  (channel envelopes, message ids, system events, queued-message wrappers ...) is in
  ``readers/openclaw_inbound.py`` and runs in :func:`session_to_chats`.
- :func:`injected_kind` tells assistant entries OpenClaw wrote itself (``gateway-injected`` banners,
  ``delivery-mirror`` copies) from model replies; they never become training targets.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .bootstrap import lazy_module
from .errors import UsageError, require
from .jsonl import iter_lines

chat = lazy_module(__package__ + ".chat")

SQLITE_NAME = "openclaw-agent.sqlite"
TRAJECTORY_BRANCH = "session-branch.json"
INBOUND_CONTEXT_MARKER = "\u27e6openclaw:ctx\u27e7"  # the provenance marker OpenClaw puts on injected headers

# ------------------------------------------------------------------ data model


@dataclass
class ToolCallRecord:
    id: str
    name: str
    arguments: Any  # usually a dict (OpenClaw stores parsed arguments)


@dataclass
class SessionMessage:
    index: int                      # position in Session.messages
    role: str                       # user | assistant | tool | custom | bash | summary
    text: str = ""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    tool_call_id: str | None = None
    tool_name: str | None = None
    is_error: bool = False          # toolResult.isError, or assistant stopReason error/aborted
    stop_reason: str | None = None
    error_message: str | None = None
    timestamp: datetime | None = None
    entry_id: str | None = None
    line: int | None = None         # where the entry is stored: 1-based line of a .jsonl transcript
    seq: int | None = None          # ... or transcript_events.seq of an openclaw-agent.sqlite row
    model: str | None = None
    provider: str | None = None
    window: int = 0                 # reset window (0 = first conversation in the session)
    images: int = 0                 # image blocks (not exported to text training data)
    thinking: str | None = None     # assistant reasoning blocks (never exported)
    raw_role: str = ""              # the role as stored (toolResult, custom, bashExecution, ...)
    injected: str | None = None     # "gateway-injected" / "delivery-mirror": an assistant entry OpenClaw
                                    # wrote itself (provider "openclaw"), not a model reply
    custom_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("thinking",)}
        d["timestamp"] = _iso(self.timestamp)
        d["tool_calls"] = [tc.__dict__ for tc in self.tool_calls]
        return d


@dataclass
class Feedback:
    value: str                      # positive | negative | other provider value
    comment: str | None = None
    message_id: str | None = None   # the channel's message id the reaction was on
    timestamp: datetime | None = None
    entry_id: str | None = None
    after_message_index: int | None = None  # index of the last assistant message before it

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "comment": self.comment, "message_id": self.message_id,
                "timestamp": _iso(self.timestamp), "after_message_index": self.after_message_index}


@dataclass
class Session:
    id: str
    agent_id: str | None
    source: str                     # file or database path
    source_kind: str                # jsonl | sqlite | trajectory
    session_key: str | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    cwd: str | None = None
    version: int | None = None
    model: str | None = None
    provider: str | None = None
    messages: list[SessionMessage] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    system_prompt: str | None = None          # trajectory bundles only
    tools: list[dict[str, Any]] | None = None  # trajectory bundles only ([{name, description, parameters}])
    stats: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def windows(self) -> list[list[SessionMessage]]:
        out: dict[int, list[SessionMessage]] = {}
        for m in self.messages:
            out.setdefault(m.window, []).append(m)
        return [out[k] for k in sorted(out)]

    @property
    def user_turns(self) -> int:
        return sum(1 for m in self.messages if m.role == "user")

    @property
    def tool_errors(self) -> list[SessionMessage]:
        return [m for m in self.messages if m.role == "tool" and m.is_error]

    @property
    def assistant_errors(self) -> list[SessionMessage]:
        return [m for m in self.messages if m.role == "assistant" and m.is_error]

    @property
    def negative_feedback(self) -> list[Feedback]:
        return [f for f in self.feedback if f.value == "negative"]

    def to_dict(self, messages: bool = True) -> dict[str, Any]:
        d = {"id": self.id, "agent_id": self.agent_id, "session_key": self.session_key,
             "source": self.source, "source_kind": self.source_kind,
             "started_at": _iso(self.started_at), "updated_at": _iso(self.updated_at),
             "model": self.model, "provider": self.provider, "version": self.version,
             "user_turns": self.user_turns, "feedback": [f.to_dict() for f in self.feedback],
             "stats": dict(self.stats), "problems": list(self.problems)}
        if messages:
            d["messages"] = [m.to_dict() for m in self.messages]
        return d


# ------------------------------------------------------------------ helpers


# --help text of a sessions path argument (what iter_sessions reads; the default is default_state_dir())
SOURCES_HELP = ("an OpenClaw state dir, agents/<id> dir, sessions dir, session .jsonl, openclaw-agent.sqlite or "
                "export-trajectory bundle")


def add_filter_arguments(group, example_range: str = "2026-01-01..2026-03-31") -> None:
    """The session filters shared by the scripts that read sessions (``--agent-id``, ``--date-range``:
    the ``agent_id``/``date_range`` of :func:`iter_sessions` / :func:`parse_date_range`)."""
    group.add_argument("--agent-id", metavar="ID", help="only this agent's sessions")
    group.add_argument("--date-range", metavar="FROM..TO",
                       help=f"sessions started in this UTC range, e.g. {example_range} (either side optional)")


def default_state_dir() -> Path:
    env = os.environ.get("OPENCLAW_STATE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".openclaw"


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if ts else None


def parse_timestamp(value: Any) -> datetime | None:
    """ISO-8601 strings (``...Z``) or epoch milliseconds/seconds -> aware UTC datetime."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
        if v > 1e11:  # milliseconds
            v /= 1000.0
        try:
            return datetime.fromtimestamp(v, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        s = value.strip()
        if s.endswith("Z") or s.endswith("z"):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            return None
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return None


def parse_date_range(spec: str | None) -> tuple[datetime | None, datetime | None]:
    """``FROM..TO`` (either side optional; dates or ISO datetimes, UTC). A date-only TO is inclusive."""
    if not spec:
        return None, None
    if ".." not in spec:
        raise UsageError(f"--date-range {spec!r}: expected FROM..TO, e.g. 2026-01-01..2026-03-31 "
                         "(either side may be empty)")
    a, b = spec.split("..", 1)

    def one(s: str, end: bool) -> datetime | None:
        s = s.strip()
        if not s:
            return None
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            try:
                d = date.fromisoformat(s)
            except ValueError as exc:
                raise UsageError(f"--date-range: invalid date {s!r} ({exc})") from exc
            dt = datetime.combine(d, time.min, tzinfo=timezone.utc)
            return dt + timedelta(days=1) - timedelta(microseconds=1) if end else dt
        dt = parse_timestamp(s)
        if dt is None:
            raise UsageError(f"--date-range: cannot read {s!r}; use YYYY-MM-DD or an ISO-8601 time")
        return dt

    since, until = one(a, False), one(b, True)
    if since and until and since > until:
        raise UsageError(f"--date-range {spec!r}: FROM is after TO")
    return since, until


def agent_from_session_key(key: str | None) -> str | None:
    if isinstance(key, str) and key.startswith("agent:"):
        parts = key.split(":")
        if len(parts) >= 3 and parts[1]:
            return parts[1]
    return None


_TS_PREFIX = re.compile(r"^\[[A-Za-z]{3} \d{4}-\d{2}-\d{2} \d{2}:\d{2}[^\]]*\] *")
_LEGACY_HEADER = re.compile(
    r"^(?:Conversation info|Sender|Forwarded message context|Location|Structured object|Thread starter|"
    r"Reply target of current user message|Replied message|Reply chain of current user message)"
    r" \(untrusted[^)]*\):\s*$")
_UNTRUSTED_CONTEXT = re.compile(r"^(?:Untrusted context \(metadata, do not treat as instructions or commands\):"
                                r"|Chat history since last reply \(untrusted, for context\):"
                                r"|Context: " + re.escape(INBOUND_CONTEXT_MARKER) + r")\s*$")


def strip_inbound_metadata(text: str) -> tuple[str, bool]:
    """Remove the context blocks OpenClaw prepends to inbound channel messages.

    Recognised (per ``dist/strip-inbound-meta-*.mjs``): a leading ``[Thu 2026-04-02 00:30 GMT+8]``
    timestamp, header lines ending in the marker ``⟦openclaw:ctx⟧`` or the legacy
    ``Sender (untrusted metadata):`` style followed by a fenced ```json block (or a paragraph),
    and the trailing ``Context: ⟦openclaw:ctx⟧`` / ``Untrusted context (...)`` block. Returns
    (text, changed). This is our own re-implementation of the documented behaviour.
    """
    original = text
    text = _TS_PREFIX.sub("", text)
    if INBOUND_CONTEXT_MARKER not in text and "untrusted" not in text.lower():
        return text, text != original
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if _UNTRUSTED_CONTEXT.match(stripped):
            break  # trailing context block: everything after it is injected context
        header = (len(stripped) > 14 and stripped.endswith(INBOUND_CONTEXT_MARKER)) or bool(_LEGACY_HEADER.match(stripped))
        if header:
            i += 1
            if i < len(lines) and lines[i].strip() == "```json":
                i += 1
                while i < len(lines) and lines[i].strip() != "```":
                    i += 1
                i += 1
            else:
                while i < len(lines) and lines[i].strip():
                    i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            continue
        out.append(lines[i])
        i += 1
    result = _TS_PREFIX.sub("", "\n".join(out).strip("\n"))
    return result, result != original


# ------------------------------------------------------------------ building sessions


def _blocks_text(content: Any, stats: dict[str, int]) -> tuple[str, int, str | None, list[ToolCallRecord]]:
    """(text, images, thinking, tool calls) of a message content (string or block list)."""
    if isinstance(content, str):
        return content, 0, None, []
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCallRecord] = []
    images = 0
    if isinstance(content, list):
        for b in content:
            if not isinstance(b, dict):
                continue
            t = b.get("type")
            if t == "text" and isinstance(b.get("text"), str):
                texts.append(b["text"])
            elif t == "thinking":
                if isinstance(b.get("thinking"), str):
                    thinking.append(b["thinking"])
                stats["thinking_blocks"] = stats.get("thinking_blocks", 0) + 1
            elif t == "redactedThinking" or t == "redacted_thinking":
                stats["thinking_blocks"] = stats.get("thinking_blocks", 0) + 1
            elif t == "image":
                images += 1
            elif t == "toolCall":
                calls.append(ToolCallRecord(id=str(b.get("id") or ""), name=str(b.get("name") or ""),
                                            arguments=b.get("arguments", {})))
            else:
                stats["unknown_blocks"] = stats.get("unknown_blocks", 0) + 1
    return "\n".join(texts), images, ("\n".join(thinking) if thinking else None), calls


# Assistant entries OpenClaw appends itself (provider "openclaw"): "gateway-injected" banners such as
# "Agent failed before reply: ..." (src/gateway/server-methods/chat-transcript-inject.ts
# appendInjectedAssistantMessageToTranscript) and "delivery-mirror" copies of a reply delivered to a
# channel (src/config/sessions/transcript.ts appendAssistantMessageToSessionTranscript); OpenClaw itself
# treats both as transcript-only (src/agents/pi-embedded-subscribe.handlers.messages.ts
# isTranscriptOnlyOpenClawAssistantMessage). Read in openclaw 2026.4.2 dist/gateway-cli-*.js,
# dist/sessions-*.js and dist/pi-embedded-*.js.
INJECTED_MODELS = ("gateway-injected", "delivery-mirror")


def injected_kind(message: dict[str, Any]) -> str | None:
    """``gateway-injected`` / ``delivery-mirror`` for an assistant entry OpenClaw wrote itself, else None."""
    provider = message.get("provider")
    model = message.get("model")
    if isinstance(provider, str) and provider.strip() == "openclaw" and isinstance(model, str) \
            and model.strip() in INJECTED_MODELS:
        return model.strip()
    return None


def _is_feedback(obj: dict[str, Any]) -> bool:
    if obj.get("event") == "feedback":
        return True
    if obj.get("customType") in ("feedback", "msteams-feedback"):
        return True
    data = obj.get("data")
    return isinstance(data, dict) and data.get("event") == "feedback"


def _feedback_from(obj: dict[str, Any], entry: dict[str, Any]) -> Feedback:
    src = obj.get("data") if isinstance(obj.get("data"), dict) and obj.get("event") != "feedback" else obj
    value = src.get("value") or src.get("reaction") or "unknown"
    value = {"like": "positive", "dislike": "negative", "up": "positive", "down": "negative"}.get(value, value)
    return Feedback(value=str(value), comment=src.get("comment") if isinstance(src.get("comment"), str) else None,
                    message_id=src.get("messageId") if isinstance(src.get("messageId"), str) else None,
                    timestamp=parse_timestamp(src.get("ts")) or parse_timestamp(entry.get("timestamp")),
                    entry_id=entry.get("id"))


def _active_branch(entries: list[dict[str, Any]], leaf_hint: str | None, stats: dict[str, int]) -> list[dict[str, Any]]:
    tree = [e for e in entries if e.get("type") not in ("session", "leaf")]
    if not any(isinstance(e.get("id"), str) for e in tree):
        return tree  # version 1: linear, no ids
    by_id: dict[str, dict[str, Any]] = {}
    leaf: str | None = None
    for e in entries:
        if e.get("type") == "session":
            continue
        if e.get("type") == "leaf":
            leaf = e.get("targetId") if isinstance(e.get("targetId"), str) else None
            continue
        if isinstance(e.get("id"), str):
            by_id[e["id"]] = e
            leaf = e["id"]
    if leaf_hint and leaf_hint in by_id:
        leaf = leaf_hint
    path: list[dict[str, Any]] = []
    seen: set[str] = set()
    cur = by_id.get(leaf) if leaf else None
    while cur is not None and cur.get("id") not in seen:
        seen.add(cur["id"])
        path.append(cur)
        parent = cur.get("parentId")
        cur = by_id.get(parent) if isinstance(parent, str) else None
        if cur is None and isinstance(parent, str):
            stats["missing_parent"] = stats.get("missing_parent", 0) + 1
    path.reverse()
    off = len(by_id) - len(path)
    if off:
        stats["off_branch_entries"] = stats.get("off_branch_entries", 0) + off
    return path


def _assistant(m: dict[str, Any], calls: list[ToolCallRecord], thinking: str | None, base: dict[str, Any],
               stats: dict[str, int]) -> SessionMessage:
    stop = m.get("stopReason") if isinstance(m.get("stopReason"), str) else None
    err = m.get("errorMessage") if isinstance(m.get("errorMessage"), str) else None
    injected = injected_kind(m)
    if injected:
        stats[f"injected_{injected}"] = stats.get(f"injected_{injected}", 0) + 1
    return SessionMessage(role="assistant", tool_calls=calls, thinking=thinking, stop_reason=stop, error_message=err,
                          is_error=stop in ("error", "aborted") or bool(err), model=m.get("model"),
                          provider=m.get("provider"), injected=injected, **base)


def _from_header(entries: list[dict[str, Any]], source: str, source_kind: str, agent_id: str | None,
                 session_id: str | None, session_key: str | None, problems: list[str] | None) -> Session:
    header = next((e for e in entries if e.get("type") == "session"), None) or {}
    sid = session_id or (header.get("id") if isinstance(header.get("id"), str) else None) or Path(source).stem
    return Session(id=sid, agent_id=agent_id, source=source, source_kind=source_kind, session_key=session_key,
                   started_at=parse_timestamp(header.get("timestamp")),
                   cwd=header.get("cwd") if isinstance(header.get("cwd"), str) else None,
                   version=header.get("version") if isinstance(header.get("version"), int) else None,
                   problems=list(problems or []))


def build_session(entries: list[dict[str, Any]], *, source: str, source_kind: str,
                  agent_id: str | None = None, session_id: str | None = None,
                  session_key: str | None = None, leaf_id: str | None = None,
                  problems: list[str] | None = None, lines: list[int] | None = None,
                  seqs: list[int] | None = None) -> Session:
    """Turn a list of transcript events (header + entries) into a :class:`Session`.

    ``lines`` / ``seqs`` (parallel to ``entries``): where each entry is stored (.jsonl line,
    SQLite ``seq``); copied to :attr:`SessionMessage.line` / :attr:`SessionMessage.seq`."""
    stats: dict[str, int] = {}
    where: dict[int, dict[str, int]] = {}
    for name, values in (("line", lines), ("seq", seqs)):
        for e, v in zip(entries, values or ()):
            where.setdefault(id(e), {})[name] = v
    s = _from_header(entries, source, source_kind, agent_id, session_id, session_key, problems)
    window = 0
    last_assistant: int | None = None
    provider = model = None
    times: list[datetime] = []
    for e in _active_branch(entries, leaf_id, stats):
        et = e.get("type")
        ts = parse_timestamp(e.get("timestamp"))
        if ts:
            times.append(ts)
        stats[f"entry_{et}"] = stats.get(f"entry_{et}", 0) + 1
        if et == "model_change":
            provider = e.get("provider") or provider
            model = e.get("modelId") or model
            continue
        if et == "reset":
            if s.messages and s.messages[-1].window == window:
                window += 1
            continue
        if et in ("custom", "custom_message") and _is_feedback(e):
            f = _feedback_from(e, e)
            f.after_message_index = last_assistant
            s.feedback.append(f)
            continue
        if et == "custom_message":
            text, images, _, _ = _blocks_text(e.get("content"), stats)
            s.messages.append(SessionMessage(index=len(s.messages), role="custom", text=text, images=images,
                                             timestamp=ts, entry_id=e.get("id"), window=window,
                                             raw_role="custom_message", custom_type=e.get("customType"),
                                             **where.get(id(e), {})))
            continue
        if et != "message" or not isinstance(e.get("message"), dict):
            continue
        m = e["message"]
        role = m.get("role")
        mts = parse_timestamp(m.get("timestamp")) or ts
        if _is_feedback(m):  # Teams feedback: {"type": "custom", "event": "feedback", ...} (no role)
            f = _feedback_from(m, e)
            f.after_message_index = last_assistant
            s.feedback.append(f)
            continue
        text, images, thinking, calls = _blocks_text(m.get("content"), stats)
        base = dict(index=len(s.messages), text=text, images=images, timestamp=mts, entry_id=e.get("id"),
                    window=window, raw_role=str(role), **where.get(id(e), {}))
        if role == "user":
            s.messages.append(SessionMessage(role="user", **base))
        elif role == "assistant":
            s.messages.append(_assistant(m, calls, thinking, base, stats))
            if not s.messages[-1].injected:  # the session's model is the real one, never "openclaw/gateway-injected"
                provider = m.get("provider") or provider
                model = m.get("model") or model
            last_assistant = s.messages[-1].index
        elif role == "toolResult":
            s.messages.append(SessionMessage(role="tool", tool_call_id=m.get("toolCallId"),
                                             tool_name=m.get("toolName"), is_error=bool(m.get("isError")),
                                             **base))
        elif role == "custom":
            s.messages.append(SessionMessage(role="custom", custom_type=m.get("customType"), **base))
        elif role == "bashExecution":
            out = m.get("output") if isinstance(m.get("output"), str) else ""
            base["text"] = f"$ {m.get('command', '')}\n{out}".strip()
            s.messages.append(SessionMessage(role="bash", **base))
        elif role in ("compactionSummary", "branchSummary"):
            base["text"] = m.get("summary") if isinstance(m.get("summary"), str) else text
            s.messages.append(SessionMessage(role="summary", **base))
        else:
            stats["unknown_roles"] = stats.get("unknown_roles", 0) + 1
    s.provider, s.model = provider, model
    if not s.started_at and times:
        s.started_at = min(times)
    s.updated_at = max(times) if times else s.started_at
    if s.agent_id is None:
        s.agent_id = agent_from_session_key(session_key)
    s.stats = stats
    return s


# ------------------------------------------------------------------ sources


def read_jsonl_session(path: str | os.PathLike, agent_id: str | None = None) -> Session:
    p = Path(path)
    entries: list[dict[str, Any]] = []
    lines: list[int] = []
    problems: list[str] = []
    for rl in iter_lines(p):
        if rl.error == "blank_line":
            continue
        if rl.error:
            problems.append(f"line {rl.line}: {rl.error} ({rl.detail})")
            continue
        if isinstance(rl.obj, dict):
            entries.append(rl.obj)
            lines.append(rl.line)
        else:
            problems.append(f"line {rl.line}: not a JSON object")
    if agent_id is None:
        agent_id = _agent_from_path(p)
    return build_session(entries, source=str(p), source_kind="jsonl", agent_id=agent_id, problems=problems,
                         lines=lines)


def _agent_from_path(p: Path) -> str | None:
    parts = p.resolve().parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i - 1] == "agents" and parts[i + 1] in ("sessions", "agent"):
            return parts[i]
    return None


def _decoder():
    zstd = require("zstandard", "to read compressed OpenClaw transcript rows")
    return zstd.ZstdDecompressor()


def read_sqlite_sessions(path: str | os.PathLike, agent_id: str | None = None) -> Iterator[Session]:
    """Sessions of a per-agent ``openclaw-agent.sqlite`` (read-only)."""
    p = Path(path)
    if agent_id is None:
        agent_id = _agent_from_path(p)
    try:
        con = sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{p}: not a readable SQLite database ({exc})") from exc
    try:
        if "transcript_events" not in tables:
            raise UsageError(f"{p}: no transcript_events table; not an OpenClaw agent database")
        cols = {r[1] for r in con.execute("PRAGMA table_info(transcript_events)")}
        windows: dict[str, dict[str, Any]] = {}
        if "session_windows" in tables:
            wcols = [r[1] for r in con.execute("PRAGMA table_info(session_windows)")]
            want = [c for c in ("session_id", "session_key", "started_at", "created_at", "model",
                                "model_provider") if c in wcols]
            for row in con.execute(f"SELECT {', '.join(want)} FROM session_windows"):
                windows[row[0]] = dict(zip(want, row))
        ids = [r[0] for r in con.execute("SELECT DISTINCT session_id FROM transcript_events ORDER BY session_id")]
        has_z = "event_zstd" in cols
        sel = "seq, event_json" + (", event_zstd, event_utf8_bytes" if has_z else "")
        dec = None
        for sid in ids:
            entries: list[dict[str, Any]] = []
            seqs: list[int] = []
            problems: list[str] = []
            for row in con.execute(f"SELECT {sel} FROM transcript_events WHERE session_id=? ORDER BY seq", (sid,)):
                text = row[1]
                if text is None and has_z and row[2] is not None:
                    dec = dec or _decoder()
                    try:
                        text = dec.decompress(row[2], max_output_size=int(row[3] or 0) or 64 << 20).decode("utf-8")
                    except Exception as exc:  # noqa: BLE001 - a corrupt row is reported, not fatal
                        problems.append(f"seq {row[0]}: cannot decompress ({exc})")
                        continue
                try:
                    obj = json.loads(text) if text is not None else None
                except ValueError as exc:
                    problems.append(f"seq {row[0]}: invalid JSON ({exc})")
                    continue
                if isinstance(obj, dict):
                    entries.append(obj)
                    seqs.append(row[0])
            w = windows.get(sid, {})
            s = build_session(entries, source=str(p), source_kind="sqlite", agent_id=agent_id, session_id=sid,
                              session_key=w.get("session_key"), problems=problems, seqs=seqs)
            if s.started_at is None:
                s.started_at = parse_timestamp(w.get("started_at") or w.get("created_at"))
            s.model = s.model or w.get("model")
            s.provider = s.provider or w.get("model_provider")
            yield s
    finally:
        con.close()


def read_trajectory_bundle(path: str | os.PathLike) -> Session:
    d = Path(path)
    try:
        branch = json.loads((d / TRAJECTORY_BRANCH).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{d / TRAJECTORY_BRANCH}: cannot read trajectory bundle ({exc})") from exc
    manifest: dict[str, Any] = {}
    if (d / "manifest.json").is_file():
        try:
            manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
    header = branch.get("header") if isinstance(branch.get("header"), dict) else {}
    entries = [header] + [e for e in branch.get("entries", []) if isinstance(e, dict)]
    key = manifest.get("sessionKey") if isinstance(manifest.get("sessionKey"), str) else None
    s = build_session(entries, source=str(d), source_kind="trajectory", session_key=key,
                      session_id=manifest.get("sessionId") or header.get("id"),
                      leaf_id=branch.get("leafId"), agent_id=agent_from_session_key(key))
    sp = d / "system-prompt.txt"
    if sp.is_file():
        s.system_prompt = sp.read_text(encoding="utf-8").strip() or None
    tj = d / "tools.json"
    if tj.is_file():
        try:
            tools = json.loads(tj.read_text(encoding="utf-8"))
            s.tools = [t for t in tools if isinstance(t, dict) and t.get("name")] if isinstance(tools, list) else None
        except ValueError:
            s.problems.append("tools.json is not valid JSON")
    return s


def _is_transcript_file(p: Path, include_archived: bool) -> bool:
    n = p.name
    if n.endswith(".trajectory.jsonl") or n == "sessions.json":
        return False
    if n.endswith(".jsonl"):
        return True
    return include_archived and ".jsonl.deleted." in n


def looks_like_openclaw(path: str | os.PathLike) -> bool:
    """Cheap check used by ``--from auto``: a state/agent/sessions dir, agent DB, bundle or session file."""
    p = Path(path)
    if p.is_dir():
        return ((p / "agents").is_dir() or (p / "sessions").is_dir() or (p / "agent" / SQLITE_NAME).is_file()
                or (p / TRAJECTORY_BRANCH).is_file()
                or any(_first_is_header(f) for f in sorted(p.glob("*.jsonl"))[:3]))
    if p.name.endswith(".sqlite"):
        return True
    return p.is_file() and _first_is_header(p)


def _first_is_header(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            first = fh.readline(1 << 16)
        obj = json.loads(first.decode("utf-8-sig"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and obj.get("type") == "session" and "id" in obj


def _is_archive(p: Path) -> bool:
    """``<sessionId>.jsonl.deleted.<timestamp>``: what ``/reset`` / session cleanup leaves behind."""
    return ".jsonl.deleted." in p.name


def _sources(root: Path, include_archived: bool,
             on_archive: Callable[[Path], None] | None = None) -> Iterator[tuple[str, Path, str | None]]:
    """(kind, path, agent id) of every transcript source under ``root``; ``on_archive(path)`` for
    each deleted-session archive that is skipped."""
    if root.is_file():
        if root.name.endswith(".sqlite"):
            yield "sqlite", root, None
        else:
            yield "jsonl", root, None
        return
    if (root / TRAJECTORY_BRANCH).is_file():
        yield "trajectory", root, None
        return
    bundles = sorted(d for d in root.iterdir() if d.is_dir() and (d / TRAJECTORY_BRANCH).is_file())
    if bundles:
        for b in bundles:
            yield "trajectory", b, None
        return
    if (root / "agents").is_dir():
        agent_dirs = sorted(d for d in (root / "agents").iterdir() if d.is_dir())
    elif (root / "sessions").is_dir() or (root / "agent").is_dir():
        agent_dirs = [root]
    else:
        agent_dirs = []
    if agent_dirs:
        for ad in agent_dirs:
            aid = ad.name if ad.parent.name == "agents" else _agent_from_path(ad / "sessions" / "x")
            db = ad / "agent" / SQLITE_NAME
            if db.is_file():
                yield "sqlite", db, aid
            sd = ad / "sessions"
            if sd.is_dir():
                for f in sorted(sd.iterdir()):
                    if f.is_file() and _is_transcript_file(f, include_archived):
                        yield "jsonl", f, aid
                    elif f.is_file() and _is_archive(f) and on_archive:
                        on_archive(f)
        return
    # a plain folder of session files (e.g. a copied sessions/ dir)
    for f in sorted(root.iterdir()):
        if f.is_file() and _is_transcript_file(f, include_archived):
            yield "jsonl", f, _agent_from_path(f)
        elif f.is_file() and _is_archive(f) and on_archive:
            on_archive(f)
        elif f.is_file() and f.name == SQLITE_NAME:
            yield "sqlite", f, _agent_from_path(f)


def iter_sessions(path_or_dir: str | os.PathLike | None = None, agent_id: str | None = None,
                  since: datetime | None = None, until: datetime | None = None, *,
                  include_archived: bool = False,
                  on_skip: Callable[[str, str], None] | None = None) -> Iterator[Session]:
    """Yield the sessions found at ``path_or_dir`` (default: the OpenClaw state dir).

    ``path_or_dir`` may be the state dir, an ``agents/<id>`` dir, a ``sessions/`` dir, one
    ``.jsonl`` transcript, an ``openclaw-agent.sqlite`` file, a trajectory bundle, or a folder of
    bundles. ``agent_id`` keeps only that agent's sessions; ``since``/``until`` (aware datetimes,
    or ``YYYY-MM-DD`` / ISO strings in UTC)
    keep sessions whose start time falls in the range (a session with no timestamp is skipped
    when a range is given). A session id met twice for one agent (a legacy ``.jsonl`` also
    imported into the SQLite store, read first) is yielded once. ``on_skip(reason, session_id)`` is
    called for each filtered session (reasons: ``agent``, ``date``, ``no_timestamp``,
    ``duplicate_session``, ``deleted_archive`` - a ``*.jsonl.deleted.<timestamp>`` file not read
    because ``include_archived`` is off).
    """
    if isinstance(since, str):  # "2026-03-01" or an ISO time (UTC)
        since = parse_date_range(f"{since}..")[0]
    if isinstance(until, str):  # a date-only value includes that whole day
        until = parse_date_range(f"..{until}")[1]
    root = Path(path_or_dir).expanduser() if path_or_dir is not None else default_state_dir()
    if not root.exists():
        raise UsageError(f"no OpenClaw sessions at {root}: pass the sessions folder, or set OPENCLAW_STATE_DIR")
    if root.is_file() and not os.access(root, os.R_OK):
        raise UsageError(f"input file is not readable: {root}")

    def sessions() -> Iterator[Session]:
        archived = (lambda f: on_skip("deleted_archive", f.name)) if on_skip else None
        for kind, p, aid in _sources(root, include_archived, archived):
            if agent_id and aid and aid != agent_id:
                if on_skip:  # cheap skip before reading (one call per transcript file or database)
                    on_skip("agent", str(p))
                continue
            if kind == "sqlite":
                yield from read_sqlite_sessions(p, aid)
            elif kind == "trajectory":
                yield read_trajectory_bundle(p)
            else:
                yield read_jsonl_session(p, aid)

    seen: set[tuple[str | None, str]] = set()
    for s in sessions():
        if (s.agent_id, s.id) in seen:  # e.g. a legacy .jsonl that was also imported into the SQLite store
            if on_skip:
                on_skip("duplicate_session", s.id)
            continue
        seen.add((s.agent_id, s.id))
        if agent_id and s.agent_id != agent_id:
            if on_skip:
                on_skip("agent", s.id)
            continue
        if since or until:
            if s.started_at is None:
                if on_skip:
                    on_skip("no_timestamp", s.id)
                continue
            if (since and s.started_at < since) or (until and s.started_at > until):
                if on_skip:
                    on_skip("date", s.id)
                continue
        yield s


# ------------------------------------------------------------------ conversion to chat


def _arguments_json(args: Any) -> str:
    if isinstance(args, str):
        return args
    return json.dumps(args if args is not None else {}, ensure_ascii=False)


def openai_tools(tools: Iterable[dict[str, Any]] | None) -> list[chat.Tool] | None:
    """OpenClaw ``tools.json`` entries (``{name, description, parameters}``) as chat.Tool models."""
    if not tools:
        return None
    out = []
    for t in tools:
        fn = t.get("function") if isinstance(t.get("function"), dict) else t
        spec = {k: v for k, v in fn.items() if k in ("name", "description", "parameters") and v is not None}
        out.append(chat.Tool(function=chat.ToolFunction(**spec)))
    return out or None


def _bump(counts: dict[str, int], key: str, n: int = 1) -> None:
    if n:
        counts[key] = counts.get(key, 0) + n


def _user_text(m: SessionMessage, counts: dict[str, int], strip_metadata: bool) -> str | None:
    """The user turn as the person typed it (None: a runtime notice no person typed)."""
    from .readers.openclaw_inbound import announcement_kind, strip_user_text, subagent_task

    if not strip_metadata:
        return m.text
    kind = announcement_kind(m.text)
    if kind:
        _bump(counts, f"openclaw_dropped:{kind}")
        return None
    task = subagent_task(m.text)
    if task is not None:
        _bump(counts, "openclaw_stripped:subagent_context")
        return task
    stripped: Counter = Counter()
    text = strip_user_text(m.text, stripped)
    for k, v in stripped.items():
        _bump(counts, f"openclaw_stripped:{k}", v)
    if stripped.get("inbound_metadata"):
        _bump(counts, "inbound_metadata_stripped")
    if not text.strip() and m.text.strip():  # only runtime notices (system events, media notes ...)
        _bump(counts, "openclaw_dropped:notice_only_turns")
        return None
    return text


def _messages_to_chat(msgs: list[SessionMessage], counts: dict[str, int], strip_metadata: bool,
                      keep_unanswered_tool_calls: bool = False, trim: bool = True) -> list[chat.Message]:
    out: list[chat.Message] = []
    # an errored/aborted assistant turn is not a behaviour to learn: drop it and the results of its calls
    failed_calls = {tc.id for m in msgs if m.role == "assistant" and m.is_error for tc in m.tool_calls}
    answering_notice = False  # inside the replies to a turn no person typed (sub-agent announcement ...)
    for m in msgs:
        if m.role != "user" and answering_notice and m.role in ("assistant", "tool"):
            _bump(counts, "openclaw_dropped:replies_to_notices")
            continue
        if m.role == "assistant" and m.injected:
            _bump(counts, f"openclaw_dropped:{m.injected}")
            continue
        if (m.role == "assistant" and m.is_error) or (m.role == "tool" and m.tool_call_id in failed_calls):
            _bump(counts, "error_turns_dropped")
            continue
        if m.role == "user":
            text = _user_text(m, counts, strip_metadata)
            answering_notice = text is None
            if m.images:
                _bump(counts, "images_dropped", m.images)
            if text is None:
                continue
            if not text.strip():
                _bump(counts, "whitespace_turns_removed")
                continue
            out.append(chat.Message(role="user", content=text))
        elif m.role == "assistant":
            if m.thinking:
                _bump(counts, "thinking_dropped")
            calls = [chat.ToolCall(id=tc.id or f"call_{m.index}_{k}",
                                   function=chat.FunctionCall(name=tc.name, arguments=_arguments_json(tc.arguments)))
                     for k, tc in enumerate(m.tool_calls)]
            if any(not isinstance(tc.arguments, str) for tc in m.tool_calls):
                _bump(counts, "tool_arguments_to_json_string")
            if not m.text.strip() and not calls:
                _bump(counts, "whitespace_turns_removed")
                continue
            out.append(chat.Message(role="assistant", content=m.text if m.text.strip() else None,
                                    tool_calls=calls or None))
        elif m.role == "tool":
            if m.images:
                _bump(counts, "images_dropped", m.images)
            out.append(chat.Message(role="tool", tool_call_id=m.tool_call_id or "", content=m.text))
        else:
            _bump(counts, f"{m.role}_messages_skipped")
    out = collapse_user_runs(out, counts)
    if not trim:  # a context slice (failures.py): keep its open end
        return out
    out = pair_tool_calls(out, counts, keep_unanswered_tool_calls)
    return trim_trailing(out, counts, keep_unanswered_tool_calls)


def collapse_user_runs(msgs: list[chat.Message], counts: dict[str, int]) -> list[chat.Message]:
    """Consecutive user turns (left when the answers between them failed or were injected): a retry
    of the same text is kept once; different texts are merged into one turn (blank line between)."""
    out: list[chat.Message] = []
    for m in msgs:
        if m.role == "user" and out and out[-1].role == "user":
            prev = out[-1].text()
            if " ".join(prev.split()).lower() == " ".join(m.text().split()).lower():
                _bump(counts, "openclaw_dropped:retried_user_turns")
            else:
                _bump(counts, "consecutive_user_turns_merged")
                out[-1] = chat.Message(role="user", content=f"{prev}\n\n{m.text()}")
            continue
        out.append(m)
    return out


def pair_tool_calls(msgs: list[chat.Message], counts: dict[str, int], keep_unanswered: bool) -> list[chat.Message]:
    """Drop tool calls that never got a result (unless ``keep_unanswered``) and results whose call is
    not in the conversation; an assistant turn left with neither text nor calls goes too."""
    answered = {m.tool_call_id for m in msgs if m.role == "tool"}
    called: set[str] = set()
    out: list[chat.Message] = []
    for m in msgs:
        if m.role == "assistant" and m.tool_calls:
            keep = [tc for tc in m.tool_calls if tc.id in answered or keep_unanswered]
            if len(keep) != len(m.tool_calls):
                _bump(counts, "openclaw_dropped:unanswered_tool_calls", len(m.tool_calls) - len(keep))
            called |= {tc.id for tc in keep}
            if not keep and not m.text().strip():
                continue
            if len(keep) != len(m.tool_calls):
                m = chat.Message(role="assistant", content=m.content, tool_calls=keep or None)
        elif m.role == "tool" and m.tool_call_id not in called:
            _bump(counts, "openclaw_dropped:orphan_tool_results")
            continue
        out.append(m)
    return out


def trim_trailing(msgs: list[chat.Message], counts: dict[str, int], keep_unanswered: bool = False
                  ) -> list[chat.Message]:
    """End on an assistant reply: trailing user turns, tool results and tool-calling turns whose
    results were trimmed go."""
    out = list(msgs)
    while out and not (out[-1].role == "assistant" and (keep_unanswered or not out[-1].tool_calls)):
        out.pop()
        _bump(counts, "openclaw_dropped:trailing_unanswered_turns")
    return out


def _metadata(session: Session, window: int | None) -> dict[str, Any]:
    md: dict[str, Any] = {"source": "openclaw", "session_id": session.id}
    for k, v in (("agent_id", session.agent_id), ("session_key", session.session_key),
                 ("started_at", _iso(session.started_at)), ("model", session.model)):
        if v:
            md[k] = v
    if window is not None:
        md["window"] = window
    if session.feedback:
        md["feedback"] = [f.to_dict() for f in session.feedback]
    errs = len(session.tool_errors) + len(session.assistant_errors)
    if errs:
        md["errors"] = errs
    return md


def session_to_chats(session: Session, *, system: str | None = None, strip_metadata: bool = True,
                     split_windows: bool = True, tools: list[dict[str, Any]] | None = None,
                     counts: dict[str, int] | None = None,
                     keep_unanswered_tool_calls: bool = False, trim: bool = True) -> list[chat.ChatExample]:
    """One :class:`chat.ChatExample` per reset window (or one for the whole session).

    ``system`` overrides the bundle's system prompt (transcripts themselves do not store it).
    Thinking blocks, images, custom/bash/summary messages are not exported (counted in
    ``counts``). User turns are stripped of what OpenClaw wrapped around them
    (``readers/openclaw_inbound.py``), gateway-injected / delivery-mirror / errored assistant turns
    are dropped and retried user turns collapsed; with ``trim`` (training data) tool calls without a
    result are dropped (unless ``keep_unanswered_tool_calls``) and each example ends on an assistant
    reply. Raises ``pydantic.ValidationError`` if a window cannot form a chat line.
    """
    counts = counts if counts is not None else {}
    sys_prompt = system if system is not None else session.system_prompt
    tool_models = openai_tools(tools if tools is not None else session.tools)
    groups = session.windows if split_windows else [session.messages]
    out = []
    for gi, msgs in enumerate(groups):
        messages = _messages_to_chat(msgs, counts, strip_metadata, keep_unanswered_tool_calls, trim)
        if not messages:
            continue
        if sys_prompt:
            messages.insert(0, chat.Message(role="system", content=sys_prompt))
        used_tools = any(m.tool_calls for m in messages)
        out.append(chat.ChatExample(messages=messages, tools=tool_models if used_tools else None,
                                    metadata=_metadata(session, gi if split_windows and len(groups) > 1 else None)))
    return out


def session_to_chat(session: Session, *, system: str | None = None, strip_metadata: bool = True,
                    tools: list[dict[str, Any]] | None = None,
                    counts: dict[str, int] | None = None) -> chat.ChatExample:
    """The whole active branch of a session as one chat example (all reset windows in order)."""
    ex = session_to_chats(session, system=system, strip_metadata=strip_metadata, split_windows=False, trim=False,
                          tools=tools, counts=counts)
    if not ex:
        raise ValueError(f"session {session.id} has no user/assistant messages to export")
    return ex[0]
