"""OpenClaw agent sessions (state dir, agent/sessions dir, transcript, SQLite store, trajectory
bundle): each session's conversations become rows that already hold their chat example; parsing
the session format itself lives in ``finetune_kit/openclaw_sessions.py``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .. import cli
from .. import openclaw_sessions as oc
from .common import ReadContext, Row, bump

def read_openclaw(p: Path, opts, counts: dict[str, int], st: dict[str, Any], start: int,
                  tools: list[dict[str, Any]] | None) -> list[Row]:
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
            bump(counts, "openclaw_unreadable_entries", len(s.problems))
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
                bump(counts, "openclaw_system_prompt_from_bundle")
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


def read_openclaw_input(path: Path, kind: str, ctx: ReadContext, start: int) -> list[Row]:
    """The file reader of ``openclaw`` inputs."""
    return read_openclaw(path, ctx.opts, ctx.counts, ctx.stats, start, ctx.tools)
