"""train_lora.py mechanics on a tiny random Llama (SmolLM2 tokenizer): preflight refusals, outputs,
resume, init-adapter, packing, non-finite loss. The real-model run is in test_train_smollm2.py."""

from __future__ import annotations

import json

import pytest
from conftest import run_script
from train_support import adapter_tensors, make_tiny_model, run_main, ticket_rows, write_jsonl

COMMON = ["--batch-size", "2", "--grad-accum", "1", "--lr", "1e-2", "--lr-scheduler", "constant",
          "--warmup-steps", "0", "--logging-steps", "1", "--max-seq-length", "128"]


@pytest.fixture(scope="module")
def tiny(smollm2_dir, tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", smollm2_dir)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return {"train": write_jsonl(d / "train.jsonl", ticket_rows(16)),
            "val": write_jsonl(d / "val.jsonl", ticket_rows(10, prefix="Case", seed=1))}


@pytest.fixture(scope="module")
def trained(tiny, data, tmp_path_factory):
    """An uninterrupted 8-step run = one epoch (reference for resume and init-adapter)."""
    out = tmp_path_factory.mktemp("runs") / "full"
    code, doc, err = run_main("--base-model", tiny, "--train", data["train"], "--validation", data["val"],
                              "--output-dir", out, "--max-steps", "8", "--save-steps", "4", "--dropout", "0.1",
                              *COMMON)
    assert code == 0, err
    return out, doc


# ----------------------------------------------------------------------------- preflight

def test_dry_run_reports_labels_pad_and_memory(tiny, data):
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--validation", data["val"],
                            "--dry-run", *COMMON)
    assert code == 0 and rep["ok"] and rep["problems"] == []
    tr = rep["data"]["train"]
    assert tr["examples"] == 16 and tr["rows"] == 16 and tr["truncated_examples"] == 0
    assert 0 < tr["trainable_tokens"] < tr["total_tokens"]
    assert len(tr["sha256"]) == 64
    # SmolLM2's tokenizer: pad == eos == <|im_end|>, handled and verified on a collated batch
    pad = rep["pad_token"]
    assert pad["pad_equals_eos"] and pad["pad_token"] == "<|im_end|>" and "safe" in pad["explanation"]
    cc = pad["collation_check"]
    assert cc["ok"] and cc["end_of_turn_labels_before"] == cc["end_of_turn_labels_after"] > 0
    assert cc["padding_positions"] > 0 and cc["padding_positions_trained"] == 0
    assert rep["template"]["marks_assistant_spans"] and "<|im_end|>" in rep["template"]["end_of_turn_tokens"]
    assert rep["memory"]["estimate_gib"]["total"] > 0 and rep["memory"]["fit"]["verdict"] == "fits"
    assert rep["plan"]["total_steps"] == 24 and rep["plan"]["device"] == "cpu"  # 8 steps/epoch x 3 epochs


def test_truncation_is_refused_unless_allowed(tiny, data):
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--dry-run")
    longest = rep["data"]["train"]["tokens_per_example"]["max"]
    limit = str(longest - 2)  # cuts the end of the longest answers (and their <|im_end|>)
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--dry-run", "--max-seq-length", limit)
    assert code == 1 and not rep["ok"]
    d = rep["data"]["train"]
    (p,) = [p for p in rep["problems"] if p["code"] == "truncation"]
    assert d["truncated_examples"] > 0 and d["truncated_trainable_tokens"] > 0
    assert f"{d['truncated_examples']} of 16 examples" in p["message"] and "--allow-truncation" in p["hint"]
    assert str(longest) in p["hint"]
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--dry-run", "--max-seq-length", limit,
                            "--allow-truncation")
    assert code == 0 and [w["code"] for w in rep["warnings"]].count("truncation") == 1


def test_example_without_trainable_tokens_is_refused(tiny, tmp_path):
    rows = ticket_rows(12)
    rows[4]["messages"][2]["weight"] = 0
    f = write_jsonl(tmp_path / "w0.jsonl", rows)
    code, rep, _ = run_main("--base-model", tiny, "--train", f, "--dry-run")
    assert code == 1
    (p,) = [p for p in rep["problems"] if p["code"] == "no_trainable_tokens"]
    assert p["lines"] == [5] and "weight 0" in p["message"]


def test_tool_calls_the_template_cannot_render_are_refused(tiny, tmp_path):
    rows = ticket_rows(12)
    rows[2] = {"messages": [{"role": "user", "content": "Where is order 7?"},
                            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                                "name": "lookup_order", "arguments": "{\"id\": \"7\"}"}}]},
                            {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
                            {"role": "assistant", "content": "It shipped."}]}
    f = write_jsonl(tmp_path / "tools.jsonl", rows)
    code, rep, _ = run_main("--base-model", tiny, "--train", f, "--dry-run")
    assert code == 1
    (p,) = [p for p in rep["problems"] if p["code"] == "template_drops_tool_calls"]
    assert p["lines"] == [{"line": 3, "message_index": 1}] and "--chat-template" in p["hint"]


def test_invalid_data_is_refused_by_the_validator(tiny, tmp_path):
    rows = ticket_rows(12)
    f = tmp_path / "bad.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"messages": [{"role": "user"}]}\n'
                 + "\x00\xff garbage\n", encoding="latin-1")
    code, rep, _ = run_main("--base-model", tiny, "--train", f, "--dry-run")
    assert code == 1 and not rep["validation"]["valid"]
    codes = {p["code"] for p in rep["problems"]}
    assert any(c.startswith("invalid_data:") for c in codes)
    assert rep["data"] == {}  # nothing labelled from invalid data


def test_usage_errors_exit_2_with_one_line(tiny, data, tmp_path):
    code, doc, err = run_main("--base-model", tiny, "--train", tmp_path / "missing.jsonl", "--dry-run")
    assert code == 2 and "not found" in doc["error"]
    code, doc, err = run_main("--base-model", tiny, "--train", data["train"], "--gpu", "rtx4090",
                              "--output-dir", tmp_path / "o")
    assert code == 2 and "--dry-run" in doc["error"]  # --gpu plans for another machine, it never trains here
    bad = tmp_path / "ft.yaml"
    bad.write_text("base_model: x\ntraining:\n  batch_sz: 4\n  learning_rate: 2e-4\n", encoding="utf-8")
    code, doc, err = run_main("--config", bad, "--dry-run")
    assert code == 2 and "did you mean 'training.batch_size'" in doc["error"]
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00: [")
    code, doc, err = run_main("--config", garbage, "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    code, doc, err = run_main("--base-model", tiny, "--train", data["train"])
    assert code == 2 and "--output-dir" in doc["error"]


def test_missing_tracker_package_is_a_usage_error(tiny, data):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    code, doc, _ = run_main("--base-model", tiny, "--train", data["train"], "--report-to", "wandb", "--dry-run")
    assert code == 2 and "pip install wandb" in doc["error"]


def test_unsloth_request_without_unsloth_warns_and_continues(tiny, data):
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--use-unsloth", "--dry-run")
    assert code == 0 and rep["ok"]
    (w,) = [w for w in rep["warnings"] if w["code"] == "unsloth_unavailable"]
    assert "plain transformers + PEFT path" in w["message"]


def test_tokenizer_without_pad_token_gets_an_existing_token(smollm2_dir):
    from transformers import AutoTokenizer

    from finetune_kit import train

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    n = len(tok)
    tok.pad_token = None
    info = train.choose_pad_token(tok)
    assert info["pad_token"] == tok.unk_token == "<|endoftext|>" and not info["pad_equals_eos"]
    assert "no new token" in info["action"] and len(tok) == n


def test_script_by_path_bad_flag_and_no_traceback(tmp_path):
    cp = run_script("train_lora", "--epochs", "many")
    assert cp.returncode == 2 and cp.stderr.count("\n") == 1 and "Traceback" not in cp.stderr
    cp = run_script("train_lora", "--base-model", "no/such-model-here", "--train", tmp_path / "x.jsonl",
                    "--dry-run")
    assert cp.returncode == 2 and "Traceback" not in cp.stderr


# ----------------------------------------------------------------------------- training

def test_training_outputs_and_no_clobber(trained, tiny):
    out, doc = trained
    assert doc["stage"] == "trained" and doc["ok"]
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
                 "training_log.jsonl", "run_manifest.json", "loss_curve.png", "preflight.json"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ac = json.loads((out / "adapter_config.json").read_text())
    assert ac["base_model_name_or_path"] == str(tiny.resolve())
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()
    rows = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(set(r) == {"step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s"} for r in rows)
    assert all(r["tokens_per_s"] and r["tokens_per_s"] > 0 and r["loss"] > 0 for r in rows)
    assert [r["step"] for r in rows if r["eval_loss"] is not None] == [4, 8]  # eval merged into its step
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["status"] == "completed" and m["steps"] == 8
    assert m["data"]["train"]["sha256"] and m["packages"]["trl"] and m["packages"]["peft"]
    assert m["trainable_params"] > 0 and m["trainable_params"] < m["total_params"]
    assert m["peak_memory"]["gib"] > 0 and m["duration_s"] > 0 and m["config"]["lora"]["dropout"] == 0.1
    assert m["best_eval_loss"] == min(r["eval_loss"] for r in rows if r["eval_loss"] is not None)
    # one epoch: every real token counted once, padding not counted (examples differ in length)
    assert m["tokens_trained"] == doc["preflight"]["data"]["train"]["total_tokens"]
    # no clobber without --force (refused before the preflight), and --force only on our own dirs
    code, doc, _ = run_main("--base-model", tiny, "--train", m["data"]["train"]["file"], "--output-dir", out)
    assert code == 2 and "--force" in doc["error"]


def test_force_refuses_a_foreign_directory(tiny, data, tmp_path):
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, doc, _ = run_main("--base-model", tiny, "--train", data["train"], "--output-dir", foreign, "--force")
    assert code == 2 and "does not look like" in doc["error"] and (foreign / "notes.txt").exists()


def test_resume_after_stop_reaches_the_same_weights(trained, tiny, data, tmp_path):
    full, _ = trained
    part = tmp_path / "part"
    code, _, err = run_main("--base-model", tiny, "--train", data["train"], "--validation", data["val"],
                            "--output-dir", part, "--max-steps", "4", "--save-steps", "4", "--dropout", "0.1",
                            *COMMON)
    assert code == 0, err
    assert (part / "checkpoints" / "checkpoint-4").is_dir()
    # --resume needs only the directory: the config comes from its run_manifest.json
    code, doc, err = run_main("--output-dir", part, "--resume", "--max-steps", "8")
    assert code == 0, err
    m = doc["manifest"]
    assert m["steps"] == 8 and m["resumed_from"].endswith("checkpoint-4") and m["previous_runs"]
    a, b = adapter_tensors(full), adapter_tensors(part)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-6, k
    steps = [json.loads(x)["step"] for x in (part / "training_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    # resuming on different data is refused: that is what --init-adapter is for
    other = write_jsonl(tmp_path / "other.jsonl", ticket_rows(12, prefix="Other", seed=5))
    code, doc, _ = run_main("--output-dir", part, "--resume", "--train", other, "--max-steps", "9")
    assert code == 2 and "--init-adapter" in doc["error"]


def test_init_adapter_starts_from_the_given_weights(trained, tiny, data, tmp_path):
    full, ref_doc = trained
    args = ["--base-model", tiny, "--train", data["train"], "--max-steps", "1", *COMMON, "--lr", "1e-9"]
    code, doc, err = run_main(*args, "--init-adapter", full, "--output-dir", tmp_path / "cont")
    assert code == 0, err
    assert {w["code"] for w in doc["preflight"]["warnings"]} >= {"init_adapter_lora_settings"}
    code, fresh_doc, err = run_main(*args, "--output-dir", tmp_path / "fresh")
    assert code == 0, err
    start, cont, fresh = adapter_tensors(full), adapter_tensors(tmp_path / "cont"), adapter_tensors(tmp_path / "fresh")
    assert start.keys() == cont.keys() == fresh.keys()
    b_keys = [k for k in start if "lora_B" in k]
    for k in start:  # one step at lr 1e-9 barely moves the given weights
        assert (start[k] - cont[k]).abs().max().item() < 1e-6, k
    assert all(start[k].abs().max().item() > 1e-3 for k in b_keys)      # the trained adapter's B is non-zero
    assert all(fresh[k].abs().max().item() < 1e-6 for k in b_keys)      # a fresh adapter starts at B = 0
    # the continued run starts where the given adapter ended: lower first loss than a fresh adapter
    assert doc["manifest"]["first_loss"] < fresh_doc["manifest"]["first_loss"]


def test_packing_keeps_labels_and_isolates_sequences(tiny, data, tmp_path):
    import torch

    from finetune_kit import train, train_config

    cfg = train_config.build(None, {"base_model": str(tiny), "train": str(data["train"]), "packing": True,
                                    "batch_size": 4, "max_seq_length": 128})
    p = train.preflight(cfg)
    assert p.report["ok"]
    trainer, _ = train.build_trainer(p, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    ids, labels, pos = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist() + [len(ids)]
    assert len(starts) > 2  # several examples in one row
    by_ids = {tuple(r["input_ids"]): r["labels"] for r in p.rows["train"]}
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        for a, b in zip(starts, starts[1:]):
            seg = tuple(ids[a:b].tolist())
            assert seg in by_ids, "a packed segment is not one whole example"
            assert labels[a:b].tolist() == by_ids[seg]  # our labels, untouched
            alone = model(input_ids=ids[a:b][None]).logits[0]
            assert torch.allclose(packed[a:b], alone, atol=1e-4), "packed sequences attend to each other"


def test_non_finite_loss_aborts_with_exit_1(smollm2_dir, data, tmp_path):
    bad = make_tiny_model(tmp_path / "poisoned", smollm2_dir, poison=True)
    code, doc, err = run_main("--base-model", bad, "--train", data["train"], "--output-dir", tmp_path / "nan",
                              "--max-steps", "3", *COMMON)
    assert code == 1 and "non-finite" in doc["error"] and "--lr" in doc["error"]
    m = json.loads((tmp_path / "nan" / "run_manifest.json").read_text())
    assert m["status"] == "failed" and "non-finite" in m["error"]
    assert not (tmp_path / "nan" / "adapter_model.safetensors").exists()


def test_resume_after_a_real_kill(tiny, data, tmp_path):
    """SIGKILL the training process once a checkpoint exists; --resume finishes the run with a clean log."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import SCRIPTS

    out = tmp_path / "killed"
    cmd = [sys.executable, str(SCRIPTS / "train_lora.py"), "--base-model", str(tiny), "--train", str(data["train"]),
           "--output-dir", str(out), "--max-steps", "100000", "--save-steps", "2", *COMMON]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "FT_NO_PROGRESS": "1"})
    try:
        deadline = time.time() + 240
        while not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
            assert proc.poll() is None and time.time() < deadline, "training never reached checkpoint-2"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((out / "run_manifest.json").read_text())["status"] == "running"  # died mid-run
    assert not (out / "adapter_model.safetensors").exists()
    code, doc, err = run_main("--output-dir", out, "--resume", "--max-steps", "6")
    assert code == 0, err
    m = doc["manifest"]
    assert m["status"] == "completed" and m["steps"] == 6 and m["previous_runs"][-1]["status"] == "running"
    steps = [json.loads(x)["step"] for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (out / "adapter_model.safetensors").is_file()


def test_trl_neither_truncates_at_1024_nor_remasks(tiny, tmp_path):
    """TRL's SFTConfig defaults to max_length=1024 and truncates silently; our rows must reach it intact."""
    from finetune_kit import train, train_config

    rows = ticket_rows(12)
    rows[3]["messages"][1]["content"] = "details: " + " ".join(f"item{i} refund" for i in range(450))
    rows[3]["messages"][2]["content"] = " ".join(["billing"] * 600)  # a long, fully trainable answer
    f = write_jsonl(tmp_path / "long.jsonl", rows)
    cfg = train_config.build(None, {"base_model": str(tiny), "train": str(f), "max_seq_length": 4096,
                                    "batch_size": 2})
    p = train.preflight(cfg)
    assert p.report["ok"] and p.report["data"]["train"]["tokens_per_example"]["max"] > 1500
    trainer, _ = train.build_trainer(p, tmp_path / "out")
    ours = sorted((r["input_ids"], r["labels"]) for r in p.rows["train"])
    theirs = sorted((r["input_ids"], r["labels"]) for r in trainer.train_dataset)
    assert theirs == ours  # same rows, same lengths (> 1024), same labels


def test_early_stopping_keeps_the_best_checkpoint(tiny, data, tmp_path):
    out = tmp_path / "es"
    code, doc, err = run_main("--base-model", tiny, "--train", data["train"], "--validation", data["val"],
                              "--output-dir", out, "--max-steps", "12", "--eval-steps", "1", "--save-steps", "1",
                              "--early-stopping-patience", "1", *COMMON, "--lr", "0.9")
    assert code == 0, err
    m = doc["manifest"]
    rows = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval_loss"]) for r in rows if r["eval_loss"] is not None]
    assert m["steps"] < 12 and len(evals) == m["steps"]  # stopped early, evaluated every step
    best_step = min(evals, key=lambda e: e[1])[0]
    assert m["best_checkpoint"].endswith(f"checkpoint-{best_step}") and m["best_eval_loss"] == min(e for _, e in evals)
    # the saved adapter is the best checkpoint's, not the last step's
    best = adapter_tensors(out / "checkpoints" / f"checkpoint-{best_step}")
    final = adapter_tensors(out)
    assert all((best[k] - final[k]).abs().max().item() == 0 for k in best)
