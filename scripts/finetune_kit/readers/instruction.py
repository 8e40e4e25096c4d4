"""Instruction and preference sets.

- Alpaca (``instruction``/``input``/``output``, LLaMA-Factory's ``system``/``history``) and Dolly
  (``instruction``/``context``/``response``/``category``, databricks-dolly-15k as described at
  https://www.tensorflow.org/datasets/catalog/databricks_dolly and used in Fireworks' samples):
  ``input`` / ``context`` is the passage the answer depends on, so it goes into the user turn with
  the template ``{instruction}\n\n{input or context}`` (data-prep.md); ``category`` goes to metadata.
- prompt/completion (and question/answer, query/response) rows.
- preference data, converted to OpenAI's preference line (``input.messages`` / ``preferred_output`` /
  ``non_preferred_output``, https://platform.openai.com/docs/guides/direct-preference-optimization,
  also Fireworks' DPO schema https://docs.fireworks.ai/fine-tuning/dpo-fine-tuning): those lines
  themselves; ``{"chosen": {"messages": [...]}, "rejected": {"messages": [...]}}``; TRL's
  ``prompt``/``chosen``/``rejected`` with strings or message lists, and its implicit-prompt
  conversational form ``{"chosen": [...], "rejected": [...]}``
  (https://huggingface.co/docs/trl/dataset_formats). The shared messages are the prompt; what
  differs is the preferred / non-preferred answer.
"""

from __future__ import annotations

from typing import Any

from .. import chat
from .common import MessageBuilder, Unconvertible, bump, extra_metadata, make_example, normalise_tools


def detect_alpaca(obj: dict[str, Any]) -> bool:
    return "instruction" in obj and ("output" in obj or "response" in obj)


def detect_preference(obj: dict[str, Any]) -> bool:
    return "preferred_output" in obj and "input" in obj


def detect_pairwise(obj: dict[str, Any]) -> bool:
    return "chosen" in obj and "rejected" in obj


def detect_prompt_completion(obj: dict[str, Any]) -> bool:
    if "prompt" in obj and ("completion" in obj or "response" in obj or "chosen" in obj):
        return True
    return ("question" in obj and "answer" in obj) or ("query" in obj and "response" in obj)


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
    if not (isinstance(inp, str) and inp.strip()) and isinstance(obj.get("context"), str) and obj["context"].strip():
        inp = obj["context"]  # Dolly: the passage closed-QA / extraction / summarisation rows answer from
        bump(counts, "dolly_context_to_prompt")
    prompt = instr if not (isinstance(inp, str) and inp.strip()) else f"{instr}\n\n{inp}"
    msgs: list[dict[str, Any]] = []
    if isinstance(obj.get("system"), str) and obj["system"].strip():
        msgs.append({"role": "system", "content": obj["system"]})
    hist = obj.get("history")
    if isinstance(hist, list):
        for pair in hist:
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair):
                msgs += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
                bump(counts, "alpaca_history_turns")
            else:
                raise Unconvertible("history_invalid", "\"history\" must be a list of [prompt, answer] pairs")
    msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": out}]
    b = MessageBuilder(counts, key)
    for m in msgs:
        b.add(m)
    used = {"instruction", "input", "output", "response", "system", "history"}
    if inp is obj.get("context"):
        used.add("context")
    return make_example(b.out, metadata=extra_metadata(obj, used, counts))


def convert_prompt_completion(obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    prompt = obj.get("prompt", obj.get("question", obj.get("query")))
    comp = obj.get("completion", obj.get("response", obj.get("answer", obj.get("chosen"))))
    if not isinstance(prompt, str) or not prompt.strip():
        raise Unconvertible("prompt_missing", "\"prompt\" is missing or empty")
    if not isinstance(comp, str) or not comp.strip():
        raise Unconvertible("completion_missing", "\"completion\" is missing or empty: nothing to learn")
    md = extra_metadata(obj, {"prompt", "completion", "question", "answer", "query", "response", "chosen"}, counts)
    pc = chat.PromptCompletion(prompt=prompt, completion=comp, metadata=md or None)
    return pc.to_chat()


def convert_preference(obj: dict[str, Any], counts: dict[str, int], key: str
                       ) -> tuple[chat.ChatExample, dict[str, Any]]:
    """An OpenAI preference line: (its SFT view, the line)."""
    example, findings = chat.check_record(obj, "preference")
    if example is None:
        f = next((f for f in findings if f.severity == "error"), None)
        raise Unconvertible(f.code if f else "invalid_preference", f.message if f else "invalid preference line")
    return chat.as_chat(example), obj


def _messages(value: Any, role: str, what: str) -> list[Any]:
    """A preference side as a message list: ``{"messages": [...]}``, a list, or a plain string."""
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        return value["messages"]
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.strip():
        return [{"role": role, "content": value}]
    raise Unconvertible("preference_invalid", f"\"{what}\" is neither a message list, {{\"messages\": [...]}} "
                        "nor a non-empty string")


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, dict) and isinstance(b, dict) and a.get("role", a.get("from")) == b.get("role", b.get("from")) \
        and a.get("content", a.get("value")) == b.get("content", b.get("value"))


def _normalised(msgs: list[Any], counts: dict[str, int], key: str) -> list[dict[str, Any]]:
    b = MessageBuilder(counts, key)
    for m in msgs:
        b.add(m)
    return b.out


def convert_pairwise(obj: dict[str, Any], counts: dict[str, int], key: str
                     ) -> tuple[chat.ChatExample, dict[str, Any]]:
    """chosen/rejected pairs (see the module doc) -> (SFT view, OpenAI preference line)."""
    chosen = _messages(obj.get("chosen"), "assistant", "chosen")
    rejected = _messages(obj.get("rejected"), "assistant", "rejected")
    if "prompt" in obj:
        prompt = _messages(obj.get("prompt"), "user", "prompt")
    else:  # implicit prompt: the messages both sides share
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and _same(chosen[n], rejected[n]):
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
        if not prompt:
            raise Unconvertible("preference_without_prompt", "chosen and rejected share no prompt messages "
                                "(plain-text implicit-prompt pairs cannot be split); add a \"prompt\"")
        bump(counts, "preference_implicit_prompt_split")
    tools = obj.get("tools")
    if tools is None and isinstance(obj.get("chosen"), dict):
        tools = obj["chosen"].get("tools")
    line: dict[str, Any] = {"input": {"messages": _normalised(prompt, counts, key)},
                            "preferred_output": _normalised(chosen, counts, key),
                            "non_preferred_output": _normalised(rejected, counts, key)}
    norm_tools = normalise_tools(tools, counts)
    if norm_tools:
        line["input"]["tools"] = norm_tools
    md = extra_metadata(obj, {"prompt", "chosen", "rejected", "tools"}, counts)
    if md:
        line["metadata"] = md
    bump(counts, "preference_pairs_to_openai_preference")
    return convert_preference(line, counts, key)
