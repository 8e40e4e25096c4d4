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
5. the run plan (``train_plan``): steps, eval/save cadence derived from the step count,
   precision and checkpointing for the machine that trains (or the ``--gpu`` target of a plan),
   the distributed setup; settings the device cannot honour and an early stopping that can
   never trigger are named;
6. peak memory is estimated (``memory``) against the device (or ``--gpu`` for planning).

``train(...)`` then builds TRL ``SFTTrainer`` + PEFT from the plan (``trainer``), checkpoints
to ``<output_dir>/checkpoints`` (``--resume`` continues from the last one), aborts on a
non-finite loss, and writes (rank 0 only, ``train_outputs``) the adapter, tokenizer,
``training_log.jsonl``, ``run_manifest.json`` and ``loss_curve.png``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import chat, cli, memory, models, templating, train_plan
from .bootstrap import has_module, pip_command
from .errors import BlockingProblem, UsageError, require
from .jsonl import sha256_file, write_json
from .outputs import check_input_file, load_json_input, read_text_input
from .train_config import FtConfig
from .train_outputs import CHECKPOINTS, LOG_FILE, MANIFEST, PREFLIGHT_FILE  # noqa: F401 - public names
from .train_outputs import check_output_dir, check_resume_data, format_result, previous_config  # noqa: F401
from .trainer import NonFiniteLoss, build_trainer  # noqa: F401

PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]", "<|padding|>", "<|PAD_TOKEN|>")
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


def _hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached right now (None = it can, or we cannot tell)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy decides; let the hub client try
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"no connection to {host} ({exc.__class__.__name__})"
    return None


def fail_fast_offline(ref: models.ModelRef) -> None:
    """A hub id that is not cached, with the Hub out of reach: one line now, instead of ~45 s of retries."""
    if ref.kind != "hub":
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(ref.path, "config.json"), str):
            return  # cached: transformers reads it offline
    except (ImportError, ValueError):
        pass
    why = _hub_unreachable()
    if why is None:
        return
    name = ref.path.split("/")[-1].lower()
    alias = max((k for k in memory.KNOWN_SHAPES if name.startswith(k)), key=len, default=None)
    shape = f"--base-model {alias}" if alias else f"a known shape ({', '.join(memory.KNOWN_SHAPES)})"
    raise UsageError(f"'{ref.spec}' is not in the local Hugging Face cache and the Hub is out of reach ({why}): "
                     f"plan offline with --memory-only {shape}, or --memory-only --model-config config.json "
                     f"(saved from https://huggingface.co/{ref.path}/blob/main/config.json); a full --dry-run "
                     f"needs the model's tokenizer (online once, or a local model directory)")


def _model_config(ref: models.ModelRef) -> Any:
    transformers = require("transformers", "to read the model config")
    fail_fast_offline(ref)
    d = models.local_dir(ref)
    if d is not None:
        return json.loads((Path(d) / "config.json").read_text(encoding="utf-8"))
    if ref.kind == "gguf":
        d = models.ensure_hf_dir(ref)
        return json.loads((Path(d) / "config.json").read_text(encoding="utf-8"))
    try:
        return transformers.AutoConfig.from_pretrained(ref.path).to_dict()
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"could not read the config of '{ref.spec}' ({' '.join(str(exc).split())[:120]}); offline or not "
            f"cached? Save its config.json (https://huggingface.co/{ref.path}/blob/main/config.json) and pass "
            f"--model-config config.json, or use a known shape: {', '.join(memory.KNOWN_SHAPES)}") from exc


def read_model_config(path: str) -> dict[str, Any]:
    """A model's config.json given with --model-config (for planning without the weights)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--model-config {p}: file not found (give a model's config.json)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"--model-config {p}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise UsageError(f"--model-config {p}: not a config.json object")
    try:
        memory.Shape.from_config(doc)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"--model-config {p}: {exc}") from exc
    return doc


def memory_section(shape_cfg: Any, cfg: FtConfig, plan: dict, seq_len: int, device: dict,
                   seq_hint: int | None = None) -> dict[str, Any]:
    shape = memory.Shape.from_config(shape_cfg)
    dist = plan.get("distributed") or {}
    params = {"method": cfg.method, "r": cfg.lora.r, "target_modules": cfg.lora.target_modules,
              "batch_size": cfg.training.batch_size, "seq_len": seq_len,
              "gradient_checkpointing": plan["gradient_checkpointing"],
              "dtype": "fp32" if plan.get("dtype", "bf16") == "fp32" else "bf16",
              "lora_dropout": cfg.lora.dropout,
              "shards": int(dist.get("world_size") or 1) if dist.get("strategy") == "fsdp" else 1}
    return memory.estimate_report(shape, params, device, seq_hint)


def preflight(cfg: FtConfig, *, gpu: str | None = None, skip_memory_check: bool = False) -> Prepared:
    """Run every check; return the prepared rows and the report (``report["ok"]``)."""
    paths = _check_inputs(cfg)
    require("torch", "to train")
    require("transformers", "to train")
    require("trl", "to train")
    require("peft", "to train")
    ref = models.resolve(cfg.base_model)
    device = memory.detect_device()
    target = memory.named_gpu(gpu) if gpu else None
    fail_fast_offline(ref)
    tok = _load_tokenizer(cfg, ref)

    problems = _Problems()
    report: dict[str, Any] = {"stage": "preflight", "config": cfg.resolved(),
                              "base_model": {"spec": ref.spec, "kind": ref.kind}}
    report["validation"] = _validate_data(paths, problems)
    tinfo = templating.inspect_template(tok)
    report["template"] = tinfo.to_dict()
    if tinfo.problem:
        p = tinfo.problem
        problems.add(p["code"], p["message"], p["hint"])
    rows, data_stats = _label_data(cfg, tok, problems, ok=report["validation"]["valid"] and not tinfo.problem)
    report["data"] = data_stats
    report["pad_token"] = _pad_report(tok, rows, cfg, problems)

    shape_cfg, shape_error = _shape_config(ref)
    base_params = memory.Shape.from_config(shape_cfg).params()["total"] if shape_cfg is not None else None
    train_stats = data_stats.get("train", {})
    dist = train_plan.distributed_env()
    plan = train_plan.make_plan(cfg, len(rows.get("train", [])), train_stats.get("total_tokens", 0), device,
                                target=target, dist=dist, base_params=base_params)
    report["plan"] = plan
    report["device"] = device
    report["distributed"] = dist if dist["world_size"] > 1 else None
    for d in train_plan.device_problems(cfg, plan, device, planning=target is not None) + \
            train_plan.cadence_problems(cfg, plan):
        problems.add(d["code"], d["message"], d["hint"], severity=d["severity"])
    report["memory"] = _memory_report(cfg, plan, shape_cfg, shape_error, train_stats, target or device,
                                      problems, skip_memory_check)
    if cfg.init_adapter:
        report["init_adapter"] = _init_adapter_info(cfg, ref, problems)
    report["base_model"]["adapter_base"] = models.model_dir_for_saving(ref)
    report["cache"] = models.cache_info(ref)
    report["problems"] = problems.errors()
    report["warnings"] = problems.warnings()
    report["ok"] = not report["problems"]
    return Prepared(cfg=cfg, ref=ref, tokenizer=tok, device=device, rows=rows, report=report)


def _check_inputs(cfg: FtConfig) -> list[str]:
    if not cfg.base_model:
        raise UsageError("no base model: pass --base-model (hub id, local dir, .gguf, or smollm2-135m) "
                         "or set base_model in the config")
    if not cfg.data.train:
        raise UsageError("no training data: pass --train FILE.jsonl or set data.train in the config")
    paths = [cfg.data.train] + ([cfg.data.validation] if cfg.data.validation else [])
    for p in paths:
        if not Path(p).exists():
            raise UsageError(f"data file not found: {p}")
        check_input_file(p, "data file")  # a FIFO/device/unreadable file: exit 2, never read
    if cfg.chat_template:
        if not Path(cfg.chat_template).exists():
            raise UsageError(f"chat template file not found: {cfg.chat_template}")
        read_text_input(cfg.chat_template, "chat template")  # binary: one line, exit 2
    if cfg.init_adapter and not (Path(cfg.init_adapter) / "adapter_config.json").is_file():
        raise UsageError(f"--init-adapter {cfg.init_adapter}: no adapter_config.json there (give a train_lora.py "
                         f"output dir or a PEFT adapter dir)")
    t = cfg.training
    if t.report_to != "none" and not has_module(t.report_to):
        raise UsageError(f"--report-to {t.report_to}: the package is not installed ({pip_command(t.report_to)})")
    if t.early_stopping_patience and not cfg.data.validation:
        raise UsageError("early stopping needs a validation file (--validation FILE.jsonl)")
    return paths


def _load_tokenizer(cfg: FtConfig, ref: models.ModelRef):
    try:
        tok = models.load_tokenizer(ref)
    except UsageError:
        raise
    except (OSError, ValueError) as exc:
        raise UsageError(f"could not load the tokenizer of '{cfg.base_model}': "
                         f"{' '.join(str(exc).split())[:300]}") from exc
    if cfg.chat_template:
        tok.chat_template = read_text_input(cfg.chat_template, "chat template")
    return tok


def _label_data(cfg: FtConfig, tok, problems: _Problems, *, ok: bool) -> tuple[dict, dict]:
    rows: dict[str, list[dict]] = {}
    stats: dict[str, Any] = {}
    if not ok:
        return rows, stats
    for name, path in (("train", cfg.data.train), ("validation", cfg.data.validation)):
        if path:
            rows[name], stats[name] = _label_file(name, path, tok, cfg.training.max_seq_length,
                                                  cfg.training.allow_truncation, problems)
    if cfg.data.train and not rows.get("train") and not problems.errors():
        problems.add("no_training_rows", "no usable training example is left", "check the data file")
    return rows, stats


def _pad_report(tok, rows: dict, cfg: FtConfig, problems: _Problems) -> dict[str, Any]:
    pad = choose_pad_token(tok)
    if rows.get("train"):
        pad["collation_check"] = _check_collation(rows["train"], tok.pad_token_id, templating.end_of_turn_ids(tok),
                                                  cfg.training.batch_size)
        if pad["collation_check"].get("ok") is False:
            problems.add("pad_masks_eos", "collation changed end-of-turn labels or trained padding",
                         "report this: labels would not teach the model to stop")
    return pad


def _shape_config(ref: models.ModelRef) -> tuple[Any, str | None]:
    try:
        cfg = _model_config(ref)
        memory.Shape.from_config(cfg)
        return cfg, None
    except UsageError as exc:
        return None, str(exc)
    except (ValueError, KeyError, OSError, TypeError) as exc:
        return None, f"could not estimate memory: {exc}"


def _memory_report(cfg: FtConfig, plan: dict, shape_cfg: Any, shape_error: str | None, stats: dict,
                   mem_device: dict, problems: _Problems, skip_memory_check: bool) -> dict[str, Any]:
    if shape_cfg is None:
        return {"error": shape_error}
    tpe = stats.get("tokens_per_example") or {}
    longest = tpe.get("max")
    seq = cfg.training.max_seq_length if cfg.training.packing or not longest else \
        min(cfg.training.max_seq_length, longest)
    try:
        rep = memory_section(shape_cfg, cfg, plan, seq, mem_device, seq_hint=tpe.get("p99"))
    except (ValueError, KeyError, TypeError) as exc:
        return {"error": f"could not estimate memory: {exc}"}
    _check_target_modules(cfg, shape_cfg, problems)
    fit = rep.get("fit", {})
    if fit.get("verdict") == "does_not_fit" and mem_device["kind"] == "cuda" and not skip_memory_check:
        sug = [s for s in rep.get("suggestions", []) if s["verdict"] == "fits"]
        hint = ("; ".join(s["change"] for s in sug[:3]) if sug else
                "use a smaller model or a larger GPU") + " (or --skip-memory-check to try anyway)"
        problems.add("memory_does_not_fit",
                     f"estimated peak {fit['need_gib']} GiB (with context and fragmentation) exceeds "
                     f"{mem_device['name']} {fit['device_gib']} GiB", hint)
    elif fit.get("verdict") in ("tight", "does_not_fit"):
        problems.add("memory_tight", f"estimated {fit['need_gib']} GiB of {fit['device_gib']} GiB "
                     f"on {mem_device['name']}", "see memory.suggestions", severity="warning")
    return rep


def _check_target_modules(cfg: FtConfig, shape_cfg: Any, problems: _Problems) -> None:
    """Named target modules must exist in the model (an empty-weight model on the meta device: instant,
    no download); otherwise PEFT fails only after the weights were loaded."""
    targets = cfg.lora.target_modules
    if cfg.init_adapter or isinstance(targets, str) or not isinstance(shape_cfg, dict):
        return  # all-linear or a regex: PEFT resolves it
    try:
        import torch
        import transformers

        conf = transformers.AutoConfig.for_model(**shape_cfg)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(conf)
        full = [n for n, m in model.named_modules()
                if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d)) or type(m).__name__ == "Conv1D"]
    except Exception:  # noqa: BLE001 - an unusual architecture: PEFT will say it at training time
        return
    names = {n.rsplit(".", 1)[-1] for n in full}
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in full)]
    if missing:
        problems.add("target_modules_not_found",
                     f"target module(s) {', '.join(missing)} do not exist in this model",
                     f"use all-linear or some of: {', '.join(sorted(names))}")


def _init_adapter_info(cfg: FtConfig, ref, problems: _Problems) -> dict[str, Any]:
    ac = load_json_input(Path(cfg.init_adapter) / "adapter_config.json", "--init-adapter config")
    if not isinstance(ac, dict):
        raise UsageError(f"--init-adapter {cfg.init_adapter}: adapter_config.json is not a JSON object")
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


# =============================================================================== training

def train(p: Prepared, *, output_dir: str, force: bool = False, resume: bool = False,
          callbacks: list | None = None) -> dict[str, Any]:
    """Train after a passing preflight; return the run manifest (rank 0 writes every output)."""
    from accelerate import PartialState

    from . import train_outputs as outs
    from . import trainer as wiring

    torch = require("torch")
    transformers = require("transformers")
    if p.report["plan"].get("planned_for") != "this machine":
        raise UsageError("this preflight planned for another machine (--gpu); train without --gpu")
    state = PartialState(cpu=p.device["kind"] == "cpu")  # the Trainer's accelerator shares this state
    main = state.is_main_process
    out = Path(output_dir)
    if main:
        outs.output_dir_ready(out, force=force, resume=resume)
    resume_ckpt = _resume_checkpoint(out) if resume else None
    manifest = _start_manifest(p, resume_ckpt)
    if main:
        if resume_ckpt:
            outs.truncate_log(out / LOG_FILE, int(resume_ckpt.name.split("-")[1]))
        else:
            outs.clear_dir(out)
        _carry_previous_runs(out, manifest, resume)
        write_json(out / MANIFEST, manifest, force=True)
        write_json(out / PREFLIGHT_FILE, p.report, force=True)
    state.wait_for_everyone()

    if p.device["kind"] == "cpu":
        manifest["cpu_threads"] = outs.set_cpu_threads(torch)
    counter = {"tokens": 0, "positions": 0}
    plan = p.report["plan"]
    log_cb = outs.run_log_callback(transformers, out / LOG_FILE, lambda: wiring.global_tokens(counter)["tokens"],
                                   plan["total_steps"], main=main)
    trainer, unsloth_used = wiring.build_trainer(p, out, counter, [log_cb] + list(callbacks or []))
    manifest["unsloth"] = unsloth_used
    manifest["distributed"] = _distributed_record(p, wiring.process_group())
    manifest.update({"trainable_params": sum(x.numel() for x in trainer.model.parameters() if x.requires_grad),
                     "total_params": sum(x.numel() for x in trainer.model.parameters())})
    cuda = p.device["kind"] == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    result, error = None, None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = trainer.train(resume_from_checkpoint=str(resume_ckpt) if resume_ckpt else None)
    except NonFiniteLoss as exc:
        error = (f"training aborted: the loss became non-finite ({exc}). Lower --lr (2e-4 is the usual LoRA "
                 f"value; try 1e-4), keep --max-grad-norm at 1.0, use bf16 rather than fp16, and check the data "
                 f"for extreme or garbage examples. Checkpoints before the failure are in {out / CHECKPOINTS}")
    except KeyboardInterrupt:
        manifest.update({"status": "interrupted", "finished_at": outs.iso(time.time())})
        if main:
            write_json(out / MANIFEST, manifest, force=True)
        raise
    except getattr(torch, "OutOfMemoryError", MemoryError) as exc:
        error = (f"out of GPU memory ({' '.join(str(exc).split())[:160]}); see the preflight memory suggestions: "
                 f"--gradient-checkpointing on, --method qlora, a smaller --batch-size with a larger "
                 f"--grad-accum, or a shorter --max-seq-length; continue with --resume")
    finally:
        log_cb.close()
    return _finish(p, trainer, manifest, out, counter, result, error, started, main=main, cuda=cuda)


def _resume_checkpoint(out: Path) -> Path:
    from . import train_outputs as outs

    ckpt = outs.last_checkpoint(out / CHECKPOINTS)
    if ckpt is None:
        raise UsageError(f"--resume: no complete checkpoint in {out / CHECKPOINTS} (the run stopped before "
                         f"its first save_steps); start again with --force")
    return ckpt


def _start_manifest(p: Prepared, resume_ckpt: Path | None) -> dict[str, Any]:
    from . import train_outputs as outs

    rep = p.report
    return {
        "status": "running", "started_at": outs.iso(time.time()),
        "config": outs.absolute_paths(p.cfg.resolved()),
        "data": {k: {kk: v[kk] for kk in ("file", "sha256", "examples", "rows", "total_tokens",
                                          "trainable_tokens", "truncated_examples")}
                 for k, v in rep["data"].items()},
        "base_model": rep["base_model"], "init_adapter": rep.get("init_adapter"),
        "resumed_from": str(resume_ckpt) if resume_ckpt else None,
        "packages": outs.packages(), "device": p.device, "plan": rep["plan"],
        "memory_estimate_gib": (rep.get("memory") or {}).get("estimate_gib", {}).get("total"),
    }


def _carry_previous_runs(out: Path, manifest: dict, resume: bool) -> None:
    if resume and (out / MANIFEST).is_file():
        with contextlib.suppress(ValueError, OSError):
            prev = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
            manifest["previous_runs"] = prev.get("previous_runs", []) + [
                {k: prev.get(k) for k in ("started_at", "finished_at", "status", "steps")}]


def _distributed_record(p: Prepared, group: dict | None) -> dict[str, Any]:
    dist = train_plan.distributed_env()
    plan = p.report["plan"]
    return {"world_size": (group or {}).get("world_size", 1), "backend": (group or {}).get("backend"),
            "launcher": dist["launcher"], "strategy": dist["strategy"],
            "per_device_batch": plan["per_device_batch"], "global_batch": plan["effective_batch"]}


def _finish(p: Prepared, trainer, manifest: dict, out: Path, counter: dict, result, error: str | None,
            started: float, *, main: bool, cuda: bool) -> dict[str, Any]:
    from . import train_outputs as outs
    from . import trainer as wiring

    torch = require("torch")
    tokens = wiring.global_tokens(counter)  # a collective: before any rank-0-only work
    manifest.update(outs.peak_memory(torch, cuda))
    manifest.update({"finished_at": outs.iso(time.time()), "duration_s": round(time.time() - started, 1),
                     "steps": trainer.state.global_step, "epochs": round(float(trainer.state.epoch or 0), 4),
                     "tokens_trained": tokens["tokens"],
                     "padding_fraction": round(1 - tokens["tokens"] / tokens["positions"], 4)
                     if tokens.get("positions") else None})
    rows = outs.read_log(out / LOG_FILE)
    losses = [r["loss"] for r in rows if outs.finite(r.get("loss"))]
    evals = [r["eval_loss"] for r in rows if outs.finite(r.get("eval_loss"))]
    manifest.update({"first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                     "best_eval_loss": min(evals) if evals else None,
                     "best_checkpoint": trainer.state.best_model_checkpoint})
    if error:
        manifest.update({"status": "failed", "error": error})
        if main:
            write_json(out / MANIFEST, manifest, force=True)
            outs.plot(rows, out)
        raise BlockingProblem(error)
    manifest["train_runtime_s"] = round(float(result.metrics.get("train_runtime", time.time() - started)), 1)
    if main:
        files = outs.save_adapter(trainer, p.tokenizer, p.ref, out)
        outs.plot(rows, out)
        manifest.update({"status": "completed", "files": sorted(files + [MANIFEST, LOG_FILE, "loss_curve.png"])})
        write_json(out / MANIFEST, manifest, force=True)
    else:
        manifest["status"] = "completed"
    trainer.accelerator.wait_for_everyone()
    return manifest


# =============================================================================== summaries

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
        where = plan["device"] + (f" ({plan['machine']}, planned with --gpu)" if plan.get("planned_for") != "this machine"
                                  else "")
        lines.append(f"  plan: {plan['total_steps']} optimizer steps ({plan['steps_per_epoch']}/epoch), "
                     f"effective batch {plan['effective_batch']}"
                     + (f" over {plan['world_size']} processes" if plan.get("world_size", 1) > 1 else "")
                     + f", on {where}, {plan['dtype']}{' + NF4 base (QLoRA)' if plan.get('quantization') else ''}, "
                     f"gradient checkpointing {'on' if plan['gradient_checkpointing'] else 'off'}, packing "
                     f"{'on' if plan.get('packing') else 'off'}")
        lines.append(f"  cadence ({plan.get('cadence_source')}): evaluate every {plan.get('eval_steps') or '-'} steps "
                     f"({plan.get('evaluations')} evaluations), checkpoint every {plan['save_steps']} steps "
                     f"({plan.get('checkpoints')} checkpoints)")
        te = plan.get("throughput_estimate")
        if te and te.get("tokens_per_s"):
            bound = "at least " if te.get("lower_bound") else ""
            lines.append(f"  speed (rough estimate, not measured): ~{te['tokens_per_s']:,} tokens/s -> "
                         f"{bound}~{te['train_minutes']} min for {te['tokens']:,} tokens; {te.get('assumptions', '')}")
        elif te:
            lines.append(f"  speed: {te['basis']}")
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
    cache = rep.get("cache") or {}
    if cache.get("dir"):
        lines.append(f"  model cache: {cache['dir']} ({cache.get('size_mb')} MB{'; ' + cache['note'] if cache.get('note') else ''})")
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
