"""Helpers shared by the train_lora tests: data files and a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import io
import json
import random
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

QUEUES = {"billing": ["I was charged twice", "refund my last invoice", "my card was billed wrong",
                      "the invoice total is off"],
          "shipping": ["where is my parcel", "package not delivered", "tracking shows nothing",
                       "the box arrived damaged"],
          "account": ["cannot log in", "reset my password", "change my email address",
                      "two-factor code never arrives"]}
SYSTEM = "Route the support ticket. Answer with JSON only."


def ticket_rows(n: int, *, prefix: str = "Ticket", seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    names = list(QUEUES)
    rows = []
    for i in range(n):
        q = names[i % len(names)]
        text = rnd.choice(QUEUES[q])
        rows.append({"messages": [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": f"{prefix} {i}: {text}"},
                                  {"role": "assistant", "content": json.dumps({"queue": q})}]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_tiny_model(target: Path, tokenizer_dir: Path, *, poison: bool = False, hidden: int = 32) -> Path:
    """A 2-layer Llama (hidden 32 by default; 64 = one bitsandbytes NF4 block per row, for QLoRA) with
    random weights and the SmolLM2 tokenizer (saved as an HF dir)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    if poison:  # a corrupted checkpoint: the loss is non-finite from the first step
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.fill_(float("inf"))
    model.save_pretrained(str(target))
    tok.save_pretrained(str(target))
    return target


def run_main(*args) -> tuple[int, dict, str]:
    """Run train_lora.main in-process with --json; return (exit code, JSON doc, stderr)."""
    import train_lora

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = train_lora.main([str(a) for a in args] + ["--json"])
    text = out.getvalue()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise AssertionError(f"stdout is not one JSON document:\n{text}\nstderr:\n{err.getvalue()}") from exc
    return code, doc, err.getvalue()


def adapter_tensors(d: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(d) / "adapter_model.safetensors"))
