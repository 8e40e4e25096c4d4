"""One real run: SmolLM2-135M-Instruct, a few CPU steps; the loss falls and the adapter reloads with PeftModel."""

from __future__ import annotations

import json

import pytest
from conftest import run_json
from train_support import ticket_rows, write_jsonl


@pytest.mark.slow
def test_smollm2_lora_run_learns_and_reloads(smollm2_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune_kit import templating
    from finetune_kit.chat import ChatExample

    rows = ticket_rows(16)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "adapter"
    code, doc = run_json("train_lora", "--base-model", "smollm2-135m", "--train", train, "--output-dir", out,
                         "--batch-size", "4", "--grad-accum", "1", "--max-steps", "5", "--lr", "2e-3", "--warmup-steps", "0",
                         "--logging-steps", "1", "--max-seq-length", "128", "--r", "8", "--alpha", "16",
                         "--target-modules", "q_proj,k_proj,v_proj,o_proj")
    assert code == 0, doc
    m = doc["manifest"]
    losses = [json.loads(x)["loss"] for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert len(losses) == 5 and losses[-1] < 0.6 * losses[0], losses
    assert m["packages"]["torch"] and m["device"]["kind"] == "cpu"

    # reload: the adapter points at a loadable base (the dequantized SmolLM2 directory), offline
    ac = json.loads((out / "adapter_config.json").read_text())
    assert ac["base_model_name_or_path"] == str(smollm2_dir)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    base = AutoModelForCausalLM.from_pretrained(ac["base_model_name_or_path"], dtype=torch.float32)
    ex = templating.build_example(tok, ChatExample.model_validate(rows[0]), None)
    ids = torch.tensor([ex["input_ids"]])
    labels = torch.tensor([ex["labels"]])
    with torch.no_grad():
        base_loss = base(input_ids=ids, labels=labels).loss.item()
        tuned = PeftModel.from_pretrained(base, str(out))
        tuned_loss = tuned(input_ids=ids, labels=labels).loss.item()
    assert tuned_loss < 0.5 * base_loss, (base_loss, tuned_loss)
