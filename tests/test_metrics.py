"""Per-example metrics give exact, hand-computed values."""

from __future__ import annotations

import json

import pytest

from finetune_kit import metrics as M


def test_exact_match_normalisation():
    assert M.exact_match("  Paris ", "paris") == 1.0
    assert M.exact_match("The  capital\nis Paris", "the capital is paris") == 1.0
    assert M.exact_match("Paris.", "Paris") == 0.0  # punctuation counts for exact match
    assert M.exact_match("", "") == 1.0
    assert M.exact_match(None, "x") == 0.0


def test_token_f1_known_values():
    assert M.token_f1("the cat sat", "the cat sat down") == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert M.token_f1("Paris.", "paris") == 1.0
    assert M.token_f1("a a b", "a b b") == pytest.approx(2 / 3)  # multiset overlap {a, b}
    assert M.token_f1("x y", "z") == 0.0
    assert M.token_f1("", "") == 1.0 and M.token_f1("", "a") == 0.0


def test_rouge_l_known_values():
    # LCS("police killed the gunman", "the gunman killed police") = 2 ("killed police"... or "the gunman")
    assert M.lcs_length("police killed the gunman".split(), "the gunman killed police".split()) == 2
    assert M.rouge_l("police killed the gunman", "the gunman killed police") == pytest.approx(0.5)
    # LCS = "a c e" (3); P = 3/4, R = 3/5
    assert M.rouge_l("a b c e", "a c d e f") == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert M.rouge_l("same words", "Same  words!") == 1.0
    assert M.rouge_l("", "x") == 0.0


def test_json_valid_with_and_without_schema():
    assert M.json_valid('{"a": 1}') == 1.0
    assert M.json_valid('```json\n{"a": 1}\n```') == 1.0
    assert M.json_valid("Sure! {\"a\": 1}") == 0.0
    assert M.json_valid("{'a': 1}") == 0.0
    schema = {"type": "object", "required": ["name", "age"],
              "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}
    v = M.load_schema_validator(schema)
    assert M.json_valid('{"name": "Ann", "age": 3}', v) == 1.0
    assert M.json_valid('{"name": "Ann", "age": -1}', v) == 0.0
    assert M.json_valid('{"name": "Ann"}', v) == 0.0
    import jsonschema

    with pytest.raises(jsonschema.SchemaError):
        M.load_schema_validator({"type": "no-such-type"})


def test_json_match():
    assert M.json_match('{"b": 2, "a": 1.0}', '{"a": 1, "b": 2}') == 1.0
    assert M.json_match('{"a": 1}', '{"a": 2}') == 0.0
    assert M.json_match("not json", '{"a": 1}') == 0.0
    assert M.json_match('{"a": 1}', "plain text") is None


REF = [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "arguments": {"unit": "c", "city": "Paris"}}',
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>',
    '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}',
    '[{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"c\\"}"}}]',
    '{"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", '
    '"arguments": "{\\"city\\":\\"Paris\\",\\"unit\\":\\"c\\"}"}}]}',
    '```json\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n```',
    'Let me check. {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}',
])
def test_tool_call_shapes_all_parse_to_the_reference(text):
    calls = M.parse_tool_calls(text)
    assert M.tool_call_match(calls, REF) == 1.0
    assert M.tool_name_match(calls, REF) == 1.0


def test_tool_call_mismatches():
    wrong_args = M.parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Rome", "unit": "c"}}')
    assert M.tool_call_match(wrong_args, REF) == 0.0 and M.tool_name_match(wrong_args, REF) == 1.0
    wrong_name = M.parse_tool_calls('{"name": "get_time", "arguments": {"city": "Paris", "unit": "c"}}')
    assert M.tool_name_match(wrong_name, REF) == 0.0
    assert M.parse_tool_calls("It is sunny in Paris.") == []
    assert M.parse_tool_calls('{"answer": 42}') == []
    assert M.tool_call_match([], REF) == 0.0
    # references without tool calls: correct iff no call was made
    assert M.tool_call_match([], None) == 1.0
    assert M.tool_call_match(REF, None) == 0.0
    # parallel calls are a multiset: order does not matter, a missing call does
    two = REF + [{"name": "get_time", "arguments": {}}]
    assert M.tool_call_match(list(reversed(two)), two) == 1.0
    assert M.tool_call_match(REF, two) == 0.0


def test_double_encoded_arguments_are_decoded():
    args = json.dumps(json.dumps({"city": "Paris", "unit": "c"}))
    calls = M.normalize_tool_calls([{"type": "function", "function": {"name": "get_weather", "arguments": args}}])
    assert M.tool_call_match(calls, REF) == 1.0
    assert M.normalize_tool_calls({"nope": 1}) is None


def test_score_example_applicability():
    kw = dict(prediction="x", reference="", pred_calls=[], ref_calls=REF)
    assert M.score_example("exact_match", **kw) is None  # text metric on a tool-call-only turn
    assert M.score_example("json_valid", **kw) is None
    assert M.score_example("tool_call", **kw) == 0.0
    assert M.score_example("latency_ms", **kw, extra={"latency_ms": 12.5}) == 12.5
    assert M.score_example("judge", **kw) is None
    assert M.score_example("token_f1", prediction="a b", reference="a", pred_calls=[], ref_calls=None) == \
        pytest.approx(2 / 3)
    assert set(M.METRICS) >= {"exact_match", "token_f1", "json_valid", "tool_call", "rouge_l", "latency_ms",
                              "output_tokens"}
