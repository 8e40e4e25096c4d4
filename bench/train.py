#!/usr/bin/env python3
"""Benchmark: training throughput and padding waste, with and without packing (train_lora.py's path).

CPU mode (default, ~1-2 minutes on 2 cores): a small random Llama (hidden 256, 4 layers, SmolLM2's
49k-token vocabulary and tokenizer) is trained for one epoch on a skewed-length chat dataset (most
examples short, a few long: log-normal user turns) twice - padded batches, then ``--packing``
(padding-free best-fit packing). Both runs go through ``finetune_kit.train`` exactly as
``train_lora.py`` does; tokens/s counts real (non-pad) tokens, padding waste is the share of
padded positions in the batches the trainer actually saw.

It also prints the memory estimator's figures for Llama-3.1-8B (bf16 LoRA and QLoRA, batch 2 x
2048, packed) next to torchtune's published RTX 4090 / A6000 measurements (facts file) - an
estimate, not a measurement.

Memory mode (``--memory``, CPU, ~10-20 minutes on 2 busy cores): for the tiny random Llama (hidden 64) and
SmolLM2-135M, in fp32, bf16 (``--bf16 on``) and NF4 (``--method qlora``), each in a fresh process: the
estimator's peak vs the measured growth of peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) over the
training steps, and including the model load.

GPU mode (``--gpu``, needs CUDA + bitsandbytes, ~16 GB of disk): builds a Llama-3.1-8B-shaped model
with random weights from its config (no download), saves it once under bench/out/, then trains
bf16 LoRA and QLoRA for ``--steps`` steps at sequence 2048 (packed, batch 2) and compares measured
peak memory (``torch.cuda.max_memory_allocated``) and tokens/s with our estimate and torchtune's
figures.

    python bench/train.py                 # CPU: packing vs padding
    python bench/train.py --memory        # CPU: memory estimate vs measured peak RSS
    python bench/train.py --gpu --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("FT_CACHE_DIR", str(ROOT / ".cache" / "fine-tuning"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("FT_NO_PROGRESS", "1")

from finetune_kit import memory, models, train, train_config  # noqa: E402

OUT = ROOT / "bench" / "out"
WORDS = ("order refund invoice parcel delivery tracking account password login billing card charge "
         "address warehouse courier damaged missing late replacement discount coupon subscription").split()

# torchtune, Llama-3.1-8B, batch 2, packed 2048 (../shared/facts-2026.md)
TORCHTUNE = [
    {"gpu": "RTX 4090", "method": "lora", "peak_gib": 16.2, "tokens_per_s": 3083},
    {"gpu": "RTX 4090", "method": "qlora", "peak_gib": 7.4, "tokens_per_s": 2413},
    {"gpu": "A6000", "method": "lora", "peak_gib": 30.3, "tokens_per_s": 4699},
]


def skewed_rows(n: int, seed: int = 0, max_words: int = 300) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        k = min(max_words, max(3, int(rnd.lognormvariate(2.7, 1.0))))  # median ~15 words, long tail
        text = " ".join(rnd.choice(WORDS) for _ in range(k))
        q = rnd.choice(["billing", "shipping", "account"])
        rows.append({"messages": [{"role": "system", "content": "Route the ticket; answer in JSON."},
                                  {"role": "user", "content": f"#{i}: {text}"},
                                  {"role": "assistant", "content": json.dumps({"queue": q, "words": k})}]})
    return rows


def small_model(target: Path, tok_dir: Path, hidden: int = 256, layers: int = 4) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (target / "config.json").is_file():
        return target
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=int(hidden * 2.75),
                      num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128),
                      head_dim=64, max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(target))
    tok.save_pretrained(str(target))
    return target


def run_once(model_dir: Path, data: Path, out: Path, *, packing: bool, batch: int, max_len: int,
             steps: int | None, extra: dict | None = None) -> dict:
    flags = {"base_model": str(model_dir), "train": str(data), "output_dir": str(out), "batch_size": batch,
             "grad_accum": 1, "epochs": 1, "max_steps": steps, "lr": 2e-4, "max_seq_length": max_len,
             "packing": packing, "logging_steps": 1, "save_steps": 10_000, "lr_scheduler": "constant",
             "warmup_steps": 0, **(extra or {})}
    cfg = train_config.build(None, flags)
    p = train.preflight(cfg, skip_memory_check=True)
    if not p.report["ok"]:
        raise SystemExit(f"preflight failed: {p.report['problems']}")
    m = train.train(p, output_dir=str(out), force=True)
    log = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in log[1:] if r.get("tokens_per_s")]  # step 1 includes warm-up
    return {"packing": packing, "steps": m["steps"], "tokens": m["tokens_trained"],
            "padding_fraction": m["padding_fraction"], "train_runtime_s": m["train_runtime_s"],
            "tokens_per_s_overall": round(m["tokens_trained"] / m["train_runtime_s"], 1),
            "tokens_per_s_median_step": round(statistics.median(rates), 1) if rates else None,
            "peak_memory": m["peak_memory"], "memory_estimate_gib": m["memory_estimate_gib"],
            "final_loss": m["final_loss"], "cpu_threads": m.get("cpu_threads")}


def estimate_rows() -> list[dict]:
    shape = memory.Shape.from_config(memory.KNOWN_SHAPES["llama-3.1-8b"])
    rows = []
    for method in ("lora", "qlora"):
        for r, targets, label in ((8, ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                   "r=8, torchtune's modules"),
                                  (16, "all-linear", "r=16, all-linear (our default)")):
            e = memory.estimate(shape, method=method, r=r, target_modules=targets, batch_size=2, seq_len=2048,
                                gradient_checkpointing=True, lora_dropout=0.0)
            rows.append({"method": method, "lora": label, **e.gib()})
    return rows


ESTIMATE_TABLE_ROWS = [
    dict(model=m, method=meth, r=16, batch_size=b, seq_len=sl, gradient_checkpointing=ck, lora_dropout=0.05)
    for m in ("llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "qwen2.5-7b")
    for meth, b, sl, ck in (("lora", 4, 2048, True), ("lora", 2, 2048, False), ("qlora", 2, 2048, True),
                            ("qlora", 1, 8192, True))]


def cpu_bench(args) -> dict:
    src = models.ensure_hf_dir(models.resolve("smollm2-135m"))
    OUT.mkdir(parents=True, exist_ok=True)
    model_dir = small_model(OUT / "train-bench-model", src)
    with tempfile.TemporaryDirectory(dir=OUT) as td:
        td = Path(td)
        data = td / "skewed.jsonl"
        rows = skewed_rows(args.examples)
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        results = []
        for rep in range(args.repeats):  # interleaved, so load changes hit both modes alike
            for packing in (False, True):
                t0 = time.time()
                r = run_once(model_dir, data, td / f"run-{packing}", packing=packing,
                             batch=args.pack_batch if packing else args.batch, max_len=args.max_len, steps=None)
                r.update({"wall_s": round(time.time() - t0, 1), "repeat": rep,
                          "batch": args.pack_batch if packing else args.batch,
                          "load_average": round(os.getloadavg()[0], 2)})
                results.append(r)
                print(json.dumps(r), file=sys.stderr)
        pre = json.loads((td / "run-False" / "preflight.json").read_text())
    return {"dataset": {"examples": args.examples, "tokens_per_example": pre["data"]["train"]["tokens_per_example"],
                        "total_tokens": pre["data"]["train"]["total_tokens"]},
            "model": {"hidden": 256, "layers": 4, "vocab": 49152, "params": pre["memory"]["base_params"]},
            "runs": results}


MEMORY_CASES = [(model, mode) for model in ("tiny", "smollm2-135m") for mode in ("fp32", "bf16", "nf4")]


def _proc_status(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def memory_child(spec: dict) -> dict:
    """One fresh process: the estimator's figure vs the measured peak RSS growth of train() on CPU."""
    import gc

    cfg = train_config.build(None, {
        "base_model": spec["model_dir"], "train": spec["data"], "output_dir": spec["out"], "batch_size": spec["batch"],
        "grad_accum": 1, "max_steps": spec["steps"], "lr": 2e-4, "max_seq_length": spec["seq"], "packing": True,
        "logging_steps": 1, "save_steps": 10_000, "lr_scheduler": "constant", "warmup_steps": 0,
        "gradient_checkpointing": False, "dropout": 0.0, "bf16": spec["mode"] == "bf16", "allow_truncation": True,
        "method": "qlora" if spec["mode"] == "nf4" else "lora"})
    p = train.preflight(cfg, skip_memory_check=True)
    if not p.report["ok"]:
        raise SystemExit(f"preflight failed: {p.report['problems']}")
    import transformers

    def reset_peak():  # Linux: VmHWM (peak RSS) restarts from the current RSS
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")

    seen: dict = {}

    class StepsOnly(transformers.TrainerCallback):
        """Peak RSS of the training steps alone: the load transient (a CPU-only effect: the checkpoint's
        mmapped pages and the loaded copy are resident together) is left out."""

        def on_train_begin(self, args, state, control, **kw):
            seen["load_peak"] = _proc_status("VmHWM")
            seen["after_load"] = _proc_status("VmRSS")
            reset_peak()

    gc.collect()
    before = _proc_status("VmRSS")
    reset_peak()
    m = train.train(p, output_dir=spec["out"], force=True, callbacks=[StepsOnly()])
    peak_steps = _proc_status("VmHWM")
    est = p.report["memory"]["estimate_gib"]
    g = memory.GIB
    return {"model": spec["name"], "mode": spec["mode"], "params": p.report["memory"]["base_params"],
            "estimate_gib": est["total"], "estimate_terms_gib": est,
            "measured_gib": round((peak_steps - before) / g, 3),
            "measured_with_load_gib": round((max(peak_steps, seen["load_peak"]) - before) / g, 3),
            "resident_after_load_gib": round((seen["after_load"] - before) / g, 3),
            "rss_before_gib": round(before / g, 3), "steps": m["steps"], "tokens": m["tokens_trained"],
            "batch_x_seq": f"{spec['batch']} x {spec['seq']} (packed)"}


def memory_bench(args) -> dict:
    """Estimator vs measured peak RSS on CPU (fp32, bf16, NF4) for the tiny model and SmolLM2-135M."""
    import subprocess

    src = models.ensure_hf_dir(models.resolve("smollm2-135m"))
    OUT.mkdir(parents=True, exist_ok=True)
    tiny = OUT / "train-bench-tiny64"
    if not (tiny / "config.json").is_file():
        small_model(tiny, src, hidden=64, layers=2)
    rows = []
    with tempfile.TemporaryDirectory(dir=OUT) as td:
        data = Path(td) / "mem.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in skewed_rows(96, max_words=120)), encoding="utf-8")
        for name, mode in MEMORY_CASES:
            spec = {"name": name, "mode": mode, "model_dir": str(tiny if name == "tiny" else src), "data": str(data),
                    "out": str(Path(td) / f"{name}-{mode}"), "batch": args.mem_batch, "seq": args.mem_seq,
                    "steps": args.mem_steps}
            cp = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)], capture_output=True,
                                text=True, env={**os.environ, "FT_CPU_THREADS": "2"})
            if cp.returncode != 0:
                raise SystemExit(f"{name} {mode} failed:\n{cp.stderr[-2000:]}")
            r = json.loads(cp.stdout.strip().splitlines()[-1])
            r["error_pct"] = round(100 * (r["estimate_gib"] - r["measured_gib"]) / r["measured_gib"], 1) \
                if r["measured_gib"] > 0 else None
            rows.append(r)
            print(json.dumps(r), file=sys.stderr)
    return {"runs": rows}


def gpu_bench(args) -> dict:  # pragma: no cover - needs CUDA
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA GPU")
    target = OUT / "llama-3.1-8b-random"
    src = models.ensure_hf_dir(models.resolve("smollm2-135m"))
    if not (target / "config.json").is_file():
        shape = memory.KNOWN_SHAPES["llama-3.1-8b"]
        cfg = LlamaConfig(**{k: v for k, v in shape.items() if k != "model_type"}, max_position_embeddings=8192,
                          rope_theta=500000.0, bos_token_id=1, eos_token_id=2, pad_token_id=2)
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)  # 16 GB of bf16 weights, never an fp32 copy
        try:
            with torch.device("cuda"):
                model = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(torch.float32)
        model.save_pretrained(str(target))
        del model
        torch.cuda.empty_cache()
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(target))
    rows = skewed_rows(400, max_words=1500)
    data = OUT / "gpu-bench.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    results = []
    for method in ("lora", "qlora"):
        r = run_once(target, data, OUT / f"gpu-{method}", packing=True, batch=2, max_len=2048, steps=args.steps,
                     extra={"method": method, "r": 8,
                            "target_modules": "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                            "dropout": 0.0, "gradient_checkpointing": True, "allow_truncation": True})
        r["method"] = method
        results.append(r)
        print(json.dumps(r), file=sys.stderr)
    return {"device": torch.cuda.get_device_name(0), "runs": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8, help="padded batches: examples per step")
    ap.add_argument("--pack-batch", type=int, default=2,
                    help="packing: packed rows (of --max-len tokens) per step; 2 x 512 is about the positions "
                         "of a padded batch of 8 here")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--gpu", action="store_true", help="Llama-3.1-8B-shaped LoRA/QLoRA on CUDA")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--estimates-only", action="store_true",
                    help="print the estimator's memory table for common models and GPUs (no training)")
    ap.add_argument("--memory", action="store_true",
                    help="CPU: the estimator vs measured peak RSS, fp32 / bf16 / NF4, tiny model and SmolLM2-135M")
    ap.add_argument("--mem-batch", type=int, default=2)
    ap.add_argument("--mem-seq", type=int, default=256)
    ap.add_argument("--mem-steps", type=int, default=2)
    ap.add_argument("--memory-child", metavar="JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.estimates_only:
        print(memory.table(ESTIMATE_TABLE_ROWS))
        return
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return
    if args.memory:
        doc = memory_bench(args)
        if args.json:
            print(json.dumps(doc, indent=2))
            return
        print(f"CPU peak memory of train_lora.py's training step (batch {args.mem_batch} x {args.mem_seq} packed, "
              f"{args.mem_steps} steps, no gradient checkpointing): estimator vs measured growth of peak RSS")
        print("| model | params | mode | estimate GiB | measured (steps) GiB | error | measured incl. load GiB |")
        print("|---|---:|---|---:|---:|---:|---:|")
        for r in doc["runs"]:
            print(f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['mode']} | {r['estimate_gib']} | "
                  f"{r['measured_gib']} | {r['error_pct']:+.1f}% | {r['measured_with_load_gib']} |")
        tiny = {r["mode"]: r for r in doc["runs"] if r["model"] == "tiny"}
        print("\nModel-dependent part (SmolLM2-135M minus the tiny model, same mode: removes the fixed CPU overhead of "
              "the first training step - allocator arenas, kernels, thread pools):")
        print("| mode | estimate GiB | measured GiB | error |")
        print("|---|---:|---:|---:|")
        for r in doc["runs"]:
            t = tiny.get(r["mode"])
            if r["model"] == "tiny" or not t:
                continue
            de, dm = r["estimate_gib"] - t["estimate_gib"], r["measured_gib"] - t["measured_gib"]
            print(f"| {r['mode']} | {de:.2f} | {dm:.3f} | {100 * (de - dm) / dm:+.1f}% |")
        return
    doc = {"estimates_llama_3_1_8b_b2_s2048": estimate_rows(), "torchtune_published": TORCHTUNE}
    doc["cpu" if not args.gpu else "gpu"] = gpu_bench(args) if args.gpu else cpu_bench(args)
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    if "cpu" in doc:
        c = doc["cpu"]
        d = c["dataset"]
        print(f"CPU: random Llama (hidden 256, 4 layers, vocab 49152; {c['model']['params']:,} params), "
              f"{d['examples']} skewed examples, {d['total_tokens']:,} tokens, per example {d['tokens_per_example']}")
        print(f"threads: {c['runs'][0]['cpu_threads']}")
        print("| mode | batch | steps | real tokens | padding waste | tokens/s (overall) | tokens/s (median step) "
              "| train s | load avg |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in c["runs"]:
            print(f"| {'packing' if r['packing'] else 'padded batches'} | {r['batch']} | {r['steps']} | "
                  f"{r['tokens']:,} | {100 * (r['padding_fraction'] or 0):.1f}% | {r['tokens_per_s_overall']:,} | "
                  f"{r['tokens_per_s_median_step']:,} | {r['train_runtime_s']} | {r['load_average']} |")
        med = {p: statistics.median(r["tokens_per_s_overall"] for r in c["runs"] if r["packing"] == p)
               for p in (False, True)}
        print(f"packing / padded tokens/s (overall, median over repeats): {med[True] / med[False]:.2f}x")
    else:
        g = doc["gpu"]
        print(f"GPU: {g['device']}, Llama-3.1-8B-shaped random weights, batch 2 x 2048 packed, r=8")
        print("| method | measured peak GiB (max_allocated) | our estimate GiB | estimate error | tokens/s | "
              "torchtune RTX 4090 tokens/s, GiB |")
        print("|---|---:|---:|---:|---:|---:|")
        ref = {t["method"]: t for t in TORCHTUNE if t["gpu"] == "RTX 4090"}
        for r in g["runs"]:
            meas, est = r["peak_memory"]["gib"], r["memory_estimate_gib"]
            err = f"{100 * (est - meas) / meas:+.1f}%" if meas else "-"
            t = ref.get(r["method"], {})
            print(f"| {r['method']} | {meas} | {est} | {err} | {r['tokens_per_s_overall']:,} | "
                  f"{t.get('tokens_per_s', '-'):,}, {t.get('peak_gib', '-')} |")
    print("\nLlama-3.1-8B, batch 2 x 2048, gradient checkpointing - our ESTIMATE (not measured) vs torchtune's "
          "published measurements:")
    print("| method | LoRA | weights | LoRA+AdamW | activations | loss head | total GiB (estimate) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in doc["estimates_llama_3_1_8b_b2_s2048"]:
        print(f"| {r['method']} | {r['lora']} | {r['weights']} | {r['lora_states']} | {r['activations']} | "
              f"{r['logits']} | {r['total']} |")
    print("| torchtune (measured) | GPU | peak GiB | tokens/s |")
    print("|---|---|---:|---:|")
    for t in TORCHTUNE:
        print(f"| {t['method']} | {t['gpu']} | {t['peak_gib']} | {t['tokens_per_s']:,} |")


if __name__ == "__main__":
    main()
