"""LoRA / QLoRA supervised fine-tuning with a preflight that refuses silent failures.

``preflight(cfg)`` always runs first (``--dry-run`` stops after it):

1. the data files pass the validator (``validate.validate_files``);
2. every example is rendered with the model's chat template and labelled by
   ``templating.build_example`` - only assistant turns (with their end-of-turn token) are
   trained, ``weight: 0`` honoured; an example with zero trainable tokens, a template that
   cannot mark assistant turns or drops tool calls, is a blocking problem;
3. truncation at ``max_seq_length`` is counted (examples and trainable tokens lost) and
   refused unless ``allow_truncation``;
4. the pad token is checked: when pad == eos (SmolLM2, Qwen, ...), padding is masked by the
   attention mask and ``-100`` labels while real end-of-turn tokens keep their labels - verified
   on a collated batch; a tokenizer without a pad token gets an existing unused special token;
5. peak GPU memory is estimated (``memory``) against the device (or ``--gpu`` for planning).

``train(...)`` then runs TRL ``SFTTrainer`` + PEFT on the pre-tokenised rows (our labels are
passed as the ``labels`` column, which TRL keeps as is; ``max_length`` is set to our
``max_seq_length`` so TRL's default 1024 never truncates), verifies that TRL did not change
the labels, checkpoints to ``<output_dir>/checkpoints`` (``--resume`` continues from the last
one), aborts on a non-finite loss, and writes the adapter, tokenizer, ``training_log.jsonl``,
``run_manifest.json`` and ``loss_curve.png``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import chat, cli, memory, models, templating
from .bootstrap import pip_command
from .errors import BlockingProblem, UsageError, require
from .jsonl import sha256_file, write_json
from .train_config import FtConfig

LOG_KEYS = ("step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s")
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]", "<|padding|>", "<|PAD_TOKEN|>")
MANIFEST = "run_manifest.json"
LOG_FILE = "training_log.jsonl"
PREFLIGHT_FILE = "preflight.json"
CHECKPOINTS = "checkpoints"
PROBLEM_LINES_SHOWN = 10


# =============================================================================== preflight

@dataclass
class Prepared:
    """What the preflight built and training reuses."""

    cfg: FtConfig
    ref: models.ModelRef
    tokenizer: Any
    device: dict[str, Any]
    rows: dict[str, list[dict[str, list[int]]]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


class _Problems:
    def __init__(self):
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, code: str, message: str, hint: str = "", *, file: str = "", line: int | None = None,
            message_index: int | None = None, severity: str = "error") -> None:
        key = (code, file)
        it = self.items.get(key)
        if it is None:
            it = self.items[key] = {"code": code, "severity": severity, "message": message, "hint": hint,
                                    "file": file or None, "count": 0, "lines": []}
        it["count"] += 1
        if line is not None and len(it["lines"]) < PROBLEM_LINES_SHOWN:
            it["lines"].append(line if message_index is None else {"line": line, "message_index": message_index})

    def errors(self) -> list[dict]:
        return [v for v in self.items.values() if v["severity"] == "error"]

    def warnings(self) -> list[dict]:
        return [v for v in self.items.values() if v["severity"] == "warning"]


def _percentiles(values: list[int]) -> dict[str, int] | None:
    if not values:
        return None
    s = sorted(values)

    def q(p):  # inverted CDF, like the validator
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]
    return {"min": s[0], "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": s[-1]}


def _validate_data(paths: list[str], problems: _Problems) -> dict[str, Any]:
    from . import validate

    doc = validate.validate_files(paths, tokenizer="none", show_progress=sys.stderr.isatty())
    for f in doc["files"]:
        for e in f["errors"]:
            problems.add(f"invalid_data:{e['code']}", e["message"], e.get("hint", ""), file=f["file"],
                         line=e.get("line"), message_index=e.get("message_index"))
        if f.get("format") == "preference":
            problems.add("preference_as_sft", "preference (DPO) lines are trained as SFT on the preferred answer; "
                         "the non-preferred answer is ignored", "this script does supervised fine-tuning only",
                         file=f["file"], severity="warning")
        # keep counts exact even when the validator capped its lists
        for code, n in f.get("counts", {}).items():
            key = (f"invalid_data:{code}", f["file"])
            if key in problems.items and problems.items[key]["count"] < n:
                problems.items[key]["count"] = n
    return {"valid": doc["valid"],
            "files": [{"file": f["file"], "format": f["format"], "examples": f["examples"],
                       "errors": f["error_count"], "warnings": f["warning_count"],
                       "warning_codes": sorted({w["code"] for w in f["warnings"]})} for f in doc["files"]]}


def _load_examples(path: str) -> list[tuple[int, chat.ChatExample]]:
    from . import validate

    return [(line, chat.as_chat(ex)) for line, ex in validate.iter_usable(path)]


def _label_file(name: str, path: str, tok, max_len: int, allow_trunc: bool, problems: _Problems,
                ) -> tuple[list[dict], dict[str, Any]]:
    rows: list[dict] = []
    lengths, trainable_counts = [], []
    truncated = lost = dropped = weight0 = 0
    examples = _load_examples(path)
    for line, ex in cli.progress(examples, desc=f"labelling {name}", unit="ex"):
        weight0 += sum(1 for m in ex.messages if m.role == "assistant" and m.weight == 0)
        try:
            b = templating.build_example(tok, ex, max_len)
        except templating.LabelError as exc:
            problems.add(exc.code, str(exc), exc.hint, file=path, line=line, message_index=exc.message_index)
            continue
        for w in b["warnings"]:
            problems.add(w["code"], w["message"], w.get("hint", ""), file=path, line=line,
                         message_index=w.get("message_index"), severity="warning")
        lengths.append(b["n_tokens"])
        trainable_counts.append(b["n_trainable_full"])
        if b["truncated"]:
            truncated += 1
            lost += b["trainable_lost"]
            if b["n_trainable"] == 0:
                dropped += 1
                continue
        rows.append({"input_ids": b["input_ids"], "labels": b["labels"]})
    stats = {
        "file": path, "sha256": sha256_file(path), "examples": len(examples), "rows": len(rows),
        "total_tokens": sum(lengths), "trainable_tokens": sum(trainable_counts),
        "tokens_per_example": _percentiles(lengths),
        "trainable_per_example": _percentiles(trainable_counts),
        "max_seq_length": max_len, "truncated_examples": truncated, "truncated_trainable_tokens": lost,
        "dropped_fully_truncated": dropped, "weight0_assistant_turns": weight0,
    }
    if truncated:
        msg = (f"{truncated} of {len(examples)} examples are longer than max_seq_length={max_len}; "
               f"{lost} trainable tokens would be cut" + (f" and {dropped} examples lose every trainable token"
                                                          if dropped else ""))
        hint = (f"raise --max-seq-length (longest example: {max(lengths)} tokens, p99: "
                f"{stats['tokens_per_example']['p99']}), shorten or split those examples, "
                f"or pass --allow-truncation to train on the cut versions")
        problems.add("truncation", msg, hint, file=path, severity="warning" if allow_trunc else "error")
    return rows, stats


def choose_pad_token(tok) -> dict[str, Any]:
    """Make sure the tokenizer has a pad token without adding a new one (no embedding resize)."""
    action = "kept"
    if tok.pad_token is None:
        unk = tok.unk_token_id
        choice = None
        for cand in PAD_CANDIDATES:
            i = tok.convert_tokens_to_ids(cand)
            if isinstance(i, int) and i >= 0 and i != unk and tok.convert_ids_to_tokens(i) == cand:
                choice = cand
                break
        if choice is None and tok.unk_token is not None:
            choice = tok.unk_token
        if choice is None:
            choice = tok.eos_token
        tok.pad_token = choice
        action = f"set to existing token {choice!r} (no new token added: that would resize the embeddings)"
    same = tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id
    info = {"pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id, "eos_token": tok.eos_token,
            "eos_token_id": tok.eos_token_id, "pad_equals_eos": same, "action": action}
    if same:
        info["explanation"] = (
            "pad == eos is safe here: labels are built per example before padding, the collator pads "
            "labels with -100 and the attention mask with 0, so every real end-of-turn token keeps its "
            "label and the model learns to stop. (Pipelines that derive labels by masking pad_token_id "
            "would silently mask every eos - not this one.)")
    return info


def _check_collation(rows: list[dict], pad_id: int, eos_ids: set[int], batch_size: int) -> dict[str, Any]:
    """Collate a real batch with TRL's collator and count end-of-turn labels before and after."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    if not rows:
        return {"checked": False}
    # the longest and shortest rows together: the most padding
    pick = sorted(rows, key=lambda r: len(r["input_ids"]))
    batch = (pick[:max(1, batch_size // 2)] + pick[-max(1, batch_size - batch_size // 2):])[:max(2, batch_size)]
    before = sum(1 for r in batch for t in r["labels"] if t in eos_ids)
    out = DataCollatorForLanguageModeling(pad_token_id=pad_id)(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in batch])
    labels = out["labels"]
    after = int(sum(int((labels == e).sum()) for e in eos_ids))
    padded = int((out["attention_mask"] == 0).sum())
    trained_pad = int(((out["attention_mask"] == 0) & (labels != -100)).sum())
    return {"checked": True, "batch_rows": len(batch), "end_of_turn_labels_before": before,
            "end_of_turn_labels_after": after, "padding_positions": padded,
            "padding_positions_trained": trained_pad, "ok": before == after and trained_pad == 0}


def _plan(cfg: FtConfig, n_rows: int, total_tokens: int, device: dict) -> dict[str, Any]:
    t = cfg.training
    if t.packing:
        rows = max(1, math.ceil(total_tokens / t.max_seq_length))
    else:
        rows = n_rows
    batches = max(1, math.ceil(rows / t.batch_size))
    per_epoch = max(1, batches // t.gradient_accumulation_steps + int(batches % t.gradient_accumulation_steps > 0))
    total = t.max_steps or max(1, math.ceil(per_epoch * t.epochs))
    warmup = t.warmup_steps if t.warmup_steps is not None else math.ceil(0.03 * total)
    logging = t.logging_steps or max(1, min(10, total // 20))
    gc = t.gradient_checkpointing if t.gradient_checkpointing != "auto" else device["kind"] == "cuda"
    if cfg.bfloat16 == "auto":
        bf16 = bool(device.get("bf16")) and device["kind"] == "cuda"
    else:
        bf16 = bool(cfg.bfloat16)
    eval_steps = t.eval_steps or t.save_steps
    save_steps = t.save_steps
    if t.early_stopping_patience and save_steps % eval_steps:
        save_steps = eval_steps
    return {"rows": rows, "rows_are_estimate": t.packing, "steps_per_epoch": per_epoch, "total_steps": total,
            "effective_batch": t.batch_size * t.gradient_accumulation_steps, "warmup_steps": warmup,
            "logging_steps": logging, "gradient_checkpointing": bool(gc), "bf16": bf16,
            "eval_steps": eval_steps if cfg.data.validation else None, "save_steps": save_steps,
            "device": device["kind"]}


def _model_config(ref: models.ModelRef) -> Any:
    transformers = require("transformers", "to read the model config")
    d = models.local_dir(ref)
    if d is not None:
        return json.loads((Path(d) / "config.json").read_text(encoding="utf-8"))
    if ref.kind == "gguf":
        d = models.ensure_hf_dir(ref)
        return json.loads((Path(d) / "config.json").read_text(encoding="utf-8"))
    return transformers.AutoConfig.from_pretrained(ref.path).to_dict()


def memory_section(shape_cfg: Any, cfg: FtConfig, plan: dict, seq_len: int, device: dict,
                   seq_hint: int | None = None) -> dict[str, Any]:
    shape = memory.Shape.from_config(shape_cfg)
    params = {"method": cfg.method, "r": cfg.lora.r, "target_modules": cfg.lora.target_modules,
              "batch_size": cfg.training.batch_size, "seq_len": seq_len,
              "gradient_checkpointing": plan["gradient_checkpointing"],
              "dtype": "bf16" if (plan["bf16"] or device["kind"] == "cuda") else "fp32",
              "lora_dropout": cfg.lora.dropout}
    return memory.estimate_report(shape, params, device, seq_hint)


def preflight(cfg: FtConfig, *, gpu: str | None = None, skip_memory_check: bool = False) -> Prepared:
    """Run every check; return the prepared rows and the report (``report["ok"]``)."""
    if not cfg.base_model:
        raise UsageError("no base model: pass --base-model (hub id, local dir, .gguf, or smollm2-135m) "
                         "or set base_model in the config")
    if not cfg.data.train:
        raise UsageError("no training data: pass --train FILE.jsonl or set data.train in the config")
    paths = [cfg.data.train] + ([cfg.data.validation] if cfg.data.validation else [])
    for p in paths:
        if not Path(p).is_file():
            raise UsageError(f"data file not found: {p}")
    if cfg.chat_template and not Path(cfg.chat_template).is_file():
        raise UsageError(f"chat template file not found: {cfg.chat_template}")
    if cfg.init_adapter:
        ia = Path(cfg.init_adapter)
        if not (ia / "adapter_config.json").is_file():
            raise UsageError(f"--init-adapter {ia}: no adapter_config.json there (give a train_lora.py output "
                             f"dir or a PEFT adapter dir)")
    t = cfg.training
    if t.report_to != "none" and not _importable(t.report_to):
        raise UsageError(f"--report-to {t.report_to}: the package is not installed ({pip_command(t.report_to)})")
    if t.early_stopping_patience and not cfg.data.validation:
        raise UsageError("early stopping needs a validation file (--validation FILE.jsonl)")
    require("torch", "to train")
    require("transformers", "to train")
    require("trl", "to train")
    require("peft", "to train")
    ref = models.resolve(cfg.base_model)
    device = memory.detect_device()
    if cfg.method == "qlora" and device["kind"] != "cuda" and not gpu:
        raise UsageError("QLoRA (--method qlora) needs an NVIDIA GPU with CUDA (bitsandbytes 4-bit); "
                         "on this machine use --method lora, or plan with --dry-run --gpu rtx4090")
    if cfg.method == "qlora" and device["kind"] == "cuda" and not _importable("bitsandbytes"):
        raise UsageError(f"QLoRA (--method qlora) needs bitsandbytes: {pip_command('bitsandbytes')}")
    try:
        tok = models.load_tokenizer(ref)
    except UsageError:
        raise
    except (OSError, ValueError) as exc:
        raise UsageError(f"could not load the tokenizer of '{cfg.base_model}': "
                         f"{' '.join(str(exc).split())[:300]}") from exc
    if cfg.chat_template:
        tok.chat_template = Path(cfg.chat_template).read_text(encoding="utf-8")

    problems = _Problems()
    report: dict[str, Any] = {"stage": "preflight", "config": cfg.resolved(),
                              "base_model": {"spec": ref.spec, "kind": ref.kind}}
    report["validation"] = _validate_data(paths, problems)

    tinfo = templating.inspect_template(tok)
    report["template"] = tinfo.to_dict()
    if tinfo.problem:
        p = tinfo.problem
        problems.add(p["code"], p["message"], p["hint"])

    rows: dict[str, list[dict]] = {}
    data_stats: dict[str, Any] = {}
    if report["validation"]["valid"] and not tinfo.problem:
        for name, path in (("train", cfg.data.train), ("validation", cfg.data.validation)):
            if not path:
                continue
            rows[name], data_stats[name] = _label_file(name, path, tok, cfg.training.max_seq_length,
                                                       cfg.training.allow_truncation, problems)
        if cfg.data.train and not rows.get("train") and not problems.errors():
            problems.add("no_training_rows", "no usable training example is left", "check the data file")
    report["data"] = data_stats

    pad = choose_pad_token(tok)
    eos_ids = templating.end_of_turn_ids(tok)
    if rows.get("train"):
        pad["collation_check"] = _check_collation(rows["train"], tok.pad_token_id, eos_ids,
                                                  cfg.training.batch_size)
        if pad["collation_check"].get("ok") is False:
            problems.add("pad_masks_eos", "collation changed end-of-turn labels or trained padding",
                         "report this: labels would not teach the model to stop")
    report["pad_token"] = pad

    ntok = data_stats.get("train", {}).get("total_tokens", 0)
    plan = _plan(cfg, len(rows.get("train", [])), ntok, device)
    report["plan"] = plan
    report["device"] = device

    # memory
    mem_device = memory.named_gpu(gpu) if gpu else device
    try:
        shape_cfg = _model_config(ref)
        longest = (data_stats.get("train", {}).get("tokens_per_example") or {}).get("max")
        seq = cfg.training.max_seq_length if cfg.training.packing or not longest else \
            min(cfg.training.max_seq_length, longest)
        p99 = (data_stats.get("train", {}).get("tokens_per_example") or {}).get("p99")
        if gpu or device["kind"] == "cuda":
            plan_for_mem = {**plan, "gradient_checkpointing": plan["gradient_checkpointing"] if not gpu else
                            (cfg.training.gradient_checkpointing if cfg.training.gradient_checkpointing != "auto"
                             else True), "bf16": True}
        else:
            plan_for_mem = plan
        report["memory"] = memory_section(shape_cfg, cfg, plan_for_mem, seq, mem_device, seq_hint=p99)
        fit = report["memory"].get("fit", {})
        if fit.get("verdict") == "does_not_fit" and mem_device["kind"] == "cuda" and not skip_memory_check:
            sug = [s for s in report["memory"].get("suggestions", []) if s["verdict"] == "fits"]
            hint = ("; ".join(s["change"] for s in sug[:3]) if sug else
                    "use a smaller model or a larger GPU") + " (or --skip-memory-check to try anyway)"
            problems.add("memory_does_not_fit",
                         f"estimated peak {fit['need_gib']} GiB (with context and fragmentation) exceeds "
                         f"{mem_device['name']} {fit['device_gib']} GiB", hint)
        elif fit.get("verdict") in ("tight", "does_not_fit"):
            problems.add("memory_tight", f"estimated {fit['need_gib']} GiB of {fit['device_gib']} GiB "
                         f"on {mem_device['name']}", "see memory.suggestions", severity="warning")
    except (ValueError, KeyError, OSError, TypeError) as exc:
        report["memory"] = {"error": f"could not estimate memory: {exc}"}

    if cfg.use_unsloth:
        if device["kind"] != "cuda":
            problems.add("unsloth_unavailable", "use_unsloth: true but Unsloth needs a CUDA GPU; "
                         "the plain transformers + PEFT path is used", "", severity="warning")
        elif not _importable("unsloth"):
            problems.add("unsloth_unavailable", "use_unsloth: true but unsloth is not installed; the plain "
                         "transformers + PEFT path is used", pip_command("unsloth"), severity="warning")
    if cfg.init_adapter:
        report["init_adapter"] = _init_adapter_info(cfg, ref, problems)

    report["base_model"]["adapter_base"] = models.model_dir_for_saving(ref)
    report["problems"] = problems.errors()
    report["warnings"] = problems.warnings()
    report["ok"] = not report["problems"]
    return Prepared(cfg=cfg, ref=ref, tokenizer=tok, device=device, rows=rows, report=report)


def _init_adapter_info(cfg: FtConfig, ref, problems: _Problems) -> dict[str, Any]:
    ac = json.loads((Path(cfg.init_adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    info = {"path": str(cfg.init_adapter), "r": ac.get("r"), "alpha": ac.get("lora_alpha"),
            "target_modules": ac.get("target_modules"), "base_model_name_or_path": ac.get("base_model_name_or_path")}
    mine = models.model_dir_for_saving(ref) if ref.kind != "gguf" else None
    theirs = ac.get("base_model_name_or_path")
    if theirs and mine and os.path.normpath(str(theirs)) != os.path.normpath(str(mine)):
        problems.add("init_adapter_base_differs",
                     f"the init adapter was trained on {theirs}, this run's base is {mine}",
                     "an adapter only makes sense on the base it was trained on", severity="warning")
    problems.add("init_adapter_lora_settings",
                 f"LoRA shape comes from the init adapter (r={ac.get('r')}, alpha={ac.get('lora_alpha')}); "
                 "lora.* settings of this run are ignored", "", severity="warning")
    return info


def _importable(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


# =============================================================================== training

class NonFiniteLoss(RuntimeError):
    pass


def check_output_dir(output_dir: str, *, force: bool, resume: bool) -> None:
    """Refuse early (before the preflight) to clobber an output dir."""
    _output_dir_ready(Path(output_dir), force=force, resume=resume)


def _output_dir_ready(out: Path, *, force: bool, resume: bool) -> None:
    if resume:
        if not (out / CHECKPOINTS).is_dir():
            raise UsageError(f"--resume: {out / CHECKPOINTS} not found; nothing to resume (start a new run "
                             f"without --resume)")
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UsageError(f"output directory {out} already exists and is not empty; pass --force to replace "
                             f"it, or --resume to continue its interrupted run")
        ours = any((out / n).exists() for n in (MANIFEST, LOG_FILE, CHECKPOINTS, "adapter_config.json",
                                                 PREFLIGHT_FILE))
        if not ours:
            raise UsageError(f"refusing to --force replace {out}: it does not look like a train_lora.py output "
                             f"(no {MANIFEST}, {CHECKPOINTS}/ or adapter files); choose an empty or new directory")


def _clear_dir(out: Path) -> None:
    """Replace ``out`` by an empty directory (after a successful preflight, with --force)."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / "d")
        shutil.rmtree(old, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _set_cpu_threads(torch) -> dict[str, Any]:
    """Fewer torch threads on a busy CPU: oversubscribed OpenMP threads spin and can make a step
    several times slower (measured 8x on a 2-core machine at load 8). FT_CPU_THREADS or
    OMP_NUM_THREADS override the choice."""
    env = os.environ.get("FT_CPU_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        torch.set_num_threads(int(env))
        return {"threads": int(env), "reason": "environment"}
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    n = max(1, min(cores, cores - int(max(0.0, load - 1.0))))
    torch.set_num_threads(n)
    return {"threads": n, "cores": cores, "load_average": round(load, 2),
            "reason": "busy machine" if n < cores else "all cores"}


def _packages() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "unsloth",
                 "safetensors", "tokenizers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    best, best_step = None, -1
    if not ckpt_dir.is_dir():
        return None
    for d in ckpt_dir.iterdir():
        if d.is_dir() and d.name.startswith("checkpoint-") and (d / "trainer_state.json").is_file():
            try:
                s = int(d.name.split("-", 1)[1])
            except ValueError:
                continue
            if s > best_step:
                best, best_step = d, s
    return best


def _truncate_log(path: Path, max_step: int) -> None:
    """On resume: drop log lines past the checkpoint (they are logged again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except ValueError:
            continue
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, path)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _make_callbacks(transformers, log_path: Path, token_counter: dict, total_steps: int):
    TrainerCallback = transformers.TrainerCallback

    class JsonlLog(TrainerCallback):
        """Write training_log.jsonl: one line per logging step, written at once (a kill loses nothing);
        an evaluation at the same step is merged into that line by rewriting it."""

        def __init__(self):
            self.fh = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed on train end
            self.last: tuple[dict, int] | None = None  # (row, byte offset where its line starts)
            self.last_t = time.perf_counter()
            self.last_tokens = token_counter["tokens"]
            self.rows: list[dict] = []
            self.bar = cli.progress(total=total_steps, desc="training", unit="step")

        def _write(self, row: dict, replace_last: bool = False):
            if replace_last and self.last is not None:
                self.fh.truncate(self.last[1])
                self.rows.pop()
            self.fh.seek(0, os.SEEK_END)
            offset = self.fh.tell()
            self.fh.write(json.dumps(row) + "\n")
            self.fh.flush()
            self.rows.append(row)
            self.last = (row, offset)

        def on_train_begin(self, args, state, control, **kw):
            self.bar.n = state.global_step
            self.bar.refresh()
            self.last_t = time.perf_counter()
            self.last_tokens = token_counter["tokens"]

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            step = state.global_step
            if "eval_loss" in logs:
                if self.last is not None and self.last[0]["step"] == step:
                    self._write({**self.last[0], "eval_loss": logs["eval_loss"]}, replace_last=True)
                else:
                    row = {k: None for k in LOG_KEYS}
                    row.update({"step": step, "epoch": round(float(logs.get("epoch", state.epoch or 0)), 4),
                                "eval_loss": logs["eval_loss"]})
                    self._write(row)
                _say(f"step {step}: eval_loss {logs['eval_loss']:.4f}")
                return
            if "loss" not in logs:
                return
            now = time.perf_counter()
            dt = now - self.last_t
            dtok = token_counter["tokens"] - self.last_tokens
            self.last_t, self.last_tokens = now, token_counter["tokens"]
            row = {"step": step, "epoch": round(float(logs.get("epoch", state.epoch or 0)), 4),
                   "loss": logs.get("loss"), "eval_loss": None, "lr": logs.get("learning_rate"),
                   "grad_norm": logs.get("grad_norm"),
                   "tokens_per_s": round(dtok / dt, 1) if dt > 0 and dtok else None}
            self._write(row)
            loss = logs.get("loss")
            if not sys.stderr.isatty() or os.environ.get("FT_NO_PROGRESS") == "1":
                _say(f"step {step}/{total_steps}: loss {loss if loss is None else round(loss, 4)} "
                     f"lr {logs.get('learning_rate', 0):.2e} tok/s {row['tokens_per_s']}")
            else:
                self.bar.set_postfix(loss=f"{loss:.4f}" if _finite(loss) else loss)

        def on_train_end(self, args, state, control, **kw):
            self.close()

        def close(self):
            if not self.fh.closed:
                self.fh.close()
            self.bar.close()

    return JsonlLog()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load_model(p: Prepared, plan: dict):
    torch = require("torch")
    transformers = require("transformers")
    cfg, ref = p.cfg, p.ref
    cuda = p.device["kind"] == "cuda"
    if cuda:
        dtype = torch.bfloat16 if plan["bf16"] else torch.float16
    else:
        dtype = torch.float32
    unsloth_used = False
    if cfg.use_unsloth and cuda and _importable("unsloth"):
        from unsloth import FastLanguageModel  # noqa: F401 - optional accelerated path (untested here)

        src = str(models.ensure_hf_dir(ref) or ref.path)
        model, _ = FastLanguageModel.from_pretrained(model_name=src, max_seq_length=cfg.training.max_seq_length,
                                                     dtype=dtype, load_in_4bit=cfg.method == "qlora")
        unsloth_used = True
        return model, unsloth_used
    kw: dict[str, Any] = {}
    if cfg.method == "qlora":
        if not cuda:
            raise UsageError("QLoRA needs a CUDA GPU (bitsandbytes NF4); use --method lora on this machine")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"QLoRA needs bitsandbytes: {pip_command('bitsandbytes')}") from exc
        kw["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
        kw["device_map"] = {"": 0}
    try:
        model = models.load_causal_lm(ref, dtype=dtype, **kw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"could not load the base model '{cfg.base_model}': "
                         f"{' '.join(str(exc).split())[:300]}") from exc
    model.config.use_cache = False
    return model, unsloth_used


def _attach_lora(model, p: Prepared, unsloth_used: bool):
    peft = require("peft")
    cfg = p.cfg
    if cfg.init_adapter:
        try:
            return peft.PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True), None
        except (RuntimeError, ValueError, OSError) as exc:
            raise UsageError(f"--init-adapter {cfg.init_adapter} does not fit this base model: "
                             f"{' '.join(str(exc).split())[:300]}") from exc
    targets = cfg.lora.target_modules
    if unsloth_used:
        from unsloth import FastLanguageModel

        tm = list(memory.ALL_LINEAR) if targets in ("all-linear", ["all-linear"]) else targets
        model = FastLanguageModel.get_peft_model(model, r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                                 lora_dropout=cfg.lora.dropout, target_modules=tm, bias="none",
                                                 use_gradient_checkpointing="unsloth",
                                                 random_state=cfg.training.seed)
        return model, None
    lc = peft.LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                         target_modules=targets, bias="none", task_type="CAUSAL_LM")
    return model, lc


def _trainer_class(trl, torch, counter: dict):
    class FtSFTTrainer(trl.SFTTrainer):
        """SFTTrainer that counts real (non-pad) tokens and aborts on a non-finite loss."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            positions = int(inputs["input_ids"].numel())
            if "attention_mask" in inputs:
                counter["tokens"] += int(inputs["attention_mask"].sum())
            else:  # padding-free packing: every position is a real token
                counter["tokens"] += positions
            counter["positions"] = counter.get("positions", 0) + positions
            loss = super().training_step(model, inputs, num_items_in_batch)
            if not torch.isfinite(loss).all():
                raise NonFiniteLoss(f"{float(loss)} at step {self.state.global_step + 1}")
            return loss

    return FtSFTTrainer


def _count_labels(ds) -> tuple[int, int]:
    rows = 0
    trainable = 0
    for lab in ds["labels"]:
        rows += 1
        trainable += sum(1 for t in lab if t != -100)
    return rows, trainable


def train(p: Prepared, *, output_dir: str, force: bool = False, resume: bool = False,
          callbacks: list | None = None) -> dict[str, Any]:
    """Train after a passing preflight; return the run manifest."""
    torch = require("torch")
    cfg, rep = p.cfg, p.report
    plan = rep["plan"]
    out = Path(output_dir)
    _output_dir_ready(out, force=force, resume=resume)

    resume_ckpt = None
    if resume:
        resume_ckpt = _last_checkpoint(out / CHECKPOINTS)
        if resume_ckpt is None:
            raise UsageError(f"--resume: no complete checkpoint in {out / CHECKPOINTS} (the run stopped before "
                             f"its first save_steps); start again with --force")
        _truncate_log(out / LOG_FILE, int(resume_ckpt.name.split("-")[1]))
    else:
        _clear_dir(out)

    started = time.time()
    manifest: dict[str, Any] = {
        "status": "running", "started_at": _iso(started), "config": _absolute_paths(cfg.resolved()),
        "data": {k: {kk: v[kk] for kk in ("file", "sha256", "examples", "rows", "total_tokens",
                                          "trainable_tokens", "truncated_examples")}
                 for k, v in rep["data"].items()},
        "base_model": rep["base_model"], "init_adapter": rep.get("init_adapter"),
        "resumed_from": str(resume_ckpt) if resume_ckpt else None,
        "packages": _packages(), "device": p.device, "plan": plan,
        "memory_estimate_gib": (rep.get("memory") or {}).get("estimate_gib", {}).get("total"),
    }
    if resume and (out / MANIFEST).is_file():
        with contextlib.suppress(ValueError, OSError):
            prev = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
            manifest["previous_runs"] = prev.get("previous_runs", []) + [
                {k: prev.get(k) for k in ("started_at", "finished_at", "status", "steps")}]
    write_json(out / MANIFEST, manifest, force=True)
    write_json(out / PREFLIGHT_FILE, rep, force=True)

    if p.device["kind"] == "cpu":
        manifest["cpu_threads"] = _set_cpu_threads(torch)
    counter = {"tokens": 0, "positions": 0}
    trainer, cb, unsloth_used = build_trainer(p, out, counter, callbacks)
    manifest["unsloth"] = unsloth_used
    cuda = p.device["kind"] == "cuda"

    trainable = sum(x.numel() for x in trainer.model.parameters() if x.requires_grad)
    total_params = sum(x.numel() for x in trainer.model.parameters())
    manifest.update({"trainable_params": trainable, "total_params": total_params})
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    error = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = trainer.train(resume_from_checkpoint=str(resume_ckpt) if resume_ckpt else None)
    except NonFiniteLoss as exc:
        error = (f"training aborted: the loss became non-finite ({exc}). Lower --lr (2e-4 is the usual LoRA "
                 f"value; try 1e-4), keep --max-grad-norm at 1.0, use bf16 rather than fp16, and check the data "
                 f"for extreme or garbage examples. Checkpoints before the failure are in {out / CHECKPOINTS}")
    except KeyboardInterrupt:
        manifest.update({"status": "interrupted", "finished_at": _iso(time.time())})
        write_json(out / MANIFEST, manifest, force=True)
        raise
    except getattr(torch, "OutOfMemoryError", MemoryError) as exc:
        error = (f"out of GPU memory ({' '.join(str(exc).split())[:160]}); see the preflight memory suggestions: "
                 f"--gradient-checkpointing on, --method qlora, a smaller --batch-size with a larger "
                 f"--grad-accum, or a shorter --max-seq-length; continue with --resume")
    finally:
        cb.close()
    duration = time.time() - started
    manifest.update(_peak_memory(torch, cuda))
    manifest.update({"finished_at": _iso(time.time()), "duration_s": round(duration, 1),
                     "steps": trainer.state.global_step, "epochs": round(float(trainer.state.epoch or 0), 4),
                     "tokens_trained": counter["tokens"],
                     "padding_fraction": round(1 - counter["tokens"] / counter["positions"], 4)
                     if counter.get("positions") else None})
    rows = _read_log(out / LOG_FILE)
    losses = [r["loss"] for r in rows if _finite(r.get("loss"))]
    evals = [r["eval_loss"] for r in rows if _finite(r.get("eval_loss"))]
    manifest.update({"first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                     "best_eval_loss": min(evals) if evals else None,
                     "best_checkpoint": trainer.state.best_model_checkpoint})
    if error:
        manifest.update({"status": "failed", "error": error})
        write_json(out / MANIFEST, manifest, force=True)
        _plot(rows, out)
        raise BlockingProblem(error)
    manifest["train_runtime_s"] = round(float(result.metrics.get("train_runtime", duration)), 1)
    files = _save_outputs(trainer, p, out)
    _plot(rows, out)
    manifest.update({"status": "completed", "files": sorted(files + [MANIFEST, LOG_FILE, "loss_curve.png"])})
    write_json(out / MANIFEST, manifest, force=True)
    return manifest


def build_trainer(p: Prepared, out: Path, counter: dict | None = None, callbacks: list | None = None):
    """The configured SFTTrainer for a prepared run: (trainer, log callback, unsloth_used).

    Labels are verified unchanged after TRL's dataset preparation.
    """
    torch = require("torch")
    transformers = require("transformers")
    trl = require("trl")
    datasets = require("datasets")
    plan, t = p.report["plan"], p.cfg.training
    counter = counter if counter is not None else {"tokens": 0}
    out.mkdir(parents=True, exist_ok=True)
    if not sys.stderr.isatty() or os.environ.get("FT_NO_PROGRESS") == "1":
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    model, unsloth_used = _load_model(p, plan)
    model, peft_config = _attach_lora(model, p, unsloth_used)

    def _ds(rows):
        return datasets.Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                           "labels": [r["labels"] for r in rows]})
    ds_train = _ds(p.rows["train"])
    ds_eval = _ds(p.rows["validation"]) if p.rows.get("validation") else None
    cuda = p.device["kind"] == "cuda"
    sft_kw = dict(
        output_dir=str(out / CHECKPOINTS), per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=plan["warmup_steps"],
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1, logging_steps=plan["logging_steps"], logging_first_step=True,
        logging_nan_inf_filter=False, save_strategy="steps", save_steps=plan["save_steps"],
        save_total_limit=t.save_total_limit, eval_strategy="steps" if ds_eval is not None else "no",
        eval_steps=plan["eval_steps"] if ds_eval is not None else None,
        load_best_model_at_end=bool(t.early_stopping_patience),
        metric_for_best_model="eval_loss" if t.early_stopping_patience else None,
        greater_is_better=False if t.early_stopping_patience else None,
        bf16=plan["bf16"], fp16=cuda and not plan["bf16"],
        report_to=[] if t.report_to == "none" else [t.report_to], seed=t.seed, data_seed=t.seed,
        max_length=t.max_seq_length, packing=t.packing, packing_strategy="bfd",
        use_cpu=p.device["kind"] == "cpu", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=cuda, save_only_model=False,
        completion_only_loss=False, assistant_only_loss=False,
    )
    ckpt_on = plan["gradient_checkpointing"] and not unsloth_used
    fields = {f.name for f in dataclasses.fields(trl.SFTConfig)}
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    sft_kw[name] = ckpt_on
    sft_kw[name + "_kwargs"] = {"use_reentrant": False} if ckpt_on else None
    sft_config = trl.SFTConfig(**sft_kw)
    cb = _make_callbacks(transformers, out / LOG_FILE, counter, plan["total_steps"])
    all_cbs = [cb] + list(callbacks or [])
    if t.early_stopping_patience:
        all_cbs.append(transformers.EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    Trainer = _trainer_class(trl, torch, counter)
    with contextlib.redirect_stdout(sys.stderr):  # libraries must not write into our --json stdout
        trainer = Trainer(model=model, args=sft_config, train_dataset=ds_train, eval_dataset=ds_eval,
                          processing_class=p.tokenizer, peft_config=peft_config, callbacks=all_cbs)
    for c in (transformers.trainer_callback.PrinterCallback, transformers.trainer_callback.ProgressCallback):
        trainer.remove_callback(c)
    _verify_labels_kept(trainer, ds_train, t.packing)
    return trainer, cb, unsloth_used



def _absolute_paths(conf: dict[str, Any]) -> dict[str, Any]:
    """Paths in the stored config made absolute, so --resume works from any directory."""
    def ab(v):
        return str(Path(v).resolve()) if isinstance(v, str) and v and Path(v).exists() else v
    conf = json.loads(json.dumps(conf))
    conf["data"] = {k: ab(v) for k, v in (conf.get("data") or {}).items()}
    for k in ("chat_template", "init_adapter", "base_model", "output_dir"):
        conf[k] = ab(conf.get(k))
    return conf


def _verify_labels_kept(trainer, ds_train, packing: bool) -> None:
    """TRL must train on exactly our labels: same trainable-token count, no re-masking or cutting."""
    ours_rows, ours = _count_labels(ds_train)
    theirs_rows, theirs = _count_labels(trainer.train_dataset)
    if theirs != ours or (not packing and theirs_rows != ours_rows):
        raise BlockingProblem(f"TRL changed the training labels ({ours} trainable tokens in {ours_rows} rows "
                              f"became {theirs} in {theirs_rows}); refusing to train on labels we did not build")


def _peak_memory(torch, cuda: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cuda:
        out["peak_memory"] = {"kind": "cuda_max_allocated",
                              "gib": round(torch.cuda.max_memory_allocated() / memory.GIB, 2),
                              "reserved_gib": round(torch.cuda.max_memory_reserved() / memory.GIB, 2)}
    else:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["peak_memory"] = {"kind": "process_max_rss", "gib": round(rss / memory.GIB, 2)}
    return out


def _save_outputs(trainer, p: Prepared, out: Path) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", suffix=".tmp", dir=out))
    try:
        model = trainer.model
        model.save_pretrained(str(tmp), safe_serialization=True)
        p.tokenizer.save_pretrained(str(tmp))
        ac_path = tmp / "adapter_config.json"
        if ac_path.is_file():
            ac = json.loads(ac_path.read_text(encoding="utf-8"))
            ac["base_model_name_or_path"] = models.model_dir_for_saving(p.ref)
            ac_path.write_text(json.dumps(ac, indent=2) + "\n", encoding="utf-8")
        if not (tmp / "adapter_model.safetensors").is_file():
            raise BlockingProblem("the adapter was not saved as adapter_model.safetensors")
        names = []
        for f in sorted(tmp.iterdir()):
            if f.is_file() and f.name != "README.md":
                os.replace(f, out / f.name)
                names.append(f.name)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _plot(rows: list[dict], out: Path) -> None:
    if not rows:
        return
    try:
        from . import plots

        plots.plot_loss_curve(rows, out / "loss_curve.png", title="training loss")
    except Exception as exc:  # noqa: BLE001 - a plot must not fail a finished run
        _say(f"warning: could not draw loss_curve.png: {exc}")


def _read_log(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# =============================================================================== summaries

def previous_config(output_dir: str | None) -> dict[str, Any] | None:
    """The config of the run in ``output_dir`` (for --resume without repeating every flag)."""
    if not output_dir:
        return None
    m = Path(output_dir) / MANIFEST
    if not m.is_file():
        return None
    try:
        return json.loads(m.read_text(encoding="utf-8")).get("config")
    except (ValueError, OSError):
        return None


def check_resume_data(output_dir: str, report: dict[str, Any]) -> None:
    m = Path(output_dir) / MANIFEST
    if not m.is_file():
        return
    prev = json.loads(m.read_text(encoding="utf-8"))
    for name, d in (prev.get("data") or {}).items():
        now = (report.get("data") or {}).get(name)
        if now and d.get("sha256") and now.get("sha256") != d["sha256"]:
            raise UsageError(f"--resume: the {name} data changed since the interrupted run ({d['file']}); "
                             f"--resume continues the same run on the same data - to train an existing "
                             f"adapter on new data use --init-adapter {output_dir} with a new --output-dir")


def format_preflight(rep: dict[str, Any]) -> str:
    lines = [cli.color("preflight", "bold") + f" - base model {rep['base_model']['spec']}"]
    for f in (rep.get("validation") or {}).get("files", []):
        lines.append(f"  validator: {f['file']}: {f['examples']} examples, {f['errors']} errors, {f['warnings']} "
                     f"warnings" + (f" ({', '.join(f['warning_codes'])})" if f["warning_codes"] else ""))
    for name, d in (rep.get("data") or {}).items():
        tpe = d.get("tokens_per_example") or {}
        lines.append(f"  {name}: {d['examples']} examples, {d['total_tokens']:,} tokens "
                     f"({d['trainable_tokens']:,} trainable), per example p50 {tpe.get('p50')} / max "
                     f"{tpe.get('max')}, truncated at {d['max_seq_length']}: {d['truncated_examples']}")
    t = rep.get("template") or {}
    lines.append(f"  chat template: {'yes' if t.get('has_template') else 'NO'}; tools rendered: "
                 f"{t.get('supports_tools')}; tool calls rendered: {t.get('renders_tool_calls')}; end-of-turn "
                 f"tokens: {', '.join(t.get('end_of_turn_tokens') or []) or '-'}")
    pad = rep.get("pad_token") or {}
    if pad:
        cc = pad.get("collation_check") or {}
        lines.append(f"  pad token {pad.get('pad_token')!r} ({pad.get('action')})"
                     + ("; pad == eos: safe (labels built before padding; padding masked)"
                        if pad.get("pad_equals_eos") else "")
                     + (f"; end-of-turn labels kept after collation {cc.get('end_of_turn_labels_after')}/"
                        f"{cc.get('end_of_turn_labels_before')}" if cc.get("checked") else ""))
    plan = rep.get("plan") or {}
    if plan:
        lines.append(f"  plan: {plan['total_steps']} optimizer steps ({plan['steps_per_epoch']}/epoch), "
                     f"effective batch {plan['effective_batch']}, device {plan['device']}, bf16 {plan['bf16']}, "
                     f"gradient checkpointing {plan['gradient_checkpointing']}")
    mem = rep.get("memory") or {}
    if "estimate_gib" in mem:
        e = mem["estimate_gib"]
        fit = mem.get("fit") or {}
        lines.append(f"  memory estimate: {e['total']} GiB (weights {e['weights']}, LoRA+optimizer "
                     f"{e['lora_states']}, activations {e['activations']}, loss head {e['logits']}) on "
                     f"{mem['device']['name']} {mem['device'].get('memory_gib')} GiB: {fit.get('verdict', '-')}")
        for s in mem.get("suggestions", [])[:4]:
            lines.append(f"    - {s['change']}: {s['estimate_gib']} GiB ({s['verdict']})")
    elif mem.get("error"):
        lines.append(f"  memory: {mem['error']}")
    for w in rep.get("warnings", []):
        lines.append(cli.color("  warning", "yellow") + f" [{w['code']}] {w['message']}"
                     + (f" (x{w['count']})" if w["count"] > 1 else "") + (f" -> {w['hint']}" if w["hint"] else ""))
    for e in rep.get("problems", []):
        where = f" {e['file']}" if e.get("file") else ""
        ln = f" lines {_fmt_lines(e['lines'])}" if e.get("lines") else ""
        lines.append(cli.color("  BLOCKING", "red") + f" [{e['code']}]{where}{ln}: {e['message']}"
                     + (f" (x{e['count']})" if e["count"] > 1 else "") + (f" -> {e['hint']}" if e["hint"] else ""))
    lines.append("preflight: " + ("OK" if rep.get("ok") else "FAILED (nothing was trained)"))
    return "\n".join(lines)


def _fmt_lines(lines: list) -> str:
    return ", ".join(str(x["line"]) + f"[msg {x['message_index']}]" if isinstance(x, dict) else str(x)
                     for x in lines)


def format_result(manifest: dict[str, Any], out: str) -> str:
    pm = manifest.get("peak_memory") or {}
    return "\n".join([
        f"trained {manifest['steps']} steps ({manifest['epochs']} epochs) in {manifest['duration_s']} s; "
        f"loss {manifest.get('first_loss')} -> {manifest.get('final_loss')}"
        + (f"; best eval_loss {manifest['best_eval_loss']}" if manifest.get("best_eval_loss") is not None else ""),
        f"trainable params {manifest['trainable_params']:,} of {manifest['total_params']:,}; peak memory "
        f"{pm.get('gib')} GiB ({pm.get('kind')})",
        f"adapter: {out}  (loss curve: {Path(out) / 'loss_curve.png'})",
    ])
