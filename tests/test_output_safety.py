"""Bad input never costs the user data (issue 20; issue 17 item 5).

Each reported case is reproduced as a test: --force around the inputs, --force over a user's own files,
FIFOs as inputs, NaN/Infinity, usage errors under --json, masked internal errors, wrong exit codes,
more than one stderr line, and a pathological line reaching spaCy.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from cli_support import call, check_contract, snapshot, temp_leftovers
from conftest import run_script
from finetune_kit import cli, outputs
from finetune_kit.errors import UsageError
from train_support import ticket_rows, write_jsonl


def chat_file(path: Path, n: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_jsonl(path, ticket_rows(n))


def predictions(path: Path, test: Path, *, right: bool = True) -> Path:
    rows = [json.loads(x) for x in test.read_text().splitlines()]
    path.write_text("".join(json.dumps({"prediction": r["messages"][-1]["content"] if right else "nope"}) + "\n"
                            for r in rows))
    return path


def fake_adapter(d: Path, base: str = "smollm2-135m", **cfg) -> Path:
    """A PEFT LoRA adapter folder as far as export reads it without --merge (config + weights header)."""
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    d.mkdir(parents=True, exist_ok=True)
    conf = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
            "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": base}
    conf.update(cfg)
    (d / "adapter_config.json").write_text(json.dumps(conf))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 8), "float32")},
              str(d / "adapter_model.safetensors"))
    (d / "README.md").write_text("my notes on this adapter\n")
    return d


# ------------------------------------------------------------------ 1. the shared rule, as a unit

def test_outputs_never_equal_hold_or_sit_inside_an_input(tmp_path):
    data = tmp_path / "data"
    raw = chat_file(data / "raw.jsonl")
    adapter = tmp_path / "exp" / "adapter"
    adapter.mkdir(parents=True)
    for out, inp, word in ((raw, raw, "one of the inputs"), (data, raw, "contains the input"),
                           (tmp_path, adapter, "contains the input"), (adapter / "export", adapter, "inside the input")):
        with pytest.raises(UsageError, match=word):
            outputs.check_disjoint(out, [inp])
    link = tmp_path / "link"
    link.symlink_to(data)  # the same folder under another name
    with pytest.raises(UsageError, match="contains the input"):
        outputs.check_disjoint(link, [raw])
    outputs.check_disjoint(tmp_path / "elsewhere", [raw, adapter])  # unrelated: fine


def test_owned_dir_replaces_only_files_listed_in_its_manifest(tmp_path):
    out = tmp_path / "out"
    with outputs.owned_dir(out, manifest="m.json", tool="t") as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "old.txt").write_text("stale")
        (tmp / "m.json").write_text("{}")
    assert json.loads((out / "m.json").read_text())["owned_files"] == ["a.txt", "m.json", "old.txt"]
    (out / "mine.md").write_text("the user's")
    with pytest.raises(UsageError, match="--force"):
        with outputs.owned_dir(out, manifest="m.json", tool="t"):
            pass
    with outputs.owned_dir(out, force=True, manifest="m.json", tool="t") as tmp:
        (tmp / "a.txt").write_text("2")
        (tmp / "m.json").write_text("{}")
    assert (out / "a.txt").read_text() == "2" and not (out / "old.txt").exists()   # stale own file removed
    assert (out / "mine.md").read_text() == "the user's"                           # the user's file kept
    # a file of the user's with the name of one we write: refused, nothing changed, no temp left
    (out / "b.txt").write_text("user b")
    with pytest.raises(UsageError, match="did not write"):
        with outputs.owned_dir(out, force=True, manifest="m.json", tool="t") as tmp:
            (tmp / "b.txt").write_text("ours")
            (tmp / "m.json").write_text("{}")
    assert (out / "b.txt").read_text() == "user b" and not temp_leftovers(tmp_path)
    # a failure midway changes nothing
    before = snapshot(out)
    with pytest.raises(RuntimeError):
        with outputs.owned_dir(out, force=True, manifest="m.json", tool="t") as tmp:
            (tmp / "a.txt").write_text("3")
            raise RuntimeError("boom")
    assert snapshot(out) == before and not temp_leftovers(tmp_path)


def test_a_crafted_manifest_cannot_make_force_delete_outside(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.json").write_text(json.dumps({"owned_files": ["../victim.txt", str(victim), "m.json"]}))
    with outputs.owned_dir(out, force=True, manifest="m.json", tool="t") as tmp:
        (tmp / "m.json").write_text("{}")
    assert victim.read_text() == "precious"


# ------------------------------------------------------------------ 1. the four reported data-loss cases

def test_prepare_force_into_the_folder_holding_its_input_is_refused(tmp_path):
    raw = chat_file(tmp_path / "data" / "raw.jsonl")
    before = snapshot(tmp_path)
    r = call("prepare_data", raw, "-o", tmp_path / "data", "--force", "--json")
    check_contract(r, json_mode=True, allowed={2}, what="prepare into input dir")
    assert "contains the input" in r.doc["error"] and snapshot(tmp_path) == before


def test_evaluate_force_into_the_folder_holding_its_inputs_is_refused(tmp_path):
    test = chat_file(tmp_path / "in" / "test.jsonl", 12)
    pa = predictions(tmp_path / "in" / "pa.jsonl", test)
    pb = predictions(tmp_path / "in" / "pb.jsonl", test, right=False)
    before = snapshot(tmp_path)
    r = call("evaluate", "--test", test, "--predictions-a", pa, "--predictions-b", pb,
             "--output-dir", tmp_path / "in", "--force", "--json")
    check_contract(r, json_mode=True, allowed={2}, what="evaluate into input dir")
    assert snapshot(tmp_path) == before


def test_export_force_around_the_adapter_is_refused(tmp_path):
    adapter = fake_adapter(tmp_path / "exp" / "adapter")
    before = snapshot(tmp_path)
    r = call("export_adapter", adapter, "-o", tmp_path / "exp", "--force", "--json")
    check_contract(r, json_mode=True, allowed={2}, what="export around adapter")
    assert "contains the input" in r.doc["error"] and snapshot(tmp_path) == before
    assert (adapter / "README.md").read_text() == "my notes on this adapter\n"


def test_collect_failures_never_overwrites_the_results_json_it_reads(tmp_path):
    test = chat_file(tmp_path / "test.jsonl", 12)
    pa = predictions(tmp_path / "pa.jsonl", test)
    pb = predictions(tmp_path / "pb.jsonl", test, right=False)
    r = call("evaluate", "--test", test, "--predictions-a", pa, "--predictions-b", pb, "--output-dir",
             tmp_path / "ev", "--json")
    assert r.code in (0, 1), r.err
    before = snapshot(tmp_path)
    r = call("collect_failures", "--predictions", tmp_path / "ev" / "predictions.jsonl",
             "-o", tmp_path / "ev" / "results.json", "--force", "--json")
    check_contract(r, json_mode=True, allowed={2}, what="collect over results.json")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ issue 17 item 5: --force keeps the user's files

def test_prepare_force_keeps_the_users_other_files(tmp_path):
    raw = chat_file(tmp_path / "raw.jsonl", 30)
    out = tmp_path / "data"
    assert call("prepare_data", raw, "-o", out, "--json").code == 0
    (out / "my_report.md").write_text("my own analysis")
    r = call("prepare_data", raw, "-o", out, "--force", "--seed", "7", "--json")
    check_contract(r, json_mode=True, allowed={0}, what="prepare --force")
    assert (out / "my_report.md").read_text() == "my own analysis"
    m = json.loads((out / "manifest.json").read_text())
    assert m["seed"] == 7 and "my_report.md" not in m["owned_files"]
    assert sorted(p.name for p in out.iterdir()) == sorted(m["owned_files"] + ["my_report.md"])
    assert not temp_leftovers(tmp_path)


def test_prepare_force_refuses_to_replace_a_file_it_did_not_write(tmp_path):
    raw = chat_file(tmp_path / "raw.jsonl", 30)
    out = tmp_path / "data"
    out.mkdir()
    (out / "train.jsonl").write_text("the user's own train file\n")
    r = call("prepare_data", raw, "-o", out, "--force", "--json")
    check_contract(r, json_mode=True, allowed={2}, what="prepare --force over a foreign train.jsonl")
    assert "did not write" in r.doc["error"] and (out / "train.jsonl").read_text() == "the user's own train file\n"
    assert sorted(p.name for p in out.iterdir()) == ["train.jsonl"]


def test_evaluate_force_keeps_the_users_other_files(tmp_path):
    test = chat_file(tmp_path / "test.jsonl", 12)
    pa = predictions(tmp_path / "pa.jsonl", test)
    args = ("--test", test, "--predictions-a", pa, "--predictions-b", pa, "--output-dir", tmp_path / "ev", "--json")
    assert call("evaluate", *args).code == 0
    (tmp_path / "ev" / "notes.md").write_text("keep me")
    assert call("evaluate", *args, "--force").code == 0
    assert (tmp_path / "ev" / "notes.md").read_text() == "keep me"
    assert "notes.md" not in json.loads((tmp_path / "ev" / "results.json").read_text())["owned_files"]


def test_export_force_keeps_the_users_other_files(tmp_path, smollm2_dir):
    adapter = fake_adapter(tmp_path / "adapter", base=str(smollm2_dir))
    out = tmp_path / "export"
    assert call("export_adapter", adapter, "-o", out, "--json").code == 0, "first export"
    (out / "deploy-notes.md").write_text("how we deploy")
    r = call("export_adapter", adapter, "-o", out, "--force", "--name", "again", "--json")
    check_contract(r, json_mode=True, allowed={0}, what="export --force")
    assert (out / "deploy-notes.md").read_text() == "how we deploy" and "again" in (out / "Modelfile").read_text()


def test_train_force_clears_only_its_own_run_files(tmp_path):
    from finetune_kit import train, train_outputs

    out = tmp_path / "run"
    (out / train.CHECKPOINTS / "checkpoint-2").mkdir(parents=True)
    (out / train.MANIFEST).write_text(json.dumps({"files": ["adapter_model.safetensors", train.MANIFEST]}))
    for n in ("adapter_model.safetensors", train.LOG_FILE, "notes.md"):
        (out / n).write_text("x")
    train_outputs.clear_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"] and not temp_leftovers(tmp_path)


# ------------------------------------------------------------------ 2. FIFOs never hang (real processes)

@pytest.mark.parametrize("script,args", [
    ("validate_jsonl", ["{F}"]),
    ("prepare_data", ["{F}", "-o", "{D}/out"]),
    ("estimate_costs", ["--provider", "openai", "--model", "gpt-4.1-mini", "--train", "{F}"]),
    ("evaluate", ["--test", "{T}", "--predictions-a", "{P}", "--predictions-b", "{F}"]),
    ("collect_failures", ["--predictions", "{F}", "-o", "{D}/f.jsonl"]),
    ("augment_data", ["{F}", "-o", "{D}/a.jsonl", "--model", "smollm2-135m"]),
])
def test_a_fifo_as_input_is_refused_not_read(tmp_path, script, args):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    test = chat_file(tmp_path / "test.jsonl", 12)
    pred = predictions(tmp_path / "p.jsonl", test)
    argv = [a.replace("{F}", str(fifo)).replace("{D}", str(tmp_path)).replace("{T}", str(test))
            .replace("{P}", str(pred)) for a in args]
    cp = run_script(script, *argv, "--json", timeout=90)
    assert cp.returncode == 2 and "FIFO" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert json.loads(cp.stdout)["exit_code"] == 2


# ------------------------------------------------------------------ 3. NaN/Infinity and strict JSON

@pytest.mark.parametrize("script,args", [
    ("estimate_costs", ["--provider", "openai", "--model", "gpt-4.1-mini", "--requests-per-month", "nan"]),
    ("estimate_costs", ["--provider", "openai", "--model", "gpt-4.1-mini", "--base-input-price", "inf"]),
    ("estimate_costs", ["--compare", "--params-b", "nan"]),
    ("estimate_costs", ["--compare", "--throughput", "inf"]),
    ("estimate_costs", ["--compare", "--gpu-price", "inf"]),
    ("estimate_costs", ["--compare", "--fixed-monthly-cost=-inf"]),
    ("should_finetune", ["--failure-mode", "format", "--monthly-requests", "inf"]),
    ("should_finetune", ["--failure-mode", "format", "--budget", "nan"]),
    ("prepare_data", ["x.jsonl", "-o", "out", "--split", "inf,1,1"]),
])
def test_non_finite_numbers_are_usage_errors(script, args, tmp_path):
    r = call(script, *args, "--json")
    check_contract(r, json_mode=True, allowed={2}, what=f"{script} {args}")
    assert any(w in r.doc["error"] for w in ("finite", "inf", "nan"))


def test_json_output_is_strict(capsys):
    parser = cli.make_parser("demo_nan", "desc", cli.examples_for("demo_nan", ""))
    code = cli.run(parser, lambda a: cli.Result({"a": {"b": [1.0, float("nan")]}}), ["--json"])
    out, err = capsys.readouterr()
    doc = json.loads(out, parse_constant=lambda t: pytest.fail(f"bare {t} token on stdout"))
    assert code == 2 and doc["exit_code"] == 2 and "$.a.b[1]" in err and out.count("\n") == 1


# ------------------------------------------------------------------ 4. usage errors under --json

@pytest.mark.parametrize("script,args,word", [
    ("validate_jsonl", ["x.jsonl", "--bogus"], "unrecognized"),
    ("validate_jsonl", [], "required"),
    ("prepare_data", ["x.jsonl"], "required"),
    ("audit_log", ["explode"], "invalid choice"),
    ("evaluate", ["--test", "t.jsonl", "--batch-size", "0"], "must be >= 1"),
    ("augment_data", ["in.jsonl", "-o", "o.jsonl", "--model", "m", "--top-p", "5"], "must be in"),
])
def test_usage_errors_print_the_json_error_document(script, args, word):
    r = call(script, *args, "--json")
    check_contract(r, json_mode=True, allowed={2}, what=f"{script} {args}")
    assert word in r.doc["error"] and r.doc["error"] in r.err
    assert call(script, *args).out == ""  # without --json stdout stays empty


# ------------------------------------------------------------------ 5. masked internal errors -> what to fix

DEEP = "[" * 20000 + "]" * 20000


def test_deep_or_binary_json_and_yaml_inputs_are_one_line_errors(tmp_path, smollm2_dir):
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    binary = tmp_path / "bin.jinja"
    binary.write_bytes(bytes(range(256)) * 4)
    data = chat_file(tmp_path / "train.jsonl")
    test = chat_file(tmp_path / "test.jsonl", 12)
    pred = predictions(tmp_path / "p.jsonl", test)
    state = tmp_path / "run"
    state.mkdir()
    (state / "trainer_state.json").write_text('{"log_history": ' + DEEP + "}")
    audit = tmp_path / "audit.jsonl"
    audit.write_text('{"hash": "x", "prev": ' + DEEP + "}\n")
    cases = [
        ("prepare_data", [data, "-o", tmp_path / "o1", "--tools", deep]),
        ("collect_failures", ["--predictions", pred, "-o", tmp_path / "o2.jsonl", "--tools", deep]),
        ("train_lora", ["--config", deep, "--dry-run"]),
        ("train_lora", ["--base-model", smollm2_dir, "--train", data, "--chat-template", binary, "--dry-run"]),
        ("diagnose_training", [state]),
        ("evaluate", ["--test", test, "--predictions-a", pred, "--predictions-b", pred, "--json-schema", deep]),
        ("audit_log", ["show", "--log", audit]),
        ("should_finetune", ["--failure-mode", "format", "--data", binary]),
    ]
    adapter = fake_adapter(tmp_path / "ad")
    (adapter / "adapter_config.json").write_text(DEEP)
    cases.append(("export_adapter", [adapter, "-o", tmp_path / "ex"]))
    for script, args in cases:
        r = call(script, *args, "--json")
        check_contract(r, json_mode=True, allowed={2}, what=f"{script} {args}")


def test_damaged_adapters_and_audit_records(tmp_path):
    for name, change, word in (("nan", {"r": float("nan")}, "r must be"), ("neg", {"r": -4}, "r must be"),
                               ("nulls", {k: None for k in ("r", "lora_alpha", "target_modules",
                                                            "base_model_name_or_path")}, "no base model"),
                               ("alpha", {"lora_alpha": "big"}, "lora_alpha")):
        ad = fake_adapter(tmp_path / name, **change)
        r = call("export_adapter", ad, "-o", tmp_path / f"ex-{name}", "--json")
        check_contract(r, json_mode=True, allowed={2}, what=name)
        assert word in r.doc["error"] and not (tmp_path / f"ex-{name}").exists()
    garbage = fake_adapter(tmp_path / "garbage")
    (garbage / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    r = call("export_adapter", garbage, "-o", tmp_path / "ex-g", "--merge", "--json")
    check_contract(r, json_mode=True, allowed={2}, what="garbage safetensors")
    assert "safetensors" in r.doc["error"]
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps({"time": 5, "args": 7, "script": ["x"]}) + "\n" + json.dumps([1, 2]) + "\n")
    r = call("audit_log", "show", "--log", log, "--json")
    check_contract(r, json_mode=True, allowed={2}, what="audit list record")
    log.write_text(json.dumps({"time": 5, "args": 7, "script": ["x"]}) + "\n")
    check_contract(call("audit_log", "show", "--log", log, "--json"), json_mode=True, allowed={0}, what="types")


def test_directories_as_file_outputs_and_non_finite_predictions(tmp_path):
    data = chat_file(tmp_path / "train.jsonl")
    (tmp_path / "adir").mkdir()
    r = call("scan_pii", data, "--nlp", "patterns", "--redact", tmp_path / "adir", "--force", "--json")
    check_contract(r, json_mode=True, allowed={2}, what="--redact DIR")
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": i, "loss": 2.0 - i / 10}) + "\n" for i in range(1, 8)))
    (tmp_path / "p.png").mkdir()
    r = call("diagnose_training", log, "--plot", tmp_path / "p.png", "--force", "--json")
    check_contract(r, json_mode=True, allowed={2}, what="--plot DIR")
    test = chat_file(tmp_path / "test.jsonl", 12)
    pred = tmp_path / "inf.jsonl"
    pred.write_text("".join('{"prediction": "x", "output_tokens": Infinity}\n' for _ in range(12)))
    r = call("evaluate", "--test", test, "--predictions-a", pred, "--predictions-b", pred, "--json")
    check_contract(r, json_mode=True, allowed={2}, what="output_tokens Infinity")
    assert "finite" in r.doc["error"]


def test_a_read_only_output_location_is_a_usage_error(tmp_path, monkeypatch):
    """(As root, permissions do not stop writes: the failure is injected where the temp file is made.)"""
    data = chat_file(tmp_path / "train.jsonl")

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    for script, args in (("scan_pii", [data, "--nlp", "patterns", "--redact", tmp_path / "r.jsonl"]),
                         ("prepare_data", [data, "-o", tmp_path / "prep"])):
        r = call(script, *args, "--json")
        check_contract(r, json_mode=True, allowed={2}, what=script)
        assert "Permission denied" in r.doc["error"]


# ------------------------------------------------------------------ 6. wrong exit codes

def test_a_plain_directory_is_not_read_as_openclaw_sessions(tmp_path):
    chat_file(tmp_path / "plain" / "a.jsonl")
    r = call("prepare_data", tmp_path / "plain", "-o", tmp_path / "out", "--json")
    check_contract(r, json_mode=True, allowed={2}, what="dir input")
    assert "plain/*.jsonl" in r.doc["error"]


def test_unknown_target_modules_fail_the_preflight(tmp_path, smollm2_dir):
    from train_support import make_tiny_model

    tiny = make_tiny_model(tmp_path / "tiny", smollm2_dir)
    data = chat_file(tmp_path / "train.jsonl")
    r = call("train_lora", "--base-model", tiny, "--train", data, "--dry-run", "--target-modules",
             "no_such_proj,q_proj", "--json")
    check_contract(r, json_mode=True, allowed={1}, what="target modules")
    probs = {p["code"]: p for p in r.doc["problems"]}
    assert "no_such_proj" in probs["target_modules_not_found"]["message"]
    assert "q_proj" in probs["target_modules_not_found"]["hint"]
    r = call("train_lora", "--base-model", tiny, "--train", data, "--dry-run", "--target-modules",
             "self_attn.q_proj,v_proj", "--json")
    assert "target_modules_not_found" not in {p["code"] for p in r.doc["problems"]}


@pytest.mark.parametrize("args", [["--top-p", "5"], ["--batch-size", "0"], ["--timeout", "-1"],
                                  ["--factor", "0"], ["--temperature", "nan"]])
def test_augment_rejects_out_of_range_generation_settings(tmp_path, args):
    data = chat_file(tmp_path / "train.jsonl")
    r = call("augment_data", data, "-o", tmp_path / "o.jsonl", "--model", "smollm2-135m", *args, "--json")
    check_contract(r, json_mode=True, allowed={2}, what=str(args))
    assert not (tmp_path / "o.jsonl").exists()


def test_audit_show_last_must_be_positive(tmp_path):
    log = tmp_path / "a.jsonl"
    log.write_text(json.dumps({"time": "t", "args": []}) + "\n")
    for v in ("-1", "0"):
        check_contract(call("audit_log", "show", "--log", log, "--last", v, "--json"), json_mode=True,
                       allowed={2}, what=v)


# ------------------------------------------------------------------ 7. exactly one stderr line on exit 2

def test_notes_are_held_back_when_the_run_cannot_run(capsys):
    parser = cli.make_parser("demo_note", "desc", cli.examples_for("demo_note", ""))

    def fails(args):
        cli.note("note: sending data to http://example.invalid")
        raise UsageError("the endpoint refused the request")

    assert cli.run(parser, fails, ["--json"]) == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == ["error: the endpoint refused the request"]
    assert json.loads(out)["notes"] == ["note: sending data to http://example.invalid"]

    def works(args):
        cli.note("note: sending data to http://example.invalid")
        return cli.Result({"ok": True}, "ok")

    assert cli.run(parser, works, []) == 0
    out, err = capsys.readouterr()
    assert out == "ok\n" and err == "note: sending data to http://example.invalid\n"


def test_judge_note_does_not_precede_an_input_error(tmp_path):
    test = chat_file(tmp_path / "test.jsonl", 12)
    r = call("evaluate", "--test", test, "--predictions-a", tmp_path / "missing.jsonl", "--predictions-b",
             tmp_path / "missing.jsonl", "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j")
    check_contract(r, json_mode=False, allowed={2}, what="judge + missing predictions")


# ------------------------------------------------------------------ 8. long texts reaching spaCy

def test_ner_windows_cover_the_text_and_keep_offsets(monkeypatch):

    from finetune_kit import pii_engine

    text = "x " * 60000
    wins = pii_engine.split_long(text, pii_engine.MAX_NER_CHARS)
    assert len(wins) > 1 and all(len(p) <= pii_engine.MAX_NER_CHARS for _o, p in wins)
    assert wins[0][0] == 0 and all(text[o:o + len(p)] == p for o, p in wins)
    assert wins[-1][0] + len(wins[-1][1]) == len(text)
    assert all(a[0] + len(a[1]) - b[0] >= pii_engine._PIECE_OVERLAP for a, b in zip(wins, wins[1:]))


def test_a_pathological_line_does_not_stall_ner_and_entities_are_still_found(monkeypatch):
    from finetune_kit import pii

    pytest.importorskip("spacy")
    try:
        engine = pii.build_engine("auto", language="en", entities="default", threshold=0.4,
                                  regions=pii.phone_regions("US"))
    except UsageError as exc:
        pytest.skip(f"no NER engine: {exc}")
    if engine.choice.mode != "spacy":
        pytest.skip("no spaCy pipeline installed")
    from finetune_kit import pii_engine

    monkeypatch.setattr(pii_engine, "MAX_NER_CHARS", 3000)  # several windows on a small text
    tail = " Please call John Smith, or write to john.smith@example.com."
    texts = ["[" * 20000 + tail, ("filler words here " * 400) + tail]
    import time

    t = time.time()
    hits = pii.Scanner(engine).analyze(texts)
    assert time.time() - t < 60  # was 118 s for the first text alone
    for text, hs in zip(texts, hits):
        found = {(h.entity_type, text[h.start:h.end]) for h in hs}
        assert ("EMAIL_ADDRESS", "john.smith@example.com") in found
        assert ("PERSON", "John Smith") in found
