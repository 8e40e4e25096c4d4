"""demo/make_sample_data.py: deterministic synthetic ticket-routing data with planted PII and duplicates."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))

import make_sample_data as msd  # noqa: E402

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"\+(?:44 20 7946 0\d{3}|1 \d{3}-555-01\d{2})")
URGENT = re.compile(r"urgent", re.I)


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "demo" / "make_sample_data.py"), *map(str, args)],
                          capture_output=True, text=True)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    assert run("--output", a).returncode == 0
    assert run("--output", b).returncode == 0
    assert run("--output", c, "--seed", "8").returncode == 0
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a.truth.json").read_bytes() == (tmp_path / "b.truth.json").read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_rows_follow_the_rules():
    rows, truth = msd.generate()
    assert truth["rows"] == len(rows) == 320 + 16 + 16
    assert set(truth["by_category"]) == set(msd.CATEGORIES) and min(truth["by_category"].values()) >= 70
    assert {"high", "normal"} == set(truth["by_priority"]) and truth["by_priority"]["high"] >= 80
    for r in rows:
        ans = json.loads(r["routing"])
        assert list(ans) == ["category", "priority"]              # strict shape, fixed key order
        assert ans["category"] == r["category"] in msd.CATEGORIES
        assert ans["priority"] == ("high" if URGENT.search(r["message"]) else "normal"), r["message"]
    assert len({r["ticket_id"] for r in rows}) == len(rows)


def test_planted_pii_is_where_the_truth_says():
    rows, truth = msd.generate()
    emails = {i for i, r in enumerate(rows) if EMAIL.search(r["message"])}
    phones = {i for i, r in enumerate(rows) if PHONE.search(r["message"])}
    assert emails == set(truth["pii"]["email"]) and len(emails) >= 15
    assert phones == set(truth["pii"]["phone"]) and len(phones) >= 10
    for i in emails:   # reserved example domains only: nothing real
        assert EMAIL.search(rows[i]["message"]).group().split("@")[1] in msd.DOMAINS


def test_planted_duplicates_are_where_the_truth_says():
    rows, truth = msd.generate()
    assert len(truth["exact_duplicates"]) == 16 and len(truth["near_duplicates"]) == 16
    for a, b in truth["exact_duplicates"]:
        assert rows[a]["message"] == rows[b]["message"] and rows[a]["routing"] == rows[b]["routing"]
        assert rows[a]["ticket_id"] != rows[b]["ticket_id"]
    for a, b in truth["near_duplicates"]:
        x, y = sorted([rows[a]["message"], rows[b]["message"]], key=len)
        assert x != y and y.startswith(x) and len(y) - len(x) < 20 and rows[a]["routing"] == rows[b]["routing"]
    counts = Counter(r["message"] for r in rows)
    assert sum(c - 1 for c in counts.values()) == len(truth["exact_duplicates"])


def test_csv_round_trips_and_cli_contract(tmp_path):
    out = tmp_path / "t.csv"
    cp = run("--output", out, "--json", "--rows", "40", "--seed", "3")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["rows"] == 40 + 32 and Path(doc["truth"]).is_file()
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == doc["rows"] and list(rows[0]) == ["ticket_id", "message", "category", "routing"]
    cp = run("--output", out)   # no clobber
    assert cp.returncode == 2 and "--force" in cp.stderr and "Traceback" not in cp.stderr
    cp = run("--output", out, "--rows", "3", "--force")
    assert cp.returncode == 2 and len(cp.stderr.strip().splitlines()) == 1


def test_run_demo_reports_missing_scripts_plainly(tmp_path):
    import run_demo

    demo = run_demo.Demo(tmp_path)
    st = demo.run(run_demo.Stage("nope", "no_such_script_yet", "A future stage", ["--x"]))
    assert st.status == "not available yet" and st.exit_code is None and st.doc is None
    skipped = demo.run(run_demo.Stage("dep", "validate_jsonl", "Needs input"), needs=[tmp_path / "missing.jsonl"])
    assert skipped.status == "skipped" and "missing.jsonl" in skipped.note
    rows, truth = msd.generate(n=40)
    text = run_demo.report(demo, {"generate": {"seconds": 0.1, "rows": truth["rows"], "truth": truth},
                                  "total_seconds": 1.0})
    assert "| 1 | A future stage (`no_such_script_yet.py`) | not available yet |" in text
    assert "**not available yet**: scripts/no_such_script_yet.py does not exist yet" in text
    assert "**skipped**" in text


def test_run_demo_runs_a_real_stage_and_records_it(tmp_path):
    import run_demo

    rows, truth = msd.generate(n=40)
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(msd.to_csv(rows))
    demo = run_demo.Demo(tmp_path)
    st = demo.run(run_demo.Stage("prepare_data", "prepare_data", "Prepare",
                                 [str(csv_path), "--output-dir", str(tmp_path / "splits"), "--prompt-column",
                                  "message", "--completion-column", "routing", "--system", msd.SYSTEM_PROMPT]))
    assert st.status == "ok" and st.exit_code == 0 and st.seconds is not None
    assert (tmp_path / "stages" / "01_prepare_data.json").is_file()
    lines = run_demo.summarize(st, demo, truth)
    assert any("exact duplicates (planted 16)" in ln for ln in lines)
    # the second run of the same stage without --force fails, and is reported as failed
    st2 = demo.run(run_demo.Stage("prepare_data", "prepare_data", "Prepare again", st.args))
    assert st2.status == "failed" and st2.exit_code == 2 and "--force" in st2.note
