"""evaluate.py with the real SmolLM2-135M-Instruct: base vs a tiny LoRA adapter, and adapter v1 vs v2.

Kept small (4 short prompts, 12 new tokens) so it runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_json

pytestmark = pytest.mark.slow

MAX_NEW = 12
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France? Answer in one word."}, "Paris"],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}, "4"],
    [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"},
     {"role": "user", "content": "Name a color."}, "Blue"],
    [{"role": "user", "content": "Which planet is the largest?"}, "Jupiter"],
]


# On a shared 2-core machine torch's default 2 intra-op threads spin against other processes
# (measured: 1 thread 8 s vs 2 threads 50-100 s for the same generation under load).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("eval_model")


@pytest.fixture(scope="module")
def test_file(workdir):
    p = workdir / "test.jsonl"
    rows = [{"messages": list(x[:-1]) + [{"role": "assistant", "content": x[-1]}]} for x in PROMPTS]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture(scope="module")
def adapters(smollm2_dir, workdir):
    """Two random LoRA adapters (init_lora_weights=False: B != 0, so outputs change)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        d = workdir / f"adapter_v{seed + 1}"
        get_peft_model(base, cfg).save_pretrained(str(d))
        out.append(d)
    return out


@pytest.fixture(scope="module")
def base_vs_v1(smollm2_dir, adapters, test_file, workdir):
    out = workdir / "eval_base_v1"
    code, doc = run_json("evaluate", "--base-model", smollm2_dir, "--adapter", adapters[0], "--test", test_file,
                         "--max-new-tokens", MAX_NEW, "--batch-size", 4, "--bootstrap", 1000, "--output-dir", out,
                         env=ONE_THREAD)
    assert code in (0, 1), doc
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return doc, rows, out


def test_generate_and_score_base_vs_adapter(base_vs_v1, smollm2_dir):
    doc, rows, out = base_vs_v1
    assert doc["mode"] == "generate" and doc["n"] == 4
    assert (doc["a"]["kind"], doc["b"]["kind"]) == ("base", "adapter")
    assert list(doc["metrics"]) == ["exact_match", "token_f1", "rouge_l", "latency_ms", "output_tokens"]
    assert doc["verdict"] in ("improved", "no_significant_change", "regressed")
    for name in ("latency_ms", "output_tokens"):
        assert doc["metrics"][name]["n"] == 4
    assert all(0 < r["scores"]["output_tokens"]["a"] <= MAX_NEW for r in rows)
    assert all(r["scores"]["latency_ms"]["a"] > 0 for r in rows)
    assert any(r["prediction_a"] != r["prediction_b"] for r in rows), "the random adapter changed nothing"
    assert "Paris" in rows[0]["prediction_a"]  # the real base model answers this one
    report = (out / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric"))
    assert [c.strip() for c in header.strip("|").split("|")][:3] == ["metric", "base", "fine-tuned"]
    # A's batched, left-padded outputs equal plain one-by-one greedy generation with transformers
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    for r in rows:
        ids = tok.apply_chat_template(r["prompt_messages"], add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.inference_mode():
            gen = model.generate(**ids, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tok.pad_token_id)
        new = gen[0, ids["input_ids"].shape[1]:].tolist()
        cut = new.index(tok.eos_token_id) if tok.eos_token_id in new else len(new)
        assert tok.decode(new[:cut], skip_special_tokens=True).strip() == r["prediction_a"]
        assert r["scores"]["output_tokens"]["a"] == cut


def test_adapter_v1_vs_v2_gate(base_vs_v1, smollm2_dir, adapters, test_file, workdir):
    from finetune_kit import evaluate as ev

    _, rows_v1, _ = base_vs_v1
    doc, _report, _inputs, outputs = ev.run(ev.Options(
        test=str(test_file), base_model=str(smollm2_dir), adapter=str(adapters[0]), model_b=str(adapters[1]),
        max_new_tokens=MAX_NEW, batch_size=4, bootstrap=1000, output_dir=str(workdir / "eval_v1_v2")))
    assert (doc["a"]["kind"], doc["a"]["spec"]) == ("adapter", str(adapters[0]))
    assert (doc["b"]["kind"], doc["b"]["spec"]) == ("adapter", str(adapters[1]))
    rows = [json.loads(x) for x in Path(doc["files"]["predictions"]).read_text().splitlines()]
    # adapter v1 gives the same outputs whether it is B (vs base) or A (vs v2): multi-adapter switching works
    assert [r["prediction_a"] for r in rows] == [r["prediction_b"] for r in rows_v1]
    assert any(r["prediction_a"] != r["prediction_b"] for r in rows)
    assert doc["verdict"] in ("improved", "no_significant_change", "regressed")


def test_baseline_first_then_mixed_reuse(base_vs_v1, smollm2_dir, adapters, test_file, workdir):
    """SKILL.md's rule: measure the prompt-only baseline before training, then reuse it as A."""
    _, rows_v1, _ = base_vs_v1
    out = workdir / "eval_baseline"
    code, doc = run_json("evaluate", "--base-model", smollm2_dir, "--test", test_file, "--max-new-tokens", MAX_NEW,
                         "--batch-size", 4, "--bootstrap", 1000, "--output-dir", out, env=ONE_THREAD)
    assert code == 0 and doc["mode"] == "baseline" and doc["b"] is None and doc["a"]["kind"] == "base"
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in preds] == [r["prediction_a"] for r in rows_v1]  # same greedy outputs
    # later: A from the baseline file, B generated with the adapter — no need to regenerate the base
    code, doc2 = run_json("evaluate", "--predictions-a", out / "predictions.jsonl", "--base-model", smollm2_dir,
                          "--adapter", adapters[0], "--test", test_file, "--max-new-tokens", MAX_NEW,
                          "--batch-size", 4, "--bootstrap", 1000, env=ONE_THREAD)
    assert code in (0, 1) and doc2["mode"] == "mixed" and doc2["a"]["kind"] == "predictions"
    assert doc2["metrics"]["exact_match"]["a"] == doc["metrics"]["exact_match"]["a"]


def test_few_shot_cv_with_the_real_model(smollm2_dir, test_file):
    code, doc = run_json("evaluate", "--base-model", smollm2_dir, "--test", test_file, "--few-shot-cv", 2,
                         "--shots", 1, "--max-new-tokens", MAX_NEW, "--batch-size", 4, "--bootstrap", 1000,
                         env=ONE_THREAD)
    assert code in (0, 1) and doc["mode"] == "few_shot_cv" and doc["n"] == 4
    assert (doc["a"]["label"], doc["b"]["label"]) == ("zero-shot", "1-shot")
    assert doc["few_shot_cv"]["folds"] == 2 and doc["few_shot_cv"]["shots_used_min"] == 1
    assert doc["min_detectable_diff"] is not None and any("only 4 test examples" in w for w in doc["warnings"])
