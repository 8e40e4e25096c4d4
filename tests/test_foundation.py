"""The shared CLI contract and the safe I/O every script relies on."""

from __future__ import annotations

import json
import os
import stat

import pytest

from conftest import ROOT
from finetune_kit import cli, jsonl, models
from finetune_kit.errors import UsageError, require


def test_iter_lines_reports_every_kind_of_bad_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"a": \n\xff\xfe\n{"b": 2}\r\n')
    rows = list(jsonl.iter_lines(p))
    assert [r.line for r in rows] == [1, 2, 3, 4, 5]
    assert [r.error for r in rows] == [None, "blank_line", "invalid_json", "invalid_utf8", None]
    assert rows[0].obj == {"a": 1} and rows[4].obj == {"b": 2}


def test_atomic_write_refuses_clobber_and_inputs(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"a": 1}\n')
    out = tmp_path / "out.jsonl"
    jsonl.write_jsonl(out, [{"a": 1}])
    with pytest.raises(UsageError, match="--force"):
        jsonl.write_jsonl(out, [{"a": 2}])
    assert json.loads(out.read_text()) == {"a": 1}
    jsonl.write_jsonl(out, [{"a": 2}], force=True)
    assert json.loads(out.read_text()) == {"a": 2}
    with pytest.raises(UsageError, match="one of the inputs"):
        jsonl.write_jsonl(src, [{"x": 1}], force=True, inputs=[src])
    assert src.read_text() == '{"a": 1}\n'


def test_failed_write_leaves_no_partial_file(tmp_path):
    out = tmp_path / "out.jsonl"

    def rows():
        yield {"a": 1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        jsonl.write_jsonl(out, rows())
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_on_success(tmp_path):
    d = tmp_path / "run"
    with jsonl.atomic_dir(d) as tmp:
        (tmp / "f").write_text("1")
    assert (d / "f").read_text() == "1"
    with pytest.raises(UsageError, match="--force"):
        with jsonl.atomic_dir(d):
            pass
    with pytest.raises(RuntimeError):
        with jsonl.atomic_dir(d, force=True) as tmp:
            (tmp / "f").write_text("2")
            raise RuntimeError("fail midway")
    assert (d / "f").read_text() == "1"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["run"]


def test_cli_errors_are_one_line_exit_2_and_json(capsys):
    parser = cli.make_parser("demo_x", "desc", cli.examples_for("demo_x", "a.jsonl"))

    def bad(args):
        raise UsageError("input file not found: nope.jsonl")

    assert cli.run(parser, bad, ["--json"]) == 2
    out, err = capsys.readouterr()
    assert err.strip().count("\n") == 0 and err.startswith("error: input file not found")
    assert json.loads(out) == {"error": "input file not found: nope.jsonl", "exit_code": 2}

    def crash(args):
        raise KeyError("internal")

    assert cli.run(parser, crash, []) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "--debug" in err and err.count("\n") == 1


def test_cli_unknown_flag_is_one_line(capsys):
    parser = cli.make_parser("demo_x", "desc", cli.examples_for("demo_x", "a.jsonl"))
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--nope"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_help_ends_with_examples():
    parser = cli.make_parser("demo_x", "desc", cli.examples_for("demo_x", "a.jsonl", "b.jsonl --json"))
    text = parser.format_help().rstrip().splitlines()
    assert text[-1].strip() == f"python3 {ROOT}/scripts/demo_x.py b.jsonl --json"   # the real path
    assert text[-3].strip() == "examples:"


def test_require_names_the_extra():
    with pytest.raises(UsageError, match=r"pip install"):
        require("definitely_not_a_module_xyz")


def test_model_resolution_errors_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        models.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(UsageError, match="config.json"):
        models.resolve(str(tmp_path))
    assert models.resolve("Qwen/Qwen2.5-0.5B-Instruct").kind == "hub"
    ref = models.resolve("smollm2-135m")
    assert ref.kind == "gguf" and ref.gguf_file.endswith(".gguf")


def test_audit_record_written_when_enabled(tmp_path, monkeypatch):
    from finetune_kit import audit

    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("FT_AUDIT_LOG", str(log))
    parser = cli.make_parser("demo_x", "desc", [])
    inp = tmp_path / "data.jsonl"
    inp.write_text("secret content\n")
    parser.add_argument("--api-key")

    def ok(args):
        return cli.Result({"ok": True}, "ok", inputs=[inp], summary={"n": 1})

    assert cli.run(parser, ok, ["--api-key", "sk-abcdefghijklmnopqrstuvwx"]) == 0
    rec = audit.read(log)[0]
    assert rec["script"] == "demo_x" and rec["args"] == ["--api-key", "***"]
    assert rec["inputs"][0]["sha256"] == jsonl.sha256_file(inp)
    assert "secret content" not in log.read_text()
    assert audit.verify(log)["ok"]


def test_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        out = jsonl.write_text(tmp_path / "r.md", "x")
        with jsonl.atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
