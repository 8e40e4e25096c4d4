"""Instruction and preference sets: Alpaca (``instruction``/``input``/``output``, LLaMA-Factory's
``system``/``history``), prompt/completion (and question/answer, query/response) rows, and OpenAI
preference lines (``input``/``preferred_output``/``non_preferred_output``)."""

from __future__ import annotations

from typing import Any

from .. import chat
from .common import MessageBuilder, Unconvertible, bump, extra_metadata, make_example


def detect_alpaca(obj: dict[str, Any]) -> bool:
    return "instruction" in obj and ("output" in obj or "response" in obj)


def detect_preference(obj: dict[str, Any]) -> bool:
    return "preferred_output" in obj and "input" in obj


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
    return make_example(b.out, metadata=extra_metadata(obj, {"instruction", "input", "output", "response",
                                                          "system", "history"}, counts))


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


def convert_preference(obj: dict[str, Any], counts: dict[str, int], key: str) -> chat.ChatExample:
    example, findings = chat.check_record(obj, "preference")
    if example is None:
        f = next((f for f in findings if f.severity == "error"), None)
        raise Unconvertible(f.code if f else "invalid_preference", f.message if f else "invalid preference line")
    bump(counts, "preference_to_sft_preferred_answer")
    return chat.as_chat(example)
