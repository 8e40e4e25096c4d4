"""prepare_data.py: conversion of every input format, normalisation, dedup, split, leakage, outputs."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_json, run_script
from finetune_kit import chat, dedup
from finetune_kit import prepare as prep

FIX = Path(__file__).parent / "fixtures" / "prepare"
OUT_FILES = ("train.jsonl", "validation.jsonl", "test.jsonl")


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def outputs(d: Path) -> dict[str, list[dict]]:
    return {n: read(d / n) for n in OUT_FILES + ("removed.jsonl",)}


def assert_valid_chat_lines(d: Path) -> None:
    for n in OUT_FILES:
        for i, obj in enumerate(read(d / n), 1):
            model, findings = chat.check_record(obj, "chat", i)
            assert model is not None, (n, i, [f.one_line() for f in findings])
            assert set(obj) <= {"messages", "tools", "parallel_tool_calls", "metadata"}


def run_prepare(tmp_path: Path, name: str = "out", **kw) -> tuple[dict, Path]:
    out = tmp_path / name
    opts = prep.Options(inputs=[str(x) for x in kw.pop("inputs")], output_dir=str(out), **kw)
    res = prep.prepare(opts)
    return res.data, out


def conversation(i: int, topic: str = "general") -> dict:
    """A distinct synthetic conversation (varied words so unrelated rows are far apart)."""
    rnd = random.Random(i)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda", "theta", "zeta", "rho", "tau",
             "apple", "river", "stone", "cloud", "paper", "glass", "music", "forest", "engine", "silver", "harbor"]
    q = " ".join(rnd.choice(words) for _ in range(12)) + f" number {i}"
    a = " ".join(rnd.choice(words) for _ in range(20)) + f" answer {i}"
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            "metadata": {"topic": topic}}


def near_copy(row: dict) -> dict:
    """Same conversation with one word changed at the end (Jaccard of 3-shingles >= 0.85)."""
    r = json.loads(json.dumps(row))
    r["messages"][1]["content"] = r["messages"][1]["content"] + " indeed"
    return r


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ formats


def test_chat_jsonl_normalised_and_accounted(tmp_path):
    data, out = run_prepare(tmp_path, inputs=[FIX / "chat.jsonl"])
    o = outputs(out)
    assert_valid_chat_lines(out)
    c = data["counts"]
    assert c["input_rows"] == 12
    assert c["input_rows"] == c["train"] + c["validation"] + c["test"] + c["removed"]
    assert len(o["removed.jsonl"]) == c["removed"] == 5
    norm = data["normalisation"]
    for key in ("role_aliases_mapped", "tool_arguments_object_to_string", "function_call_to_tool_calls",
                "function_role_to_tool", "whitespace_turns_removed", "tool_results_paired_with_calls"):
        assert norm.get(key, 0) >= 1, key
    kept = [x for n in OUT_FILES for x in o[n]]
    by_line = {x["metadata"]["source_line"]: x for x in kept}
    # object arguments -> JSON string
    args = by_line[2]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert isinstance(args, str) and json.loads(args) == {"order_id": "1042"}
    # legacy function_call + function role -> tool_calls + tool message paired by id
    m = by_line[3]["messages"]
    assert m[1]["tool_calls"][0]["function"]["name"] == "convert" and m[2]["role"] == "tool"
    assert m[2]["tool_call_id"] == m[1]["tool_calls"][0]["id"] and m[3]["role"] == "assistant"
    # whitespace-only turns removed, roles human/gpt mapped
    assert [x["role"] for x in by_line[4]["messages"]] == ["user", "assistant"]
    assert [x["role"] for x in by_line[1]["messages"]] == ["system", "user", "assistant"]
    # top-level extra keys kept as provenance metadata
    assert by_line[1]["metadata"]["conversation_id"] == "c1" and by_line[2]["metadata"]["user_id"] == "u7"
    reasons = {(r["reason"], r.get("line")) for r in o["removed.jsonl"]}
    assert ("exact_duplicate", 5) in reasons and ("near_duplicate", 6) in reasons
    assert ("unreadable", 8) in reasons and ("unconvertible", 9) in reasons and ("unconvertible", 10) in reasons
    dup = next(r for r in o["removed.jsonl"] if r["reason"] == "exact_duplicate")
    assert dup["duplicate_of"] == {"source": "chat.jsonl", "line": 1} and dup["example"]["messages"]
    bad = next(r for r in o["removed.jsonl"] if r.get("line") == 8)
    assert bad["code"] == "invalid_json" and bad["raw"].startswith('{"messages"')


@pytest.mark.parametrize("name,fmt,kept,removed_code", [
    ("prompt_completion.jsonl", "prompt-completion", 3, "completion_missing"),
    ("alpaca.json", "alpaca", 3, "instruction_missing"),
    ("sharegpt.jsonl", "sharegpt", 3, "role_unknown"),
    ("data.csv", "csv", 4, "prompt_missing"),
    ("data.tsv", "tsv", 2, None),
])
def test_each_format_converts(tmp_path, name, fmt, kept, removed_code):
    data, out = run_prepare(tmp_path, inputs=[FIX / name])
    assert data["formats"] == {fmt: kept + (1 if removed_code else 0)}
    assert data["counts"]["kept"] == kept
    assert_valid_chat_lines(out)
    rem = read(out / "removed.jsonl")
    assert [r.get("code") for r in rem] == ([removed_code] if removed_code else [])
    assert all(r["line"] >= 1 for r in rem)


def test_alpaca_sharegpt_csv_details(tmp_path):
    _, out = run_prepare(tmp_path, "a", inputs=[FIX / "alpaca.json"])
    rows = {x["metadata"]["source_line"]: x for n in OUT_FILES for x in read(out / n)}
    assert rows[2]["messages"][0]["content"].startswith("Summarise the text.\n\nThe quick brown fox")
    assert [m["role"] for m in rows[3]["messages"]] == ["system", "user", "assistant", "user", "assistant"]

    _, out = run_prepare(tmp_path, "s", inputs=[FIX / "sharegpt.jsonl"])
    rows = {x["metadata"]["id"]: x for n in OUT_FILES for x in read(out / n)}
    s2 = rows["s2"]
    assert [m["role"] for m in s2["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    call = s2["messages"][2]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert s2["messages"][3]["tool_call_id"] == call["id"]
    assert s2["tools"][0] == {"type": "function", "function": {
        "name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

    _, out = run_prepare(tmp_path, "c", inputs=[FIX / "data.csv"])
    rows = {x["metadata"]["source_line"]: x for n in OUT_FILES for x in read(out / n)}
    assert rows[4]["messages"][0]["content"] == "Multi-line\nquestion here?"   # quoted newline kept
    assert rows[4]["metadata"]["customer_id"] == "cust1"
    assert 6 not in rows and 7 in rows                                          # line 6: empty prompt


def test_csv_column_flags_and_system(tmp_path):
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("q,a,sys,who\nhello,hi there,Be terse.,u1\nbye,see you,,u2\n", encoding="utf-8")
    data, out = run_prepare(tmp_path, inputs=[csv_path], prompt_column="q", completion_column="a",
                            system_column="sys")
    rows = [x for n in OUT_FILES for x in read(out / n)]
    assert rows[0]["messages"][0] == {"role": "system", "content": "Be terse."}
    assert rows[0]["metadata"]["who"] == "u1"
    data, out = run_prepare(tmp_path, "o2", inputs=[csv_path], prompt_column="q", completion_column="a",
                            system_column="sys", system="You are Ada.")
    rows = [x for n in OUT_FILES for x in read(out / n)]
    assert all(r["messages"][0] == {"role": "system", "content": "You are Ada."} for r in rows)
    assert data["normalisation"] == {"system_prompt_added": 1, "system_prompt_replaced": 1}


def test_system_flag_on_jsonl_cli(tmp_path):
    code, doc = run_json("prepare_data", FIX / "prompt_completion.jsonl", "--system", "Translate.",
                         "-o", tmp_path / "o", "--min-examples", "1")
    assert code == 0, doc
    rows = [x for n in OUT_FILES for x in read(tmp_path / "o" / n)]
    assert rows and all(r["messages"][0]["content"] == "Translate." for r in rows)
    assert doc["normalisation"]["system_prompt_added"] == len(rows)
    assert doc["validation"]["valid"] is True and doc["validation"]["files"]


# ------------------------------------------------------------------------------ dedup


def planted(tmp_path: Path, n: int = 60) -> tuple[Path, set[int], set[int]]:
    rows, exact, near = [], set(), set()
    for i in range(n):
        rows.append(conversation(i))
    base = list(rows)
    for k in range(0, n, 10):     # exact copies (whitespace/case variations are still exact)
        r = json.loads(json.dumps(base[k]))
        r["messages"][0]["content"] = "  " + r["messages"][0]["content"].upper() + " "
        rows.append(r)
        exact.add(len(rows))
    for k in range(5, n, 10):     # near copies
        rows.append(near_copy(base[k]))
        near.add(len(rows))
    return write_jsonl(tmp_path / "planted.jsonl", rows), exact, near


def test_exact_and_near_duplicates_removed_with_pointer(tmp_path):
    path, exact, near = planted(tmp_path)
    data, out = run_prepare(tmp_path, inputs=[path])
    rem = read(out / "removed.jsonl")
    assert {r["line"] for r in rem if r["reason"] == "exact_duplicate"} == exact
    assert {r["line"] for r in rem if r["reason"] == "near_duplicate"} == near
    for r in rem:
        k = r["duplicate_of"]["line"]
        assert k < r["line"] and (k - 1) % 5 == 0                         # points at the original (first) row
        if r["reason"] == "near_duplicate":
            assert prep.NUM_PERM and r["similarity"] >= 0.85
    assert data["counts"]["kept"] == 60

    data2, out2 = run_prepare(tmp_path, "o2", inputs=[path], near_dup=False)
    assert data2["counts"]["near_duplicates"] == 0 and data2["counts"]["kept"] == 66
    assert data2["leakage"]["near_dup"] is None                            # not checked when disabled


def test_keep_near_dups_keeps_clusters_in_one_split(tmp_path):
    rows = []
    for i in range(40):
        rows.append(conversation(i))
        rows.append(near_copy(rows[-1]))            # 40 clusters of 2
    path = write_jsonl(tmp_path / "para.jsonl", rows)
    data, out = run_prepare(tmp_path, inputs=[path], keep_near_dups=True)
    assert data["counts"]["kept"] == 80 and data["dedup"]["kept_near_dup_pairs"] == 40
    where = {}
    for n in OUT_FILES:
        for x in read(out / n):
            where[x["metadata"]["source_line"]] = n
    for i in range(40):
        assert where[2 * i + 1] == where[2 * i + 2]
    assert data["leakage"]["near_dup"] == 0 and data["leakage"]["exact"] == 0
    # clusters and groups are united: a cluster whose two rows belong to different groups pulls both groups
    for k, r in enumerate(rows):
        r["grp"] = f"g{k % 7}"
    path = write_jsonl(tmp_path / "para2.jsonl", rows)
    data, out = run_prepare(tmp_path, "o2", inputs=[path], keep_near_dups=True, group_by="grp")
    assert data["split"]["units"] == 1 and data["counts"]["train"] == 80   # everything is connected


def test_near_dup_threshold_flag(tmp_path):
    a = conversation(1)
    b = json.loads(json.dumps(a))
    b["messages"][1]["content"] = " ".join(b["messages"][1]["content"].split()[:14]) + " completely different ending here"
    path = write_jsonl(tmp_path / "t.jsonl", [a, b] + [conversation(i) for i in range(2, 12)])
    strict, _ = run_prepare(tmp_path, "s", inputs=[path], near_dup_threshold=0.95)
    loose, _ = run_prepare(tmp_path, "l", inputs=[path], near_dup_threshold=0.3)
    assert strict["counts"]["near_duplicates"] == 0
    assert loose["counts"]["near_duplicates"] == 1


# ------------------------------------------------------------------------------ split


def test_split_targets_small_datasets():
    for n in range(1, 40):
        t = prep.split_targets(n, (0.8, 0.1, 0.1))
        assert sum(t) == n and t[0] >= 1
    assert prep.split_targets(1, (0.8, 0.1, 0.1)) == [1, 0, 0]
    assert prep.split_targets(2, (0.5, 0.25, 0.25)) == [1, 1, 0]
    assert prep.split_targets(25, (0.8, 0.1, 0.1)) == [19, 3, 3]                 # halves round up
    assert prep.split_targets(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert prep.split_targets(100, (0.8, 0.1, 0.1)) == [80, 10, 10]
    assert prep.split_targets(3, (0.0001, 0.5, 0.5))[0] == 1      # train never empty


def test_group_by_keeps_groups_whole_and_no_leakage(tmp_path):
    rows = []
    for i in range(90):
        r = conversation(i)
        r["user_id"] = f"user{i % 15}"           # top-level field
        rows.append(r)
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    data, out = run_prepare(tmp_path, inputs=[path], group_by="user_id")
    seen: dict[str, str] = {}
    for n in OUT_FILES:
        for x in read(out / n):
            g = x["metadata"]["user_id"]
            assert seen.setdefault(g, n) == n, f"group {g} in two splits"
    assert data["leakage"]["group"] == 0 and data["split"]["units"] == 15
    assert all(data["counts"][s] > 0 for s in ("train", "validation", "test"))
    # metadata path works too
    data2, out2 = run_prepare(tmp_path, "o2", inputs=[path], group_by="metadata.topic")
    assert data2["split"]["units"] == 1 and data2["counts"]["train"] == 90


def test_stratify(tmp_path):
    rows = []
    for i in range(100):
        r = conversation(i, topic="billing" if i % 4 == 0 else "shipping")
        rows.append(r)
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    data, out = run_prepare(tmp_path, inputs=[path], stratify="topic")
    strata = data["split"]["stratify"]
    assert strata == {"billing": {"train": 19, "validation": 3, "test": 3},
                      "shipping": {"train": 59, "validation": 8, "test": 8}}
    per = Counter((n, x["metadata"]["topic"]) for n in OUT_FILES for x in read(out / n))
    assert per[("validation.jsonl", "billing")] == 3 and per[("test.jsonl", "billing")] == 3
    # without stratification the 25 billing rows land wherever the shuffle puts them
    plain, _ = run_prepare(tmp_path, "plain", inputs=[path])
    assert plain["split"]["stratify"] is None


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    path, _, _ = planted(tmp_path, 80)
    _, a = run_prepare(tmp_path, "a", inputs=[path], seed=3)
    _, b = run_prepare(tmp_path, "b", inputs=[path], seed=3)
    _, c = run_prepare(tmp_path, "c", inputs=[path], seed=4)
    for n in OUT_FILES + ("removed.jsonl", "manifest.json"):
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    assert (a / "test.jsonl").read_bytes() != (c / "test.jsonl").read_bytes()
    man = json.loads((a / "manifest.json").read_text())
    assert man["seed"] == 3 and man["files"]["train.jsonl"]["sha256"] == prep.jsonl.sha256_file(a / "train.jsonl")


def _shingle_jaccard(x: dict, y: dict) -> float:
    a = dedup.shingles(prep.near_text(chat.ChatExample.model_validate(x)))
    b = dedup.shingles(prep.near_text(chat.ChatExample.model_validate(y)))
    return len(a & b) / len(a | b) if a | b else 1.0


def test_zero_leakage_verified_independently(tmp_path):
    path, _, _ = planted(tmp_path, 120)
    data, out = run_prepare(tmp_path, inputs=[path])
    assert data["leakage"]["exact"] == 0 and data["leakage"]["near_dup"] == 0
    splits = {n: read(out / n) for n in OUT_FILES}
    keys = {n: {prep.exact_key(chat.ChatExample.model_validate(x)) for x in rows} for n, rows in splits.items()}
    assert not (keys["train.jsonl"] & keys["test.jsonl"]) and not (keys["train.jsonl"] & keys["validation.jsonl"])
    worst = max(_shingle_jaccard(x, y) for x in splits["train.jsonl"] for y in splits["test.jsonl"])
    assert worst < 0.85
    man = json.loads((out / "manifest.json").read_text())
    assert man["leakage"] == data["leakage"]


def test_mix_report_heuristics_and_tags(tmp_path):
    data, out = run_prepare(tmp_path, inputs=[FIX / "chat.jsonl"], tag_field="tag",
                            target_mix=prep.parse_target_mix("normal=0.3,edge=0.2,refusal=0.2,multi_turn=0.15,"
                                                             "tool_calls=0.15"))
    mix = data["mix"]
    cats = {r["category"]: r for r in mix["categories"]}
    assert mix["measured"]["refusal"] == 1 and mix["measured"]["tool_calls"] == 2
    assert cats["edge"]["count"] == 1 and cats["edge"]["status"] != "unknown"   # from the tag field
    assert mix["tags"] == {"edge": 1, "refusal": 1}
    assert cats["refusal"]["status"] == "short" and "refusal" in mix["short"]
    assert cats["refusal"]["add_to_reach"] == 1


@pytest.mark.parametrize("text,refusal", [
    ("I'm sorry, but I can't help with that request.", True),
    ("I cannot assist with creating malware.", True),
    ("As an AI language model, I do not have opinions.", True),
    ("That would violate our usage policy.", True),
    ("I must decline.", True),
    ("Sure! Here is the recipe you asked for.", False),
    ("You can't go wrong with pasta.", False),
    ("I can help with that: first open Settings.", False),
])
def test_refusal_patterns(text, refusal):
    ex = chat.ChatExample(messages=[chat.Message(role="user", content="q"),
                                    chat.Message(role="assistant", content=text)])
    assert prep.is_refusal(ex) is refusal


# ------------------------------------------------------------------------------ CLI contract


def test_cli_json_force_and_atomic(tmp_path):
    out = tmp_path / "o"
    code, doc = run_json("prepare_data", FIX / "chat.jsonl", "-o", out, "--min-examples", "1")
    assert code == 0 and doc["counts"]["kept"] == 7
    assert set(doc["files"]) == {"train.jsonl", "validation.jsonl", "test.jsonl", "removed.jsonl"}
    for key in ("counts", "normalisation", "dedup", "split", "leakage", "mix", "validation", "removed_reasons"):
        assert key in doc
    man = json.loads((out / "manifest.json").read_text())
    for key in ("counts", "files", "seed", "parameters", "dedup", "leakage", "mix", "split", "inputs"):
        assert key in man
    assert man["inputs"][0]["sha256"] == prep.jsonl.sha256_file(FIX / "chat.jsonl")
    before = (out / "train.jsonl").read_bytes()
    cp = run_script("prepare_data", FIX / "chat.jsonl", "-o", out, "--seed", "9")
    assert cp.returncode == 2 and "--force" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    assert (out / "train.jsonl").read_bytes() == before
    cp = run_script("prepare_data", FIX / "chat.jsonl", "-o", out, "--seed", "9", "--force", "--min-examples", "1")
    assert cp.returncode == 0, cp.stderr
    assert json.loads((out / "manifest.json").read_text())["seed"] == 9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # no temp dirs left


@pytest.mark.parametrize("args,needle", [
    (["{fix}/garbage.bin"], "no row could be converted"),
    (["{fix}/garbage.bin", "--from", "csv"], "not UTF-8"),
    (["{fix}/chat.jsonl", "--from", "xml"], "openclaw"),
    (["{fix}/missing.jsonl"], "not found"),
    (["{fix}/chat.jsonl", "--split", "0.5,0.5"], "--split"),
    (["{fix}/data.csv", "--prompt-column", "nope"], "columns: question"),
    (["{fix}/chat.jsonl", "--agent-id", "main"], "--from openclaw"),
    (["{fix}/chat.jsonl", "--target-mix", "refusal"], "NAME=SHARE"),
    (["{fix}/chat.jsonl", "--near-dup-threshold", "1.5"], "must be in (0, 1]: 1.5"),
    (["{fix}/chat.jsonl", "--from", "openclaw", "--min-samples", "-1"], "must be >= 0: -1"),
])
def test_bad_input_exit_2_one_line(tmp_path, args, needle):
    cp = run_script("prepare_data", *[a.format(fix=FIX) for a in args], "-o", tmp_path / "o")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "Traceback" not in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    assert needle in cp.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_from_lists_formats():
    cp = run_script("prepare_data", "x.jsonl", "--from", "parquet", "-o", "/tmp/never")
    assert cp.returncode == 2
    for f in prep.FORMATS:
        assert f"'{f}'" in cp.stderr


def test_accounting_over_mixed_inputs(tmp_path):
    """Several inputs at once: every input row is in exactly one output or in removed.jsonl."""
    inputs = [FIX / n for n in ("chat.jsonl", "prompt_completion.jsonl", "alpaca.json", "sharegpt.jsonl",
                                "data.csv", "data.tsv")]
    data, out = run_prepare(tmp_path, inputs=inputs)
    rows = {n: read(out / n) for n in OUT_FILES + ("removed.jsonl",)}
    total_in = 12 + 4 + 4 + 4 + 5 + 2
    assert data["counts"]["input_rows"] == total_in == sum(len(v) for v in rows.values())
    locs = [(x["metadata"]["source_file"], x["metadata"]["source_line"]) for n in OUT_FILES for x in rows[n]]
    locs += [(r["source"], r["line"]) for r in rows["removed.jsonl"]]
    assert len(set(locs)) == total_in
    assert all(r["reason"] in ("exact_duplicate", "near_duplicate", "unconvertible", "unreadable")
               for r in rows["removed.jsonl"])
    assert re.fullmatch(r"[0-9a-f]{64}", json.loads((out / "manifest.json").read_text())
                        ["files"]["removed.jsonl"]["sha256"])


# ------------------------------------------------------------------------------ near-dup (see test_dedup.py)


def test_near_dup_removal_matches_brute_force(tmp_path):
    """LSH (+ band pre-filter) keep-first removal equals an all-pairs exact-Jaccard computation."""
    rows = [conversation(i) for i in range(50)]
    rnd = random.Random(7)
    for k in range(25):
        r = json.loads(json.dumps(rows[rnd.randrange(50)]))
        words = r["messages"][1]["content"].split()
        for _ in range(rnd.choice([1, 1, 2, 3])):
            words[rnd.randrange(len(words))] = rnd.choice(["zzz", "yyy", "xxx", "www"])
        r["messages"][1]["content"] = " ".join(words)
        rows.insert(rnd.randrange(50, len(rows) + 1), r)
    path = write_jsonl(tmp_path / "bf.jsonl", rows)
    _, out = run_prepare(tmp_path, inputs=[path])
    got = {r["line"] for r in read(out / "removed.jsonl")}
    exs = [chat.ChatExample.model_validate(r) for r in rows]
    sets = [dedup.shingles(prep.near_text(e)) for e in exs]
    keys = [prep.exact_key(e) for e in exs]
    kept: list[int] = []
    expect = set()
    seen_keys = set()
    for i, s in enumerate(sets):
        if keys[i] in seen_keys:
            expect.add(i + 1)
            continue
        seen_keys.add(keys[i])
        if any(len(s & sets[k]) / len(s | sets[k]) >= 0.85 for k in kept):
            expect.add(i + 1)
            continue
        kept.append(i)
    assert expect and got == expect
