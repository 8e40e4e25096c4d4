"""Trainer wiring: the base model, the LoRA adapter and TRL's ``SFTTrainer`` for a run plan.

Everything here is driven by the plan (``train_plan.make_plan``): the load dtype, the NF4
quantization config, gradient checkpointing, packing and the distributed setup are values, so
fp32 / bf16 / QLoRA / DDP runs take the same code path. Labels are ours (built in the
preflight) and verified unchanged after TRL's dataset preparation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from . import memory, models
from .bootstrap import has_module
from .errors import BlockingProblem, UsageError, require

CHECKPOINTS = "checkpoints"


class NonFiniteLoss(RuntimeError):
    pass


def torch_dtype(name: str):
    torch = require("torch")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
            "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def bnb_config(quantization: dict[str, Any]):
    """transformers.BitsAndBytesConfig from the plan's JSON quantization settings."""
    transformers = require("transformers")
    kw = dict(quantization)
    for k in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
        if isinstance(kw.get(k), str):
            kw[k] = torch_dtype(kw[k])
    return transformers.BitsAndBytesConfig(**kw)


def portable_4bit(model) -> int:
    """Keep bitsandbytes' CPU 4-bit layers in their portable layout.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a ``Linear4bit`` weight in place on the
    first no-grad forward in eval mode (evaluation, generation); transformers' ``dequantize()``
    and a later training forward then read the repacked tensor as NF4 and get wrong weights
    (measured: logits off by more than their own scale). Returns the layers changed.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for mod in model.modules():
        if isinstance(mod, bnb.nn.Linear4bit) and getattr(mod, "support_avx512bf16_for_cpu", False):
            mod.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_kwargs(plan: dict[str, Any], device: dict[str, Any], dist: dict[str, Any] | None) -> dict[str, Any]:
    """from_pretrained keyword arguments for the plan: dtype, quantization, device map."""
    kw: dict[str, Any] = {"dtype": torch_dtype(plan["dtype"])}
    if plan.get("quantization"):
        kw["quantization_config"] = bnb_config(plan["quantization"])
        strategy = (dist or {}).get("strategy")
        if strategy != "fsdp":  # FSDP places the (bf16-stored) 4-bit shards itself
            kw["device_map"] = {"": (dist or {}).get("local_rank", 0) if device["kind"] == "cuda" else "cpu"}
    return kw


def load_model(p, plan: dict[str, Any]):
    """(model, unsloth_used) for the prepared run."""
    cfg, ref = p.cfg, p.ref
    cuda = plan["device"] == "cuda"
    if cfg.use_unsloth and cuda and has_module("unsloth"):
        from unsloth import FastLanguageModel  # optional accelerated path (CUDA only, untested here)

        src = str(models.ensure_hf_dir(ref) or ref.path)
        model, _ = FastLanguageModel.from_pretrained(model_name=src, max_seq_length=cfg.training.max_seq_length,
                                                     dtype=torch_dtype(plan["dtype"]),
                                                     load_in_4bit=cfg.method == "qlora")
        return model, True
    try:
        model = models.load_causal_lm(ref, **load_kwargs(plan, p.device, p.report.get("distributed")))
    except (OSError, ValueError) as exc:
        raise UsageError(f"could not load the base model '{cfg.base_model}': "
                         f"{' '.join(str(exc).split())[:300]}") from exc
    portable_4bit(model)
    model.config.use_cache = False
    return model, False


def attach_lora(model, p, unsloth_used: bool):
    """(model, peft_config): a PeftModel for --init-adapter, else a LoraConfig for TRL to apply."""
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


def sft_config_kwargs(p, plan: dict[str, Any], out: Path, has_eval: bool, unsloth_used: bool) -> dict[str, Any]:
    """SFTConfig arguments: the plan's cadence, precision, checkpointing and packing."""
    trl = require("trl")
    t = p.cfg.training
    cuda = plan["device"] == "cuda"
    es = bool(t.early_stopping_patience)
    kw = dict(
        output_dir=str(out / CHECKPOINTS), per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=plan["warmup_steps"],
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1, logging_steps=plan["logging_steps"], logging_first_step=True,
        logging_nan_inf_filter=False, save_strategy="steps", save_steps=plan["save_steps"],
        save_total_limit=t.save_total_limit, eval_strategy="steps" if has_eval else "no",
        eval_steps=plan["eval_steps"] if has_eval else None,
        load_best_model_at_end=es, metric_for_best_model="eval_loss" if es else None,
        greater_is_better=False if es else None,
        bf16=plan["dtype"] == "bf16", fp16=plan["dtype"] == "fp16",
        report_to=[] if t.report_to == "none" else [t.report_to], seed=t.seed, data_seed=t.seed,
        max_length=t.max_seq_length, packing=t.packing, packing_strategy="bfd",
        use_cpu=plan["device"] == "cpu", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=cuda, save_only_model=False,
        completion_only_loss=False, assistant_only_loss=False,
        ddp_find_unused_parameters=False if plan.get("distributed") else None,
    )
    ckpt_on = plan["gradient_checkpointing"] and not unsloth_used
    fields = {f.name for f in dataclasses.fields(trl.SFTConfig)}
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    kw[name] = ckpt_on
    kw[name + "_kwargs"] = {"use_reentrant": False} if ckpt_on else None
    return kw


def build_trainer(p, out: Path, counter: dict | None = None, callbacks: list | None = None):
    """The configured SFTTrainer for a prepared run: (trainer, unsloth_used).

    ``callbacks`` are added as given (the run log is one of them). Labels are verified unchanged
    after TRL's dataset preparation.
    """
    torch = require("torch")
    transformers = require("transformers")
    trl = require("trl")
    datasets = require("datasets")
    plan, t = p.report["plan"], p.cfg.training
    counter = counter if counter is not None else {"tokens": 0}
    if not sys.stderr.isatty() or os.environ.get("FT_NO_PROGRESS") == "1":
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    model, unsloth_used = load_model(p, plan)
    model, peft_config = attach_lora(model, p, unsloth_used)

    def _ds(rows):
        return datasets.Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                           "labels": [r["labels"] for r in rows]})
    ds_train = _ds(p.rows["train"])
    ds_eval = _ds(p.rows["validation"]) if p.rows.get("validation") else None
    sft_config = trl.SFTConfig(**sft_config_kwargs(p, plan, out, ds_eval is not None, unsloth_used))
    all_cbs = list(callbacks or [])
    if t.early_stopping_patience:
        all_cbs.append(transformers.EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    Trainer = trainer_class(trl, torch, counter)
    with contextlib.redirect_stdout(sys.stderr):  # libraries must not write into our --json stdout
        trainer = Trainer(model=model, args=sft_config, train_dataset=ds_train, eval_dataset=ds_eval,
                          processing_class=p.tokenizer, peft_config=peft_config, callbacks=all_cbs)
    for c in (transformers.trainer_callback.PrinterCallback, transformers.trainer_callback.ProgressCallback):
        trainer.remove_callback(c)
    verify_labels_kept(trainer, ds_train, t.packing)
    return trainer, unsloth_used


def trainer_class(trl, torch, counter: dict):
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


def global_tokens(counter: dict) -> dict[str, int]:
    """Token counts summed over all processes (a collective: every rank must call it)."""
    torch = require("torch")
    vals = [int(counter.get("tokens", 0)), int(counter.get("positions", 0))]
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor(vals, dtype=torch.long)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        vals = [int(x) for x in t.cpu().tolist()]
    return {"tokens": vals[0], "positions": vals[1]}


def process_group() -> dict[str, Any] | None:
    torch = require("torch")
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return {"world_size": dist.get_world_size(), "backend": str(dist.get_backend())}
    return None


def verify_labels_kept(trainer, ds_train, packing: bool) -> None:
    """TRL must train on exactly our labels: same trainable-token count, no re-masking or cutting."""
    ours_rows, ours = _count_labels(ds_train)
    theirs_rows, theirs = _count_labels(trainer.train_dataset)
    if theirs != ours or (not packing and theirs_rows != ours_rows):
        raise BlockingProblem(f"TRL changed the training labels ({ours} trainable tokens in {ours_rows} rows "
                              f"became {theirs} in {theirs_rows}); refusing to train on labels we did not build")


def _count_labels(ds) -> tuple[int, int]:
    rows = trainable = 0
    for lab in ds["labels"]:
        rows += 1
        trainable += sum(1 for t in lab if t != -100)
    return rows, trainable


def qlora_reference(src: str, adapter_dir: str, quantization: dict[str, Any], logits, device: str):
    """For merging a QLoRA adapter: (logits of the adapter on the NF4 base it was trained on, the base
    with those NF4 weights dequantized to fp32).

    Merging into the original full-precision weights instead would add the quantization error the
    adapter never saw; the dequantized base reproduces the trained model exactly (up to fp32 rounding).
    """
    torch = require("torch")
    transformers = require("transformers")
    peft = require("peft")
    require("bitsandbytes", "to merge a QLoRA adapter (bitsandbytes >= 0.50, in the train extra)")
    q = dict(quantization)
    if device == "cpu":  # fp32 compute on CPU: the reference is then exact, not bf16-rounded
        q["bnb_4bit_compute_dtype"] = q["bnb_4bit_quant_storage"] = "float32"
    model = transformers.AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.float32, quantization_config=bnb_config(q), device_map={"": 0 if device == "cuda" else "cpu"})
    portable_4bit(model)
    pm = peft.PeftModel.from_pretrained(model, adapter_dir)
    pm.eval()
    ref = logits(pm)
    base = pm.unload()
    return ref, base.dequantize(dtype=torch.float32)
