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
HOURS_PER_MONTH = 730.0          # 8,760 hours a year / 12
STALE_AFTER_DAYS = 90


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Dated(_Strict):
    """Every entry says when its numbers were read (``as_of``) and where (``source``).

    A source is the original public page a user can open (an ``http(s)://`` URL), or ``n/a ...``
    for things that have no public page (your own hardware). Team notes are not sources.
    """

    as_of: str
    source: str = Field(min_length=3)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if "facts-2026" in v or not (re.search(r"https?://", v) or v.startswith("n/a")):
            raise ValueError("source must be the original public URL (http...) or 'n/a (...)', "
                             f"got {v!r}")
        return v

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
    aliases: list[str] = []
    vram_gb: float = Field(gt=0)
    peak_bf16_tflops: float = Field(gt=0)
    tdp_watts: Optional[float] = Field(default=None, gt=0)   # board power, for --power-price


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
    base_cached_price: Optional[float] = Field(default=None, ge=0)   # cached-input $/1M
    ft_cached_price: Optional[float] = Field(default=None, ge=0)
    serving: Literal["per_token", "hosted", "dedicated", "provisioned"]
    serving_unit: Optional[str] = None
    hosting_per_hour: Optional[float] = Field(default=None, ge=0)    # per deployment (hosted) or per GPU
    hosting_gpus: int = Field(default=1, ge=1)                       # GPUs per dedicated deployment
    hosting_unit: Optional[str] = None
    tokenizer: Optional[str] = None
    limits: Limits = Limits()
    regions: Optional[list[str]] = None
    training_ends: Optional[_dt.date] = None
    training_ends_no_earlier_than: bool = False   # the provider dates training retirement "no earlier than"
    retires: Optional[_dt.date] = None
    existing_customers_only: Optional[str] = None  # why a NEW customer cannot buy it (None = anyone can)
    smaller: list[str] = []          # prompt-only alternatives priced next to this model as "today's model"
    caveat: Optional[str] = None     # one short line shown wherever the offering is listed
    notes: list[str] = []
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
        if self.serving in ("hosted", "dedicated") and self.hosting_per_hour is None and not self.price_note:
            raise ValueError(f"{self.serving} serving without hosting_per_hour needs a price_note")
        return self

    def fixed_monthly_cost(self) -> float | None:
        """USD per month the serving costs whatever the traffic (None = unknown)."""
        if self.serving == "per_token":
            return 0.0
        if self.serving in ("hosted", "dedicated") and self.hosting_per_hour is not None:
            return self.hosting_per_hour * self.hosting_gpus * HOURS_PER_MONTH
        return None


class InferenceModel(Dated):
    """A model you may run today that is not fine-tunable here (a --current-model baseline)."""

    id: str
    provider: str
    name: str
    input_price: float = Field(ge=0)
    cached_input_price: Optional[float] = Field(default=None, ge=0)
    output_price: float = Field(ge=0)
    retires: Optional[_dt.date] = None
    smaller: list[str] = []
    notes: list[str] = []


class OtherService(Dated):
    """A service a user would ask about that is not priced in --compare (gone, new, or unpriced)."""

    id: str
    name: str
    status: Literal["deprecated", "available", "preview"]
    note: str


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
    existing_customers_only: Optional[str] = None  # why a NEW customer cannot buy from it (None = anyone can)
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
    inference_models: list[InferenceModel] = []
    providers: list[Provider] = Field(min_length=1)
    other_services: list[OtherService] = []

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
        known = {m.id for p in self.providers for m in p.models} | {m.id for m in self.inference_models}
        for m in [*(m for p in self.providers for m in p.models), *self.inference_models]:
            for s in m.smaller:
                if s not in known:
                    raise ValueError(f"{m.id}: smaller model {s!r} is neither an offering nor an inference model")
        return self

    # ------------------------------------------------------------------ more lookups
    def gpu_id(self, name: str) -> str:
        """A gpu_specs key from an id or alias (rtx4090, 4090, a100, h100 ...)."""
        key = name.strip().lower()
        for gid, spec in self.gpu_specs.items():
            if key == gid or key in spec.aliases or key.replace("-", "") == gid.replace("-", ""):
                return gid
        raise UsageError(f"unknown GPU {name!r}; choose one of: " + ", ".join(self.gpu_specs))

    def current_model(self, name: str) -> "CurrentModel":
        """Today's model and its prices: a fine-tunable offering's base prices, else an inference model.

        ``provider/model`` picks a provider; a bare id prefers OpenAI, then the file's order.
        """
        prov, _, mid = name.strip().lower().rpartition("/")
        hits: list[CurrentModel] = []
        for p in self.providers:
            if prov and prov not in (p.id, *p.aliases):
                continue
            for m in p.models:
                if m.id == mid and m.base_input_price is not None and m.base_output_price is not None:
                    hits.append(CurrentModel(p.id, m.id, m.name, m.base_input_price, m.base_cached_price,
                                             m.base_output_price, m.retires, list(m.smaller), m.as_of, m.source,
                                             provider_obj=p, offering=m))
        for im in self.inference_models:
            if im.id == mid and (not prov or prov == im.provider):
                hits.append(CurrentModel(im.provider, im.id, im.name, im.input_price, im.cached_input_price,
                                         im.output_price, im.retires, list(im.smaller), im.as_of, im.source))
        if not hits:
            names = sorted({f"{p.id}/{m.id}" for p in self.providers for m in p.models
                            if m.base_input_price is not None} | {f"{m.provider}/{m.id}" for m in self.inference_models})
            raise UsageError(f"no prices for --current-model {name!r} in the data file; pass --base-input-price and "
                             f"--base-output-price instead, or one of: {', '.join(names)}")
        return hits[0]

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


RECOMMEND_HORIZON_DAYS = 183     # ~6 months: nothing that shuts down sooner is suggested for new work


@dataclass
class Status:
    """Lifecycle on a date. Two different dates, never one ambiguous "retiring (date)":

    ``training_ends`` - the first day no new fine-tuning jobs can be created ("no new jobs from");
    ``retires``       - the day the model and its fine-tunes stop answering ("shuts down").
    """

    status: Literal["available", "retiring", "retired"]
    date: Optional[_dt.date]          # retirement / cut-off date (None when available)
    training_ends: Optional[_dt.date]
    retires: Optional[_dt.date]
    can_train: bool
    on: _dt.date
    warnings: list[str] = field(default_factory=list)
    training_ends_no_earlier_than: bool = False

    def _jobs(self, past: bool) -> str:
        d = self.training_ends
        if self.training_ends_no_earlier_than:
            return f"training retirement no earlier than {d}"
        return f"no new jobs since {d}" if past else f"no new jobs from {d}"

    @property
    def label(self) -> str:
        if self.status == "available":
            return "available"
        if self.status == "retired":
            if self.retires and self.on >= self.retires:
                return f"retired (shut down {self.retires})"
            return f"retired ({self._jobs(True)})"
        parts = []
        if self.training_ends and self.on < self.training_ends:
            parts.append(self._jobs(False))
        if self.retires:
            parts.append(f"shuts down {self.retires}")
        return f"retiring ({', '.join(parts)})"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "date": _iso(self.date), "label": self.label,
                "training_ends": _iso(self.training_ends), "retires": _iso(self.retires),
                "training_ends_no_earlier_than": self.training_ends_no_earlier_than,
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
    nlt = bool(offering is not None and offering.training_ends_no_earlier_than
               and training_ends == offering.training_ends)
    jobs = (f"training retirement no earlier than {training_ends}" if nlt
            else f"no new fine-tuning jobs from {training_ends}")
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
        if training_ends:
            parts.append(jobs)
        if retires:
            parts.append(f"it and its fine-tunes shut down {retires} ({(retires - on).days} days after {on})")
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
    return Status(st, date, training_ends, retires, can_train, on, warnings, nlt)


def closed_to_new_customers(provider: Provider, offering: Offering | None = None) -> str | None:
    """Why a customer who never used this offering cannot buy it (None = anyone can)."""
    return (offering.existing_customers_only if offering is not None else None) or provider.existing_customers_only


def too_soon(retires: _dt.date | None, on: _dt.date, *, not_before: _dt.date | None = None) -> str | None:
    """Why an alternative that shuts down on ``retires`` must not be suggested for new work (None = fine).

    It is too soon when it shuts down within :data:`RECOMMEND_HORIZON_DAYS` of ``on`` or on/before
    ``not_before`` (the shutdown of the model it would replace).
    """
    if retires is None:
        return None
    if on >= retires:
        return f"shut down {retires}"
    if not_before is not None and retires <= not_before:
        same = "the same day as" if retires == not_before else "before"
        return f"shuts down {retires}, {same} the model it would replace ({not_before})"
    if (retires - on).days <= RECOMMEND_HORIZON_DAYS:
        return (f"shuts down {retires}, {(retires - on).days} days after {on} - "
                f"within the {RECOMMEND_HORIZON_DAYS}-day horizon for new work")
    return None


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


@dataclass
class CurrentModel:
    provider: str
    id: str
    name: str
    input_price: float
    cached_price: Optional[float]
    output_price: float
    retires: Optional[_dt.date]
    smaller: list[str]
    as_of: str
    source: str
    provider_obj: Optional[Provider] = None
    offering: Optional[Offering] = None

    def status(self, on: _dt.date) -> Status:
        if self.provider_obj is not None and self.offering is not None:
            st = status_of(self.provider_obj, self.offering, on)
            # as a model you *run* (not train), only its shutdown matters
            if st.retires is None or on < st.retires:
                label = "available" if st.retires is None else "retiring"
                return Status(label, st.retires, None, st.retires, True, on, st.warnings)
            return st
        if self.retires and on >= self.retires:
            return Status("retired", self.retires, None, self.retires, False, on,
                          [f"{self.provider}/{self.id} is retired since {self.retires}"])
        if self.retires:
            return Status("retiring", self.retires, None, self.retires, True, on,
                          [f"{self.provider}/{self.id} shuts down {self.retires}"])
        return Status("available", None, None, None, True, on, [])


def stale_warning(d: "DataFile", on: _dt.date | None = None) -> str | None:
    """A warning when the data file was last reviewed more than 90 days before ``on`` (today)."""
    on = on or _dt.date.today()
    age = (on - d.as_of).days
    if age > STALE_AFTER_DAYS:
        return (f"the providers data file is {age} days old (as_of {d.as_of}, more than {STALE_AFTER_DAYS}): "
                f"prices and retirement dates may be stale - refresh it (providers.md, 'Refreshing the data') "
                f"or check the sources it cites")
    return None


def recommendable(d: "DataFile", on: _dt.date) -> list[tuple[Provider, Offering, Status]]:
    """Managed offerings the skill may recommend on a date: neither retired nor closed for training."""
    out = []
    for p in d.providers:
        for m in p.models:
            st = status_of(p, m, on)
            if st.status != "retired":
                out.append((p, m, st))
    return out


# ---------------------------------------------------------------------- serialisation

def offering_json(d: DataFile, p: Provider, m: Offering, on: _dt.date) -> dict[str, Any]:
    st = status_of(p, m, on)
    return {"provider": p.id, "model": m.id, "name": m.name, "methods": list(m.methods),
            "params_b": m.params_b, "params_range_b": list(m.params_range_b) if m.params_range_b else None,
            "training_price": dict(m.training_price),
            **{f: getattr(m, f) for f in PRICE_FIELDS},
            "base_cached_price": m.base_cached_price, "ft_cached_price": m.ft_cached_price,
            "serving": m.serving, "serving_unit": m.serving_unit, "hosting_per_hour": m.hosting_per_hour,
            "hosting_gpus": m.hosting_gpus, "fixed_monthly_cost": m.fixed_monthly_cost(),
            "limits": m.limits.model_dump(), "regions": m.regions or p.residency.regions,
            "status": st.to_json(), "caveat": m.caveat, "notes": list(m.notes), "price_note": m.price_note, "as_of": m.as_of,
            "source": m.source}


def gpu_offers(d: DataFile, *, include_unpriced: bool = False):
    """(provider, offer, spec) for every GPU offer in the file."""
    for p in d.providers:
        for g in p.gpus:
            if g.price_per_hour is None and not include_unpriced:
                continue
            yield p, g, d.gpu_specs[g.id]
