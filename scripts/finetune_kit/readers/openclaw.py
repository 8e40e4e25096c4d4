"""OpenClaw agent sessions (state dir, agent/sessions dir, transcript, SQLite store, trajectory
bundle): each session's conversations become rows that already hold their chat example.

Parsing the session format lives in ``finetune_kit/openclaw_sessions.py``; what OpenClaw wraps
around user turns (channel envelopes, ids, system events ...) is taken off by
``readers/openclaw_inbound.py``; long conversations are cut into windows under ``--max-tokens`` by
``finetune_kit/windowing.py``. Everything stripped, dropped or windowed is counted in the
manifest's ``openclaw`` section (``stripped``, ``dropped``, ``windowing``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .. import cli
from .. import openclaw_sessions as oc
from ..windowing import WindowStats, window_example
from ..bootstrap import lazy_module
from .common import ReadContext, Row, bump

pydantic = lazy_module("pydantic")

STRIPPED, DROPPED = "openclaw_stripped:", "openclaw_dropped:"


def _error_row(start: int, rows: list[Row], s: oc.Session, code: str, detail: str) -> Row:
    return Row(index=start + len(rows), source="openclaw", line=None, session=s.id, fmt="openclaw",
               raw=s.to_dict(messages=False), error={"reason": "unconvertible", "code": code, "detail": detail})


def _session_rows(s: oc.Session, ctx: ReadContext, start: int, wst: WindowStats) -> list[Row]:
    """The rows of one session: one per conversation window (or one error row)."""
    opts, counts, st = ctx.opts, ctx.counts, ctx.stats
    rows: list[Row] = []
    try:
        exs = oc.session_to_chats(s, system=None, strip_metadata=not opts.keep_inbound_metadata,
                                  tools=ctx.tools, counts=counts,
                                  keep_unanswered_tool_calls=getattr(opts, "keep_unanswered_tool_calls", False))
    except pydantic.ValidationError as exc:
        return [_error_row(start, rows, s, "schema_error", str(exc)[:300])]
    if not exs:
        if s.user_turns:
            return [_error_row(start, rows, s, "no_assistant_message",
                               "no user turn in the session got an assistant answer")]
        return [_error_row(start, rows, s, "no_messages", "the session has no user/assistant messages")]
    st["windows"] += len(exs)
    budget = ctx.max_tokens()
    if budget:
        exs = [w for ex in exs for w in window_example(ex, ctx.count_tokens, budget, wst)]
        if not exs:
            return [_error_row(start, rows, s, "over_token_budget",
                               f"no turn of the session fits --max-tokens {budget} (system prompt and tools "
                               "included); raise --max-tokens")]
    for k, ex in enumerate(exs):
        sid = s.id if len(exs) == 1 else f"{s.id}#{k}"
        if opts.system is None and s.system_prompt:
            bump(counts, "openclaw_system_prompt_from_bundle")
        rows.append(Row(index=start + len(rows), source="openclaw", line=None, session=sid, fmt="openclaw",
                        raw=None, fields=dict(ex.metadata or {}), example=ex))
    return rows


def read_openclaw(p: Path, ctx: ReadContext, start: int) -> list[Row]:
    opts, counts, st = ctx.opts, ctx.counts, ctx.stats
    since, until = oc.parse_date_range(opts.date_range)
    skipped: Counter = Counter()
    for key in ("sessions_read", "sessions_qualifying", "windows"):
        st.setdefault(key, 0)
    st.setdefault("feedback", {"positive": 0, "negative": 0, "other": 0})
    wst = WindowStats()
    rows: list[Row] = []
    include = bool(getattr(opts, "include_deleted", False))
    for s in cli.progress(oc.iter_sessions(p, agent_id=opts.agent_id, since=since, until=until,
                                           include_archived=include,
                                           on_skip=lambda reason, sid: skipped.update([reason])),
                          desc="sessions", unit="session"):
        st["sessions_read"] += 1
        for f in s.feedback:
            st["feedback"][f.value if f.value in ("positive", "negative") else "other"] += 1
        if s.problems:
            bump(counts, "openclaw_unreadable_entries", len(s.problems))
        got = _session_rows(s, ctx, start + len(rows), wst)
        if any(r.example is not None for r in got):
            st["sessions_qualifying"] += 1
        rows += got
    st["sessions_filtered_out"] = {**st.get("sessions_filtered_out", {}), **dict(skipped)}
    st["filters"] = {"agent_id": opts.agent_id, "date_range": opts.date_range, "include_deleted": include}
    _report(st, counts, wst, ctx.max_tokens())
    if wst.over_budget_prompt:
        ctx.warnings.append(f"{wst.over_budget_prompt} conversation(s) dropped: their system prompt and tool "
                            f"definitions alone are up to {wst.prompt_tokens_max:,} tokens, over --max-tokens "
                            f"{ctx.max_tokens():,}; raise --max-tokens (and train with that --max-seq-length) or "
                            "pass a shorter --system")
    return rows


def _report(st: dict[str, Any], counts: dict[str, int], wst: WindowStats, budget: int | None) -> None:
    """The manifest's ``openclaw.stripped`` / ``dropped`` / ``windowing`` sections (cumulative)."""
    st["stripped"] = {k[len(STRIPPED):]: v for k, v in sorted(counts.items()) if k.startswith(STRIPPED)}
    st["dropped"] = {k[len(DROPPED):]: v for k, v in sorted(counts.items()) if k.startswith(DROPPED)}
    if counts.get("error_turns_dropped"):
        st["dropped"]["error_turns"] = counts["error_turns_dropped"]
    prev = st.get("windowing") or {}
    peaks = ("largest_example_tokens", "prompt_tokens_max")
    w = {k: prev.get(k, 0) + v for k, v in wst.to_dict().items() if k not in peaks}
    for k in peaks:
        w[k] = max(prev.get(k, 0), getattr(wst, k))
    st["windowing"] = {"max_tokens": budget, "max_tokens_source": st.get("max_tokens_source"), **w}


def read_openclaw_input(path: Path, kind: str, ctx: ReadContext, start: int) -> list[Row]:
    """The file reader of ``openclaw`` inputs."""
    return read_openclaw(path, ctx, start)
