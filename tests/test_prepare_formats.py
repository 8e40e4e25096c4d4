"""prepare_data.py on the public dataset formats users actually have (issue 12, items 6-13) and the
data-mix target (issue 22, item 6). Rows are built in tests/fixtures/prepare/formats.py from the
formats' documentation (sources cited there); content is invented."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import run_json, run_script

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "prepare"))
import formats as F  # noqa: E402

OUT = ("train.jsonl", "validation.jsonl", "test.jsonl")


def rows(d: Path, names=OUT) -> list[dict]:
    return [json.loads(x) for n in names for x in (d / n).read_text(encoding="utf-8").splitlines()]


def prepare(tmp_path: Path, data: list[dict], *args, name: str = "in.jsonl"):
    src = tmp_path / name
    F.write_jsonl(src, data)
    out = tmp_path / ("out_" + src.stem)
    code, doc = run_json("prepare_data", src, "-o", out, *args)
    return code, doc, out


def test_dolly_context_goes_into_the_user_turn(tmp_path):               # item 6
    code, doc, out = prepare(tmp_path, F.DOLLY, "--split", "1,0,0", "--min-examples", "1")
    assert code == 0, doc
    got = {r["metadata"]["category"]: r for r in rows(out)}
    qa = got["closed_qa"]["messages"]
    assert qa[0] == {"role": "user", "content": F.DOLLY[0]["instruction"] + "\n\n" + F.DOLLY[0]["context"]}
    assert qa[1]["content"] == F.DOLLY[0]["response"] and "context" not in got["closed_qa"]["metadata"]
    assert got["brainstorming"]["messages"][0]["content"] == F.DOLLY[2]["instruction"]   # empty context: no blank
    assert doc["normalisation"]["dolly_context_to_prompt"] == 2


def test_preference_pairs_become_openai_preference_lines(tmp_path):     # item 7
    data = [F.PREF_OPENAI, F.PREF_CHOSEN_MESSAGES, F.PREF_TRL_STANDARD, F.PREF_TRL_CONVERSATIONAL, F.PREF_TRL_IMPLICIT,
            F.PREF_TRL_IMPLICIT_TEXT]
    code, doc, out = prepare(tmp_path, data, "--split", "1,0,0", "--min-examples", "1")
    assert code == 0, doc
    got = rows(out, ("train.jsonl",))
    assert len(got) == 5 and all(set(r) <= {"input", "preferred_output", "non_preferred_output", "metadata"}
                                 for r in got)
    by_prompt = {r["input"]["messages"][-1]["content"]: r for r in got}
    two = by_prompt["2+2?"]
    assert two["input"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert two["preferred_output"] == [{"role": "assistant", "content": "4"}]
    assert by_prompt["The capital of Portugal is"]["non_preferred_output"][0]["content"] == " Porto."
    assert by_prompt["Name a prime."]["preferred_output"][0]["content"] == "7"
    removed = rows(out, ("removed.jsonl",))
    assert [r["code"] for r in removed] == ["preference_without_prompt"]   # said, not silently dropped
    code, vdoc = run_json("validate_jsonl", out / "train.jsonl", "--min-examples", "1")
    assert code == 0 and vdoc["files"][0]["format"] == "preference"
    # mixed with chat rows: the preferred answers become chat examples, and a warning says so
    code, doc, out = prepare(tmp_path, [F.PREF_TRL_CONVERSATIONAL] + F.chat_rows(3), "--min-examples", "1",
                             name="mixed.jsonl")
    assert code == 0 and doc["normalisation"]["preference_to_sft_preferred_answer"] == 1
    assert any("preference row(s) are mixed" in w for w in doc["warnings"])


def test_llamafactory_typed_content_parts(tmp_path):                    # item 8
    code, doc, out = prepare(tmp_path, [F.LLAMAFACTORY_V1], "--split", "1,0,0", "--min-examples", "1")
    assert code == 0, doc
    (r,) = rows(out)
    msgs = r["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    call = msgs[2]["tool_calls"][0]
    assert msgs[2]["content"] == "Checking." and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Porto"} and msgs[3]["tool_call_id"] == call["id"]
    assert r["tools"][0]["function"]["name"] == "get_weather" and msgs[4]["weight"] == 1
    assert doc["normalisation"]["reasoning_parts_dropped"] == 1 and doc["normalisation"]["tools_json_string_parsed"] == 1


def test_validator_diagnoses_json_arrays_once(tmp_path):                # item 9
    arr = tmp_path / "alpaca.json"
    arr.write_text(json.dumps([{"instruction": f"Say {i}", "output": str(i)} for i in range(500)], indent=1))
    code, doc = run_json("validate_jsonl", arr)
    f = doc["files"][0]
    assert code == 1 and f["error_count"] == 1 and f["counts"] == {"json_array_file": 1}
    assert "prepare_data.py" in f["errors"][0]["hint"] and len(json.dumps(doc)) < 5000
    pretty = tmp_path / "pretty.jsonl"
    pretty.write_text("\n".join(json.dumps(r, indent=2) for r in F.chat_rows(3)))
    code, doc = run_json("validate_jsonl", pretty)
    assert code == 1 and doc["files"][0]["counts"] == {"pretty_printed_json": 1}
    cp = run_script("validate_jsonl", arr)
    assert cp.returncode == 1 and cp.stdout.count("json_array_file") <= 3 and "Traceback" not in cp.stderr
    code, pdoc = run_json("prepare_data", arr, "-o", tmp_path / "o")     # the command the hint gives works
    assert code == 0 and pdoc["counts"]["kept"] == 500


def test_validator_legacy_function_call_no_user_and_repetition(tmp_path):  # items 10, 11
    src = tmp_path / "x.jsonl"
    F.write_jsonl(src, F.chat_rows(10) + [F.LEGACY_FUNCTION_CALL, F.NO_USER, F.REPEATED])
    code, doc = run_json("validate_jsonl", src)
    c = doc["files"][0]["counts"]
    assert c["legacy_function_call"] == 1 and "content_missing" not in c
    assert c["no_user_message"] == 1 and c["repetitive_content"] == 1
    lines = {w["code"]: w["line"] for w in doc["files"][0]["warnings"]}
    assert lines["no_user_message"] == 12 and lines["repetitive_content"] == 13
    # a long but varied answer is not "repetitive"
    varied = {"messages": [{"role": "user", "content": "List them."},
                           {"role": "assistant", "content": "\n".join(f"- item {i}: weight {i * 7 % 31} kg, colour "
                                                                        f"{['red', 'blue', 'green'][i % 3]}"
                                                                        for i in range(200))}]}
    F.write_jsonl(src, F.chat_rows(10) + [varied])
    code, doc = run_json("validate_jsonl", src)
    assert code == 0 and "repetitive_content" not in doc["files"][0]["counts"]


def test_rows_needing_coercion_are_removed_unless_coerce(tmp_path):     # item 12
    bad = [{"messages": [{"role": "user", "content": "6 x 7?"}, {"role": "assistant", "content": 42}]},
           {"conversation": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
    code, doc, out = prepare(tmp_path, F.chat_rows(12) + bad)
    removed = rows(out, ("removed.jsonl",))
    assert sorted(r["code"] for r in removed) == ["content_wrong_type", "messages_missing"]
    assert all("--coerce" in r["detail"] for r in removed)
    # each code is the validator's own for the raw row
    src = tmp_path / "raw.jsonl"
    F.write_jsonl(src, F.chat_rows(10) + bad)
    code, vdoc = run_json("validate_jsonl", src)
    assert {"content_wrong_type", "messages_missing"} <= set(vdoc["files"][0]["counts"])
    code, doc, out = prepare(tmp_path, F.chat_rows(12) + bad, "--coerce", name="coerced.jsonl")
    assert code == 0 and doc["counts"]["removed"] == 0
    assert doc["normalisation"]["content_number_to_string"] == 1
    assert doc["normalisation"]["conversation_key_as_conversations"] == 1


@pytest.mark.parametrize("n", [12, 120])
def test_small_sets_same_verdict_as_the_validator(tmp_path, n):         # item 13
    code, doc, out = prepare(tmp_path, F.chat_rows(n))
    vcode, vdoc = run_json("validate_jsonl", *(out / x for x in OUT))
    assert code == vcode == 0, (doc["validation"], vdoc)                 # small eval files: warnings only
    assert doc["validation"]["valid"] is vdoc["valid"] is True
    roles = {Path(f["file"]).name: f["role"] for f in vdoc["files"]}
    assert roles == {"train.jsonl": "train", "validation.jsonl": "eval", "test.jsonl": "eval"}
    val = len(rows(out, ("validation.jsonl",)))
    if val < 10:
        assert "few_eval_examples" in vdoc["files"][1]["counts"]
        assert any("cross-validation" in w for w in doc["warnings"])
    else:
        assert not any("cross-validation" in w for w in doc["warnings"])
    # under 10 training examples both say no, with the same flags both say yes
    code, doc, out = prepare(tmp_path, F.chat_rows(6), name="tiny.jsonl")
    vcode, vdoc = run_json("validate_jsonl", *(out / x for x in OUT if (out / x).stat().st_size))
    assert code == vcode == 1 and doc["validation"]["valid"] is vdoc["valid"] is False
    code, doc, out = prepare(tmp_path, F.chat_rows(6), "--min-examples", "1", name="tiny2.jsonl")
    vcode, vdoc = run_json("validate_jsonl", *(out / x for x in OUT if (out / x).stat().st_size),
                           "--min-examples", "1")
    assert code == vcode == 0


def test_mix_target_follows_the_data(tmp_path):                         # issue 22 item 6
    code, doc, out = prepare(tmp_path, F.chat_rows(30), "--min-examples", "1")
    mix = doc["mix"]
    assert code == 0 and mix["target"] is None and mix["short"] == []
    assert not any("target mix" in w for w in doc["warnings"]) and "single-turn" in mix["target_source"]
    agent = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"},
                           {"role": "user", "content": f"and {i}?"}, {"role": "assistant", "content": f"b{i}"}]}
             for i in range(20)]
    code, doc, out = prepare(tmp_path, agent, "--min-examples", "1", name="agent.jsonl")
    assert doc["mix"]["target"]["refusal"] == 0.2 and "refusal" in doc["mix"]["short"]
    code, doc, out = prepare(tmp_path, F.chat_rows(30), "--target-mix", "normal=0.5,refusal=0.5",
                             "--min-examples", "1", name="explicit.jsonl")
    assert doc["mix"]["target_source"] == "--target-mix" and doc["mix"]["short"] == ["refusal"]


def test_every_normalisation_counter_is_documented():
    """Every counter prepare_data.py can report (normalisation, openclaw.stripped/dropped) is in data-prep.md."""
    import re

    from conftest import ROOT

    kit = ROOT / "scripts" / "finetune_kit"
    src = "".join((kit / f).read_text(encoding="utf-8") for f in
                  ("prepare.py", "openclaw_sessions.py", "readers/common.py", "readers/chat_jsonl.py",
                   "readers/instruction.py", "readers/tabular.py", "readers/openclaw.py"))
    names = set(re.findall(r'bump\((?:counts|c|self\.counts|ctx\.counts|local), "([a-z_:]+)"', src))
    inbound = (kit / "readers" / "openclaw_inbound.py").read_text(encoding="utf-8")
    stripped = set(re.findall(r'c\["([a-z_]+)"\]', inbound)) | {"system_event:exec", "system_event:feishu",
                                                                 "system_event:other"}
    assert len(names) > 40 and len(stripped) > 10
    doc = (ROOT / "data-prep.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if f"`{n.split(':', 1)[-1]}`" not in doc and f"`{n}`" not in doc)
    missing += sorted(n for n in stripped if f"`{n}`" not in doc)
    assert not missing, missing
