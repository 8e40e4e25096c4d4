"""The run plan: what a training run will do, resolved from the config and the target machine.

Every training path (fp32 / bf16 / fp16, LoRA / QLoRA, gradient checkpointing, packing, one
process / DDP / FSDP) is a *configuration* here - a plan dict the trainer wiring
(``trainer.py``) reads - not a branch in the training code.

- :func:`distributed_env` reads the launcher's environment (``accelerate launch``,
  ``torchrun``): world size, rank, strategy.
- :func:`make_plan` derives steps, eval/save cadence (about :data:`EVALS_PER_RUN` evaluations per
  run unless set), precision and checkpointing for the machine that will train: this one, or the
  ``--gpu`` target of a plan (then the whole plan is the target's, with a rough throughput
  estimate).
- :func:`device_problems` names every requested setting the device cannot honour, so the
  preflight says so instead of silently ignoring a flag.
- :func:`quantization_config` is the NF4 QLoRA setting (also recorded in the manifest so
  ``export_adapter.py --merge`` can rebuild the exact quantized base).
"""

from __future__ import annotations

import math
import os
from typing import Any

from .bootstrap import has_module, pip_command

EVALS_PER_RUN = 10          # default cadence: about this many evaluations (and checkpoints) per run
MAX_AUTO_INTERVAL = 500     # ... but never fewer than one every this many steps on long runs
MIN_BNB_CPU = (0, 50)       # bitsandbytes with the CPU backend

# Published reference for the rough throughput estimate of a --gpu plan: torchtune, Llama-3.1-8B,
# batch 2 x 2048 packed, RTX 4090 (https://github.com/pytorch/torchtune README, "Memory and training
# speed"): LoRA 3,083 tok/s, QLoRA 2,413 tok/s. Scaled by parameter count and by peak bf16 TFLOPS.
REF_TOKENS_PER_S = {"lora": 3083.0, "qlora": 2413.0}
REF_PARAMS = 8_030_261_248
REF_TFLOPS = 165.0
MIN_SCALED_PARAMS = 1e9
REF_STEP_TOKENS = 2 * 2048  # the reference's tokens per optimizer step (batch 2 x 2048 packed)


def distributed_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The process group this process belongs to, from the launcher's environment variables."""
    e = os.environ if env is None else env
    world = int(e.get("WORLD_SIZE") or 1)
    launcher = None
    if world > 1:
        launcher = "accelerate" if any(k.startswith("ACCELERATE_") for k in e) else \
            ("torchrun" if e.get("TORCHELASTIC_RUN_ID") else "launcher")
    strategy = None
    if world > 1:
        strategy = "fsdp" if str(e.get("ACCELERATE_USE_FSDP", "")).lower() in ("1", "true") else "ddp"
    return {"world_size": world, "rank": int(e.get("RANK") or 0), "local_rank": int(e.get("LOCAL_RANK") or 0),
            "launcher": launcher, "strategy": strategy}


def cadence(t, total_steps: int, has_validation: bool) -> dict[str, Any]:
    """Eval/save steps: explicit values, else derived from the planned step count."""
    auto = max(1, min(MAX_AUTO_INTERVAL, math.ceil(total_steps / EVALS_PER_RUN)))
    eval_steps = t.eval_steps or t.save_steps or auto
    save_steps = t.save_steps or eval_steps
    if t.early_stopping_patience and save_steps % eval_steps:
        save_steps = eval_steps  # best-checkpoint selection needs a checkpoint at every evaluation
    evals = total_steps // eval_steps if has_validation else 0
    return {"eval_steps": eval_steps if has_validation else None, "save_steps": save_steps,
            "evaluations": evals, "checkpoints": total_steps // save_steps,
            "cadence_source": "set" if (t.eval_steps or t.save_steps) else f"derived (~{EVALS_PER_RUN} per run)"}


def make_plan(cfg, n_rows: int, total_tokens: int, device: dict[str, Any], *,
              target: dict[str, Any] | None = None, dist: dict[str, Any] | None = None,
              base_params: int | None = None) -> dict[str, Any]:
    """The whole run as it will happen on ``target`` (a --gpu plan) or else on ``device``."""
    t = cfg.training
    dist = dist or distributed_env()
    world = max(1, int(dist.get("world_size") or 1))
    machine = target or device
    kind = machine["kind"]
    rows = max(1, math.ceil(total_tokens / t.max_seq_length)) if t.packing else n_rows
    batches = max(1, math.ceil(rows / (t.batch_size * world)))
    accum = t.gradient_accumulation_steps
    per_epoch = max(1, batches // accum + int(batches % accum > 0))
    total = t.max_steps or max(1, math.ceil(per_epoch * t.epochs))
    gc = t.gradient_checkpointing if t.gradient_checkpointing != "auto" else kind == "cuda"
    if cfg.bfloat16 == "auto":
        bf16 = bool(machine.get("bf16")) and kind == "cuda"
    else:
        bf16 = bool(cfg.bfloat16)
    dtype = "bf16" if bf16 else ("fp16" if kind == "cuda" else "fp32")
    plan: dict[str, Any] = {
        "rows": rows, "rows_are_estimate": t.packing, "steps_per_epoch": per_epoch, "total_steps": total,
        "per_device_batch": t.batch_size, "gradient_accumulation_steps": accum, "world_size": world,
        "effective_batch": t.batch_size * accum * world,
        "warmup_steps": t.warmup_steps if t.warmup_steps is not None else math.ceil(0.03 * total),
        "logging_steps": t.logging_steps or max(1, min(10, total // 20)),
        "gradient_checkpointing": bool(gc), "bf16": bf16, "dtype": dtype, "packing": t.packing,
        "method": cfg.method, "quantization": quantization_config(dtype) if cfg.method == "qlora" else None,
        "device": kind, "machine": machine.get("name"),
        "planned_for": "target (--gpu)" if target else "this machine",
        "distributed": {k: dist.get(k) for k in ("world_size", "launcher", "strategy")} if world > 1 else None,
    }
    plan.update(cadence(t, total, bool(cfg.data.validation)))
    if target and base_params:
        plan["throughput_estimate"] = throughput_estimate(cfg.method, base_params, target, total,
                                                          plan["effective_batch"], t.max_seq_length,
                                                          total_tokens, t.epochs if not t.max_steps else None,
                                                          packing=t.packing, rows=rows, per_device_batch=t.batch_size)
    return plan


def throughput_estimate(method: str, params: int, gpu: dict[str, Any], steps: int, eff_batch: int,
                        seq: int, data_tokens: int, epochs: float | None, *, packing: bool = True,
                        rows: int | None = None, per_device_batch: int = 2) -> dict[str, Any]:
    """A rough tokens/s and duration for a --gpu plan, scaled from a published reference (not measured).

    The reference packs 2,048-token rows at batch 2 (4,096 tokens a step). Unpacked short rows carry far
    fewer tokens a step, so per-step overhead and padding dominate: then the minutes are a lower bound
    (``lower_bound``) and ``assumptions`` says why."""
    tflops = float(gpu.get("tflops_bf16") or REF_TFLOPS)
    tokens = data_tokens * epochs if epochs else steps * eff_batch * seq
    if params < MIN_SCALED_PARAMS:  # small models are bound by overheads, not FLOPs: the scaling does not hold
        return {"tokens_per_s": None, "tokens": int(tokens), "train_minutes": None,
                "basis": f"no estimate below {MIN_SCALED_PARAMS / 1e9:.0f}B parameters (overhead-bound)"}
    tps = REF_TOKENS_PER_S.get(method, REF_TOKENS_PER_S["lora"]) * REF_PARAMS / max(params, 1) * tflops / REF_TFLOPS
    per_step = (data_tokens / rows if rows else seq) * per_device_batch if not packing else seq * per_device_batch
    lower = per_step < REF_STEP_TOKENS / 4
    note = (f"assumes rows as full as the reference's ({REF_STEP_TOKENS:,} tokens a step); this plan's steps carry "
            f"~{per_step:,.0f} tokens ({'unpacked ' if not packing else ''}batch {per_device_batch}), so per-step "
            f"overhead and padding dominate: the minutes are a LOWER BOUND - expect several times longer; "
            f"--packing fills rows, or measure a few steps on the GPU" if lower else
            f"assumes rows as full as the reference's ({REF_STEP_TOKENS:,} tokens a step; this plan ~{per_step:,.0f})")
    return {"tokens_per_s": round(tps), "tokens": int(tokens), "train_minutes": round(tokens / tps / 60, 2),
            "lower_bound": lower, "tokens_per_step": round(per_step), "assumptions": note,
            "basis": "torchtune's published RTX 4090 Llama-3.1-8B figure (LoRA 3,083 / QLoRA 2,413 tok/s, batch 2 "
                     "x 2048 packed), scaled by parameter count and peak bf16 TFLOPS - a rough estimate, not a "
                     "measurement"}


def quantization_config(dtype: str) -> dict[str, Any]:
    """The NF4 QLoRA setting (BitsAndBytesConfig keyword arguments, JSON-serialisable)."""
    compute = {"bf16": "bfloat16", "fp16": "float16"}.get(dtype, "float32")
    return {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": compute, "bnb_4bit_quant_storage": compute}


def _bnb_version() -> tuple[int, ...] | None:
    if not has_module("bitsandbytes"):
        return None
    import importlib.metadata as md

    try:
        return tuple(int(x) for x in md.version("bitsandbytes").split(".")[:2])
    except (md.PackageNotFoundError, ValueError):
        return None


def device_problems(cfg, plan: dict[str, Any], device: dict[str, Any], *,
                    planning: bool = False) -> list[dict[str, str]]:
    """Settings the machine that will train cannot honour: {code, message, hint, severity}."""
    out = []
    kind = plan["device"]
    here = "the target GPU" if planning else f"this machine ({device.get('name', kind)})"
    if cfg.method == "qlora":
        if kind == "mps":
            out.append({"code": "qlora_unsupported_device", "severity": "error",
                        "message": "--method qlora: bitsandbytes has no 4-bit backend for Apple MPS",
                        "hint": "use --method lora (bf16 weights), or train on a CUDA GPU"})
        elif not planning:
            v = _bnb_version()
            need = MIN_BNB_CPU if kind == "cpu" else (0, 0)
            if v is None or v < need:
                ver = ".".join(map(str, MIN_BNB_CPU)) if kind == "cpu" else ""
                out.append({"code": "qlora_needs_bitsandbytes", "severity": "error",
                            "message": "--method qlora needs bitsandbytes" + (f" >= {ver} (its CPU backend)" if ver
                                                                              else "")
                            + ("" if v is None else f"; found {'.'.join(map(str, v))}"),
                            "hint": f"{pip_command(repr('bitsandbytes>=0.50'))} (in the train extra), or --method lora"})
    if cfg.bfloat16 is True:
        if kind == "cuda" and not device.get("bf16", True) and not planning:
            out.append({"code": "bf16_unsupported", "severity": "error",
                        "message": f"--bf16 on: {here} has no bfloat16 support (pre-Ampere GPU)",
                        "hint": "use --bf16 off (fp16 mixed precision) or --bf16 auto"})
        if kind == "mps":
            out.append({"code": "bf16_unsupported", "severity": "error",
                        "message": "--bf16 on: bfloat16 mixed precision is not supported on Apple MPS here",
                        "hint": "use --bf16 off"})
        if kind == "cpu":
            out.append({"code": "bf16_on_cpu", "severity": "warning",
                        "message": "--bf16 on a CPU: weights load in bfloat16 and run under CPU autocast "
                                   "(half the weight memory; speed depends on AVX512-BF16/AMX support)",
                        "hint": ""})
    if cfg.use_unsloth:
        if kind != "cuda":
            out.append({"code": "unsloth_unavailable", "severity": "warning",
                        "message": "use_unsloth: true but Unsloth needs a CUDA GPU; the plain transformers + PEFT "
                                   "path is used", "hint": ""})
        elif not has_module("unsloth") and not planning:
            out.append({"code": "unsloth_unavailable", "severity": "warning",
                        "message": "use_unsloth: true but unsloth is not installed; the plain transformers + PEFT "
                                   "path is used", "hint": pip_command("unsloth")})
    if (plan.get("distributed") or {}).get("strategy") == "fsdp" and cfg.method == "qlora" and kind != "cuda":
        out.append({"code": "fsdp_qlora_needs_cuda", "severity": "error",
                    "message": "FSDP + QLoRA needs CUDA GPUs", "hint": "use DDP (plain accelerate launch) on CPU"})
    return out


def cadence_problems(cfg, plan: dict[str, Any]) -> list[dict[str, str]]:
    """Early stopping, best-checkpoint selection, evaluation or resume that the cadence makes impossible."""
    t = cfg.training
    out = []
    total, ev, saves = plan["total_steps"], plan["eval_steps"], plan["checkpoints"]
    if t.early_stopping_patience and cfg.data.validation:
        n = plan["evaluations"]
        if n < t.early_stopping_patience + 1:
            out.append({"code": "early_stopping_cannot_trigger", "severity": "error",
                        "message": f"early stopping (patience {t.early_stopping_patience}) can never stop this run: "
                                   f"{total} steps with an evaluation every {ev} steps = {n} evaluation(s), and it "
                                   f"needs at least {t.early_stopping_patience + 1}",
                        "hint": f"lower --eval-steps (e.g. {max(1, total // (t.early_stopping_patience + 3))}) or "
                                f"--early-stopping-patience, or leave --eval-steps/--save-steps unset (derived: "
                                f"~{EVALS_PER_RUN} per run)"})
    elif cfg.data.validation and plan["evaluations"] == 0:
        out.append({"code": "never_evaluates", "severity": "warning",
                    "message": f"--validation is given but the run never evaluates ({total} steps, --eval-steps {ev})",
                    "hint": f"lower --eval-steps below {total}, or leave it unset (derived from the step count)"})
    if saves == 0:
        out.append({"code": "no_checkpoint_before_end", "severity": "warning",
                    "message": f"no checkpoint before the end ({total} steps, --save-steps {plan['save_steps']}): an "
                               f"interrupted run cannot be continued with --resume",
                    "hint": f"lower --save-steps below {total}, or leave it unset"})
    return out
