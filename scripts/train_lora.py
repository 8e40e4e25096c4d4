#!/usr/bin/env python3
"""Train a LoRA/QLoRA adapter on chat JSONL, after a preflight that refuses silent failures."""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli, memory  # noqa: E402
train_config = bootstrap.lazy_module("finetune_kit.train_config")
from finetune_kit.errors import UsageError  # noqa: E402


def _onoff(v: str):
    v = v.lower()
    if v in ("auto",):
        return "auto"
    if v in ("on", "true", "yes", "1"):
        return True
    if v in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected auto, on or off, got {v!r}")


def build_parser():
    p = cli.make_parser(
        "train_lora",
        "Fine-tune a LoRA (or QLoRA, CUDA only) adapter with TRL + PEFT on chat JSONL.\n"
        "A preflight always runs first: data validation, chat-template rendering with exact labels\n"
        "(only assistant turns and their end-of-turn token are trained; weight 0 honoured), truncation\n"
        "and zero-trainable refusals, pad/eos check, and a peak-memory estimate against the GPU.\n"
        "--dry-run stops after it. Settings come from --config ft-config.yaml (see training.md);\n"
        "flags override it. Output dir: adapter_model.safetensors + adapter_config.json, tokenizer,\n"
        "training_log.jsonl, run_manifest.json, loss_curve.png, checkpoints/ (for --resume).\n"
        "Exit codes: 0 trained (or preflight OK with --dry-run), 1 preflight refused or training\n"
        "failed (e.g. non-finite loss), 2 could not run (bad flag, missing file/dependency).",
        cli.examples_for("train_lora",
                         "--base-model smollm2-135m --train train.jsonl --validation val.jsonl "
                         "--output-dir runs/v1",
                         "--config ft-config.yaml --dry-run --gpu rtx4090 --json",
                         "--output-dir runs/v1 --resume"))
    g = p.add_argument_group("what to train")
    g.add_argument("--config", metavar="FILE", help="ft-config.yaml (schema in training.md); flags override it")
    g.add_argument("--base-model", metavar="MODEL",
                   help="hub id (online), local HF dir, .gguf file, or the alias smollm2-135m")
    g.add_argument("--train", metavar="FILE", help="training data (chat, prompt-completion or preference JSONL)")
    g.add_argument("--validation", metavar="FILE", help="validation data: eval every --eval-steps")
    g.add_argument("--output-dir", metavar="DIR", help="where the adapter and logs go (new or empty; --force)")
    g.add_argument("--method", choices=["lora", "qlora"], help="lora (default) or qlora (4-bit NF4 base, CUDA)")
    g.add_argument("--chat-template", metavar="FILE.jinja", help="replace the tokenizer's chat template")
    g.add_argument("--init-adapter", metavar="DIR",
                   help="start from this adapter's weights on new data (a new run; see --resume)")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --output-dir from its last checkpoint (same data)")
    lo = p.add_argument_group("LoRA")
    lo.add_argument("--r", type=int, help="rank (default 16)")
    lo.add_argument("--alpha", type=float, help="scaling alpha (default 32 = 2 x r)")
    lo.add_argument("--dropout", type=float, help="LoRA dropout (default 0.05)")
    lo.add_argument("--target-modules", metavar="LIST",
                    help="comma-separated module names, or all-linear (default)")
    tr = p.add_argument_group("training")
    tr.add_argument("--epochs", type=float, help="passes over the data (default 3)")
    tr.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides --epochs)")
    tr.add_argument("--batch-size", type=int, help="per-device batch size (default 4)")
    tr.add_argument("--grad-accum", type=int, help="gradient accumulation steps (default 4)")
    tr.add_argument("--lr", type=float, help="learning rate (default 2e-4 for LoRA SFT)")
    tr.add_argument("--lr-scheduler", choices=["linear", "cosine", "constant", "constant_with_warmup"])
    tr.add_argument("--warmup-steps", type=int, help="default: 3%% of the optimizer steps")
    tr.add_argument("--max-seq-length", type=int, help="tokens per example (default 2048); longer is refused")
    tr.add_argument("--allow-truncation", action="store_const", const=True,
                    help="train on examples cut at --max-seq-length instead of refusing")
    tr.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None,
                    help="pack examples into --max-seq-length rows (padding-free; label masks kept)")
    tr.add_argument("--gradient-checkpointing", type=_onoff, metavar="auto|on|off",
                    help="recompute activations in backward (default auto: on for CUDA)")
    tr.add_argument("--bf16", type=_onoff, metavar="auto|on|off", help="bfloat16 (default auto: where supported)")
    tr.add_argument("--save-steps", type=int, help="checkpoint every N steps (default 100)")
    tr.add_argument("--eval-steps", type=int, help="evaluate every N steps (default: --save-steps)")
    tr.add_argument("--logging-steps", type=int, help="log every N steps (default: ~20 lines per run)")
    tr.add_argument("--early-stopping-patience", type=int, metavar="N",
                    help="stop after N evaluations without a better eval_loss (needs --validation)")
    tr.add_argument("--seed", type=int, help="random seed (default 42)")
    tr.add_argument("--report-to", choices=["none", "wandb", "trackio"], help="experiment tracker (default none)")
    tr.add_argument("--use-unsloth", action="store_const", const=True,
                    help="use Unsloth when installed (CUDA); otherwise a warning and the plain path")
    pf = p.add_argument_group("preflight")
    pf.add_argument("--dry-run", action="store_true",
                    help="run the preflight only (nothing is trained; no weights are loaded, except that a "
                         ".gguf base is converted once)")
    pf.add_argument("--gpu", choices=sorted(memory.GPUS), help="plan the memory for this GPU instead of the "
                    "detected device")
    pf.add_argument("--skip-memory-check", action="store_true",
                    help="train even when the estimate says the GPU is too small")
    pf.add_argument("--memory-only", action="store_true",
                    help="only the memory estimate (no data needed); --base-model may also be one of: "
                         + ", ".join(memory.KNOWN_SHAPES))
    return p


def _overrides(args) -> dict:
    return {k: getattr(args, k, None) for k in train_config.FLAG_KEYS}


def _memory_only(args) -> cli.Result:
    from finetune_kit import models, train

    cfg = train_config.build(args.config, _overrides(args))
    if not cfg.base_model:
        raise UsageError("--memory-only needs --base-model (a model, or one of: "
                         f"{', '.join(memory.KNOWN_SHAPES)})")
    if cfg.base_model in memory.KNOWN_SHAPES:
        shape_cfg = memory.KNOWN_SHAPES[cfg.base_model]
    else:
        shape_cfg = train._model_config(models.resolve(cfg.base_model))
    gc = cfg.training.gradient_checkpointing
    plan = {"gradient_checkpointing": True if gc == "auto" else gc, "bf16": True}
    gpus = [args.gpu] if args.gpu else list(memory.GPUS)
    reports = {g: train.memory_section(shape_cfg, cfg, plan, cfg.training.max_seq_length, memory.named_gpu(g))
               for g in gpus}
    first = reports[gpus[0]]
    e = first["estimate_gib"]
    lines = [f"memory estimate for {cfg.base_model}, {cfg.method}, r={cfg.lora.r}, batch "
             f"{cfg.training.batch_size} x {cfg.training.max_seq_length} tokens, gradient checkpointing "
             f"{plan['gradient_checkpointing']} (estimate, not measured):",
             f"  weights {e['weights']} GiB ({first['weight_bits_per_param']} bits/param), LoRA + AdamW "
             f"{e['lora_states']} GiB ({first['lora_params']:,} params), activations {e['activations']} GiB, "
             f"loss head {e['logits']} GiB, transient {e['transient']} GiB -> total {e['total']} GiB"]
    for g, r in reports.items():
        f = r["fit"]
        lines.append(f"  {g:10s} {f['device_gib']:5.1f} GiB: {f['verdict']} (needs {f['need_gib']} GiB with "
                     f"context + fragmentation)")
        for s in r.get("suggestions", [])[:3]:
            lines.append(f"      - {s['change']}: {s['estimate_gib']} GiB ({s['verdict']})")
    data = {"stage": "memory", "config": cfg.resolved(), "estimates": reports}
    return cli.Result(data, "\n".join(lines), summary={"estimate_gib": e["total"]})


def handle(args) -> cli.Result:
    if args.memory_only:
        return _memory_only(args)
    from finetune_kit import train

    base = None
    if args.resume:
        if not (args.output_dir or args.config):
            raise UsageError("--resume needs --output-dir (the interrupted run's directory)")
        out_hint = args.output_dir
        if out_hint is None:
            out_hint = train_config.build(args.config, {}).output_dir
        base = train.previous_config(out_hint)
        if base is None:
            raise UsageError(f"--resume: no {train.MANIFEST} in {out_hint}; nothing to resume")
    cfg = train_config.build(args.config, _overrides(args), base=base)
    if not args.dry_run and not cfg.output_dir:
        raise UsageError("no output directory: pass --output-dir DIR (or set output_dir in the config), "
                         "or --dry-run to only run the preflight")
    if not args.dry_run:
        train.check_output_dir(cfg.output_dir, force=args.force, resume=args.resume)
    prepared = train.preflight(cfg, gpu=args.gpu, skip_memory_check=args.skip_memory_check)
    rep = prepared.report
    inputs = [p for p in (cfg.data.train, cfg.data.validation, args.config) if p]
    if args.resume and rep["ok"]:
        train.check_resume_data(cfg.output_dir, rep)
    summary = {"ok": rep["ok"], "problems": [e["code"] for e in rep["problems"]]}
    if args.dry_run or not rep["ok"]:
        return cli.Result(rep, train.format_preflight(rep), exit_code=0 if rep["ok"] else 1, inputs=inputs,
                          summary=summary)
    if not args.json:
        print(train.format_preflight(rep), file=sys.stderr)
    manifest = train.train(prepared, output_dir=cfg.output_dir, force=args.force, resume=args.resume)
    data = {"stage": "trained", "ok": True, "output_dir": cfg.output_dir, "manifest": manifest, "preflight": rep}
    out_files = [os.path.join(cfg.output_dir, f) for f in manifest.get("files", [])
                 if f.endswith((".safetensors", ".json"))]
    return cli.Result(data, train.format_result(manifest, cfg.output_dir), inputs=inputs, outputs=out_files,
                      summary={"ok": True, "steps": manifest["steps"], "final_loss": manifest.get("final_loss")})


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
