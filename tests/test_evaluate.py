"""evaluate.py end to end on prediction files (no model needed), plus its pure helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from conftest import run_json, run_script
from finetune_kit import evaluate as ev


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _qa_files(tmp_path, both=135, a_only=4, b_only=14, neither=47, name=""):
    """The facts-file example as files: n=200, A right on 139, B right on 149."""
    test, pa, pb = [], [], []
    kinds = ["both"] * both + ["a"] * a_only + ["b"] * b_only + ["none"] * neither
    for i, k in enumerate(kinds):
        ans = f"answer {i}"
        test.append({"messages": [{"role": "system", "content": "Answer tersely."},
                                  {"role": "user", "content": f"question {i}?"},
                                  {"role": "assistant", "content": ans}]})
        pa.append({"prediction": ans if k in ("both", "a") else f"wrong {i}", "latency_ms": 100 + i % 7,
                   "output_tokens": 3})
        pb.append({"prediction": ans if k in ("both", "b") else f"bad {i}", "latency_ms": 80 + i % 5,
                   "output_tokens": 3})
    return (_write(tmp_path / f"test{name}.jsonl", test), _write(tmp_path / f"a{name}.jsonl", pa),
            _write(tmp_path / f"b{name}.jsonl", pb))


def test_predictions_mode_reproduces_the_paired_example(tmp_path):
    test, a, b = _qa_files(tmp_path)
    out = tmp_path / "eval"
    code, doc = run_json("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b,
                         "--metrics", "exact_match,token_f1,latency_ms", "--output-dir", out)
    assert code == 0, doc
    em = doc["metrics"]["exact_match"]
    assert (em["a"], em["b"], em["n"]) == (0.695, 0.745, 200)
    assert em["diff"] == pytest.approx(0.05)
    assert em["p_value"] == pytest.approx(sm_mcnemar(np.array([[135, 4], [14, 47]]), exact=True).pvalue)
    assert [round(x, 2) for x in em["ci95"]] == [0.01, 0.09]
    assert doc["verdict"] == "improved" and doc["primary_metric"] == "exact_match"
    assert doc["metrics"]["latency_ms"]["significant"] == "better"  # lower latency is better
    assert doc["metrics"]["latency_ms"]["test"] == "wilcoxon_signed_rank"
    assert doc["general"] is None and doc["mode"] == "predictions"
    # files: report table, predictions in the agreed format
    report = (out / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["metric", "baseline", "candidate", "change",
                                                                 "95% CI", "p", "n"]
    assert "IMPROVED" in report and "+5.0 pts" in report and "0.031" in report
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 200
    r = rows[140]
    assert set(r) >= {"index", "line", "prompt_messages", "reference", "reference_tool_calls", "prediction_a",
                      "prediction_b", "tool_calls_a", "tool_calls_b", "scores"}
    assert r["index"] == 140 and r["line"] == 141 and r["prompt_messages"][-1]["role"] == "user"
    assert r["scores"]["exact_match"] == {"a": 0.0, "b": 1.0}
    assert json.loads((out / "results.json").read_text())["verdict"] == "improved"
    # no clobber without --force; --force replaces
    cp = run_script("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b, "--output-dir", out)
    assert cp.returncode == 2 and "--force" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    cp = run_script("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b, "--output-dir", out,
                    "--force")
    assert cp.returncode == 0, cp.stderr
    assert "verdict: improved" in cp.stdout


def test_swapped_sides_regress_with_exit_1(tmp_path):
    test, a, b = _qa_files(tmp_path)
    code, doc = run_json("evaluate", "--test", test, "--predictions-a", b, "--predictions-b", a,
                         "--metrics", "exact_match")
    assert code == 1 and doc["verdict"] == "regressed"
    assert doc["metrics"]["exact_match"]["significant"] == "worse"
    assert doc["metrics"]["exact_match"]["ci95"][1] < 0


def test_small_difference_is_no_significant_change(tmp_path):
    test, a, b = _qa_files(tmp_path, both=150, a_only=8, b_only=12, neither=30)
    code, doc = run_json("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b)
    assert code == 0 and doc["verdict"] == "no_significant_change"
    em = doc["metrics"]["exact_match"]
    assert em["ci95"][0] < 0 < em["ci95"][1] and em["p_value"] > 0.05
    # default metrics for plain-text references, with latency/tokens because the files carry them
    assert list(doc["metrics"]) == ["exact_match", "token_f1", "rouge_l", "latency_ms", "output_tokens"]


def test_general_set_regression_flags_forgetting(tmp_path):
    test, a, b = _qa_files(tmp_path)
    gtest, ga, gb = _qa_files(tmp_path, both=100, a_only=25, b_only=3, neither=22, name="_general")
    code, doc = run_json("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b,
                         "--general", gtest, "--general-predictions-a", ga, "--general-predictions-b", gb,
                         "--metrics", "exact_match", "--general-metrics", "exact_match", "--output-dir",
                         tmp_path / "out")
    assert code == 1
    assert doc["metrics"]["exact_match"]["significant"] == "better"
    assert doc["general"]["regressed"] and doc["general"]["regressions"] == ["exact_match"]
    assert doc["verdict"] == "regressed" and "forgetting" in doc["verdict_reason"]
    assert (tmp_path / "out" / "general_predictions.jsonl").is_file()
    assert "General held-out set" in (tmp_path / "out" / "report.md").read_text()


def _tool_test(tmp_path):
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    rows = []
    for i, city in enumerate(["Paris", "Rome", "Oslo", "Lima"]):
        rows.append({"tools": [weather], "messages": [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "tool_calls": [{"id": f"c{i}", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": city})}}]}]})
    rows.append({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]})
    return _write(tmp_path / "tools.jsonl", rows)


def test_tool_call_predictions_in_several_shapes(tmp_path):
    test = _tool_test(tmp_path)
    a = _write(tmp_path / "a.jsonl", [
        {"prediction": "I cannot check the weather."},
        {"prediction": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},  # wrong city
        {"prediction": "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>"},
        {"prediction": "sunny"},
        {"prediction": "Hello!"}])
    b = _write(tmp_path / "b.jsonl", [
        {"tool_calls": [{"id": "x", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"prediction": '{"name": "get_weather", "arguments": {"city": "Rome"}}'},
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
        {"prediction": '[{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Lima\\"}"}}]'},
        {"prediction": '{"name": "get_weather", "arguments": {"city": "Hi"}}'}])  # a call where none was due
    code, doc = run_json("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b,
                         "--bootstrap", "500", "--output-dir", tmp_path / "o")
    assert code == 0
    assert list(doc["metrics"])[:2] == ["tool_call", "tool_name"]
    tc = doc["metrics"]["tool_call"]
    assert (tc["a"], tc["b"], tc["n"]) == (pytest.approx(2 / 5), pytest.approx(4 / 5), 5)
    assert doc["metrics"]["tool_name"]["a"] == pytest.approx(3 / 5)
    assert doc["metrics"]["token_f1"]["n"] == 1  # text metrics only where the reference has text
    assert any("small" in w or "only 5" in w for w in doc["warnings"])
    rows = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["reference_tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert rows[0]["tool_calls_b"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert rows[0]["tools"][0]["function"]["name"] == "get_weather" and rows[4]["tools"] is None


def test_json_schema_metric(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Extract {i}"},
                          {"role": "assistant", "content": json.dumps({"id": i, "ok": True})}]} for i in range(4)]
    test = _write(tmp_path / "t.jsonl", rows)
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "required": ["id", "ok"],
                                  "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}}}))
    a = _write(tmp_path / "a.jsonl", [{"prediction": "id=0"}, {"prediction": '{"id": 1}'},
                                      {"prediction": '{"id": 2, "ok": true}'}, {"prediction": "{}"}])
    b = _write(tmp_path / "b.jsonl", [{"prediction": '```json\n{"id": 0, "ok": true}\n```'},
                                      {"prediction": '{"ok": true, "id": 1}'},
                                      {"prediction": '{"id": 2, "ok": true}'}, {"prediction": '{"id": "3", "ok": 1}'}])
    code, doc = run_json("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b,
                         "--json-schema", schema)
    assert code == 0
    # JSON references: the content is the task, so json_match (not the format check) is primary
    assert list(doc["metrics"])[:2] == ["json_match", "json_valid"] and doc["primary_metric"] == "json_match"
    assert doc["metrics"]["json_valid"]["a"] == 0.25 and doc["metrics"]["json_valid"]["b"] == 0.75
    assert doc["metrics"]["json_match"]["a"] == 0.25 and doc["metrics"]["json_match"]["b"] == 0.75


@pytest.mark.parametrize("case", ["garbage_test", "count_mismatch", "unknown_metric", "missing_file",
                                  "both_modes", "bad_schema", "garbage_predictions", "no_assistant",
                                  "one_side_only", "judge_metric_without_url", "bad_bootstrap"])
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    test, a, b = _qa_files(tmp_path)
    args = ["--test", test, "--predictions-a", a, "--predictions-b", b]
    if case == "garbage_test":
        (tmp_path / "g.jsonl").write_bytes(b"\x00\xffnot json\n{\n")
        args[1] = tmp_path / "g.jsonl"
    elif case == "count_mismatch":
        _write(b, [{"prediction": "x"}] * 3)
    elif case == "unknown_metric":
        args += ["--metrics", "exact_match,bleu"]
    elif case == "missing_file":
        args[3] = tmp_path / "nope.jsonl"
    elif case == "both_modes":
        args += ["--base-model", "smollm2-135m"]
    elif case == "bad_schema":
        (tmp_path / "s.json").write_text('{"type": 5}')
        args += ["--json-schema", tmp_path / "s.json"]
    elif case == "garbage_predictions":
        (tmp_path / "gp.jsonl").write_text("[1, 2]\n" * 200)
        args[5] = tmp_path / "gp.jsonl"
    elif case == "no_assistant":
        _write(test, [{"messages": [{"role": "user", "content": "hi"}]}])
    elif case == "one_side_only":  # B's predictions without A's
        args = args[:2] + args[4:]
    elif case == "judge_metric_without_url":
        args += ["--metrics", "judge"]
    elif case == "bad_bootstrap":
        args += ["--bootstrap", "5"]
    cp = run_script("evaluate", *args)
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    assert cp.stderr.startswith("error: ") and len(cp.stderr.strip().splitlines()) == 1
    assert "Traceback" not in cp.stderr and cp.stdout == ""
    if case in ("garbage_test", "count_mismatch", "both_modes"):
        code, doc = run_json("evaluate", *args)
        assert code == 2 and "error" in doc


def test_plan_sides_for_adapter_v1_vs_v2(tmp_path):
    for name in ("v1", "v2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    base, a, b = ev.plan_sides(None, str(tmp_path / "v1"), str(tmp_path / "v2"))
    assert base == "org/base"
    assert (a.kind, a.spec, b.kind, b.spec) == ("adapter", str(tmp_path / "v1"), "adapter", str(tmp_path / "v2"))
    base, a, b = ev.plan_sides("org/base", str(tmp_path / "v1"), None)
    assert (a.kind, a.label, b.kind, b.label) == ("base", "base", "adapter", "fine-tuned")
    base, a, b = ev.plan_sides("org/base", None, "org/other")
    assert (a.kind, b.kind, b.spec) == ("base", "model", "org/other")
    with pytest.raises(ev.UsageError):
        ev.plan_sides("org/base", str(tmp_path), None)  # not an adapter dir
    with pytest.raises(ev.UsageError):
        ev.plan_sides("org/base", None, None)


def test_template_messages_inline_tool_calls_for_tool_unaware_templates():
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "w", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    from finetune_kit.templating import template_messages

    inline = template_messages(msgs, inline_tool_calls=True)
    assert inline[1]["content"] == '<tool_call>{"name": "w", "arguments": {"city": "Paris"}}</tool_call>'
    from finetune_kit import metrics as M
    assert M.parse_tool_calls(inline[1]["content"]) == [{"name": "w", "arguments": {"city": "Paris"}}]
    assert template_messages([{"role": "developer", "content": "be terse"}])[0]["role"] == "system"
    native = template_messages(msgs)
    assert native[1]["tool_calls"][0]["function"] == {"name": "w", "arguments": {"city": "Paris"}}
    assert native[2]["tool_call_id"] == "c1"


def test_judge_request_and_reply_parsing_without_network():
    item = ev.TestItem(0, 1, [{"role": "user", "content": "2+2?"}], "4", None)
    body = ev.judge_request("judge-1", item, "four", [])
    assert body["model"] == "judge-1" and body["temperature"] == 0
    assert "Reference answer:\n4" in body["messages"][1]["content"] and "four" in body["messages"][1]["content"]
    assert ev.parse_judge_reply({"choices": [{"message": {"content": "PASS"}}]}) == 1.0
    assert ev.parse_judge_reply({"choices": [{"message": {"content": "fail."}}]}) == 0.0
    assert ev.parse_judge_reply({"choices": [{"message": {"content": "maybe"}}]}) is None
    assert ev.parse_judge_reply({}) is None
    with pytest.raises(ev.UsageError):
        ev.Judge("ftp://x", "m")
    j = ev.Judge("http://localhost:1/v1", "m", key_env="FT_TEST_NO_SUCH_KEY")
    assert j.url == "http://localhost:1/v1/chat/completions" and j.key is None


def test_report_masks_emails_in_example_previews(tmp_path):
    test, a, b = _qa_files(tmp_path)
    rows = [json.loads(x) for x in test.read_text().splitlines()]
    rows[140]["messages"][1]["content"] = "my mail is jane.doe@example.com, card 4111 1111 1111 1111"
    _write(test, rows)
    out = tmp_path / "o"
    code, _ = run_json("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b, "--output-dir", out)
    report = (out / "report.md").read_text()
    assert "jane.doe@example.com" not in report and "4111 1111" not in report
    code, _ = run_json("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b,
                       "--output-dir", tmp_path / "o2", "--no-examples")
    assert "B wins" not in (tmp_path / "o2" / "report.md").read_text()


def test_render_prompt_with_tool_aware_and_tool_unaware_templates(smollm2_dir):
    from transformers import AutoTokenizer

    tools = [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]
    item = ev.TestItem(0, 1, [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "w", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], "It is sunny.", None, tools)
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))  # SmolLM2: no tool support in its template
    text = ev.render_prompt(tok, item)
    assert '<tool_call>{"name": "w", "arguments": {"city": "Paris"}}</tool_call>' in text
    assert text.endswith("<|im_start|>assistant\n")
    # a Qwen-like template that renders tools and native tool_calls
    tok.chat_template = (
        "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}"
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}"
        "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} "
        "{{ c.function.arguments | tojson }}{% endfor %}{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}")
    text = ev.render_prompt(tok, item)
    assert text.startswith("TOOLS:w;") and 'CALL w {"city": "Paris"}' in text and "<tool_call>" not in text
    assert text.endswith("[assistant]")
    from finetune_kit.templating import inspect_template

    info = inspect_template(tok)
    assert (info.supports_tools, info.renders_tool_calls) == (True, True)
    tok.chat_template = None
    with pytest.raises(ev.UsageError, match="no chat template"):
        ev.render_prompt(tok, item)


def test_json_references_make_json_match_primary_without_schema(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Route ticket {i}"},
                          {"role": "assistant", "content": json.dumps({"queue": "billing" if i % 2 else "tech"})}]}
            for i in range(6)]
    test = _write(tmp_path / "t.jsonl", rows)
    # A always emits valid JSON with the wrong queue; B gets the queue right: json_valid alone sees no change
    a = _write(tmp_path / "a.jsonl", [{"prediction": json.dumps({"queue": "other"})} for _ in range(6)])
    b = _write(tmp_path / "b.jsonl", [{"prediction": r["messages"][1]["content"]} for r in rows])
    code, doc = run_json("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b)
    assert code == 0 and doc["primary_metric"] == "json_match"
    assert doc["metrics"]["json_valid"]["diff"] == 0 and doc["metrics"]["json_match"]["diff"] == 1.0
    # a schema with free-text references keeps the format check primary
    free = _write(tmp_path / "free.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                          {"role": "assistant", "content": "plain text"}]}] * 6)
    assert ev.default_metrics(ev.load_test_set(free), True, False)[0] == "json_valid"


def test_baseline_only_from_predictions_then_reused_as_a(tmp_path):
    test, a, b = _qa_files(tmp_path)
    out = tmp_path / "base"
    code, doc = run_json("evaluate", "--test", test, "--predictions-a", a, "--metrics", "exact_match,token_f1",
                         "--output-dir", out)
    assert code == 0 and doc["mode"] == "baseline" and doc["verdict"] == "baseline_only" and doc["b"] is None
    em = doc["metrics"]["exact_match"]
    assert em["a"] == 0.695 and em["n"] == 200 and em["ci95"][0] < 0.695 < em["ci95"][1]
    assert doc["min_detectable_diff"] == pytest.approx((1.959964 + 0.841621) * 0.5 / math.sqrt(200), rel=1e-4)
    assert "--predictions-a" in doc["verdict_reason"]
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 200 and {"prediction", "tool_calls", "index"} <= set(rows[0])
    # the baseline's predictions file is a valid --predictions-a for the later comparison
    code, doc2 = run_json("evaluate", "--test", test, "--predictions-a", out / "predictions.jsonl",
                          "--predictions-b", b, "--metrics", "exact_match")
    assert code == 0 and doc2["metrics"]["exact_match"]["a"] == 0.695 and doc2["verdict"] == "improved"
    assert "forgetting was not checked" in doc2["verdict_reason"]  # no --general set was given
    cp = run_script("evaluate", "--test", test, "--predictions-a", a)
    assert cp.returncode == 0 and "baseline" in cp.stdout and "reuse with --predictions-a" not in cp.stdout


def test_small_n_warning_names_the_detectable_difference(tmp_path):
    test, a, b = _qa_files(tmp_path, both=10, a_only=2, b_only=5, neither=3)
    code, doc = run_json("evaluate", "--test", test, "--predictions-a", a, "--predictions-b", b,
                         "--metrics", "exact_match")
    assert doc["n"] == 20 and doc["min_detectable_diff"] > 0.3
    assert any("only 20 test examples" in w and "--few-shot-cv" in w for w in doc["warnings"])


def test_few_shot_folds_never_show_an_example_to_itself():
    items = [ev.TestItem(i, i + 1, [{"role": "system", "content": "s"}, {"role": "user", "content": f"q{i}"}],
                         f"a{i}", None) for i in range(12)]
    items[3] = ev.TestItem(3, 4, [{"role": "user", "content": "q3"}], "", [{"name": "f", "arguments": {}}])
    b_items, info = ev.few_shot_folds(items, 4, 2, seed=0)
    assert info["folds"] == 4 and sum(info["fold_sizes"]) == 12 and info["shots_used_min"] == 2
    for orig, it in zip(items, b_items):
        shown = [m["content"] for m in it.prompt_messages[:-1] if m["role"] == "user"]
        assert orig.prompt_messages[-1]["content"] not in shown  # never its own demonstration
        assert it.prompt_messages[0]["role"] == "system" or orig.index == 3
        assert it.prompt_messages[-1] == orig.prompt_messages[-1] and len(shown) == 2
        assert "q3" not in shown  # a tool-call example is never a demonstration
    with pytest.raises(ev.UsageError):
        ev.few_shot_folds(items, 13, 2, seed=0)


@pytest.mark.parametrize("flags", [["--few-shot-cv", "1", "--base-model", "m"],
                                   ["--few-shot-cv", "3", "--predictions-a", "A"],
                                   ["--predictions-a", "A", "--base-model", "m"],
                                   ["--base-model", "m", "--general", "G"]])
def test_mode_flag_combinations_are_usage_errors(tmp_path, flags):
    test, a, _b = _qa_files(tmp_path)
    flags = [str(a) if f == "A" else str(test) if f == "G" else f for f in flags]
    cp = run_script("evaluate", "--test", test, *flags)
    assert cp.returncode == 2 and cp.stderr.startswith("error: ") and "Traceback" not in cp.stderr


def test_few_shot_demonstrations_cover_the_labels_first():
    labels = ["billing"] * 6 + ["bug"] * 6 + ["spam"] * 6 + ["feature"] * 6
    items = [ev.TestItem(i, i + 1, [{"role": "user", "content": f"email {i}"}], lab, None)
             for i, lab in enumerate(labels)]
    _b, info = ev.few_shot_folds(items, 4, 4, seed=3)
    for lines in info["demonstrations"].values():
        assert sorted(labels[ln - 1] for ln in lines) == ["billing", "bug", "feature", "spam"]
