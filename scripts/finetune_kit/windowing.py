"""Long conversations -> trainable windows under a token budget.

An agent session can run to 100k+ tokens; one example per session cannot be trained (the trainer
refuses or truncates it, and a truncated example loses its final answers). :func:`window_example`
cuts a chat example at user-turn boundaries instead:

- a *turn* is one user message with everything up to the next user message (assistant replies,
  tool calls and their results), so a tool call is never separated from its result;
- every window repeats the example's leading system/developer messages and its tool definitions;
- turns are packed greedily, in order, while the window's token count (the same counter and
  measure the validator uses: total tokens of the example) stays <= ``max_tokens``;
- a single turn over the budget is cut after its last assistant reply (no tool calls) that still
  fits; if none fits it is dropped. Every window ends on an assistant reply.

The dropped tokens are reported: ``tokens_dropped`` counts what no window kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .bootstrap import lazy_module

chat = lazy_module(__package__ + ".chat")
Count = Callable[["chat.ChatExample"], int]


@dataclass
class WindowStats:
    examples_in: int = 0
    examples_windowed: int = 0            # examples that were over the budget and got cut
    windows: int = 0                      # examples out
    turns_cut: int = 0                    # turns over the budget kept only up to an earlier reply
    turns_dropped: int = 0                # turns over the budget with no reply that fits
    tokens_in: int = 0
    tokens_dropped: int = 0
    over_budget_prompt: int = 0           # examples whose system prompt + tools alone exceed the budget
    prompt_tokens_max: int = 0            # the largest system prompt + tools (repeated in every window)
    largest_example_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _turns(body: list[chat.Message]) -> tuple[list[chat.Message], list[list[chat.Message]]]:
    """(messages before the first user turn, [turn, ...]); a turn starts at a user message."""
    lead: list[chat.Message] = []
    turns: list[list[chat.Message]] = []
    for m in body:
        if m.role == "user":
            turns.append([m])
        elif turns:
            turns[-1].append(m)
        else:
            lead.append(m)
    return lead, turns


def _ends_on_reply(msgs: list[chat.Message]) -> bool:
    return bool(msgs) and msgs[-1].role == "assistant" and not msgs[-1].tool_calls


def window_example(ex: chat.ChatExample, count: Count, max_tokens: int,
                   stats: WindowStats | None = None) -> list[chat.ChatExample]:
    """``ex`` itself when it fits, else its windows (possibly none); ``stats`` is updated."""
    st = stats if stats is not None else WindowStats()
    st.examples_in += 1
    total = count(ex)
    st.tokens_in += total
    st.largest_example_tokens = max(st.largest_example_tokens, total)
    if total <= max_tokens:
        st.windows += 1
        return [ex]
    st.examples_windowed += 1
    n_head = 0
    while n_head < len(ex.messages) and ex.messages[n_head].role in ("system", "developer"):
        n_head += 1
    head = list(ex.messages[:n_head])
    lead, turns = _turns(list(ex.messages[n_head:]))

    def make(msgs: list[chat.Message]) -> chat.ChatExample:
        return ex.model_copy(update={"messages": head + msgs})

    head_tokens = count(make([])) if head or ex.tools else 0
    st.prompt_tokens_max = max(st.prompt_tokens_max, head_tokens)
    if head_tokens > max_tokens:
        st.over_budget_prompt += 1
        st.tokens_dropped += total
        return []
    windows: list[list[chat.Message]] = []
    cur: list[chat.Message] = []
    for turn in turns:
        if cur and count(make(cur + turn)) <= max_tokens:
            cur = cur + turn
            continue
        if cur:
            windows.append(cur)
            cur = []
        if count(make(turn)) <= max_tokens:
            cur = list(turn)
            continue
        part = _longest_fitting_prefix(turn, make, count, max_tokens)
        if part:
            st.turns_cut += 1
            windows.append(part)
        else:
            st.turns_dropped += 1
    if cur:
        windows.append(cur)
    windows = [w for w in windows if _ends_on_reply(w)]
    out = [make(w) for w in windows]
    kept = sum(count(o) for o in out) - head_tokens * max(0, len(out) - 1)  # the head counts once
    st.tokens_dropped += max(0, total - kept)
    st.windows += len(out)
    del lead  # assistant/tool messages before the first user turn cannot start a window
    return out


def _longest_fitting_prefix(turn: list[chat.Message], make, count: Count, max_tokens: int) -> list[chat.Message]:
    cuts = [i + 1 for i, m in enumerate(turn) if m.role == "assistant" and not m.tool_calls and i > 0]
    for end in reversed(cuts):
        if count(make(turn[:end])) <= max_tokens:
            return turn[:end]
    return []
