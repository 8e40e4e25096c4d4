"""What OpenClaw wraps around the text a person typed, and how to take it off again.

OpenClaw does not store the raw channel message as the user turn: the gateway builds a prompt
around it, and that prompt is what the transcript keeps. Training on it teaches the model to
expect channel envelopes, ids and runtime notices (noise and PII). Every stripper below removes
one such wrapper; each is derived from the code that produces it in the ``openclaw`` npm package
(paths are the package's ``src/`` files as named in its bundled ``dist`` ``//#region`` comments,
or the unbundled ``dist/**.js`` files of 2026.1.x), read in versions 2026.1.30, 2026.2.26, 2026.4.2
and 2026.9.6:

- ``queued``         ``[Queued messages while agent was busy]`` + ``---\\nQueued #N\\n<prompt>`` items
                     (src/auto-reply/reply/queue/drain.ts ``buildCollectPrompt``; overflow summary
                     ``[Queue overflow] Dropped N messages due to cap.`` + ``Summary:`` lines from
                     ``buildQueueSummaryPrompt``). Each queued prompt is stripped on its own.
- ``system_event``   leading ``System: [<timestamp>] <event>`` / ``System (untrusted): ...`` lines
                     and their blank separator (src/auto-reply/reply/session-system-events.ts
                     ``drainFormattedSystemEvents``; 2026.1.x src/auto-reply/reply/session-updates.ts).
                     Counted by kind: ``exec`` (``Exec completed|failed (<id>, code N) :: out`` from
                     src/agents/bash-tools.exec.ts, ``Exec finished|denied|started (node=...)`` from
                     src/gateway/server-node-events.ts), ``feishu`` (``Feishu[<account>] DM from ou_...`` /
                     ``message in group`` from extensions/feishu/src/bot.ts), ``other``.
- ``aborted_hint``   ``Note: The previous agent run was aborted by the user. ...`` (src/auto-reply/reply/body.ts).
- ``thread_context`` ``[Thread starter - for context]`` / ``[Thread history - for context]`` blocks
                     (src/auto-reply/reply/get-reply-run.ts).
- ``group_history``  ``[Chat messages since your last reply - for context]`` ... ``[Current message -
                     respond to this]`` (src/auto-reply/reply/history.ts ``buildHistoryContext``):
                     only the current message is kept.
- ``inbound_metadata`` ``Conversation info (untrusted metadata):`` / ``Sender (untrusted metadata):``
                     blocks with their fenced JSON and the ``⟦openclaw:ctx⟧`` markers
                     (src/auto-reply/reply/strip-inbound-meta.ts; ``openclaw_sessions.strip_inbound_metadata``),
                     and the leading ``[Thu 2026-04-02 00:30 GMT+8]`` timestamp the web UI adds.
- ``media_note``     ``[media attached: <path> (<type>) | <url>]``, ``[media attached N/M: ...]``,
                     ``[media attached: N files]`` lines (src/auto-reply/media-note.ts) and the
                     ``To send an image back, prefer the message tool ...`` hint (get-reply-run.ts).
- ``envelope:<Channel>`` the ``[<Channel> <from> +<elapsed> <host> <ip> <Weekday> <timestamp>] ``
                     prefix (src/auto-reply/envelope.ts ``formatAgentEnvelope`` /
                     ``formatInboundEnvelope``; the ``from`` labels ``Name (@handle) id:<digits>``
                     from src/channels/sender-label.ts / ``formatInboundFromLabel``, ``user:<id>`` /
                     ``group:<id>`` from extensions/zalo|zalouser/src/monitor.ts, the Feishu open id
                     from extensions/feishu/src/bot.ts). Recognised as OpenClaw's own
                     ``stripEnvelope`` does (src/shared/chat-envelope.ts: a known channel label or a
                     ``YYYY-MM-DD HH:MM`` / ``YYYY-MM-DDTHH:MMZ`` timestamp in the header). The body's
                     sender prefix is removed too (``sender_prefix``: since 2026.5 direct messages start
                     ``<label>: `` / ``(sender): `` / ``(self): ``, src/auto-reply/envelope.ts
                     ``resolveDirectEnvelopeBodyLabel``; ``group_sender_prefix``: ``<sender>: `` in groups).
- ``message_id``     lines that are only ``[message_id: <id>]`` (2026.1.x src/auto-reply/reply/body.ts
                     appends it; extensions/feishu/src/bot.ts prefixes it; OpenClaw's own
                     ``stripMessageIdHints`` in src/shared/chat-envelope.ts uses the same line regex),
                     and `` [id:<id> chat:<id>]`` suffixes of group history entries.
- ``feishu_speaker`` / ``feishu_notice`` the ``<speaker>: `` prefix and the ``[System: Your reply will
                     automatically @mention: ...]`` / ``[System: The bot encountered a Feishu API
                     permission error ...]`` suffixes of extensions/feishu/src/bot.ts ``buildFeishuAgentBody``.
- ``reply_context``  Telegram's ``[Replying to <sender> id:<id>]`` / ``[Quoting ...]`` headers
                     (extensions/telegram/src/bot-message-context.ts): the quoted text is kept (the
                     answer may depend on it), the sender name and id are removed; ``[Forwarded from
                     <sender> at <ISO time>]`` lines are removed.

Whole turns that no person typed are classified by :func:`announcement_kind` (the caller drops them
with the replies they triggered): sub-agent / background-task completions (2026.2.x
``[System Message] [sessionId: ...] A subagent task "..." just completed.`` from
src/agents/subagent-announce.ts; 2026.4.x ``<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>`` task-completion
events and ``A background task finished. ...`` steer messages; ``[Subagent Context]`` wake messages),
and pure system-event / heartbeat turns that are left empty after stripping.

Our own re-implementation from reading that code; nothing is copied.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable

# ---- constants as OpenClaw writes them
QUEUED_TITLE = "[Queued messages while agent was busy]"
QUEUE_ITEM = re.compile(r"^---\nQueued #\d+\n", re.M)
QUEUE_OVERFLOW = re.compile(r"^\[Queue overflow\] Dropped \d+ \w+ due to cap\.$")
ABORTED_HINT = "Note: The previous agent run was aborted by the user. Resume carefully or ask for clarification."
THREAD_HEADERS = ("[Thread starter - for context]", "[Thread history - for context]")
HISTORY_MARKER = "[Chat messages since your last reply - for context]"
CURRENT_MARKER = "[Current message - respond to this]"
MEDIA_LINE = re.compile(r"^\[media attached(?: \d+/\d+)?: [^\n]*\]\s*$")
MEDIA_HINT = re.compile(r"^To send an image back, prefer the message tool\b.*$")
SYSTEM_LINE = re.compile(r"^System(?: \(untrusted\))?: ")
EXEC_EVENT = re.compile(r"\bExec (?:completed|failed|finished|denied|started) \(")
FEISHU_EVENT = re.compile(r"\bFeishu\[[^\]]*\] (?:DM from|message in group) ")
ENVELOPE = re.compile(r"^\[([^\]\n]+)\][ \t]*")
# src/shared/chat-envelope.ts ENVELOPE_CHANNELS, plus channels whose envelopes carry other labels
CHANNELS = ("WebChat", "WhatsApp", "Telegram", "Signal", "Slack", "Discord", "Google Chat", "iMessage", "Teams",
            "Matrix", "Zalo Personal", "Zalo", "BlueBubbles", "Feishu", "LINE", "IRC", "Mattermost", "Nextcloud Talk",
            "Nostr", "Twitch", "Synology Chat", "Tlon", "Channel")
ENVELOPE_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?Z\b|\d{4}-\d{2}-\d{2} \d{2}:\d{2}\b")
MESSAGE_ID_LINE = re.compile(r"^\s*\[message_id:\s*[^\]]+\]\s*$", re.I)
HISTORY_ID_SUFFIX = re.compile(r" \[id:[^\]\s]+(?: chat:[^\]\s]+)?\]$", re.M)
FEISHU_NOTICE = re.compile(r"\n*\[System: (?:Your reply will automatically @mention: [^\n]*|The bot encountered a "
                           r"Feishu API permission error\.[^\n]*)\]")
REPLY_HEADER = re.compile(r"^\[(Replying to|Quoting) [^\n\]]*\]$", re.M)
FORWARDED = re.compile(r"^\[Forwarded from [^\n]*\]\n", re.M)
INTERNAL_BEGIN = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"
ANNOUNCE_V2 = re.compile(r"^\[System Message\] \[sessionId: [^\]]*\] A .+ just \w+")
SUBAGENT_CONTEXT = "[Subagent Context]"
BACKGROUND_STEER = "A background task finished. Process the completion update now."


def _leading_blocks(text: str, c: Counter) -> str:
    """System-event lines, the aborted-run note and thread-context blocks before the message."""
    while True:
        stripped = text.lstrip("\n")
        if SYSTEM_LINE.match(stripped):
            lines = stripped.split("\n")
            i = 0
            while i < len(lines) and SYSTEM_LINE.match(lines[i]):
                body = SYSTEM_LINE.sub("", lines[i])
                if i == 0 or body.startswith("["):  # "[<timestamp>] " starts an event; others continue it
                    kind = "exec" if EXEC_EVENT.search(body) else "feishu" if FEISHU_EVENT.search(body) else "other"
                    c[f"system_event:{kind}"] += 1
                i += 1
            text = "\n".join(lines[i:])
            continue
        if stripped.startswith(ABORTED_HINT):
            c["aborted_hint"] += 1
            text = stripped[len(ABORTED_HINT):]
            continue
        head = next((h for h in THREAD_HEADERS if stripped.startswith(h + "\n")), None)
        if head:
            c["thread_context"] += 1
            end = stripped.find("\n\n")
            text = stripped[end:] if end >= 0 else ""
            continue
        return stripped


def _group_history(text: str, c: Counter) -> str:
    if text.startswith(HISTORY_MARKER) and CURRENT_MARKER in text:
        c["group_history"] += 1
        return text.split(CURRENT_MARKER, 1)[1].lstrip("\n")
    return text


def _media_notes(text: str, c: Counter) -> str:
    lines = text.split("\n")
    kept = [ln for ln in lines if not (MEDIA_LINE.match(ln) or MEDIA_HINT.match(ln))]
    if len(kept) != len(lines):
        c["media_note"] += len(lines) - len(kept)
        return "\n".join(kept)
    return text


def _envelope_channel(header: str) -> str | None:
    """The channel of an envelope header, or None when it is not an OpenClaw envelope."""
    ch = next((ch for ch in CHANNELS if header == ch or header.startswith(ch + " ")), None)
    if ch is not None:
        return ch
    return "unknown" if ENVELOPE_TS.search(header) else None


def _envelope(text: str, c: Counter, seen: dict) -> str:
    m = ENVELOPE.match(text)
    if not m:
        return text
    channel = _envelope_channel(m.group(1))
    if channel is None:
        return text
    c[f"envelope:{channel}"] += 1
    seen["channel"] = channel
    body = text[m.end():]
    frm = m.group(1)[len(channel):].strip() if channel != "unknown" else ""
    # direct chats (2026.5+ formatInboundEnvelope): "<label before ' id:'>: ", "(sender): " when the label
    # holds a ":" (user:<id>), "(self): " for the owner's own messages - the label is in the header itself
    tokens = frm.split(" ")
    for cand in ["(self)", "(sender)"] + [" ".join(tokens[:k]) for k in range(len(tokens), 0, -1)]:
        if cand and body.startswith(cand + ": "):
            c["sender_prefix"] += 1
            return body[len(cand) + 2:]
    # group chats: "<sender>: " (Telegram group labels carry a negative chat id "id:-100..."; Zalo /
    # Feishu groups use "group:<id>" / "<chatId>:<openId>")
    if re.match(r"(?:group:|.* id:-\d)", frm) or re.match(r"oc_[\w-]+:ou_", frm):
        sm = re.match(r"([^\n:]{1,80}): ", body)
        if sm:
            c["group_sender_prefix"] += 1
            body = body[sm.end():]
    return body


def _message_ids(text: str, c: Counter, seen: dict) -> str:
    if "[message_id:" in text.lower() or "[message_id:" in text:
        lines = text.split("\n")
        kept = []
        for i, ln in enumerate(lines):
            if MESSAGE_ID_LINE.match(ln):
                c["message_id"] += 1
                if i == 0:  # Feishu: "[message_id: om_...]\n<speaker>: <content>" (buildFeishuAgentBody)
                    seen["id_first"] = True
                if ln.strip().lower().startswith("[message_id: om_"):
                    seen["feishu"] = True
                continue
            kept.append(ln)
        text = "\n".join(kept)
    text, n = HISTORY_ID_SUFFIX.subn("", text)
    if n:
        c["message_id"] += n
    return text


def _feishu(text: str, c: Counter, seen: dict) -> str:
    if not (seen.get("feishu") or seen.get("channel") == "Feishu"):
        return text
    text, n = FEISHU_NOTICE.subn("", text)
    if n:
        c["feishu_notice"] += n
    sm = re.match(r"([^\n:]{1,80}): ", text.lstrip("\n")) if seen.get("id_first") else None
    if sm:
        c["feishu_speaker"] += 1
        text = text.lstrip("\n")[sm.end():]
    return text


def _reply_context(text: str, c: Counter) -> str:
    text, n = FORWARDED.subn("", text)
    if n:
        c["forwarded_header"] += n
    text, n = REPLY_HEADER.subn(lambda m: f"[{m.group(1)}]", text)
    if n:
        c["reply_context"] += n
    return text


def _inbound_metadata(text: str, c: Counter) -> str:
    from ..openclaw_sessions import strip_inbound_metadata

    out, changed = strip_inbound_metadata(text)
    if changed:
        c["inbound_metadata"] += 1
    return out


def _one_message(text: str, c: Counter) -> str:
    seen: dict = {}
    text = _leading_blocks(text, c)
    text = _group_history(text, c)
    text = _inbound_metadata(text, c)
    text = _media_notes(text, c)
    text = _leading_blocks(text, c)
    text = _envelope(text.lstrip("\n"), c, seen)
    text = _message_ids(text, c, seen)
    text = _feishu(text, c, seen)
    text = _reply_context(text, c)
    return text.strip("\n").strip()


def strip_queued(text: str, c: Counter, inner: Callable[[str, Counter], str]) -> str | None:
    """The queued prompts of a ``[Queued messages while agent was busy]`` turn, each stripped by
    ``inner`` and joined by a blank line (None when the text is not such a turn)."""
    body = text.lstrip()
    if not body.startswith(QUEUED_TITLE):
        return None
    c["queued_wrapper"] += 1
    parts = QUEUE_ITEM.split(body[len(QUEUED_TITLE):])
    items = [inner(p, c) for p in parts[1:]]
    return "\n\n".join(i for i in items if i)


def strip_user_text(text: str, counts: Counter | None = None) -> str:
    """The text a person typed, from an OpenClaw user turn; ``counts`` gets one entry per wrapper
    removed (keys as in the module doc)."""
    c = counts if counts is not None else Counter()
    queued = strip_queued(text, c, _one_message)
    if queued is not None:
        return queued
    return _one_message(text, c)


def announcement_kind(text: str) -> str | None:
    """``subagent_announcement`` / ``background_task`` when the whole user turn is a runtime
    notice that no person typed (see the module doc), else None."""
    t = text.lstrip()
    if t.startswith(INTERNAL_BEGIN) or ANNOUNCE_V2.match(t):
        return "subagent_announcement"
    if t.startswith(SUBAGENT_CONTEXT) and "[Subagent Task]:" not in t:
        return "subagent_announcement"
    if t.startswith(BACKGROUND_STEER):
        return "background_task"
    return None


def subagent_task(text: str) -> str | None:
    """The task of a sub-agent's first turn (``[Subagent Context] ...`` lines then
    ``[Subagent Task]: <task>``, src/agents/subagent-spawn.ts), else None."""
    t = text.lstrip()
    if t.startswith(SUBAGENT_CONTEXT) and "[Subagent Task]: " in t:
        return t.split("[Subagent Task]: ", 1)[1].strip()
    return None
