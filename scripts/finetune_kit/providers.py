"""The providers/prices data file: pydantic schema, loader, lookups and lifecycle status.

``data/providers.yaml`` is the single dated source of every provider, model, price, limit and
retirement date the skill cites. This module validates it (every entry has ``as_of`` and
``source``; every ``null`` price is explained by a ``price_note``), finds offerings by provider /
model / model size, and judges lifecycle status against a date (today, or ``--as-of``):

- ``available``  - no retirement date
- ``retiring``   - a retirement (``retires``) or training cut-off (``training_ends``) lies ahead
- ``retired``    - the retirement date, or the training cut-off, has passed: never recommended

``FT_PROVIDERS_FILE`` (or the scripts' ``--data`` flag) points at another file with the same
schema, e.g. a copy with your negotiated prices.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UsageError

DATA_PATH = Path(__file__).resolve().parent / "data" / "providers.yaml"
AS_OF_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
Method = Literal["sft", "dpo", "rft", "lora", "peft"]
TrainMethod = Literal["sft", "dpo", "rft"]
PRICE_FIELDS = ("base_input_price", "base_output_price", "ft_input_price", "ft_output_price")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Dated(_Strict):
    """Every entry says when its numbers were read (``as_of``) and where (``source``)."""

    as_of: str
    source: str = Field(min_length=3)

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of(cls, v: Any) -> str:
        if isinstance(v, (_dt.date, int)):
            v = v.isoformat() if isinstance(v, _dt.date) else str(v)
        if not isinstance(v, str) or not AS_OF_RE.match(v):
            raise ValueError("as_of must be YYYY, YYYY-MM or YYYY-MM-DD")
        return v


class GpuSpec(Dated):
    name: str
    vram_gb: float = Field(gt=0)
    peak_bf16_tflops: float = Field(gt=0)


class ThroughputReference(Dated):
    model: str
    params_b: float = Field(gt=0)
    gpu: str
    lora_tokens_per_s: float = Field(gt=0)
    lora_memory_gib: float = Field(gt=0)
    qlora_tokens_per_s: float = Field(gt=0)
    qlora_memory_gib: float = Field(gt=0)
    setup: str


class LifecycleEvent(_Strict):
    date: _dt.date
    event: str
    applies_to: Optional[list[str]] = None  # model ids; None = the whole provider


class Residency(_Strict):
    regions: Optional[list[str]] = None      # None = unknown
    note: str
    source: Optional[str] = None


class Limits(_Strict):
    min_examples: Optional[int] = Field(default=None, ge=1)
    max_tokens_per_example: Optional[int] = Field(default=None, ge=1)
    max_examples: Optional[int] = Field(default=None, ge=1)
    max_file_gb: Optional[float] = Field(default=None, gt=0)


class Offering(Dated):
    """A fine-tunable model (or a price tier by model size) of a managed provider."""

    id: str
    name: str
    methods: list[Method] = Field(min_length=1)
    params_b: Optional[float] = Field(default=None, gt=0)
    params_range_b: Optional[tuple[float, float]] = None
    training_price: dict[TrainMethod, Optional[float]]  # $ per 1M training tokens
    base_input_price: Optional[float] = Field(default=None, ge=0)
    base_output_price: Optional[float] = Field(default=None, ge=0)
    ft_input_price: Optional[float] = Field(default=None, ge=0)
    ft_output_price: Optional[float] = Field(default=None, ge=0)
    serving: Literal["per_token", "dedicated", "provisioned"]
    serving_unit: Optional[str] = None
    tokenizer: Optional[str] = None
    limits: Limits = Limits()
    regions: Optional[list[str]] = None
    training_ends: Optional[_dt.date] = None
    retires: Optional[_dt.date] = None
    price_note: Optional[str] = None

    @model_validator(mode="after")
    def _explained(self):
        for k, v in self.training_price.items():
            if v is not None and v < 0:
                raise ValueError(f"training_price.{k} must be >= 0")
        missing = [f for f in PRICE_FIELDS if getattr(self, f) is None]
        missing += [f"training_price.{k}" for k, v in self.training_price.items() if v is None]
        if missing and not self.price_note:
            raise ValueError(f"null prices {missing} need a price_note saying why")
        if self.params_range_b and self.params_range_b[0] > self.params_range_b[1]:
            raise ValueError("params_range_b must be [low, high]")
        return self


class GpuOffer(Dated):
    id: str                                   # key into gpu_specs
    tier: str
    price_per_hour: Optional[float] = Field(default=None, gt=0)


class Provider(Dated):
    id: str
    name: str
    aliases: list[str] = []
    kind: Literal["managed", "gpu_rental", "own_hardware"]
    self_hosted: bool
    on_prem: bool
    training_ends: Optional[_dt.date] = None
    retires: Optional[_dt.date] = None
    lifecycle: list[LifecycleEvent] = []
    residency: Residency
    notes: list[str] = []
    models: list[Offering] = []
    gpus: list[GpuOffer] = []

    @model_validator(mode="after")
    def _shape(self):
        if self.kind == "managed" and not self.models:
            raise ValueError("a managed provider needs models")
        if self.kind != "managed" and not self.gpus:
            raise ValueError("a GPU provider needs gpus")
        if self.on_prem and not self.self_hosted:
            raise ValueError("on_prem implies self_hosted")
        ids = [m.id for m in self.models]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate model ids in {self.id}")
        return self


class DataFile(_Strict):
    schema_version: Literal[1]
    as_of: _dt.date
    currency: Literal["USD"]
    gpu_specs: dict[str, GpuSpec]
    throughput_reference: ThroughputReference
    providers: list[Provider] = Field(min_length=1)

    @model_validator(mode="after")
    def _refs(self):
        names: set[str] = set()
        for p in self.providers:
            for n in [p.id, *p.aliases]:
                if n in names:
                    raise ValueError(f"provider id/alias {n!r} used twice")
                names.add(n)
            for g in p.gpus:
                if g.id not in self.gpu_specs:
                    raise ValueError(f"{p.id}: gpu {g.id!r} is not in gpu_specs")
        if self.throughput_reference.gpu not in self.gpu_specs:
            raise ValueError("throughput_reference.gpu is not in gpu_specs")
        return self

    # ------------------------------------------------------------------ lookups
    def provider(self, name: str) -> Provider:
        key = name.strip().lower()
        for p in self.providers:
            if key == p.id or key in p.aliases:
                return p
        raise UsageError(f"unknown provider {name!r}; choose one of: "
                         + ", ".join(p.id for p in self.providers))

    def offering(self, provider: Provider, model: str | None = None, *,
                 params_b: float | None = None) -> Offering:
        """The model (or size tier) of a managed provider."""
        if provider.kind != "managed":
            raise UsageError(f"{provider.id} rents GPUs (self-hosted); it has no --model: "
                             f"use --gpu or see the self_hosted section of the output")
        if model:
            key = model.strip().lower()
            for m in provider.models:
                if key in (m.id, m.name.lower()):
                    return m
            tiered = [m for m in provider.models if m.params_range_b]
            if tiered and params_b is None:
                size = _size_from_name(key)
                if size is not None:
                    return self.offering(provider, None, params_b=size)
            if not tiered:
                raise UsageError(f"unknown model {model!r} for {provider.id}; choose one of: "
                                 + ", ".join(m.id for m in provider.models))
        if params_b is not None:
            # size tiers: the first tier (by upper bound) that covers the size; a size in a gap
            # between tiers (e.g. 16.5B between "up to 16B" and "17-69B") takes the next tier up
            for m in sorted((m for m in provider.models if m.params_range_b), key=lambda m: m.params_range_b[1]):
                if params_b <= m.params_range_b[1]:
                    return m
            for m in provider.models:
                if m.params_b is not None and abs(m.params_b - params_b) < 1e-9:
                    return m
            if any(m.params_range_b for m in provider.models):
                lo = min(m.params_range_b[0] for m in provider.models if m.params_range_b)
                hi = max(m.params_range_b[1] for m in provider.models if m.params_range_b)
                raise UsageError(f"{provider.id} has no price tier for {params_b:g}B parameters "
                                 f"(tiers cover {lo:g}-{hi:g}B)")
        if len(provider.models) == 1:
            return provider.models[0]
        hint = " or --params-b N (size tiers)" if any(m.params_range_b for m in provider.models) else ""
        raise UsageError(f"{provider.id} has several models; pass --model{hint}: "
                         + ", ".join(m.id for m in provider.models))


def _size_from_name(name: str) -> float | None:
    m = re.search(r"(\d+(?:\.\d+)?)\s*b\b", name)
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------------- loading

def data_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("FT_PROVIDERS_FILE") or DATA_PATH)


def load(path: str | os.PathLike | None = None) -> DataFile:
    """Load and validate the data file (UsageError with the first problem otherwise)."""
    p = data_path(path)
    return _load(str(p), p.stat().st_mtime_ns if p.exists() else 0)


@functools.lru_cache(maxsize=8)
def _load(path: str, _mtime: int) -> DataFile:
    from .errors import require

    yaml = require("yaml", "to read the providers data file")
    from .outputs import read_text_input

    p = Path(path)
    if not p.exists():
        raise UsageError(f"providers data file not found: {p}")
    text = read_text_input(p, "providers data file")  # a FIFO, directory, binary or unreadable file: exit 2
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"providers data file {p} is not valid YAML: {' '.join(str(exc).split())}") from exc
    except RecursionError:
        raise UsageError(f"providers data file {p} is nested too deeply to be a providers file") from None
    try:
        return DataFile.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise UsageError(f"providers data file {p} fails the schema at {loc}: {e['msg']} "
                         f"({len(exc.errors())} problem(s))") from exc


def raw_numbers(path: str | os.PathLike | None = None) -> set[float]:
    """Every number that appears as a value in the data file (for the guides-match test)."""
    import yaml

    out: set[float] = set()

    def walk(x):
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)):
            out.add(float(x))
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(yaml.safe_load(data_path(path).read_text(encoding="utf-8")))
    return out


# ---------------------------------------------------------------------- status

def parse_date(text: str | None) -> _dt.date:
    """--as-of value (YYYY-MM-DD) or today."""
    if text is None:
        return _dt.date.today()
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--as-of must be a date like 2026-11-23, got {text!r}") from None


@dataclass
class Status:
    status: Literal["available", "retiring", "retired"]
    date: Optional[_dt.date]          # retirement / cut-off date (None when available)
    training_ends: Optional[_dt.date]
    retires: Optional[_dt.date]
    can_train: bool
    on: _dt.date
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.status if self.date is None else f"{self.status} ({self.date.isoformat()})"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "date": _iso(self.date), "label": self.label,
                "training_ends": _iso(self.training_ends), "retires": _iso(self.retires),
                "can_train": self.can_train, "judged_on": self.on.isoformat(),
                "warnings": list(self.warnings)}


def _iso(d: _dt.date | None) -> str | None:
    return d.isoformat() if d else None


def _min(*ds: _dt.date | None) -> _dt.date | None:
    ds2 = [d for d in ds if d is not None]
    return min(ds2) if ds2 else None


def status_of(provider: Provider, offering: Offering | None = None, on: _dt.date | None = None) -> Status:
    """Lifecycle status of a provider (or one of its models) on a date, with dated warnings."""
    on = on or _dt.date.today()
    retires = _min(offering.retires if offering else None, provider.retires)
    training_ends = _min(offering.training_ends if offering else None, provider.training_ends)
    name = f"{provider.id}/{offering.id}" if offering else provider.id
    warnings: list[str] = []
    if retires and on >= retires:
        st, date = "retired", retires
        warnings.append(f"{name} is retired since {retires}: it cannot be fine-tuned or served; "
                        f"never use it for new work")
    elif training_ends and on >= training_ends:
        st, date = "retired", training_ends
        tail = f"; existing fine-tunes keep serving until {retires}" if retires else ""
        warnings.append(f"{name}: new fine-tuning jobs closed on {training_ends}{tail}")
    elif retires or training_ends:
        st, date = "retiring", retires or training_ends
        parts = []
        if retires:
            parts.append(f"it and its fine-tunes shut down {retires} ({(retires - on).days} days after {on})")
        if training_ends:
            parts.append(f"no new fine-tuning jobs from {training_ends}")
        warnings.append(f"{name} is retiring: " + "; ".join(parts))
    else:
        st, date = "available", None
    for ev in ([] if st == "retired" else provider.lifecycle):
        if offering is not None and ev.applies_to and offering.id not in ev.applies_to:
            continue
        if offering is None and ev.applies_to:
            continue
        if ev.date in (retires, training_ends):
            continue  # already said above
        if ev.date <= on:
            warnings.append(f"{provider.id}: since {ev.date}, {ev.event}")
        else:
            warnings.append(f"{provider.id}: from {ev.date}, {ev.event}")
    can_train = st != "retired"
    return Status(st, date, training_ends, retires, can_train, on, warnings)


def provider_status(provider: Provider, on: _dt.date | None = None) -> Status:
    """A provider's own status; for a managed one without its own dates, its best model's."""
    own = status_of(provider, None, on)
    if provider.kind != "managed" or own.status != "available":
        return own
    sts = [status_of(provider, m, on) for m in provider.models]
    if any(s.status == "available" for s in sts):
        return own
    for kind in ("retiring", "retired"):
        cand = [s for s in sts if s.status == kind]
        if cand:
            return max(cand, key=lambda s: s.date)
    return own


# ---------------------------------------------------------------------- serialisation

def offering_json(d: DataFile, p: Provider, m: Offering, on: _dt.date) -> dict[str, Any]:
    st = status_of(p, m, on)
    return {"provider": p.id, "model": m.id, "name": m.name, "methods": list(m.methods),
            "params_b": m.params_b, "params_range_b": list(m.params_range_b) if m.params_range_b else None,
            "training_price": dict(m.training_price),
            **{f: getattr(m, f) for f in PRICE_FIELDS},
            "serving": m.serving, "serving_unit": m.serving_unit,
            "limits": m.limits.model_dump(), "regions": m.regions or p.residency.regions,
            "status": st.to_json(), "price_note": m.price_note, "as_of": m.as_of, "source": m.source}


def gpu_offers(d: DataFile, *, include_unpriced: bool = False):
    """(provider, offer, spec) for every GPU offer in the file."""
    for p in d.providers:
        for g in p.gpus:
            if g.price_per_hour is None and not include_unpriced:
                continue
            yield p, g, d.gpu_specs[g.id]
