"""Label building: only assistant turns (with their end-of-turn token) are trained, with any template."""

from __future__ import annotations

import json

import pytest

from finetune_kit import templating as T
from finetune_kit.chat import ChatExample

# A tool-aware ChatML template written for these tests (tools in the system turn, tool calls as JSON).
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | map(attribute='function.name') | join(', ') }}"
    "<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for tc in m.tool_calls %}<tool_call>{\"name\": \"{{ tc.function.name }}\", "
    "\"arguments\": {{ tc.function.arguments | tojson }}}</tool_call>{% endfor %}{% endif %}"
    "{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# Renders the last assistant turn with an extra marker (like reasoning templates that strip history):
# prefix rendering differs from the full rendering, so spans must be found by search.
LAST_TURN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and loop.last %}<think></think>{% endif %}{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think></think>{% endif %}")

# Drops every assistant turn but the last: earlier turns cannot be located.
DROPS_HISTORY_TEMPLATE = (
    "{% for m in messages %}{% if m.role != 'assistant' or loop.last %}<|im_start|>{{ m.role }}\n"
    "{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# Plain text turns without any end-of-turn special token.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m.role | upper }}: {{ m.content }}\n\n{% endfor %}"
                  "{% if add_generation_prompt %}ASSISTANT: {% endif %}")


@pytest.fixture(scope="module")
def _tok(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


@pytest.fixture()
def tok(_tok):
    original = _tok.chat_template
    T._INSPECT_CACHE.clear()
    T._END_CACHE.clear()
    yield _tok
    _tok.chat_template = original


def ex(messages, **kw) -> ChatExample:
    return ChatExample.model_validate({"messages": messages, **kw})


CONVO = [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Hi there"},
         {"role": "assistant", "content": "Hello! How can I help?"},
         {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}]


def test_only_assistant_turns_and_their_end_token_are_trained(tok):
    b = T.build_example(tok, ex(CONVO), None)
    assert T.trained_text(tok, b) == ["Hello! How can I help?<|im_end|>", "4<|im_end|>"]
    assert len(b["input_ids"]) == len(b["labels"]) == b["n_tokens"]
    assert all(lab in (-100, tid) for lab, tid in zip(b["labels"], b["input_ids"]))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    trained_ends = [i for i, lab in enumerate(b["labels"]) if lab == im_end]
    all_ends = [i for i, t in enumerate(b["input_ids"]) if t == im_end]
    assert len(all_ends) == 5 and len(trained_ends) == 2  # system/user turns' <|im_end|> stay masked
    # the newline after each trained <|im_end|> is not trained
    for i in trained_ends:
        assert b["labels"][i + 1] == -100 if i + 1 < len(b["labels"]) else True
    # everything before the first assistant content is context
    first = b["labels"].index(next(lab for lab in b["labels"] if lab != -100))
    assert tok.decode(b["input_ids"][:first]).endswith("<|im_start|>assistant\n")
    assert b["n_trainable"] == b["n_trainable_full"] == sum(1 for lab in b["labels"] if lab != -100)


def test_weight_zero_turn_stays_in_context_but_is_not_trained(tok):
    msgs = json.loads(json.dumps(CONVO))
    msgs[2]["weight"] = 0
    b = T.build_example(tok, ex(msgs), None)
    assert T.trained_text(tok, b) == ["4<|im_end|>"]
    assert "Hello! How can I help?" in tok.decode(b["input_ids"])


def test_all_weight_zero_is_refused(tok):
    msgs = json.loads(json.dumps(CONVO))
    msgs[2]["weight"] = 0
    msgs[4]["weight"] = 0
    with pytest.raises(T.LabelError) as ei:
        T.build_example(tok, ex(msgs), None)
    assert ei.value.code == "no_trainable_tokens"
    assert T.build_example(tok, ex(msgs), None, allow_empty=True)["n_trainable"] == 0


def test_truncation_counts_lost_trainable_tokens(tok):
    full = T.build_example(tok, ex(CONVO), None)
    cut_at = full["labels"].index(next(lab for lab in full["labels"] if lab != -100)) + 3
    b = T.build_example(tok, ex(CONVO), cut_at)
    assert b["truncated"] and len(b["input_ids"]) == cut_at and b["n_tokens"] == full["n_tokens"]
    assert b["n_trainable"] == 3
    assert b["trainable_lost"] == full["n_trainable"] - 3
    assert not T.build_example(tok, ex(CONVO), full["n_tokens"])["truncated"]


def test_non_ascii_content_is_aligned(tok):
    msgs = [{"role": "user", "content": "Grüße aus Köln 👋"},
            {"role": "assistant", "content": "Schöne Grüße zurück 🌍 — ça va?"}]
    b = T.build_example(tok, ex(msgs), None)
    assert T.trained_text(tok, b) == ["Schöne Grüße zurück 🌍 — ça va?<|im_end|>"]


def test_slow_tokenizer_fallback_gives_the_same_labels(tok, monkeypatch):
    fast = T.build_example(tok, ex(CONVO), None)
    monkeypatch.setattr(T, "_tokenize_with_offsets",
                        lambda t, text: (list(t(text, add_special_tokens=False)["input_ids"]), None))
    slow = T.build_example(tok, ex(CONVO), None)
    assert slow["labels"] == fast["labels"]


def test_smollm2_template_drops_tool_calls_and_ignores_tools(tok):
    info = T.inspect_template(tok)
    assert info.has_template and info.marks_assistant
    assert not info.supports_tools and not info.renders_tool_calls
    line = {"messages": [{"role": "user", "content": "Where is order 7?"},
                         {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                             "name": "lookup_order", "arguments": "{\"id\": \"7\"}"}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
                         {"role": "assistant", "content": "It shipped."}],
            "tools": [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]}
    with pytest.raises(T.LabelError) as ei:
        T.build_example(tok, ChatExample.model_validate(line), None)
    assert ei.value.code == "template_drops_tool_calls" and ei.value.message_index == 1
    line["messages"][1]["weight"] = 0  # not trained: only a warning, the rest still trains
    b = T.build_example(tok, ChatExample.model_validate(line), None)
    codes = {w["code"] for w in b["warnings"]}
    assert codes == {"template_drops_tool_calls", "template_ignores_tools"}
    assert T.trained_text(tok, b) == ["It shipped.<|im_end|>"]


def test_tool_aware_template_trains_the_call_not_the_result(tok):
    tok.chat_template = TOOL_TEMPLATE
    info = T.inspect_template(tok)
    assert info.supports_tools and info.renders_tool_calls and info.marks_assistant
    line = {"messages": [{"role": "user", "content": "Where is order 7?"},
                         {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                             "name": "lookup_order", "arguments": "{\"id\": \"7\"}"}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "status: shipped"},
                         {"role": "assistant", "content": "It shipped."}],
            "tools": [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]}
    b = T.build_example(tok, ChatExample.model_validate(line), None)
    trained = T.trained_text(tok, b)
    assert trained == ['<tool_call>{"name": "lookup_order", "arguments": {"id": "7"}}</tool_call><|im_end|>',
                       "It shipped.<|im_end|>"]
    text = tok.decode(b["input_ids"])
    assert "Tools: lookup_order" in text and "status: shipped" in text  # in context, not trained
    assert b["warnings"] == []


def test_template_that_renders_last_turn_differently_is_handled_by_search(tok):
    tok.chat_template = LAST_TURN_TEMPLATE
    b = T.build_example(tok, ex(CONVO), None)
    assert T.trained_text(tok, b)[0] == "Hello! How can I help?<|im_end|>"
    assert T.trained_text(tok, b)[1].endswith("4<|im_end|>")
    assert b["spans"][0][1] == "search"


def test_template_that_cannot_mark_assistant_spans_is_detected(tok):
    tok.chat_template = DROPS_HISTORY_TEMPLATE
    info = T.inspect_template(tok)
    assert not info.marks_assistant and info.problem["code"] == "template_cannot_mark_assistant"
    with pytest.raises(T.LabelError) as ei:
        T.build_example(tok, ex(CONVO), None)
    assert ei.value.code == "template_cannot_mark_assistant" and ei.value.message_index == 2


def test_missing_template(tok):
    tok.chat_template = None
    info = T.inspect_template(tok)
    assert not info.has_template and info.problem["code"] == "missing_chat_template"
    with pytest.raises(T.LabelError) as ei:
        T.build_example(tok, ex(CONVO), None)
    assert ei.value.code == "missing_chat_template"


def test_template_without_end_token_warns_and_trains_the_content(tok):
    tok.chat_template = PLAIN_TEMPLATE
    b = T.build_example(tok, ex(CONVO), None)
    assert [s.strip() for s in T.trained_text(tok, b)] == ["Hello! How can I help?", "4"]
    codes = {w["code"] for w in b["warnings"]}
    assert "no_end_of_turn_token" in codes
    assert "prompt_boundary_merge" in codes  # "ASSISTANT: " + "Hello" tokenizes as " Hello"


def test_template_error_is_a_label_error(tok):
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(T.LabelError) as ei:
        T.build_example(tok, ex(CONVO), None)
    assert ei.value.code == "template_error" and "alternate" in str(ei.value)
