"""The hash-chained audit log (finetune_kit.audit + scripts/audit_log.py).

Tamper detection: any edit, deletion, insertion or reordering makes `verify` exit 1 naming
the first broken record. Arguments with secrets are masked; enabling works by flag, env and
config; records never hold data content.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_json, run_script
from finetune_kit import audit


def _make_log(path: Path, n: int = 5) -> list[str]:
    for i in range(n):
        audit.append_run(path, script=f"step{i}", argv=["data.jsonl", f"--n={i}"], inputs=[], outputs=[],
                         exit_code=0, summary={"i": i}, seconds=0.1)
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(x + "\n" for x in lines))


def _verify(path: Path) -> tuple[int, dict]:
    return run_json("audit_log", "verify", "--log", path)


def test_intact_chain_verifies_and_reports_last_hash(tmp_path):
    log = tmp_path / "a.jsonl"
    lines = _make_log(log)
    code, doc = _verify(log)
    assert code == 0 and doc["ok"] and doc["records"] == 5
    assert doc["last_hash"] == json.loads(lines[-1])["hash"]
    recs = audit.read(log)
    assert recs[0]["prev"] == audit.GENESIS and all(recs[i]["prev"] == recs[i - 1]["hash"] for i in range(1, 5))
    cp = run_script("audit_log", "verify", "--log", log)
    assert cp.returncode == 0 and doc["last_hash"] in cp.stdout


def _edit(lines):
    rec = json.loads(lines[2])
    rec["exit_code"] = 1                      # change a field, keep the stored hash
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    return lines, 3, "edited"


def _edit_and_rehash(lines):
    rec = json.loads(lines[1])
    rec["summary"] = {"i": 99}
    rec["hash"] = audit.record_hash(rec)      # a careful forger recomputes this record's hash...
    lines[1] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    return lines, 3, "chain broken"           # ...and the next record's prev no longer matches


def _delete(lines):
    return lines[:1] + lines[2:], 2, "chain broken"


def _insert(lines):
    return lines[:3] + [lines[0]] + lines[3:], 4, "chain broken"


def _reorder(lines):
    lines[1], lines[3] = lines[3], lines[1]
    return lines, 2, "chain broken"


def _garble(lines):
    lines[4] = lines[4][:-10]
    return lines, 5, "not valid JSON"


@pytest.mark.parametrize("tamper", [_edit, _edit_and_rehash, _delete, _insert, _reorder, _garble],
                         ids=["edit", "edit+rehash", "delete", "insert", "reorder", "truncated-record"])
def test_tampering_is_detected_at_first_broken_record(tmp_path, tamper):
    log = tmp_path / "a.jsonl"
    lines, broken_at, reason = tamper(_make_log(log))
    _write(log, lines)
    code, doc = _verify(log)
    assert code == 1 and doc["ok"] is False
    assert doc["first_broken"]["record"] == broken_at, doc
    assert reason in doc["first_broken"]["reason"]
    cp = run_script("audit_log", "verify", "--log", log)
    assert cp.returncode == 1 and f"BROKEN at record {broken_at}" in cp.stdout


def test_deleted_tail_only_shows_against_a_kept_last_hash(tmp_path):
    log = tmp_path / "a.jsonl"
    lines = _make_log(log)
    _, before = _verify(log)
    _write(log, lines[:-1])                   # documented limitation (compliance.md)
    code, after = _verify(log)
    assert code == 0 and after["records"] == 4 and after["last_hash"] != before["last_hash"]


def test_secret_arguments_are_masked():
    argv = ["train.jsonl", "--salt", "pepper123", "--api-key=sk-abcdefghijklmnopqrstuv", "--hf-token", "hf_secret",
            "--tokenizer", "cl100k_base", "--max-tokens", "4096", "--author", "ana",
            "postgres://admin:hunter2@db/app", "ghp_" + "a" * 36, "AKIA" + "B" * 16]
    out = audit.mask_argv(argv)
    joined = " ".join(out)
    for secret in ("pepper123", "sk-abcdefghijklmnopqrstuv", "hf_secret", "hunter2", "ghp_" + "a" * 36, "AKIA" + "B" * 16):
        assert secret not in joined
    assert out[1:3] == ["--salt", "***"] and out[3] == "--api-key=***"
    # values that are not secrets stay readable for the audit
    assert "cl100k_base" in out and "4096" in out and "ana" in out


def test_enabled_by_flag_env_and_config(tmp_path, _ft_home):
    default = Path(_ft_home) / "audit.jsonl"
    # nothing enabled: no log written
    assert run_script("audit_log", "path").returncode == 0 and not default.exists()
    # flag with a path
    flagged = tmp_path / "flag.jsonl"
    assert run_script("audit_log", "path", "--audit-log", flagged).returncode == 0
    assert len(audit.read(flagged)) == 1
    # flag without a path -> default location $FT_HOME/audit.jsonl
    assert run_script("audit_log", "path", "--audit-log").returncode == 0 and len(audit.read(default)) == 1
    # environment: a path, or 1 for the default location
    env_log = tmp_path / "env.jsonl"
    run_script("audit_log", "path", env={"FT_AUDIT_LOG": str(env_log)})
    run_script("audit_log", "path", env={"FT_AUDIT_LOG": "1"})
    assert len(audit.read(env_log)) == 1 and len(audit.read(default)) == 2
    # config file; FT_AUDIT_LOG=0 switches it off again
    (Path(_ft_home) / "config.json").write_text(json.dumps({"audit_log": True}))
    run_script("audit_log", "path")
    assert len(audit.read(default)) == 3
    run_script("audit_log", "path", env={"FT_AUDIT_LOG": "0"})
    assert len(audit.read(default)) == 3
    code, doc = run_json("audit_log", "verify")
    assert code == 0 and doc["records"] == 3 and doc["path"] == str(default)


def test_records_hold_no_data_content(tmp_path):
    data = tmp_path / "d.jsonl"
    secret_text = "Contact Zelda Quartermaine at zelda.q@example.net, key sk-proj-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": secret_text},
                                             {"role": "assistant", "content": "Noted, thanks."}]}) + "\n")
    log = tmp_path / "audit.jsonl"
    out = tmp_path / "red.jsonl"
    cp = run_script("scan_pii", data, "--nlp", "patterns", "--redact", out, "--audit-log", log)
    assert cp.returncode == 0, cp.stderr
    text = log.read_text()
    for fragment in ("Zelda", "zelda.q@example.net", "sk-proj-Zz9Yy8", "Noted, thanks", "Contact"):
        assert fragment not in text
    rec = json.loads(text.splitlines()[-1])
    assert set(rec) >= {"time", "user", "host", "script", "args", "inputs", "outputs", "exit_code", "summary",
                        "prev", "hash"}
    from finetune_kit.jsonl import sha256_file

    assert rec["inputs"][0]["sha256"] == sha256_file(data) and rec["outputs"][0]["sha256"] == sha256_file(out)
    assert rec["summary"]["by_entity"]["EMAIL_ADDRESS"] == 1 and rec["summary"]["redaction_mode"] == "pseudonym"
    assert audit.verify(log)["ok"]


def test_show_and_missing_log(tmp_path):
    log = tmp_path / "a.jsonl"
    _make_log(log, 3)
    code, doc = run_json("audit_log", "show", "--log", log, "--last", "2")
    assert code == 0 and [r["script"] for r in doc["records"]] == ["step1", "step2"]
    cp = run_script("audit_log", "verify", "--log", tmp_path / "nope.jsonl")
    assert cp.returncode == 2 and cp.stderr.startswith("error:")
