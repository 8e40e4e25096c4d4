"""Fuzz the twelve scripts with generated bad input, as a hostile user would (issue 20).

For every script and every input slot it reads, each generated bad file (empty, binary, invalid UTF-8,
BOM + CRLF, a 1 MB line, 10k-deep nesting, NaN/Infinity, wrong types, truncated JSON, ...) and each bad
path (missing, a directory, a FIFO, a symlink loop, a broken link) is fed in; every numeric flag gets
NaN, Infinity, negative, huge and non-numeric values; outputs are pointed at inputs, at folders holding
them, at existing files and at directories. Every run must hold the CLI contract:

- no traceback, an exit code the contract allows (exit 2 = could not run: exactly one "error:" line);
- under --json exactly one strict JSON document on stdout (no bare NaN), with exit_code on errors;
- inputs byte-identical afterwards; a run that could not run (exit 2) writes nothing at all;
- no temp files (.*.tmp / .*.old) left anywhere.

Runs are in-process (cli_support.call) so hundreds of cases take seconds; a run that blocks is stopped
by an alarm and reported as a hang.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from cli_support import ALL_SCRIPTS, Hang, call, check_contract, module, snapshot, temp_leftovers
from train_support import ticket_rows, write_jsonl

CHAT = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
DEEP = "[" * 10000 + "]" * 10000


def _contents() -> dict[str, bytes]:
    rnd = random.Random(20)
    return {
        "empty": b"",
        "blank_lines": b"\n \n\t\n",
        "binary": bytes(rnd.randrange(256) for _ in range(4096)),
        "nul_bytes": b"\x00" * 512,
        "invalid_utf8": b'{"messages": [{"role": "user", "content": "\xff\xfe\xfd"}]}\n',
        "bom_crlf": ("\ufeff" + (CHAT + "\r\n") * 3).encode("utf-8"),
        "long_line": ('{"messages": [{"role": "user", "content": "' + "a" * 1_000_000 + '"}]}\n').encode(),
        "deep_nesting": DEEP.encode(),
        "deep_in_line": ('{"messages": ' + DEEP + "}\n").encode(),
        "nan_infinity": b'{"messages": [{"role": "user", "content": NaN}], "step": NaN, "loss": Infinity,'
                        b' "r": NaN}\n',
        "wrong_types": b'{"messages": "hello"}\n[1, 2, 3]\n"text"\nnull\n42\n{"messages": [{"role": 5}]}\n',
        "json_array": b'[{"a": 1}, {"b": [true, false]}]',
        "truncated": b'{"messages": [{"role": "user", "content": "hi"\n',
        "huge_numbers": b'{"step": 1e400, "loss": -1e400, "r": 99999999999999999999999999999}\n',
        "csv_garbage": b'a,b,c\n"unterminated,1,2\n,,,,,,\n',
        "yaml_garbage": b"key: [unclosed\n  - : :\n\t- x\n",
        "mixed_good_bad": (CHAT + "\n{not json}\n" + CHAT + "\n").encode(),
    }


CONTENTS = _contents()
# contents a tool may legitimately accept: nothing in it (an empty log, no predictions) or some valid rows
EMPTYISH = {"empty", "blank_lines"}
VALIDISH = {"bom_crlf", "mixed_good_bad"}
PATHS = ("missing", "directory", "fifo", "symlink_loop", "broken_symlink")


@pytest.fixture(scope="module")
def ws(tmp_path_factory, smollm2_dir):
    """Good files the slots need besides the bad one (checked unchanged after every slot)."""
    from train_support import make_tiny_model

    d = tmp_path_factory.mktemp("fuzz_good")
    test = write_jsonl(d / "test.jsonl", ticket_rows(12))
    rows = [json.loads(x) for x in test.read_text().splitlines()]
    pred = d / "pred.jsonl"
    pred.write_text("".join(json.dumps({"prediction": r["messages"][-1]["content"]}) + "\n" for r in rows))
    tiny = make_tiny_model(d / "tiny", smollm2_dir)
    return {"T": str(test), "P": str(pred), "TINY": str(tiny), "dir": d}


# script -> list of (slot id, argv template with {IN} and {OUT}, suffix of the bad file, exit codes allowed
# for bad *content*). Bad *paths* (missing, FIFO, ...) must always be exit 2 unless listed in DIR_OK.
SLOTS = {
    "validate_jsonl": [("file", ["{IN}"], ".jsonl", {1, 2}),
                       ("chat", ["{IN}", "--format", "chat", "--tokenizer", "none"], ".jsonl", {1, 2})],
    "prepare_data": [("input", ["{IN}", "-o", "{OUT}"], ".jsonl", {1, 2}),
                     ("csv", ["{IN}", "-o", "{OUT}"], ".csv", {1, 2}),
                     ("tools", ["{T}", "-o", "{OUT}", "--tools", "{IN}"], ".json", {2})],
    "scan_pii": [("file", ["{IN}", "--nlp", "patterns"], ".jsonl", {0, 2}),
                 ("redact", ["{IN}", "--nlp", "patterns", "--redact", "{OUT}.jsonl"], ".jsonl", {0, 2})],
    "audit_log": [("show", ["show", "--log", "{IN}"], ".jsonl", {0, 2}),     # show lists, verify judges
                  ("verify", ["verify", "--log", "{IN}"], ".jsonl", {1, 2})],
    "should_finetune": [("data", ["--failure-mode", "format", "--data", "{IN}"], ".yaml", {2})],
    "estimate_costs": [("train", ["--provider", "openai", "--model", "gpt-4.1-mini", "--train", "{IN}",
                                  "--tokenizer", "cl100k_base"], ".jsonl", {0, 2}),
                       ("data", ["--compare", "--data", "{IN}"], ".yaml", {2})],
    "train_lora": [("config", ["--config", "{IN}", "--dry-run"], ".yaml", {2}),
                   ("train", ["--base-model", "{TINY}", "--train", "{IN}", "--dry-run"], ".jsonl", {1, 2}),
                   ("template", ["--base-model", "{TINY}", "--train", "{T}", "--chat-template", "{IN}",
                                 "--dry-run"], ".jinja", {1, 2})],
    "evaluate": [("test", ["--test", "{IN}", "--predictions-a", "{P}", "--predictions-b", "{P}"], ".jsonl", {2}),
                 ("pred_b", ["--test", "{T}", "--predictions-a", "{P}", "--predictions-b", "{IN}"], ".jsonl", {2}),
                 ("schema", ["--test", "{T}", "--predictions-a", "{P}", "--predictions-b", "{P}",
                             "--json-schema", "{IN}", "--output-dir", "{OUT}"], ".json", {0, 2})],
    "diagnose_training": [("json", ["{IN}"], ".json", {1, 2}), ("jsonl", ["{IN}"], ".jsonl", {1, 2}),
                          ("csv", ["{IN}", "--plot", "{OUT}.png"], ".csv", {1, 2})],
    "export_adapter": [("config", ["{ADAPTER}", "-o", "{OUT}"], "adapter_config.json", {2}),
                       ("weights", ["{ADAPTER}", "-o", "{OUT}"], "adapter_model.safetensors", {2})],
    "collect_failures": [("predictions", ["--predictions", "{IN}", "-o", "{OUT}.jsonl"], ".jsonl", {1, 2}),
                         ("cases", ["--cases", "{IN}", "-o", "{OUT}.jsonl"], ".jsonl", {1, 2}),
                         ("sessions", ["--sessions", "{IN}", "-o", "{OUT}.jsonl"], ".jsonl", {0, 2})],
    "augment_data": [("input", ["{IN}", "-o", "{OUT}.jsonl", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                                "--timeout", "1"], ".jsonl", {1, 2})],
}
# slots where an (empty) directory is a legitimate input, and the exit codes it may give there
DIR_OK = {("diagnose_training", "json"): {2}, ("diagnose_training", "jsonl"): {2}, ("diagnose_training", "csv"): {2},
          ("collect_failures", "sessions"): {0, 2}, ("prepare_data", "input"): {2}, ("prepare_data", "csv"): {2}}


def _fill(argv: list[str], values: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for k, v in values.items():
            a = a.replace("{" + k + "}", v)
        out.append(a)
    return out


def _make_bad_path(case_dir: Path, kind: str, name: str) -> Path:
    p = case_dir / name
    if kind == "directory":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "symlink_loop":
        p.symlink_to(p)
    elif kind == "broken_symlink":
        p.symlink_to(case_dir / "nowhere" / "x")
    return p


def _adapter(case_dir: Path, slot_file: str, bad: bytes | None, kind: str | None) -> Path:
    """An adapter folder whose config or weights file is the bad input."""
    import numpy as np
    from safetensors.numpy import save_file

    ad = case_dir / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                         "target_modules": ["q_proj"],
                                                         "base_model_name_or_path": "smollm2-135m"}))
    save_file({"w": np.zeros((2, 2), "float32")}, str(ad / "adapter_model.safetensors"))
    target = ad / slot_file
    target.unlink()
    if kind is not None:
        _make_bad_path(ad, kind, slot_file)
    else:
        target.write_bytes(bad)
    return ad


def _run_case(script, slot, argv_t, suffix, allowed, ws, case_dir: Path, *, content=None, path_kind=None):
    case_dir.mkdir()
    values = {"T": ws["T"], "P": ws["P"], "TINY": ws["TINY"], "OUT": str(case_dir / "out")}
    if script == "export_adapter":
        values["ADAPTER"] = str(_adapter(case_dir, suffix, CONTENTS.get(content), path_kind))
    elif path_kind is not None:
        values["IN"] = str(_make_bad_path(case_dir, path_kind, "in" + suffix))
    else:
        (case_dir / ("in" + suffix)).write_bytes(CONTENTS[content])
        values["IN"] = str(case_dir / ("in" + suffix))
    before = snapshot(case_dir)
    what = f"{script}[{slot}] {content or path_kind}"
    try:
        r = call(script, *_fill(argv_t, values), "--json", timeout=90)
    except Hang as exc:
        return f"{what}: HANG ({exc})"
    try:
        check_contract(r, json_mode=True, allowed=allowed, what=what)
        after = snapshot(case_dir)
        assert all(after.get(k) == v for k, v in before.items()), f"{what}: an input changed"
        if r.code == 2:
            assert after == before, f"{what}: exit 2 but files were written: {sorted(set(after) - set(before))}"
        assert not temp_leftovers(case_dir), f"{what}: temp files left: {temp_leftovers(case_dir)}"
    except AssertionError as exc:
        return str(exc)[:1500]
    return None


@pytest.mark.parametrize("script,slot", [(s, slot[0]) for s in SLOTS for slot in SLOTS[s]])
def test_bad_files_and_paths(script, slot, ws, tmp_path):
    slot_id, argv_t, suffix, allowed = next(x for x in SLOTS[script] if x[0] == slot)
    good_before = snapshot(ws["dir"])
    failures = []
    for i, content in enumerate(CONTENTS):
        ok = allowed | ({0} if content in EMPTYISH | VALIDISH and allowed & {0, 1} else set())
        failures.append(_run_case(script, slot_id, argv_t, suffix, ok, ws, tmp_path / f"c{i}", content=content))
    for i, kind in enumerate(PATHS):
        ok = DIR_OK.get((script, slot), {2}) if kind == "directory" else {2}
        failures.append(_run_case(script, slot_id, argv_t, suffix, ok, ws, tmp_path / f"p{i}", path_kind=kind))
    failures = [f for f in failures if f]
    assert not failures, f"{len(failures)} case(s) broke the contract:\n\n" + "\n\n".join(failures)
    assert snapshot(ws["dir"]) == good_before and not temp_leftovers(ws["dir"])


# ------------------------------------------------------------------ flags

BAD_NUMBERS = ("nan", "inf", "-inf", "-1", "1e999", "abc", "", "0x10")


def _numeric_flags(script: str) -> list[str]:
    parser = module(script).build_parser()
    flags = []
    for a in parser._actions:
        t = a.type
        if a.option_strings and t is not None and getattr(t, "__module__", "") == "finetune_kit.cli" \
                and getattr(t, "__name__", "") not in ("_onoff",):
            flags.append(a.option_strings[-1] if a.option_strings[-1].startswith("--") else a.option_strings[0])
    return flags


def _choice_flags(script: str) -> list[str]:
    parser = module(script).build_parser()
    return [a.option_strings[-1] for a in parser._actions if a.option_strings and a.choices]


def test_every_numeric_flag_is_parsed_as_a_number():
    """Every numeric flag of every script uses a validating type (none is a bare int/float)."""
    for script in ALL_SCRIPTS:
        parser = module(script).build_parser()
        bare = [a.option_strings[-1] for a in parser._actions if a.type in (int, float)]
        assert not bare, f"{script}: {bare} accept NaN/Infinity/negative values; use a cli.number type"


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_bad_flag_values_and_usage_errors(script, tmp_path):
    cases = [[f"{flag}={v}"] for flag in _numeric_flags(script) for v in BAD_NUMBERS]
    cases += [[f"{flag}=no-such-choice"] for flag in _choice_flags(script)]
    cases += [["--no-such-flag"], ["--json=3"], ["--help-me"]]
    assert len(cases) >= 3
    failures = []
    before = snapshot(tmp_path)
    for argv in cases:
        for json_mode in (True, False):
            r = call(script, *argv, *(["--json"] if json_mode else []), timeout=60)
            try:
                check_contract(r, json_mode=json_mode, allowed={2}, what=f"{script} {argv}")
                assert json_mode or r.out == "", f"{script} {argv}: stdout without --json: {r.out!r}"
            except AssertionError as exc:
                failures.append(str(exc)[:800])
    assert snapshot(tmp_path) == before
    assert not failures, f"{len(failures)} flag case(s) broke the contract:\n\n" + "\n\n".join(failures)


# ------------------------------------------------------------------ outputs pointed at inputs

def _out_cases(ws, d: Path):
    """(script, argv, exit codes): outputs equal to, holding, or clobbering inputs; directories as files."""
    (d / "data").mkdir()
    data = write_jsonl(d / "data" / "raw.jsonl", ticket_rows(20))
    log = d / "log.jsonl"
    log.write_text("".join(json.dumps({"step": i, "loss": 2 - i / 10}) + "\n" for i in range(1, 9)))
    exists = d / "exists.jsonl"
    exists.write_text("user file\n")
    (d / "adir").mkdir()
    afile = d / "afile"
    afile.write_text("x")
    T, P = ws["T"], ws["P"]
    return [
        ("scan_pii", [data, "--nlp", "patterns", "--redact", data, "--force"]),
        ("scan_pii", [data, "--nlp", "patterns", "--redact", exists]),
        ("scan_pii", [data, "--nlp", "patterns", "--redact", d / "adir", "--force"]),
        ("scan_pii", [data, "--nlp", "patterns", "--redact", afile / "r.jsonl"]),
        ("prepare_data", [data, "-o", d / "data", "--force"]),
        ("prepare_data", [data, "-o", d, "--force"]),
        ("prepare_data", [data, "-o", afile, "--force"]),
        ("augment_data", [data, "-o", data, "--force", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]),
        ("augment_data", [data, "-o", exists, "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]),
        ("collect_failures", ["--predictions", P, "-o", P, "--force"]),
        ("collect_failures", ["--predictions", P, "-o", Path(P).with_name("results.json"), "--force"]),
        ("collect_failures", ["--cases", exists, "-o", d / "o.jsonl", "--review", exists, "--force"]),
        ("diagnose_training", [log, "--plot", log, "--force"]),
        ("diagnose_training", [log, "--plot", d / "adir", "--force"]),
        ("evaluate", ["--test", T, "--predictions-a", P, "--predictions-b", P, "--output-dir", Path(T).parent,
                      "--force"]),
        ("evaluate", ["--test", T, "--predictions-a", P, "--predictions-b", P, "--output-dir", afile]),
        ("train_lora", ["--base-model", ws["TINY"], "--train", data, "--output-dir", d / "data", "--force"]),
        ("train_lora", ["--base-model", ws["TINY"], "--train", data, "--output-dir", ws["TINY"], "--force"]),
    ]


def test_outputs_never_touch_inputs(ws, tmp_path):
    cases = _out_cases(ws, tmp_path)
    failures = []
    for script, argv in cases:
        before, good = snapshot(tmp_path), snapshot(ws["dir"])
        r = call(script, *argv, "--json", timeout=90)
        try:
            check_contract(r, json_mode=True, allowed={2}, what=f"{script} {argv}")
            assert snapshot(tmp_path) == before and snapshot(ws["dir"]) == good, f"{script} {argv}: files changed"
            assert not temp_leftovers(tmp_path), f"{script} {argv}: temp files left"
        except AssertionError as exc:
            failures.append(str(exc)[:800])
    assert not failures, f"{len(failures)} output case(s) broke the contract:\n\n" + "\n\n".join(failures)
