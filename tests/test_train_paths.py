"""Every training path a GPU user takes, run for real on CPU with a tiny random Llama (SmolLM2 tokenizer):
QLoRA (bitsandbytes' CPU backend) end to end through evaluate.py and export_adapter.py --merge, bf16,
gradient checkpointing, 2-process DDP under accelerate launch (+ resume), the plan for a --gpu target,
eval/save cadence and offline memory planning. Packing, early stopping and --resume: test_train.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, SCRIPTS, run_json
from train_support import adapter_tensors, make_tiny_model, run_main, ticket_rows, write_jsonl

COMMON = ["--batch-size", "2", "--grad-accum", "1", "--lr", "1e-2", "--lr-scheduler", "constant",
          "--warmup-steps", "0", "--logging-steps", "1", "--max-seq-length", "128", "--dropout", "0"]


@pytest.fixture(scope="module")
def tiny(smollm2_dir, tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", smollm2_dir)


@pytest.fixture(scope="module")
def tiny64(smollm2_dir, tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny64") / "model", smollm2_dir, hidden=64)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return {"train": write_jsonl(d / "train.jsonl", ticket_rows(16)),
            "val": write_jsonl(d / "val.jsonl", ticket_rows(10, prefix="Case", seed=1))}


def _losses(out) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "training_log.jsonl").read_text().splitlines())
            if r["loss"] is not None]


# ----------------------------------------------------------------------------- QLoRA

@pytest.fixture(scope="module")
def qlora_run(tiny64, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("qlora") / "adapter"
    code, doc, err = run_main("--base-model", tiny64, "--train", data["train"], "--validation", data["val"],
                              "--output-dir", out, "--method", "qlora", "--max-steps", "6", "--eval-steps", "3",
                              *COMMON)
    assert code == 0, err
    return out, doc


def test_qlora_preflight_estimates_nf4_weights(tiny64, data):
    code, rep, _ = run_main("--base-model", tiny64, "--train", data["train"], "--method", "qlora", "--dry-run",
                            *COMMON)
    assert code == 0 and rep["ok"]
    assert rep["plan"]["quantization"]["bnb_4bit_quant_type"] == "nf4"
    mem = rep["memory"]
    assert 4.1 < mem["weight_bits_per_param"] < 4.2 and mem["inputs"]["method"] == "qlora"
    code, lora, _ = run_main("--base-model", tiny64, "--train", data["train"], "--dry-run", *COMMON)
    assert mem["estimate_gib"]["weights"] <= lora["memory"]["estimate_gib"]["weights"]


def test_qlora_trains_nf4_layers_and_saves(qlora_run):
    out, doc = qlora_run
    m = doc["manifest"]
    assert m["status"] == "completed" and m["steps"] == 6 and m["packages"]["bitsandbytes"]
    assert m["plan"]["quantization"]["load_in_4bit"] and m["config"]["method"] == "qlora"
    losses = _losses(out)
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert m["best_eval_loss"] is not None  # evaluated on the 4-bit model during training
    ac = json.loads((out / "adapter_config.json").read_text())
    assert ac["r"] == 16 and {t.split(".")[-1] for t in ac["target_modules"]} >= {"q_proj", "down_proj"}
    assert any(abs(t).max() > 0 for k, t in adapter_tensors(out).items() if "lora_B" in k)


def test_qlora_adapter_reloads_on_the_nf4_base(qlora_run, tiny64):
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel

    out, doc = qlora_run
    base = _nf4_base(tiny64, doc["manifest"]["plan"])
    assert any(isinstance(mod, bnb.nn.Linear4bit) for mod in base.modules())
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(out)).eval()
        after = tuned(input_ids=ids).logits
    assert torch.isfinite(after).all() and (after - before).abs().max() > 1e-3  # the adapter is applied


@pytest.mark.slow
def test_qlora_adapter_evaluates_and_merges_into_the_dequantized_base(qlora_run, tiny64, data, tmp_path):
    import peft
    import torch
    import transformers

    out, _ = qlora_run
    code, doc = run_json("evaluate", "--base-model", tiny64, "--adapter", out, "--test", data["val"],
                         "--max-new-tokens", "4", "--batch-size", "10", "--bootstrap", "200",
                         "--output-dir", tmp_path / "eval")
    assert code in (0, 1), doc
    assert doc["n"] == 10 and doc["b"]["kind"] == "adapter"

    code, doc = run_json("export_adapter", out, "--output-dir", tmp_path / "export", "--merge",
                         "--dtype", "fp32")
    assert code == 0, doc
    m = doc["merge"]
    assert m["passed"] and m["base_weights"].startswith("dequantized NF4")
    assert m["merge_check"]["passed"] and m["merge_check"]["max_abs_diff"] <= m["merge_check"]["tolerance"]
    # independent check: the merged folder matches the QLoRA model (adapter on the NF4 base) it was trained as,
    # and merging into the original fp32 weights instead would be visibly off
    from finetune_kit import train_plan

    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    merged = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export" / "merged"),
                                                               dtype=torch.float32)
    qbase = _nf4_base(tiny64, {"quantization": train_plan.quantization_config("fp32"), "dtype": "fp32"})
    full = transformers.AutoModelForCausalLM.from_pretrained(str(tiny64), dtype=torch.float32)
    with torch.no_grad():
        want = peft.PeftModel.from_pretrained(qbase, str(out)).eval()(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        naive = peft.PeftModel.from_pretrained(full, str(out)).merge_and_unload()(input_ids=ids).logits
    assert (got - want).abs().max().item() < 1e-3
    assert (naive - want).abs().max().item() > 10 * (got - want).abs().max().item()


def _nf4_base(model_dir, plan: dict):
    """The base as the QLoRA run loaded it: NF4 linear layers (bitsandbytes), from the plan's settings."""
    import transformers

    from finetune_kit import trainer

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(model_dir), **trainer.load_kwargs(plan, {"kind": "cpu"}, None))
    trainer.portable_4bit(model)
    return model.eval()


# ----------------------------------------------------------------------------- bf16, gradient checkpointing

class _Probe:
    """A trainer callback that records what the trainer really runs with."""

    def __new__(cls):
        import transformers

        class P(transformers.TrainerCallback):
            seen: dict = {}

            def on_train_begin(self, args, state, control, model=None, **kw):
                base = [p for n, p in model.named_parameters() if "lora_" not in n and "embed" not in n]
                lora = [p for n, p in model.named_parameters() if "lora_" in n]
                self.seen.update({"base_dtype": str(base[0].dtype), "lora_dtype": str(lora[0].dtype),
                                  "bf16": args.bf16, "checkpointing": bool(getattr(
                                      model, "is_activation_checkpointing", None)
                                      if hasattr(model, "is_activation_checkpointing")
                                      else model.is_gradient_checkpointing)})
        return P()


def _run_api(tiny, data, out, **flags):
    from finetune_kit import train, train_config

    base = {"base_model": str(tiny), "train": str(data["train"]), "batch_size": 2, "grad_accum": 1, "lr": 1e-2,
            "lr_scheduler": "constant", "warmup_steps": 0, "logging_steps": 1, "max_seq_length": 128,
            "dropout": 0.0, "max_steps": 2}
    cfg = train_config.build(None, {**base, **flags})
    p = train.preflight(cfg)
    assert p.report["ok"], p.report["problems"]
    probe = _Probe()
    m = train.train(p, output_dir=str(out), callbacks=[probe])
    return p.report, m, probe.seen


def test_bf16_on_cpu_trains_in_bfloat16(tiny, data, tmp_path):
    rep, m, seen = _run_api(tiny, data, tmp_path / "bf16", bf16=True)
    assert rep["plan"]["dtype"] == "bf16" and rep["memory"]["inputs"]["dtype"] == "bf16"
    assert "bf16_on_cpu" in {w["code"] for w in rep["warnings"]}  # said, not silently ignored
    assert seen["base_dtype"] == "torch.bfloat16" and seen["bf16"] is True
    assert seen["lora_dtype"] == "torch.float32"  # PEFT keeps the trained weights in fp32
    assert m["status"] == "completed" and all(map(lambda x: x == x, _losses(tmp_path / "bf16")))


def test_gradient_checkpointing_recomputes_the_same_loss(tiny, data, tmp_path):
    _, m_on, seen_on = _run_api(tiny, data, tmp_path / "ckpt", gradient_checkpointing=True)
    _, m_off, seen_off = _run_api(tiny, data, tmp_path / "nockpt", gradient_checkpointing=False)
    assert seen_on["checkpointing"] is True and seen_off["checkpointing"] is False
    assert m_on["plan"]["gradient_checkpointing"] and not m_off["plan"]["gradient_checkpointing"]
    on, off = _losses(tmp_path / "ckpt"), _losses(tmp_path / "nockpt")
    assert len(on) == len(off) == 2
    assert on == pytest.approx(off, rel=1e-5)  # same math, recomputed in backward
    a, b = adapter_tensors(tmp_path / "ckpt"), adapter_tensors(tmp_path / "nockpt")
    assert all((a[k] - b[k]).abs().max().item() < 1e-5 for k in a)


# ----------------------------------------------------------------------------- DDP (2 CPU processes)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(n: int, *args) -> tuple[int, str, str]:
    # torchrun (= `python -m torch.distributed.run`): accelerate launch --cpu starts one process unless MPI is set up
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
           str(_free_port()), str(SCRIPTS / "train_lora.py"), *map(str, args), "--json"]
    env = {**os.environ, "FT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "FT_CPU_THREADS": "1"}
    cp = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    return cp.returncode, cp.stdout, cp.stderr


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_and_resume(tiny, data, tmp_path):
    common = [*COMMON, "--lr", "5e-3"]
    single = tmp_path / "single"
    code, doc, err = run_main("--base-model", tiny, "--train", data["train"], "--output-dir", single,
                              "--max-steps", "4", "--save-steps", "2", *common, "--batch-size", "4")
    assert code == 0, err
    ddp = tmp_path / "ddp"
    code, stdout, stderr = _launch(2, "--base-model", tiny, "--train", data["train"], "--output-dir", ddp,
                                   "--max-steps", "2", "--save-steps", "2", *common, "--batch-size", "2")
    assert code == 0, stderr[-3000:]
    docs = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert len(docs) == 1  # rank 0 alone prints its JSON document
    m = docs[0]["manifest"]
    assert m["distributed"]["world_size"] == 2 and m["distributed"]["backend"] == "gloo"
    assert m["distributed"]["global_batch"] == 4 and m["distributed"]["launcher"] == "torchrun"
    assert m["plan"]["steps_per_epoch"] == 4  # 16 rows / (2 per process x 2 processes)
    first_tokens = m["tokens_trained"]
    # resume under DDP to step 4: same global batch and data order as the single process
    code, stdout, stderr = _launch(2, "--output-dir", ddp, "--resume", "--max-steps", "4")
    assert code == 0, stderr[-3000:]
    m = json.loads(stdout)["manifest"]
    assert m["steps"] == 4 and m["resumed_from"].endswith("checkpoint-2")
    # exactly one adapter, one manifest, one log (rank 0), no per-rank copies
    names = sorted(p.name for p in ddp.iterdir())
    assert names.count("adapter_model.safetensors") == 1 and names.count("run_manifest.json") == 1
    assert not [n for n in names if n.startswith((".adapter", "rank"))]
    steps = [json.loads(x)["step"] for x in (ddp / "training_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert _losses(ddp) == pytest.approx(_losses(single), rel=2e-3)
    a, b = adapter_tensors(single), adapter_tensors(ddp)
    worst = max((a[k] - b[k]).abs().max().item() / max(a[k].abs().max().item(), 1e-8) for k in a)
    assert worst < 2e-2, worst
    # real tokens are counted over both processes: both DDP sessions together = the single-process run
    assert first_tokens + m["tokens_trained"] == doc["manifest"]["tokens_trained"]


# ----------------------------------------------------------------------------- plan: cadence, --gpu target

def test_eval_and_save_cadence_follow_the_planned_steps(tiny, data):
    # 16 examples, batch 2 -> 8 steps/epoch x 3 epochs = 24 steps: ~10 evaluations, not "every 100 steps"
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--validation", data["val"],
                            "--dry-run", *COMMON)
    plan = rep["plan"]
    assert code == 0 and plan["total_steps"] == 24
    assert plan["eval_steps"] == plan["save_steps"] == 3 and plan["evaluations"] == 8 and plan["checkpoints"] == 8
    assert plan["cadence_source"].startswith("derived")


def test_early_stopping_that_cannot_trigger_is_refused(tiny, data):
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--validation", data["val"],
                            "--dry-run", "--eval-steps", "12", "--early-stopping-patience", "3", *COMMON)
    assert code == 1
    (p,) = [p for p in rep["problems"] if p["code"] == "early_stopping_cannot_trigger"]
    assert "2 evaluation(s)" in p["message"] and "--eval-steps" in p["hint"]
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--validation", data["val"],
                            "--dry-run", "--early-stopping-patience", "3", *COMMON)
    assert code == 0 and rep["plan"]["evaluations"] >= 4  # the derived cadence makes it possible
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--validation", data["val"],
                            "--dry-run", "--save-steps", "100", "--eval-steps", "100", *COMMON)
    assert code == 0 and {"never_evaluates", "no_checkpoint_before_end"} <= {w["code"] for w in rep["warnings"]}


def test_dry_run_for_a_gpu_describes_the_gpu(tiny, data):
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--dry-run", "--gpu", "rtx4090",
                            "--method", "qlora", *COMMON)
    assert code == 0
    plan = rep["plan"]
    assert plan["device"] == "cuda" and plan["machine"] == "NVIDIA GeForce RTX 4090"
    assert plan["planned_for"] == "target (--gpu)"
    assert plan["dtype"] == "bf16" and plan["gradient_checkpointing"] is True
    assert plan["quantization"]["bnb_4bit_compute_dtype"] == "bfloat16"
    assert plan["throughput_estimate"]["tokens_per_s"] is None  # a tiny model: no FLOP-scaled speed
    from finetune_kit import train_plan

    te = train_plan.throughput_estimate("qlora", 8_030_261_248, {"tflops_bf16": 165}, 100, 16, 2048, 10**6, 1.0)
    assert te["tokens_per_s"] == 2413 and "not a measurement" in te["basis"]  # the published reference itself
    assert te["train_minutes"] == round(10**6 / 2413 / 60, 2)
    assert te["lower_bound"] is False                     # packed 2,048-token rows: the reference's own setup
    # training.md's recipe: ~100-token examples, batch 1, no packing -> the minutes are only a lower bound
    short = train_plan.throughput_estimate("lora", 8_030_261_248, {"tflops_bf16": 165}, 300, 16, 2048, 30_000, 1.0,
                                           packing=False, rows=300, per_device_batch=1)
    assert short["lower_bound"] is True and short["tokens_per_step"] == 100
    assert "LOWER BOUND" in short["assumptions"] and "--packing" in short["assumptions"]
    assert rep["memory"]["device"]["name"] == "NVIDIA GeForce RTX 4090" and rep["memory"]["inputs"]["dtype"] == "bf16"
    assert rep["device"]["kind"] == "cpu"  # this machine is still reported, separately
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--dry-run", *COMMON)
    assert rep["plan"]["device"] == "cpu" and rep["plan"]["dtype"] == "fp32" and "throughput_estimate" not in rep["plan"]


def test_cache_location_and_size_are_reported(data):
    code, rep, _ = run_main("--base-model", "smollm2-135m", "--train", data["train"], "--dry-run", *COMMON)
    assert code == 0
    c = rep["cache"]
    assert c["exists"] and c["size_mb"] > 100 and "FT_CACHE_DIR" in c["note"]
    assert c["dir"].startswith(os.environ["FT_CACHE_DIR"])


# ----------------------------------------------------------------------------- memory planning offline

def test_memory_only_for_an_unlisted_model_offline(tmp_path):
    from conftest import run_script

    cp = run_script("train_lora", "--memory-only", "--base-model", "Qwen/Qwen3-4B-Instruct-2507",
                    env={"HF_HUB_OFFLINE": "1"})
    assert cp.returncode == 2 and cp.stderr.count("\n") == 1 and "Traceback" not in cp.stderr
    assert "--model-config" in cp.stderr and "llama-3.1-8b" in cp.stderr
    cfg = tmp_path / "config.json"  # the shape of a Qwen3-4B-class config.json (public model card fields)
    cfg.write_text(json.dumps({"model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728,
                               "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                               "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True}))
    code, doc = run_json("train_lora", "--memory-only", "--model-config", cfg, "--gpu", "rtx4090",
                         "--method", "qlora")
    assert code == 0 and doc["estimates"]["rtx4090"]["fit"]["verdict"] == "fits"
    assert 3.9e9 < doc["estimates"]["rtx4090"]["base_params"] < 4.1e9
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    cp = run_script("train_lora", "--memory-only", "--model-config", bad)
    assert cp.returncode == 2 and "config.json object" in cp.stderr


def test_dry_run_of_an_uncached_hub_model_offline_fails_fast_with_the_offline_route(tmp_path):
    """No 45 s of hub retries: one line naming --memory-only with the preset alias or --model-config."""
    import time

    from conftest import run_script

    train = tmp_path / "t.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "hello"}]}) + "\n")
    t0 = time.monotonic()
    cp = run_script("train_lora", "--dry-run", "--gpu", "rtx4090", "--base-model", "Qwen/Qwen3.5-9B",
                    "--train", train, "--output-dir", tmp_path / "run", env={"HF_HUB_OFFLINE": "1"})
    assert time.monotonic() - t0 < 40
    assert cp.returncode == 2 and cp.stderr.count("\n") == 1 and "Traceback" not in cp.stderr
    assert "--memory-only --base-model qwen3.5-9b" in cp.stderr and "--model-config config.json" in cp.stderr


def test_fsdp_planning_shards_a_70b_qlora_over_two_24gb_gpus():
    code, one, _ = run_main("--memory-only", "--base-model", "llama-3.3-70b", "--method", "qlora", "--gpu",
                            "rtx4090", "--batch-size", "1", "--max-seq-length", "2048")
    code2, two, _ = run_main("--memory-only", "--base-model", "llama-3.3-70b", "--method", "qlora", "--gpu",
                             "rtx4090", "--batch-size", "1", "--max-seq-length", "2048", "--fsdp-gpus", "2")
    assert code == code2 == 0
    e1, e2 = one["estimates"]["rtx4090"], two["estimates"]["rtx4090"]
    assert e1["fit"]["verdict"] == "does_not_fit"
    assert e2["estimate_gib"]["weights"] < 0.6 * e1["estimate_gib"]["weights"]
    assert e2["inputs"]["shards"] == 2


def test_settings_the_device_cannot_honour_are_named(tiny, data, monkeypatch):
    from finetune_kit import train_config, train_plan

    # an old bitsandbytes without the CPU backend: refused in the preflight, with the fix
    monkeypatch.setattr(train_plan, "_bnb_version", lambda: (0, 49))
    code, rep, _ = run_main("--base-model", tiny, "--train", data["train"], "--method", "qlora", "--dry-run", *COMMON)
    assert code == 1
    (p,) = [p for p in rep["problems"] if p["code"] == "qlora_needs_bitsandbytes"]
    assert ">= 0.50" in p["message"] and "0.49" in p["message"] and "pip install" in p["hint"]
    # devices this machine is not (described, since none is here): Apple MPS and a pre-Ampere GPU
    cfg = train_config.build(None, {"method": "qlora", "bf16": True})
    mps = train_plan.device_problems(cfg, {"device": "mps"}, {"kind": "mps", "name": "Apple MPS"})
    assert {d["code"] for d in mps} == {"qlora_unsupported_device", "bf16_unsupported"}
    monkeypatch.setattr(train_plan, "_bnb_version", lambda: (0, 50))
    v100 = train_plan.device_problems(cfg, {"device": "cuda"}, {"kind": "cuda", "name": "Tesla V100", "bf16": False})
    assert [d["code"] for d in v100] == ["bf16_unsupported"] and "--bf16 off" in v100[0]["hint"]
