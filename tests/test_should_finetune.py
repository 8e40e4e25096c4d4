"""should_finetune.py: the decision table, provider filtering by privacy and lifecycle, the CLI."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from conftest import SCRIPTS, run_json, run_script
from finetune_kit import decide
from finetune_kit import providers as P

TODAY = "2026-11-23"
KEYS = {"recommendation", "reasons", "answers", "providers", "excluded_providers", "providers_shown",
        "other_services", "warnings", "next_steps", "thresholds", "judged_on", "data_as_of"}


def _rec(**kw) -> str:
    return decide.recommend(decide.Answers(**kw))[0]


# ---------------------------------------------------------------------- the decision table

@pytest.mark.parametrize("kw, expected", [
    (dict(failure_mode="format", examples=300), "fine_tune"),
    (dict(failure_mode="style", examples=50), "fine_tune"),
    (dict(failure_mode="task", examples=500), "fine_tune"),
    (dict(failure_mode="knowledge", examples=5000, monthly_requests=1e6), "rag"),
    (dict(failure_mode="cost", examples=2000, monthly_requests=150_000), "fine_tune"),
    (dict(failure_mode="latency", examples=2000, monthly_requests=100_001), "fine_tune"),
    (dict(failure_mode="cost", examples=2000, monthly_requests=100_000), "prompt"),   # not > 100k
    (dict(failure_mode="cost", examples=2000), "prompt"),                            # volume unknown
    (dict(examples=2000, monthly_requests=500_000), "fine_tune"),
    (dict(failure_mode="format", examples=300, requirements_change="often"), "prompt"),
    (dict(failure_mode="format", examples=49), "prompt"),
    (dict(failure_mode="format", examples=10), "prompt"),
    (dict(failure_mode="format", examples=9), "collect_data"),
    (dict(failure_mode="cost", examples=30, monthly_requests=1e6), "collect_data"),
    (dict(failure_mode="latency", examples=30, monthly_requests=1000), "prompt"),
    (dict(failure_mode="format"), "fine_tune"),                                       # count unknown: said
    (dict(), "prompt"),
])
def test_decision_table(kw, expected):
    assert _rec(**kw) == expected


def test_reasons_explain_the_rule():
    rec, reasons = decide.recommend(decide.Answers(failure_mode="knowledge"))
    assert rec == "rag" and "retrieval" in reasons[0]
    rec, reasons = decide.recommend(decide.Answers(failure_mode="format"))
    assert "example count unknown" in reasons[0]
    rec, reasons = decide.recommend(decide.Answers(failure_mode="format", examples=20))
    assert rec == "prompt" and "few-shot" in reasons[0]


def test_each_answer_says_why_it_and_not_the_neighbour():
    """Issue 17 item 3: 40 examples -> prompt at unknown volume, collect_data at 150k/month, with reasons
    that differ and name the alternative they rule out."""
    rec_a, ra = decide.recommend(decide.Answers(failure_mode="style", examples=40))
    rec_b, rb = decide.recommend(decide.Answers(failure_mode="style", examples=40, monthly_requests=150_000))
    assert (rec_a, rec_b) == ("prompt", "collect_data")
    assert not set(ra) & set(rb)
    assert ra[0].startswith("prompt, not fine_tune") and any(r.startswith("prompt, not collect_data") for r in ra)
    assert rb[0].startswith("collect_data, not prompt") and "150,000" in rb[0]
    assert any(r.startswith("collect_data, not fine_tune") for r in rb)
    for kw in (dict(failure_mode="format", examples=300), dict(failure_mode="knowledge"),
               dict(failure_mode="cost", examples=900), dict(examples=5), dict(failure_mode="task", examples=80)):
        rec, reasons = decide.recommend(decide.Answers(**kw))
        assert any(r.startswith(f"{rec}, not ") for r in reasons), (kw, reasons)


# ---------------------------------------------------------------------- providers

@pytest.fixture(scope="module")
def data():
    return P.load(P.DATA_PATH)


def test_privacy_none_suggests_managed_and_self_hosted_never_retired(data):
    on = dt.date(2026, 11, 23)
    sug, exc = decide.suggest_providers(data, "none", on)
    ids = [s["provider"] for s in sug]
    assert {"google-vertex", "aws-bedrock", "together", "fireworks", "runpod", "lambda"} <= set(ids)
    # OpenAI shuts down 2027-01-14, 52 days later: within the ~6-month horizon, never suggested for new work
    assert "openai" not in ids
    oa = next(e for e in exc if e["provider"] == "openai")
    assert "shuts down 2027-01-14" in oa["reason"] and "horizon" in oa["reason"]
    assert ids[-1] == "azure-openai"                          # closed to new customers: last
    az = next(s for s in sug if s["provider"] == "azure-openai")
    assert "already fine-tuned" in az["why"]               # Azure training is for existing customers only
    assert az["new_customers"] is False and any("NOT FOR NEW CUSTOMERS" in w for w in az["warnings"])
    assert az["status"] == "retiring (training retirement no earlier than 2027-04-16, shuts down 2027-10-16)"
    # each date said once, with its meaning (o4-mini used to be warned twice)
    assert sum("o4-mini" in w for w in az["warnings"]) == 1
    assert any("training retirement no earlier than 2027-04-14" in w for w in az["warnings"])
    # six months earlier OpenAI was still far enough from its shutdown to be listed (dated, caveated, last)
    sug_early, _ = decide.suggest_providers(data, "none", dt.date(2026, 6, 1))
    early = [s["provider"] for s in sug_early]
    assert set(early[-2:]) == {"openai", "azure-openai"}
    assert next(s for s in sug_early if s["provider"] == "openai")["status"] == "retiring (no new jobs from 2027-01-06)"
    models = {(s["provider"], m["model"]) for s in sug for m in s["models"]}
    for gone in (("openai", "gpt-4.1-nano"), ("openai", "o4-mini"), ("aws-bedrock", "claude-3-haiku"),
                 ("google-vertex", "gemini-2.5-flash"), ("google-vertex", "gemini-2.0-flash")):
        assert gone not in models
    assert ("azure-openai", "gpt-4.1-nano") in models      # Azure keeps its fine-tunes until 2027-10-14
    bedrock = next(s for s in sug if s["provider"] == "aws-bedrock")
    assert any("claude-3-haiku" in g for g in bedrock["retired_models"])


@pytest.mark.parametrize("privacy, allowed", [("strict", {"runpod", "lambda", "own-hardware"}),
                                              ("on_prem", {"own-hardware"})])
def test_privacy_narrows_to_self_hosted(data, privacy, allowed):
    sug, exc = decide.suggest_providers(data, privacy, dt.date(2026, 11, 23))
    assert {s["provider"] for s in sug} == allowed
    assert all(s["self_hosted"] for s in sug)
    if privacy == "on_prem":
        assert all(s["on_prem"] for s in sug)
    assert {e["provider"] for e in exc} >= {"openai", "google-vertex", "aws-bedrock", "together", "fireworks"}


def test_after_openai_shutdown_it_is_never_suggested(data):
    sug, exc = decide.suggest_providers(data, "none", dt.date(2027, 1, 6))
    assert "openai" not in {s["provider"] for s in sug}
    assert any(e["provider"] == "openai" and "retired (no new jobs since 2027-01-06)" in e["reason"] for e in exc)


def test_budget_flags_expensive_24_7_gpus(data):
    sug, _ = decide.suggest_providers(data, "strict", dt.date(2026, 11, 23), budget=200)
    runpod = next(s for s in sug if s["provider"] == "runpod")
    assert runpod["over_budget"] and runpod["min_monthly_serving_cost"] == pytest.approx(0.34 * 730)
    sug, _ = decide.suggest_providers(data, "strict", dt.date(2026, 11, 23), budget=300)
    assert not next(s for s in sug if s["provider"] == "runpod").get("over_budget")


# ---------------------------------------------------------------------- the script

def test_json_document_and_next_steps():
    code, doc = run_json("should_finetune", "--failure-mode", "format", "--examples", "300",
                         "--monthly-requests", "50000", "--as-of", TODAY)
    assert code == 0 and set(doc) == KEYS
    assert doc["recommendation"] == "fine_tune" and doc["judged_on"] == TODAY
    scripts = [s["script"] for s in doc["next_steps"]]
    for s in ("validate_jsonl.py", "scan_pii.py", "prepare_data.py", "estimate_costs.py", "train_lora.py",
              "evaluate.py"):
        assert s in scripts
    # SKILL.md's decision flow: prepare -> validate -> scan/redact -> costs
    assert (scripts.index("prepare_data.py") < scripts.index("validate_jsonl.py") < scripts.index("scan_pii.py")
            < scripts.index("estimate_costs.py"))
    # redact before anything is split or copied (compliance.md), then check all splits in one call
    cmd = {st["script"]: st.get("command", "") for st in doc["next_steps"]}
    assert "--redact" in cmd["prepare_data.py"]
    assert "--fail-on any" in cmd["scan_pii.py"] and "data/test.jsonl" in cmd["scan_pii.py"]
    # commands name this skill's real scripts folder, never a literal {baseDir}
    from finetune_kit.bootstrap import SCRIPTS_DIR
    for st in doc["next_steps"]:
        if st.get("command"):
            assert "{baseDir}" not in st["command"] and str(SCRIPTS_DIR) in st["command"], st
    assert any(e["provider"] == "openai" and "2027-01-14" in e["reason"] for e in doc["excluded_providers"])
    assert any("no earlier than" in w for w in doc["warnings"])
    assert doc["answers"] == {"failure_mode": "format", "examples": 300, "monthly_requests": 50000.0,
                              "requirements_change": None, "privacy": "none", "budget": None}
    # format: structured outputs / JSON-schema constrained decoding is the first thing to try
    first = doc["next_steps"][0]
    assert first["script"] is None and "structured outputs" in first["why"] and "JSON schema" in first["why"]
    for tool in ("vLLM", "Ollama", "llama.cpp"):
        assert tool in first["why"]
    # the commands carry the user's own answers
    est = next(s for s in doc["next_steps"] if s["script"] == "estimate_costs.py")
    assert "--requests-per-month 50000" in est["command"] and "--current-model" in est["command"]
    assert doc["providers_shown"] and doc["providers"]


def test_no_provider_details_unless_fine_tuning_is_recommended_or_asked():
    code, doc = run_json("should_finetune", "--failure-mode", "style", "--examples", "40", "--as-of", TODAY)
    assert code == 0 and doc["recommendation"] == "prompt"
    assert doc["providers"] == [] and doc["excluded_providers"] == [] and doc["providers_shown"] is False
    cp = run_script("should_finetune", "--failure-mode", "style", "--examples", "40", "--json", "--as-of", TODAY)
    assert len(cp.stdout) < 3000
    code, doc = run_json("should_finetune", "--failure-mode", "style", "--examples", "40", "--show-providers",
                         "--as-of", TODAY)
    assert doc["providers_shown"] and {s["provider"] for s in doc["providers"]} >= {"google-vertex", "runpod"}
    assert {o["id"] for o in doc["other_services"]} >= {"mistral", "cohere", "tinker"}


def test_next_steps_carry_the_users_inputs():
    code, doc = run_json("should_finetune", "--failure-mode", "cost", "--examples", "30", "--monthly-requests",
                         "150000", "--privacy", "strict", "--as-of", TODAY)
    assert doc["recommendation"] == "collect_data"
    again = next(s for s in doc["next_steps"] if s["script"] == "should_finetune.py")
    assert again["command"].endswith("should_finetune.py --failure-mode cost --examples 50 --monthly-requests "
                                     "150000 --privacy strict")
    est = next(s for s in doc["next_steps"] if s["script"] == "estimate_costs.py")
    assert "--requests-per-month 150000" in est["command"]
    code, doc = run_json("should_finetune", "--failure-mode", "knowledge", "--examples", "300",
                         "--monthly-requests", "9000", "--as-of", TODAY)
    later = next(s for s in doc["next_steps"] if s["script"] == "should_finetune.py")
    assert "--examples 300 --monthly-requests 9000" in later["command"]


def test_stale_data_file_warning():
    code, doc = run_json("should_finetune", "--failure-mode", "format", "--examples", "300", "--as-of", "2027-03-10")
    assert any("days old" in w for w in doc["warnings"])
    code, doc = run_json("should_finetune", "--failure-mode", "format", "--examples", "300", "--as-of", TODAY)
    assert not any("days old" in w for w in doc["warnings"])


@pytest.mark.parametrize("args, rec", [
    (["--failure-mode", "knowledge"], "rag"),
    (["--failure-mode", "style", "--examples", "20"], "prompt"),
    (["--failure-mode", "style", "--examples", "3"], "collect_data"),
    (["--failure-mode", "cost", "--examples", "2000", "--monthly-requests", "400000"], "fine_tune"),
    (["--failure-mode", "format", "--examples", "500", "--requirements-change", "often"], "prompt"),
])
def test_cli_rows(args, rec):
    code, doc = run_json("should_finetune", *args, "--as-of", TODAY)
    assert code == 0 and doc["recommendation"] == rec and doc["next_steps"]


def test_cli_privacy_strict_lists_only_self_hosted():
    code, doc = run_json("should_finetune", "--failure-mode", "cost", "--examples", "2000", "--monthly-requests",
                         "400000", "--privacy", "strict", "--as-of", TODAY)
    assert code == 0 and doc["providers"]
    assert all(p["self_hosted"] for p in doc["providers"])
    assert not any(s["why"].endswith("or upload to the chosen provider") for s in doc["next_steps"])
    cp = run_script("should_finetune", "--failure-mode", "format", "--examples", "300", "--privacy", "on_prem",
                    "--as-of", TODAY)
    assert cp.returncode == 0 and "own-hardware" in cp.stdout and "- openai [" not in cp.stdout


def test_human_output_names_retired_and_retiring():
    cp = run_script("should_finetune", "--failure-mode", "format", "--examples", "300", "--as-of", TODAY)
    assert cp.returncode == 0
    assert "Recommendation: FINE-TUNE" in cp.stdout
    assert "retired, never recommended:" in cp.stdout and "claude-3-haiku (shut down 2026-09-10)" in cp.stdout
    assert "azure-openai [retiring (training retirement no earlier than 2027-04-16, shuts down 2027-10-16)]" in cp.stdout
    assert "- openai [" not in cp.stdout and "not suggested: openai" in cp.stdout
    from finetune_kit.bootstrap import SCRIPTS_DIR
    assert f"python3 {SCRIPTS_DIR}/estimate_costs.py" in cp.stdout and "{baseDir}" not in cp.stdout


def test_no_flags_without_a_terminal_exits_2_explaining_the_flags():
    cp = run_script("should_finetune", input="")
    assert cp.returncode == 2
    assert "--failure-mode" in cp.stderr and "--examples" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    code, doc = run_json("should_finetune", input="")
    assert code == 2 and "stdin is not a terminal" in doc["error"]


@pytest.mark.parametrize("args", [
    ["--failure-mode", "vibes"],
    ["--examples", "-1"],
    ["--examples", "many"],
    ["--monthly-requests", "-5"],
    ["--budget", "-1"],
    ["--privacy", "public"],
    ["--requirements-change", "sometimes"],
    ["--failure-mode", "format", "--as-of", "2026-13-45"],
])
def test_bad_input_exits_2(args):
    cp = run_script("should_finetune", *args)
    assert cp.returncode == 2 and cp.stdout == ""
    assert len(cp.stderr.strip().splitlines()) == 1 and "Traceback" not in cp.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_interactive_questions_on_a_terminal():
    """On a TTY with no flags the script asks (prompts on stderr) and answers on stdout."""
    import pty

    master, slave = pty.openpty()
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "should_finetune.py"), "--json", "--as-of", TODAY],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    # failure mode (prefix "sty" = style, after one invalid answer), examples, volume, change, privacy, budget
    answers = "nonsense\nsty\n1,200\n\nrarely\nstrict\n\n"
    os.write(master, answers.encode())
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, err.decode()
    import json

    doc = json.loads(out)
    assert doc["answers"] == {"failure_mode": "style", "examples": 1200, "monthly_requests": None,
                              "requirements_change": "rarely", "privacy": "strict", "budget": None}
    assert doc["recommendation"] == "fine_tune"
    assert all(p["self_hosted"] for p in doc["providers"])
    e = err.decode()
    assert "What goes wrong today?" in e and "answer one of" in e and "Privacy" in e


def test_interactive_end_of_input_exits_2():
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "should_finetune.py")], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    os.write(master, b"format\n\x04")          # answer one question, then Ctrl-D (EOF)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 2 and b"end of input" in err


def test_small_data_is_measured_by_few_shot_cross_validation():
    code, doc = run_json("should_finetune", "--failure-mode", "style", "--examples", "40")
    assert code == 0 and doc["recommendation"] == "prompt"
    ev = [s for s in doc["next_steps"] if s["script"] == "evaluate.py"]
    assert len(ev) == 1 and "--few-shot-cv" in ev[0]["command"] and "40 examples" in ev[0]["why"]
    # the reasons give the same advice as the step: k-fold over all examples, no separate test set
    assert not any("keep the rest as a test set" in r for r in doc["reasons"])
    assert any("k-fold" in r for r in doc["reasons"])
    code, doc = run_json("should_finetune", "--failure-mode", "format", "--examples", "400",
                         "--monthly-requests", "200000")
    assert doc["recommendation"] == "fine_tune"
    steps = [s["script"] for s in doc["next_steps"]]
    assert steps.index("evaluate.py") < steps.index("train_lora.py")  # baseline first
    base = next(s for s in doc["next_steps"] if s["script"] == "evaluate.py")
    assert "--output-dir eval/base" in base["command"] and "--adapter" not in base["command"]
