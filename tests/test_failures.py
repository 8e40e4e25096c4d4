"""collect_failures.py: failure selection per criterion, provenance, corrections, review file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_json, run_script
from finetune_kit import chat, failures

# ---------------------------------------------------------------- OpenClaw transcript fixtures


class Transcript:
    """Writes an OpenClaw session transcript (schema as read by finetune_kit.openclaw_sessions)."""

    def __init__(self, sid: str, day: str = "2026-11-03"):
        self.sid, self.day, self.n, self.parent = sid, day, 0, None
        self.lines = [{"type": "session", "version": 3, "id": sid, "timestamp": f"{day}T09:00:00.000Z",
                       "cwd": "/home/user/.openclaw/workspace"}]

    def _add(self, entry: dict) -> str:
        self.n += 1
        eid = f"{self.sid[:4]}e{self.n:03d}"
        self.lines.append({"id": eid, "parentId": self.parent,
                           "timestamp": f"{self.day}T09:{self.n:02d}:00.000Z", **entry})
        self.parent = eid
        return eid

    def user(self, text: str) -> str:
        return self._add({"type": "message", "message": {"role": "user", "content": [{"type": "text", "text": text}]}})

    def assistant(self, text: str | None = None, calls: list | None = None, stop: str = "stop") -> str:
        blocks = [{"type": "text", "text": text}] if text else []
        blocks += [{"type": "toolCall", "id": cid, "name": name, "arguments": args} for cid, name, args in calls or []]
        return self._add({"type": "message", "message": {"role": "assistant", "content": blocks,
                                                         "provider": "openai", "model": "gpt-5.4",
                                                         "stopReason": "toolUse" if calls else stop}})

    def tool(self, cid: str, name: str, text: str, is_error: bool = False) -> str:
        return self._add({"type": "message", "message": {"role": "toolResult", "toolCallId": cid, "toolName": name,
                                                         "content": [{"type": "text", "text": text}],
                                                         "isError": is_error}})

    def feedback(self, value: str, comment: str = "") -> str:
        return self._add({"type": "message", "message": {"type": "custom", "event": "feedback", "value": value,
                                                         "comment": comment, "messageId": "m1"}})

    def write(self, d: Path) -> Path:
        p = d / f"{self.sid}.jsonl"
        p.write_text("".join(json.dumps(x) + "\n" for x in self.lines), encoding="utf-8")
        return p


@pytest.fixture
def state(tmp_path):
    sessions = tmp_path / "state" / "agents" / "main" / "sessions"
    sessions.mkdir(parents=True)
    # s1: "that's wrong" after a plain answer, then a good exchange
    t = Transcript("aaaa0001")
    t.user("What is the capital of Australia?")
    t.assistant("The capital of Australia is Sydney.")
    t.user("No, that's wrong. Try again.")
    t.assistant("Sorry, the capital of Australia is Canberra.")
    t.user("Thanks!")
    t.assistant("You're welcome.")
    t.write(sessions)
    # s2: a tool error (isError), recovered by a retry; plus a non-zero exit code in plain text
    t = Transcript("bbbb0002")
    t.user("List the log files in /var/log/app.")
    t.assistant(calls=[("c1", "exec", {"command": "ls /var/log/ap"})])
    t.tool("c1", "exec", "ls: cannot access '/var/log/ap': No such file or directory", is_error=True)
    t.assistant(calls=[("c2", "exec", {"command": "ls /var/log/app"})])
    t.tool("c2", "exec", "app.log\napp.log.1")
    t.assistant("There are two: app.log and app.log.1.")
    t.user("Run the tests.")
    t.assistant(calls=[("c3", "exec", {"command": "pytest -q"})])
    t.tool("c3", "exec", "1 failed, 3 passed\n\n(Command exited with code 1)")
    t.assistant("One test fails.")
    t.write(sessions)
    # s3: explicit negative feedback event (Teams thumbs-down) and a positive one elsewhere
    t = Transcript("cccc0003", day="2026-11-20")
    t.user("Translate 'good morning' to German.")
    t.assistant("Gute Nacht.")
    t.feedback("negative", "that is good night")
    t.write(sessions)
    # s4: a clean session (no failure at all), another agent
    other = tmp_path / "state" / "agents" / "work" / "sessions"
    other.mkdir(parents=True)
    t = Transcript("dddd0004")
    t.user("Is it wrong to use tabs?")  # 'wrong' in the FIRST user turn is not feedback
    t.assistant("Either is fine if consistent.")
    t.user("That's not what I asked - I meant in Python.")
    t.assistant("PEP 8 prefers spaces.")
    t.write(other)
    return tmp_path / "state"


def _rows(p):
    return [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()]


# ---------------------------------------------------------------- unit checks


@pytest.mark.parametrize("text,marker", [
    ("No, that's wrong. Try again.", "thats_wrong"),
    ("👎", "thumbs_down"),
    ("That's not what I asked - I meant in Python.", "not_what_i_asked"),
    ("it still doesn't work", "didnt_work"),
    ("you misunderstood me", "misunderstood"),
    ("wrong file, use the other one", "wrong_thing"),
    ("no, I meant the staging server", "no_i_meant"),
])
def test_negative_markers_match(text, marker):
    hit = failures.match_marker(text, failures.compile_markers())
    assert hit and hit[0] == marker


@pytest.mark.parametrize("text", ["Thanks, that works!", "What is wrong with my code?", "Is this right?",
                                  "Now write the tests.", "no problem, go ahead"])
def test_negative_markers_ignore_normal_turns(text):
    assert failures.match_marker(text, failures.compile_markers()) is None


@pytest.mark.parametrize("text,is_error,signal", [
    ("anything", True, "is_error"),
    ('{"status": "error", "tool": "exec", "error": "command required"}', False, "status_error"),
    ('{"ok": true, "error": "quota exceeded"}', False, "error_field"),
    ('{"exitCode": 2, "stdout": ""}', False, "exit_code"),
    ("1 failed\n\n(Command exited with code 1)", False, "exit_code"),
    ("Traceback (most recent call last):\n  File \"x.py\"\nKeyError: 'a'", False, "traceback"),
    ("Error: ENOENT: no such file", False, "error_prefix"),
    ("PermissionError: [Errno 13]", False, "error_prefix"),
])
def test_tool_error_signals(text, is_error, signal):
    assert failures.tool_error_signal(text, is_error) == signal


@pytest.mark.parametrize("text", ['{"status": "ok", "error": null}', "all good\n(Command exited with code 0)",
                                  "grep found: error handling docs", '{"exitCode": 0}', ""])
def test_tool_results_that_are_not_errors(text):
    assert failures.tool_error_signal(text) is None


# ---------------------------------------------------------------- sessions end to end


def test_sessions_each_criterion_with_provenance(state, tmp_path):
    out = tmp_path / "f.jsonl"
    code, doc = run_json("collect_failures", "--sessions", state, "-o", out)
    assert code == 0, doc
    assert doc["criteria"]["negative_feedback"]["cases"] == 3  # s1 marker, s3 event, s4 marker
    assert doc["criteria"]["tool_error"]["cases"] == 2         # isError + exit code 1
    assert doc["cases"] == 5 and doc["needs_review"] == 5 and doc["training_rows"] == 0
    assert doc["sessions"]["read"] == 4 and doc["sessions"]["with_cases"] == 4
    review = Path(doc["outputs"]["review"])
    assert review.name == "f.needs_review.jsonl" and out.read_text() == ""
    all_rows = _rows(review)
    rows = {r["metadata"]["provenance"]["session_id"] + ":" + r["metadata"]["provenance"]["criterion"]: r
            for r in all_rows}
    # s1: context ends with the question; the wrong answer is only in metadata
    r = rows["aaaa0001:negative_feedback"]
    assert [m["role"] for m in r["messages"]] == ["user"]
    assert r["messages"][0]["content"] == "What is the capital of Australia?"
    assert r["metadata"]["failing_answer"] == [{"role": "assistant", "content": "The capital of Australia is Sydney."}]
    prov = r["metadata"]["provenance"]
    assert prov["source"].endswith("aaaa0001.jsonl") and prov["line"] == 3 and prov["entry_id"] == "aaaae002"
    assert prov["evidence"][0]["marker"] == "thats_wrong" and prov["agent_id"] == "main"
    # review rows are not trainable: the validator rejects them (no assistant message)
    ex, findings = chat.check_record(r, "chat", 1)
    assert ex is None and "no_assistant_message" in {f.code for f in findings}
    # s2: the failing tool call and its error result; context = the user request
    tool_rows = [x for x in all_rows if x["metadata"]["provenance"]["session_id"] == "bbbb0002"]
    assert len(tool_rows) == 2
    first = min(tool_rows, key=lambda x: x["metadata"]["provenance"]["message_index"])
    assert [m["role"] for m in first["messages"]] == ["user"]
    fa = first["metadata"]["failing_answer"]
    assert fa[0]["tool_calls"][0]["function"] == {"name": "exec", "arguments": '{"command": "ls /var/log/ap"}'}
    assert fa[1]["role"] == "tool" and "No such file" in fa[1]["content"]
    assert first["metadata"]["provenance"]["evidence"][0]["signal"] == "is_error"
    second = max(tool_rows, key=lambda x: x["metadata"]["provenance"]["message_index"])
    assert second["metadata"]["provenance"]["evidence"][0]["signal"] == "exit_code"
    assert [m["role"] for m in second["messages"]][-1] == "user"  # "Run the tests." with the history before it
    assert len(second["messages"]) == 7
    # earlier answers in the context (incl. the first failing call) are history: weight 0, never trained
    assert [m.get("weight") for m in second["messages"] if m["role"] == "assistant"] == [0, 0, 0]
    # s3: explicit feedback event with its comment as evidence
    ev = rows["cccc0003:negative_feedback"]["metadata"]["provenance"]["evidence"][0]
    assert ev["kind"] == "feedback_event" and ev["comment"] == "that is good night"
    # s4: the first user turn mentions 'wrong' but is not feedback; the later turn is
    r4 = rows["dddd0004:negative_feedback"]
    assert r4["metadata"]["failing_answer"][0]["content"] == "Either is fine if consistent."


def test_sqlite_store_cases_point_at_their_seq(tmp_path):
    """Cases from an openclaw-agent.sqlite carry the transcript_events.seq of the blamed answer."""
    import sqlite3

    t = Transcript("eeee0005")
    t.user("What is 2 + 2?")
    eid = t.assistant("2 + 2 = 5.")
    t.user("That's wrong.")
    db = tmp_path / "agents" / "main" / "agent" / "openclaw-agent.sqlite"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE transcript_events (session_id TEXT NOT NULL, seq INTEGER NOT NULL, event_json TEXT, "
                "created_at INTEGER NOT NULL, PRIMARY KEY (session_id, seq))")
    for seq, ev in enumerate(t.lines):
        con.execute("INSERT INTO transcript_events VALUES (?,?,?,?)", ("eeee0005", 100 + seq, json.dumps(ev), 0))
    con.commit()
    con.close()
    cases, scan = failures.cases_from_sessions(str(tmp_path), criteria=["negative_feedback"])
    assert scan.sessions == 1 and len(cases) == 1
    prov = cases[0].provenance
    assert prov["source_kind"] == "openclaw-sqlite" and prov["entry_id"] == eid
    assert prov["seq"] == 100 + next(i for i, ev in enumerate(t.lines) if ev.get("id") == eid) and "line" not in prov


def test_criteria_agent_and_date_filters(state, tmp_path):
    code, doc = run_json("collect_failures", "--sessions", state, "--criteria", "tool_error",
                         "-o", tmp_path / "a.jsonl")
    assert code == 0 and set(doc["criteria"]) == {"tool_error"} and doc["cases"] == 2
    code, doc = run_json("collect_failures", "--sessions", state, "--agent-id", "work", "-o", tmp_path / "b.jsonl")
    assert code == 0 and doc["cases"] == 1 and doc["sessions"]["read"] == 1
    code, doc = run_json("collect_failures", "--sessions", state, "--date-range", "2026-11-10..",
                         "-o", tmp_path / "c.jsonl")
    assert code == 0 and doc["sessions"]["read"] == 1 and doc["cases"] == 1
    assert doc["case_list"][0]["session_id"] == "cccc0003"
    code, doc = run_json("collect_failures", "--sessions", state, "--criteria", "negative_feedback",
                         "--feedback-pattern", r"^thanks", "-o", tmp_path / "d.jsonl")
    assert doc["criteria"]["negative_feedback"]["cases"] == 4  # + s1's "Thanks!" (a custom marker)


def test_corrections_turn_cases_into_training_rows(state, tmp_path):
    code, doc = run_json("collect_failures", "--sessions", state, "-o", tmp_path / "f.jsonl")
    review = doc["outputs"]["review"]
    rows = {r["metadata"]["provenance"]["session_id"]: r for r in _rows(review)
            if r["metadata"]["provenance"]["criterion"] == "negative_feedback"}
    tool_case = next(r for r in _rows(review) if r["metadata"]["provenance"]["criterion"] == "tool_error"
                     and r["metadata"]["provenance"]["evidence"][0]["signal"] == "is_error")
    corr = tmp_path / "corrections.jsonl"
    corr.write_text("\n".join(json.dumps(x) for x in [
        {"id": rows["aaaa0001"]["metadata"]["id"], "content": "The capital of Australia is Canberra."},
        {"id": tool_case["metadata"]["id"], "tool_calls": [{"name": "exec", "arguments": {"command": "ls /var/log/app"}}]},
        {"id": rows["dddd0004"]["metadata"]["id"], "drop": True},
        {"id": "f-000000000000", "content": "unknown id"},
    ]) + "\n")
    out = tmp_path / "corrected.jsonl"
    code, doc = run_json("collect_failures", "--cases", review, "--corrections", corr, "-o", out)
    assert code == 0, doc
    assert doc["corrected"] == 2 and doc["dropped"] == 1 and doc["needs_review"] == 2
    assert doc["corrections"]["unused_ids"] == ["f-000000000000"] and doc["validation"]["valid"]
    train = _rows(out)
    assert len(train) == 2
    by = {r["metadata"]["provenance"]["session_id"]: r for r in train}
    r = by["aaaa0001"]
    assert r["messages"][-1] == {"role": "assistant", "content": "The capital of Australia is Canberra."}
    assert r["metadata"]["failing_answer"][0]["content"].endswith("Sydney.")  # kept, not trained
    assert r["metadata"]["correction"]["source"] == "corrections" and r["metadata"]["correction"]["line"] == 1
    t = by["bbbb0002"]
    call = t["messages"][-1]["tool_calls"][0]
    assert call["function"] == {"name": "exec", "arguments": '{"command": "ls /var/log/app"}'}
    for row in train:  # valid chat lines, ending with the corrected assistant turn
        ex, findings = chat.check_record(row, "chat", 1)
        assert ex is not None and not [f for f in findings if f.severity == "error"]
    remaining = _rows(tmp_path / "corrected.needs_review.jsonl")
    assert len(remaining) == 2 and all(x["metadata"]["needs_review"] for x in remaining)


def test_a_correction_that_repeats_the_failure_is_refused(state, tmp_path):
    code, doc = run_json("collect_failures", "--sessions", state, "--criteria", "negative_feedback",
                         "-o", tmp_path / "f.jsonl")
    r = next(x for x in _rows(doc["outputs"]["review"]) if x["metadata"]["provenance"]["session_id"] == "aaaa0001")
    corr = tmp_path / "c.jsonl"
    corr.write_text(json.dumps({"id": r["metadata"]["id"], "content": "the capital of australia is  Sydney."}) + "\n"
                    + json.dumps({"id": "f-x", "drop": True}) + "\n")
    code, doc = run_json("collect_failures", "--cases", doc["outputs"]["review"], "--corrections", corr,
                         "-o", tmp_path / "g.jsonl")
    assert code == 1
    assert doc["corrections"]["problems"][0]["code"] == "correction_repeats_failure"
    assert doc["training_rows"] == 0 and (tmp_path / "g.jsonl").read_text() == ""


def test_system_prompt_from_flag_or_trajectory_bundle(state, tmp_path):
    code, doc = run_json("collect_failures", "--sessions", state, "--criteria", "negative_feedback",
                         "--system", "You are the ops agent.", "-o", tmp_path / "s.jsonl")
    rows = _rows(doc["outputs"]["review"])
    assert rows and all(r["messages"][0] == {"role": "system", "content": "You are the ops agent."} for r in rows)
    assert all(m["role"] != "system" for r in rows for m in r["metadata"]["failing_answer"])
    # an export-trajectory bundle carries the system prompt and the tool schemas
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    t = Transcript("eeee0005")
    t.user("Restart the web server.")
    t.assistant(calls=[("c9", "exec", {"command": "systemctl restart nginx"})])
    t.tool("c9", "exec", "Failed to restart nginx.service: Access denied\n\n(Command exited with code 1)")
    t.assistant("I could not restart it.")
    (bundle / "session-branch.json").write_text(json.dumps(
        {"header": t.lines[0], "leafId": t.lines[-1]["id"], "entries": t.lines[1:]}))
    (bundle / "system-prompt.txt").write_text("You are the ops agent of ACME.")
    (bundle / "tools.json").write_text(json.dumps([{"name": "exec", "description": "run a shell command",
                                                    "parameters": {"type": "object",
                                                                   "properties": {"command": {"type": "string"}}}}]))
    code, doc = run_json("collect_failures", "--sessions", bundle, "-o", tmp_path / "b.jsonl")
    assert code == 0 and doc["criteria"]["tool_error"]["cases"] == 1, doc
    r = _rows(doc["outputs"]["review"])[0]
    assert r["messages"][0] == {"role": "system", "content": "You are the ops agent of ACME."}
    assert r["tools"][0]["function"]["name"] == "exec"
    assert r["metadata"]["provenance"]["source_kind"] == "openclaw-trajectory"
    corr = tmp_path / "c.jsonl"
    corr.write_text(json.dumps({"id": r["metadata"]["id"], "tool_calls": [
        {"name": "exec", "arguments": {"command": "sudo systemctl restart nginx"}}]}) + "\n")
    code, doc = run_json("collect_failures", "--cases", doc["outputs"]["review"], "--corrections", corr,
                         "-o", tmp_path / "fixed.jsonl")
    assert code == 0 and doc["validation"]["valid"]
    fixed = _rows(tmp_path / "fixed.jsonl")[0]
    assert fixed["tools"][0]["function"]["name"] == "exec"
    assert json.loads(fixed["messages"][-1]["tool_calls"][0]["function"]["arguments"]) == {
        "command": "sudo systemctl restart nginx"}


def test_ids_are_stable_across_runs(state, tmp_path):
    _, a = run_json("collect_failures", "--sessions", state, "-o", tmp_path / "a.jsonl")
    _, b = run_json("collect_failures", "--sessions", state, "-o", tmp_path / "b.jsonl")
    assert [c["id"] for c in a["case_list"]] == [c["id"] for c in b["case_list"]]
    assert len({c["id"] for c in a["case_list"]}) == a["cases"]


# ---------------------------------------------------------------- predictions.jsonl


def _predictions(tmp_path) -> Path:
    def row(i, ref, pa, pb, sa, sb, tool=False):
        prompt = [{"role": "user", "content": f"question {i}"}]
        return {"index": i, "line": i + 1, "prompt_messages": prompt, "reference": ref,
                "reference_tool_calls": [{"name": "lookup", "arguments": {"q": i}}] if tool else None,
                "prediction_a": pa, "prediction_b": pb, "tool_calls_a": None, "tool_calls_b": None,
                "scores": {"exact_match": {"a": sa, "b": sb}, "rouge_l": {"a": 0.9, "b": 0.2},
                           "latency_ms": {"a": 10.0, "b": 12.0}}}
    d = tmp_path / "eval"
    d.mkdir()
    rows = [row(0, "4", "4", "4", 1.0, 1.0),        # both right
            row(1, "Paris", "Paris", "Lyon", 1.0, 0.0),  # regression (A right, B wrong)
            row(2, "blue", "red", "green", 0.0, 0.0),    # miss for both
            row(3, "x", "y", "x", 0.0, 1.0)]              # B fixed it
    rows[3]["scores"]["exact_match"] = {"a": 0.0, "b": 1.0}
    p = d / "predictions.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_eval_miss_and_regression(tmp_path):
    p = _predictions(tmp_path)
    code, doc = run_json("collect_failures", "--predictions", p, "-o", tmp_path / "m.jsonl")
    assert code == 0, doc
    assert doc["predictions"]["metric"] == "exact_match"
    assert doc["predictions"]["metric_source"] == "first score in predictions.jsonl"
    assert doc["criteria"]["eval_miss"]["cases"] == 2 and doc["criteria"]["eval_regression"]["cases"] == 1
    assert doc["cases"] == 2  # line 2 is both a miss and a regression: one case
    rows = _rows(doc["outputs"]["review"])
    reg = next(r for r in rows if "eval_regression" in r["metadata"]["provenance"]["criteria"])
    assert reg["messages"] == [{"role": "user", "content": "question 1"}]
    assert reg["metadata"]["failing_answer"] == [{"role": "assistant", "content": "Lyon"}]
    assert reg["metadata"]["answer_a"] == {"role": "assistant", "content": "Paris"}
    assert reg["metadata"]["provenance"]["line"] == 2 and reg["metadata"]["provenance"]["test_line"] == 2
    # side A misses / results.json primary metric / --use-reference
    (p.parent / "results.json").write_text(json.dumps({"primary_metric": "rouge_l"}))
    code, doc = run_json("collect_failures", "--predictions", p, "--criteria", "eval_miss", "--side", "a",
                         "--use-reference", "-o", tmp_path / "n.jsonl")
    assert doc["predictions"]["metric"] == "rouge_l" and doc["predictions"]["metric_source"] == "results.json"
    assert doc["criteria"]["eval_miss"]["cases"] == 0  # A's rouge_l is 0.9 everywhere
    code, doc = run_json("collect_failures", "--predictions", p, "--criteria", "eval_miss", "--metric", "exact_match",
                         "--use-reference", "-o", tmp_path / "o.jsonl")
    assert code == 0 and doc["corrected"] == 2 and doc["corrections"]["from_reference"] == 2
    assert any("evaluation set" in w for w in doc["warnings"])
    train = _rows(tmp_path / "o.jsonl")
    assert {r["messages"][-1]["content"] for r in train} == {"Paris", "blue"}
    assert all(r["metadata"]["from_eval_set"] for r in train)


def test_unknown_metric_and_bad_inputs_exit_2(tmp_path):
    p = _predictions(tmp_path)
    cp = run_script("collect_failures", "--predictions", p, "--metric", "bleu", "-o", tmp_path / "x.jsonl")
    assert cp.returncode == 2 and cp.stderr.count("\n") == 1 and "bleu" in cp.stderr
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\x00\xff{not json\n")
    cp = run_script("collect_failures", "--predictions", garbage, "-o", tmp_path / "y.jsonl")
    assert cp.returncode == 2 and "Traceback" not in cp.stderr and cp.stderr.count("\n") == 1
    cp = run_script("collect_failures", "--predictions", tmp_path / "missing.jsonl", "-o", tmp_path / "y.jsonl")
    assert cp.returncode == 2 and "not found" in cp.stderr
    cp = run_script("collect_failures", "-o", tmp_path / "z.jsonl")
    assert cp.returncode == 2 and "no input" in cp.stderr
    cp = run_script("collect_failures", "--predictions", p, "--criteria", "tool_error", "-o", tmp_path / "z.jsonl")
    assert cp.returncode == 2 and "--sessions" in cp.stderr
    cp = run_script("collect_failures", "--predictions", p, "--criteria", "vibes", "-o", tmp_path / "z.jsonl")
    assert cp.returncode == 2 and "unknown criterion" in cp.stderr
    bad_corr = tmp_path / "bad.jsonl"
    bad_corr.write_text('{"content": "no id"}\n')
    cp = run_script("collect_failures", "--predictions", p, "--corrections", bad_corr, "-o", tmp_path / "z.jsonl")
    assert cp.returncode == 2 and "needs an \"id\"" in cp.stderr


def test_outputs_are_not_clobbered(tmp_path):
    p = _predictions(tmp_path)
    out = tmp_path / "m.jsonl"
    assert run_json("collect_failures", "--predictions", p, "-o", out)[0] == 0
    before = out.read_bytes(), (tmp_path / "m.needs_review.jsonl").read_bytes()
    cp = run_script("collect_failures", "--predictions", p, "-o", out)
    assert cp.returncode == 2 and "--force" in cp.stderr
    assert (out.read_bytes(), (tmp_path / "m.needs_review.jsonl").read_bytes()) == before
    assert run_json("collect_failures", "--predictions", p, "-o", out, "--force")[0] == 0
    cp = run_script("collect_failures", "--predictions", p, "-o", p, "--force")
    assert cp.returncode == 2 and "one of the inputs" in cp.stderr


def test_human_summary_has_no_conversation_text(state, tmp_path):
    cp = run_script("collect_failures", "--sessions", state, "-o", tmp_path / "h.jsonl")
    assert cp.returncode == 0
    assert "| negative_feedback" in cp.stdout and "next: write corrections" in cp.stdout
    assert "Sydney" not in cp.stdout and "Gute Nacht" not in cp.stdout
