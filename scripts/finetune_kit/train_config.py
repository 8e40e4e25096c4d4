"""The training configuration: ``ft-config.yaml`` (the seed's schema) + command-line overrides.

Schema (every key optional except where training needs it; unknown keys are errors)::

    base_model: smollm2-135m          # hub id, local HF dir, .gguf file, or an alias
    method: lora                      # lora | qlora (QLoRA = 4-bit NF4 base; CUDA, or CPU with bitsandbytes>=0.50)
    data:                             # or just a path: `data: train.jsonl`
      train: data/train.jsonl
      validation: data/val.jsonl      # optional: eval every eval_steps, early stopping
    output_dir: runs/v1
    chat_template: null               # optional .jinja file replacing the tokenizer's template
    init_adapter: null                # optional adapter dir to start from (see training.md)
    lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear}
    training:
      epochs: 3
      max_steps: null                 # overrides epochs when set
      batch_size: 4
      gradient_accumulation_steps: 4  # alias: grad_accum
      learning_rate: 2.0e-4
      lr_scheduler: linear            # linear | cosine | constant | constant_with_warmup
      warmup_steps: null              # null = 3% of the optimizer steps
      max_seq_length: 2048
      packing: false
      gradient_checkpointing: auto    # auto = on for CUDA, off for CPU
      save_steps: null                # null = eval_steps (derived: ~10 checkpoints per run)
      save_total_limit: 2
      eval_steps: null                # null = save_steps if set, else ~10 evaluations per run
      logging_steps: null             # null = about 20 log lines per run (1..10)
      early_stopping_patience: null   # evaluations without improvement before stopping
      weight_decay: 0.0
      max_grad_norm: 1.0
      seed: 42
      allow_truncation: false
      report_to: none                 # none | wandb | trackio
    use_unsloth: false
    bfloat16: auto                    # auto = on where the GPU supports it

Relative paths are resolved against the current directory, then against the config
file's directory.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DataSection(_Strict):
    train: Optional[str] = None
    validation: Optional[str] = None


class LoraSection(_Strict):
    r: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[str, list[str]] = "all-linear"

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("target_modules must not be empty")
        if isinstance(v, str) and "," in v:
            return [t.strip() for t in v.split(",") if t.strip()]
        return v


class TrainingSection(_Strict):
    epochs: float = Field(3, gt=0)
    max_steps: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(4, ge=1, validation_alias=AliasChoices(
        "gradient_accumulation_steps", "grad_accum"))
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_steps: Optional[int] = Field(None, ge=0)
    max_seq_length: int = Field(2048, ge=16)
    packing: bool = False
    gradient_checkpointing: Union[bool, Literal["auto"]] = "auto"
    save_steps: Optional[int] = Field(None, ge=1)
    save_total_limit: Optional[int] = Field(2, ge=1)
    eval_steps: Optional[int] = Field(None, ge=1)
    logging_steps: Optional[int] = Field(None, ge=1)
    early_stopping_patience: Optional[int] = Field(None, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    allow_truncation: bool = False
    report_to: Literal["none", "wandb", "trackio"] = "none"


class FtConfig(_Strict):
    base_model: Optional[str] = None
    method: Literal["lora", "qlora"] = "lora"
    data: DataSection = Field(default_factory=DataSection)
    output_dir: Optional[str] = None
    chat_template: Optional[str] = None
    init_adapter: Optional[str] = None
    lora: LoraSection = Field(default_factory=LoraSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    use_unsloth: bool = False
    bfloat16: Union[bool, Literal["auto"]] = "auto"

    @field_validator("data", mode="before")
    @classmethod
    def _data_path(cls, v):
        if isinstance(v, str):
            return {"train": v}
        return v

    def resolved(self) -> dict[str, Any]:
        """The config as a plain dict (for run_manifest.json and --json)."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------- flags -> config keys

#: command-line flag dest -> dotted config key
FLAG_KEYS = {
    "base_model": "base_model", "method": "method", "train": "data.train", "validation": "data.validation",
    "output_dir": "output_dir", "chat_template": "chat_template", "init_adapter": "init_adapter",
    "r": "lora.r", "alpha": "lora.alpha", "dropout": "lora.dropout", "target_modules": "lora.target_modules",
    "epochs": "training.epochs", "max_steps": "training.max_steps", "batch_size": "training.batch_size",
    "grad_accum": "training.gradient_accumulation_steps", "lr": "training.learning_rate",
    "lr_scheduler": "training.lr_scheduler", "warmup_steps": "training.warmup_steps",
    "max_seq_length": "training.max_seq_length", "packing": "training.packing",
    "gradient_checkpointing": "training.gradient_checkpointing", "save_steps": "training.save_steps",
    "eval_steps": "training.eval_steps", "logging_steps": "training.logging_steps",
    "early_stopping_patience": "training.early_stopping_patience", "seed": "training.seed",
    "allow_truncation": "training.allow_truncation", "report_to": "training.report_to",
    "use_unsloth": "use_unsloth", "bf16": "bfloat16",
}


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, f in model.model_fields.items():
        keys.append(prefix + name)
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _all_keys(ann, prefix + name + ".")
        alias = f.validation_alias
        if isinstance(alias, AliasChoices):
            keys += [prefix + c for c in alias.choices if isinstance(c, str) and c != name]
    return keys


def _did_you_mean(loc: list[str]) -> str | None:
    """The closest valid dotted key for an unknown key at ``loc``."""
    everywhere = _all_keys(FtConfig)
    parent = ".".join(loc[:-1])
    siblings = [k.split(".")[-1] for k in everywhere
                if k.rsplit(".", 1)[0] == parent and "." in k] if parent else [k for k in everywhere if "." not in k]
    close = difflib.get_close_matches(loc[-1], siblings, n=1, cutoff=0.5)
    if close:
        return f"{parent}.{close[0]}" if parent else close[0]
    same_leaf = [k for k in everywhere if k.split(".")[-1] == loc[-1]]
    if same_leaf:
        return same_leaf[0]
    leaves = {k.split(".")[-1]: k for k in everywhere}
    close = difflib.get_close_matches(loc[-1], list(leaves), n=1, cutoff=0.6)
    return leaves[close[0]] if close else None


def _format_errors(exc: ValidationError, source: str) -> str:
    msgs = []
    for e in exc.errors():
        loc = [str(x) for x in e["loc"] if not str(x).startswith("function-")]
        dotted = ".".join(loc)
        if e["type"] == "extra_forbidden":
            guess = _did_you_mean(loc)
            msgs.append(f"unknown key '{dotted}'" + (f" (did you mean '{guess}'?)" if guess else ""))
        else:
            msgs.append(f"{dotted or '(top level)'}: {e['msg']}")
    return f"{source}: " + "; ".join(msgs)


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if isinstance(nxt, str) and p == "data":
            nxt = {"train": nxt}
        if not isinstance(nxt, dict):
            nxt = {}
        cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    from .errors import require

    yaml = require("yaml", "to read ft-config.yaml")
    from .outputs import read_text_input

    p = Path(path)
    if not p.exists():
        raise UsageError(f"config file not found: {p}")
    text = read_text_input(p, "config file")  # a FIFO, directory, binary or unreadable file: exit 2
    try:
        raw = yaml.safe_load(text)
    except RecursionError:
        raise UsageError(f"{p}: nested too deeply to be an ft-config.yaml") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{p}: not valid YAML{where} ({getattr(exc, 'problem', exc)})") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{p}: not UTF-8 text") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError(f"{p}: the top level must be a mapping of keys (base_model, data, lora, training, ...)")
    return raw


def build(config_path: str | None, overrides: dict[str, Any], base: dict[str, Any] | None = None) -> FtConfig:
    """Defaults < ``base`` (e.g. a resumed run's config) < config file < flags."""
    merged: dict[str, Any] = {}
    if base:
        merged = _deep_copy(base)
    source = "flags"
    if config_path:
        raw = load_yaml(config_path)
        raw = _resolve_paths(raw, Path(config_path).resolve().parent)
        merged = _deep_merge(merged, raw)
        source = str(config_path)
    for dest, value in overrides.items():
        if value is None or dest not in FLAG_KEYS:
            continue
        _set_dotted(merged, FLAG_KEYS[dest], value)
    try:
        return FtConfig.model_validate(merged)
    except ValidationError as exc:
        raise UsageError(_format_errors(exc, source)) from exc


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def _deep_merge(a: dict, b: dict) -> dict:
    out = _deep_copy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = _deep_copy(v)
    return out


_PATH_KEYS = (("data", "train"), ("data", "validation"), ("output_dir",), ("chat_template",),
              ("init_adapter",), ("base_model",))


def _resolve_paths(raw: dict, cfg_dir: Path) -> dict:
    """Relative paths: the current directory first, then the config file's directory."""
    raw = _deep_copy(raw)
    if isinstance(raw.get("data"), str):
        raw["data"] = {"train": raw["data"]}
    for keys in _PATH_KEYS:
        cur = raw
        for k in keys[:-1]:
            cur = cur.get(k) if isinstance(cur, dict) else None
        if not isinstance(cur, dict):
            continue
        v = cur.get(keys[-1])
        if not isinstance(v, str) or not v or os.path.isabs(v) or Path(v).exists():
            continue
        alt = cfg_dir / v
        if keys[-1] == "output_dir":
            cur[keys[-1]] = v  # an output is made where the user runs, unless its parent only exists there
            if not Path(v).parent.exists() and alt.parent.exists():
                cur[keys[-1]] = str(alt)
        elif alt.exists():
            cur[keys[-1]] = str(alt)
    return raw


def example_yaml() -> str:
    """A complete example config (what examples/ft-config.yaml ships)."""
    return (Path(__file__).resolve().parents[2] / "examples" / "ft-config.yaml").read_text(encoding="utf-8")
