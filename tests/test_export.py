"""export_adapter.py: Ollama Modelfile, vLLM command, OpenClaw patch, verified merge.

Adapters are real PEFT LoRA adapters created here on the real SmolLM2-135M-Instruct
(init_lora_weights=False so the adapter changes the logits and the merge matters). Variants
(DoRA, rsLoRA, modules_to_save, larger ranks) are the same weights with the flag set in
adapter_config.json: the compatibility warnings read the config, not the weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import SCRIPTS, run_json, run_script

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from finetune_kit import export  # noqa: E402
from finetune_kit.errors import BlockingProblem, UsageError  # noqa: E402

from chat_templates import ALPACA, GEMMA, LLAMA3  # noqa: E402



@pytest.fixture(scope="module")
def adapter_dir(smollm2_dir, tmp_path_factory):
    """A real LoRA adapter (r=4 on q/v) with the tokenizer saved beside it, as train_lora.py does."""
    d = tmp_path_factory.mktemp("adapters") / "ticket-router"
    base = transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                          task_type="CAUSAL_LM")
    pm = peft.get_peft_model(base, cfg)
    pm.save_pretrained(str(d))
    transformers.AutoTokenizer.from_pretrained(str(smollm2_dir)).save_pretrained(str(d))
    return d


def variant(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    p = dst / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg.update(changes)
    p.write_text(json.dumps(cfg))
    return dst


def codes(doc):
    return {w["code"] for w in doc["warnings"]}


# ----------------------------------------------------------------------------- units

@pytest.mark.parametrize("r,want", [(1, 1), (2, 8), (8, 8), (9, 16), (16, 16), (17, 32), (64, 64),
                                    (100, 128), (257, 320), (320, 320), (400, 512), (512, 512), (513, None)])
def test_vllm_rank_rounding(r, want):
    assert export.vllm_rank(r) == want


def test_compare_logits_catches_a_corrupted_merge():
    torch.manual_seed(1)
    ref = [torch.randn(7, 50) * 10, torch.randn(3, 50) * 10]
    same = [t + 1e-6 for t in ref]
    ok = export.compare_logits(ref, same, atol=1e-3, rtol=1e-4)
    assert ok["passed"] and ok["max_abs_diff"] < 1e-5 and ok["top1_agreement"] == 1.0
    corrupted = [ref[0].clone(), ref[1] + 0.5]   # e.g. a LoRA delta applied twice or not at all
    bad = export.compare_logits(ref, corrupted, atol=1e-3, rtol=1e-4)
    assert not bad["passed"] and bad["max_abs_diff"] == pytest.approx(0.5, rel=1e-4)
    nan = export.compare_logits(ref, [ref[0], ref[1] * float("nan")], atol=1e-3, rtol=1e-4)
    assert not nan["passed"]
    wrong_shape = export.compare_logits(ref, [ref[0][:-1], ref[1]], atol=1e-3, rtol=1e-4)
    assert not wrong_shape["passed"]


def test_template_families_detected_and_reproduced(smollm2_dir):
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2_dir))
    info = export.detect_template(tok)   # SmolLM2's own ChatML template with a default system prompt
    assert info["family"] == "chatml" and info["matches_tokenizer"] and info["checked_conversations"] == 4
    assert info["stop"][0] == "<|im_end|>"
    assert info["default_system"].startswith("You are a helpful AI assistant named SmolLM")
    tok.chat_template = LLAMA3
    info = export.detect_template(tok)
    assert info["family"] == "llama3" and info["matches_tokenizer"] and "<|eot_id|>" in info["stop"]
    assert info["default_system"] is None
    tok.chat_template = GEMMA
    info = export.detect_template(tok)
    assert info["family"] == "gemma" and info["matches_tokenizer"] and "<end_of_turn>" in info["stop"]
    tok.chat_template = ALPACA
    info = export.detect_template(tok)
    assert info["family"] is None and "not ChatML" in info["reason"]


def test_template_that_differs_is_flagged(smollm2_dir):
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2_dir))
    # ChatML turns, but the assistant turn is rendered with a trailing tag Ollama's template lacks
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    info = export.detect_template(tok)
    assert info["family"] == "chatml" and not info["matches_tokenizer"]


# ----------------------------------------------------------------------------- end to end (CLI)

def snapshot(d: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def test_export_writes_modelfile_vllm_openclaw(adapter_dir, tmp_path):
    out = tmp_path / "export"
    before = snapshot(adapter_dir)
    code, doc = run_json("export_adapter", adapter_dir, "--output-dir", out)
    assert code == 0, doc
    assert {"Modelfile", "README.md", "vllm_serve.sh", "openclaw.patch.json5", "export_manifest.json",
            "adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(doc["files"])
    for f in doc["files"]:
        assert (out / f).is_file(), f
    mf = (out / "Modelfile").read_text()
    lines = mf.splitlines()
    from_ = next(ln for ln in lines if ln.startswith("FROM "))
    assert from_.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and Path(from_[5:]).is_file()
    assert "ADAPTER ./adapter" in lines
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n' in mf
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert any(ln.startswith('SYSTEM """You are a helpful AI assistant named SmolLM') for ln in lines)
    assert doc["chat_template"]["family"] == "chatml" and doc["chat_template"]["matches_tokenizer"]
    assert doc["base_model"]["architecture"] == "llama"
    assert doc["ollama"]["ready"] and doc["vllm"]["ready"] and doc["warnings"] == []
    assert doc["vllm"]["max_lora_rank"] == 8
    cmd = doc["vllm"]["command"]
    assert cmd.startswith("vllm serve ") and "--enable-lora" in cmd
    assert f"--lora-modules ticket-router={out.resolve()}/adapter" in cmd and "--max-lora-rank 8" in cmd
    patch = doc["openclaw"]["patch"]
    prov = patch["models"]["providers"]["ollama"]
    assert prov["api"] == "ollama" and "/v1" not in prov["baseUrl"]
    assert prov["models"][0]["id"] == "ticket-router" and doc["openclaw"]["model_ref"] == "ollama/ticket-router"
    text = (out / "openclaw.patch.json5").read_text()
    assert "adapter:" in text and "weight: 1.0" in text and "tags:" in text and "openclaw.json" in text
    readme = (out / "README.md").read_text()
    for needle in ("## Ollama", "## vLLM", "## Merged model", "## OpenClaw", "ollama create ticket-router",
                   "convert_hf_to_gguf.py", "openclaw config patch"):
        assert needle in readme, needle
    assert json.loads((out / "export_manifest.json").read_text())["name"] == "ticket-router"
    # the adapter itself was not touched
    assert snapshot(adapter_dir) == before


def test_no_clobber_without_force(adapter_dir, tmp_path):
    out = tmp_path / "export"
    assert run_script("export_adapter", adapter_dir, "--output-dir", out).returncode == 0
    mtime = (out / "Modelfile").stat().st_mtime_ns
    cp = run_script("export_adapter", adapter_dir, "--output-dir", out, "--name", "other")
    assert cp.returncode == 2 and "--force" in cp.stderr and "Traceback" not in cp.stderr
    assert (out / "Modelfile").stat().st_mtime_ns == mtime
    code, doc = run_json("export_adapter", adapter_dir, "--output-dir", out, "--name", "other", "--force")
    assert code == 0 and doc["name"] == "other"
    assert "ollama create other" in (out / "Modelfile").read_text()


def test_bad_inputs_exit_2_one_line(tmp_path, adapter_dir):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "adapter_config.json").write_bytes(b"\xff\x00{not json")
    cases = [
        [tmp_path / "missing", "--output-dir", tmp_path / "o1"],
        [tmp_path, "--output-dir", tmp_path / "o2"],                    # no adapter_config.json
        [garbage, "--output-dir", tmp_path / "o3"],
        [adapter_dir, "--output-dir", adapter_dir / "inside"],         # output inside the input
        [adapter_dir],                                                 # --output-dir missing
        [adapter_dir, "--output-dir", tmp_path / "o4", "--tolerance", "-1"],
        [adapter_dir, "--output-dir", tmp_path / "o6", "--base-model", tmp_path / "no-such-model.gguf"],
    ]
    for args in cases:
        cp = run_script("export_adapter", *args)
        assert cp.returncode == 2, (args, cp.stderr)
        assert "Traceback" not in cp.stderr and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    code, doc = run_json("export_adapter", garbage, "--output-dir", tmp_path / "o5")
    assert code == 2 and "error" in doc
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))


def test_help_ends_with_examples():
    cp = run_script("export_adapter", "--help")
    assert cp.returncode == 0
    tail = cp.stdout.strip().splitlines()[-3:]
    assert all(ln.strip().startswith(f"python3 {SCRIPTS}/export_adapter.py") for ln in tail)


# ----------------------------------------------------------------------------- warnings (library)

def test_warnings_dora_modules_to_save_rslora_rank(adapter_dir, tmp_path):
    dora = variant(adapter_dir, tmp_path / "dora", use_dora=True)
    doc = export.export(str(dora), str(tmp_path / "e1"))
    assert {"ollama_dora", "vllm_dora"} <= codes(doc)
    assert not doc["ollama"]["ready"] and not doc["vllm"]["ready"]
    assert "convert_hf_to_gguf.py" in next(w["hint"] for w in doc["warnings"] if w["code"] == "ollama_dora")

    mts = variant(adapter_dir, tmp_path / "mts", modules_to_save=["lm_head"])
    doc = export.export(str(mts), str(tmp_path / "e2"))
    assert {"ollama_modules_to_save", "vllm_modules_to_save"} <= codes(doc)
    assert not doc["ollama"]["ready"] and not doc["vllm"]["ready"]

    rs = variant(adapter_dir, tmp_path / "rs", use_rslora=True, r=20, rank_pattern={"q_proj": 40})
    doc = export.export(str(rs), str(tmp_path / "e3"))
    assert "ollama_rslora" in codes(doc) and not doc["ollama"]["ready"]
    assert doc["vllm"]["ready"] and doc["vllm"]["max_lora_rank"] == 64      # max(20, 40) -> 64
    assert "--max-lora-rank 64" in doc["vllm"]["command"]

    emb = variant(adapter_dir, tmp_path / "emb", target_modules=["q_proj", "embed_tokens"])
    assert "ollama_unsupported_modules" in codes(export.export(str(emb), str(tmp_path / "e4")))

    big = variant(adapter_dir, tmp_path / "big", r=1024)
    doc = export.export(str(big), str(tmp_path / "e5"))
    assert "vllm_rank_too_large" in codes(doc) and doc["vllm"]["max_lora_rank"] is None


def test_warning_non_llama_architecture(adapter_dir, smollm2_dir, tmp_path):
    base = tmp_path / "qwen-like"
    base.mkdir()
    for f in smollm2_dir.iterdir():
        if f.name != "model.safetensors":
            shutil.copy2(f, base / f.name)
    cfg = json.loads((base / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "qwen2", ["Qwen2ForCausalLM"]
    (base / "config.json").write_text(json.dumps(cfg))
    doc = export.export(str(adapter_dir), str(tmp_path / "e"), base_model=str(base))
    assert doc["base_model"]["architecture"] == "qwen2"
    assert "ollama_unsupported_architecture" in codes(doc) and not doc["ollama"]["ready"]
    assert doc["vllm"]["ready"]
    mf = (tmp_path / "e" / "Modelfile").read_text()
    assert f"FROM {base.resolve()}" in mf


def test_ollama_base_override_and_unknown_template(adapter_dir, tmp_path):
    doc = export.export(str(adapter_dir), str(tmp_path / "e"), ollama_base="smollm2:135m", name="My Router!")
    assert doc["name"] == "my-router"
    mf = (tmp_path / "e" / "Modelfile").read_text()
    assert "FROM smollm2:135m" in mf.splitlines()
    assert "ollama_base_must_match" in codes(doc)
    alp = tmp_path / "alpaca"
    shutil.copytree(adapter_dir, alp)
    (alp / "chat_template.jinja").write_text(ALPACA)
    doc = export.export(str(alp), str(tmp_path / "e2"))
    assert doc["chat_template"]["family"] is None and "chat_template_unrecognised" in codes(doc)
    assert "TEMPLATE" not in (tmp_path / "e2" / "Modelfile").read_text()


# ----------------------------------------------------------------------------- merge

@pytest.mark.slow
def test_merge_verified_and_loadable(adapter_dir, tmp_path, smollm2_dir):
    out = tmp_path / "export"
    code, doc = run_json("export_adapter", adapter_dir, "--output-dir", out, "--merge")
    assert code == 0, doc
    m = doc["merge"]
    assert m["passed"] and m["dtype"] == "bfloat16"
    assert m["merge_check"]["passed"] and m["merge_check"]["max_abs_diff"] <= m["merge_check"]["tolerance"]
    assert m["saved_check"]["max_abs_diff"] <= 1e-4
    assert m["adapter_effect_max_abs"] > 1.0          # the adapter matters, so a non-merge would be caught
    merged = out / "merged"
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer_config.json").is_file()
    cfg = json.loads((merged / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    # independent check: the merged folder behaves like base+adapter, not like the base
    tok = transformers.AutoTokenizer.from_pretrained(str(merged))
    ids = tok("Route this ticket: refund please", return_tensors="pt")["input_ids"]
    mm = transformers.AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32)
    pm = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32), str(adapter_dir))
    with torch.no_grad():
        a, b = mm(ids).logits, pm(ids).logits
        with pm.disable_adapter():
            c = pm(ids).logits
    assert (a - b).abs().max() < 0.25 * (b - c).abs().max()


@pytest.mark.slow
def test_corrupted_merge_fails_and_writes_nothing(adapter_dir, tmp_path, monkeypatch):
    # a "merge" that drops the adapter instead of folding it in
    monkeypatch.setattr(peft.LoraModel, "merge_and_unload", lambda self, *a, **k: self.unload())
    out, merged = tmp_path / "export", tmp_path / "merged-elsewhere"
    with pytest.raises(BlockingProblem) as ei:
        export.export(str(adapter_dir), str(out), merge=str(merged), merge_requested=True)
    assert ei.value.exit_code == 1 and "merge verification failed" in str(ei.value)
    assert ei.value.result["merge_check"]["passed"] is False
    assert not out.exists() and not merged.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp dirs left behind


def test_merge_dir_elsewhere_refuses_clobber(adapter_dir, tmp_path):
    merged = tmp_path / "m"
    merged.mkdir()
    (merged / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="--force"):
        export.export(str(adapter_dir), str(tmp_path / "e"), merge=str(merged), merge_requested=True)
    assert (merged / "keep.txt").read_text() == "x" and not (tmp_path / "e").exists()
