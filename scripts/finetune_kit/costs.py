"""Training cost, inference ROI and break-even from the providers data file.

All prices are USD per 1M tokens (training: per 1M *training* tokens = dataset tokens x epochs),
GPU rental in USD per GPU-hour. Every number used is reported back as an *assumption* with its
``origin`` (``data`` file entry with ``as_of``/``source``, ``override`` flag, ``default`` or
``derived``), so an agent can show the user exactly what the estimate rests on.

The ROI model (one request = one call of the model you serve):

- base cost per request = base prompt tokens x base input price + output tokens x base output price
- fine-tuned cost per request = (shorter) fine-tuned prompt x FT input price + output x FT output price
  (+ the share of cached prompt tokens at the cached price when one is given)
- monthly savings = (base - fine-tuned) x requests per month - fixed monthly serving cost
- break-even = training cost / savings (null when fine-tuning never pays back)

The self-hosted alternative trains a LoRA on a rented GPU (hours from a throughput estimate
scaled from the torchtune reference in the data file) and serves on one GPU 24/7.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any, Optional

from . import providers as P
from .errors import UsageError

HOURS_PER_MONTH = P.HOURS_PER_MONTH   # 8,760 hours a year / 12
DAYS_PER_MONTH = 365.25 / 12
GIB_PER_GB = 1e9 / 2**30
BF16_BYTES_PER_PARAM = 2


# ---------------------------------------------------------------------- small pure helpers

def auto_epochs(n_examples: int) -> int:
    """OpenAI's default: 3 epochs; if n*3 < 100 then min(25, 100 // n); if n*3 > 25000 then
    max(1, 25000 // n) (the cookbook data-prep notebook heuristic)."""
    n = int(n_examples)
    if n < 1:
        raise ValueError("need at least 1 example")
    if n * 3 < 100:
        return min(25, 100 // n)
    if n * 3 > 25000:
        return max(1, 25000 // n)
    return 3


def request_cost(prompt_tokens: float | None, output_tokens: float | None, input_price: float | None,
                 output_price: float | None, *, cached_share: float = 0.0,
                 cached_price: float | None = None) -> float | None:
    """USD for one request; None when a request size or a needed price is unknown."""
    if prompt_tokens is None or output_tokens is None or input_price is None or (output_tokens and output_price is None):
        return None
    cached = prompt_tokens * cached_share if cached_price is not None else 0.0
    fresh = prompt_tokens - cached
    cost = fresh * input_price + cached * (cached_price or 0.0) + output_tokens * (output_price or 0.0)
    return cost / 1e6


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(x, nd)


def money(x: float | None, small: bool = False) -> str:
    if x is None:
        return "n/a"
    sign = "-" if x < 0 else ""
    if small or 0 < abs(x) < 0.01:
        return f"{sign}${abs(x):,.6f}"
    return f"{sign}${abs(x):,.2f}"


# ---------------------------------------------------------------------- ROI core

def roi(*, training_tokens: float | None, epochs: int, train_price: float | None,
        base_prompt_tokens: float | None, ft_prompt_tokens: float | None, output_tokens: float | None,
        base_input_price: float | None, base_output_price: float | None,
        ft_input_price: float | None, ft_output_price: float | None,
        requests_per_month: float | None = None, cached_share: float = 0.0,
        base_cached_price: float | None = None, ft_cached_price: float | None = None,
        fixed_monthly_cost: float | None = 0.0, training_cost: float | None = None) -> dict[str, Any]:
    """The ROI numbers for one fine-tuned option against the base model it replaces.

    ``training_cost`` may be given directly (self-hosted: GPU hours x price); otherwise it is
    training_tokens x epochs x train_price / 1M. ``fixed_monthly_cost`` None = unknown.
    """
    billed = training_tokens * epochs if training_tokens is not None else None
    if training_cost is None and billed is not None and train_price is not None:
        training_cost = billed * train_price / 1e6
    base = request_cost(base_prompt_tokens, output_tokens, base_input_price, base_output_price,
                        cached_share=cached_share, cached_price=base_cached_price)
    ft = request_cost(ft_prompt_tokens, output_tokens, ft_input_price, ft_output_price,
                      cached_share=cached_share, cached_price=ft_cached_price)
    saving = base - ft if base is not None and ft is not None else None
    R = requests_per_month
    m_base = base * R if base is not None and R is not None else None
    m_ft = (ft * R + fixed_monthly_cost) if ft is not None and R is not None and fixed_monthly_cost is not None else None
    m_save = m_base - m_ft if m_base is not None and m_ft is not None else None

    be_req: int | None = None
    be_months: float | None = None
    reason = None
    if training_cost is None:
        reason = "training cost unknown (give --train FILE or --training-tokens N, and a training price)"
    elif base_prompt_tokens is None or output_tokens is None:
        reason = "request size unknown (give --base-prompt-tokens and --output-tokens)"
    elif saving is None:
        reason = "inference prices unknown (pass the --base-*-price / --ft-*-price flags)"
    elif fixed_monthly_cost is None:
        reason = "fixed monthly serving cost unknown (dedicated/provisioned price not in the data file)"
    elif not fixed_monthly_cost:
        if training_cost == 0:
            be_req, be_months = 0, 0.0
        elif saving > 0:
            be_req = math.ceil(training_cost / saving - 1e-9)
            be_months = be_req / R if R else None
        else:
            reason = ("never pays back: the fine-tuned model costs as much or more per request "
                      "than the base model with its longer prompt")
    else:
        if R is None:
            reason = "give --requests-per-month: a fixed monthly serving cost needs the volume"
        elif m_save is not None and m_save > 0:
            be_months = training_cost / m_save if training_cost else 0.0
            be_req = math.ceil(be_months * R - 1e-9)
        else:
            reason = ("never pays back: the per-request savings do not cover the fixed monthly "
                      "serving cost at this volume")
    pays_back = None if (be_req is None and not (reason or "").startswith("never")) else be_req is not None
    return {
        "training_tokens_billed": billed,
        "training_cost": _r(training_cost, 4),
        "base_cost_per_request": _r(base, 8),
        "ft_cost_per_request": _r(ft, 8),
        "savings_per_request": _r(saving, 8),
        "requests_per_month": R,
        "monthly_base_cost": _r(m_base, 4),
        "monthly_ft_cost": _r(m_ft, 4),
        "fixed_monthly_cost": _r(fixed_monthly_cost, 4) if fixed_monthly_cost is not None else None,
        "monthly_savings": _r(m_save, 4),
        "break_even_requests": be_req,
        "break_even_months": _r(be_months, 4),
        "pays_back": pays_back,
        "no_break_even_reason": None if be_req is not None else reason,
    }


# ---------------------------------------------------------------------- self-hosted estimate

LOAD_GB_PER_S = 1.0        # reading bf16 weights from local disk/cache into the GPU (conservative)
STARTUP_S = 120.0          # process start, CUDA init, tokenizer, dataset preparation
EVAL_SPEEDUP = 3.0         # forward-only evaluation vs forward+backward training (FLOPs ratio ~1/3)
DEFAULT_EVALS = 10         # evaluations per run (train_lora.py derives ~10 from the step count)
DEFAULT_EVAL_SHARE = 0.10  # held-out tokens per evaluation = 10 % of the training tokens per epoch


def lora_plan(d: P.DataFile, gpu_id: str, params_b: float) -> dict[str, Any]:
    """Throughput and memory of a single-GPU LoRA (or QLoRA when LoRA does not fit).

    tokens/s = reference tokens/s x (GPU peak bf16 TFLOPS / reference GPU TFLOPS)
               x (reference params / model params); memory scales with params.
    """
    ref = d.throughput_reference
    spec = d.gpu_specs[gpu_id]
    ref_spec = d.gpu_specs[ref.gpu]
    scale = (spec.peak_bf16_tflops / ref_spec.peak_bf16_tflops) * (ref.params_b / params_b)
    vram_gib = spec.vram_gb * GIB_PER_GB
    lora_mem = ref.lora_memory_gib * params_b / ref.params_b
    qlora_mem = ref.qlora_memory_gib * params_b / ref.params_b
    if lora_mem <= vram_gib:
        method, tps, mem = "lora", ref.lora_tokens_per_s * scale, lora_mem
    elif qlora_mem <= vram_gib:
        method, tps, mem = "qlora", ref.qlora_tokens_per_s * scale, qlora_mem
    else:
        method, tps, mem = None, None, qlora_mem
    serve_gb = params_b * BF16_BYTES_PER_PARAM
    return {"gpu": gpu_id, "method": method, "tokens_per_s": _r(tps, 1), "memory_gib": round(mem, 1),
            "vram_gib": round(vram_gib, 1), "fits": method is not None,
            "bf16_serving_fits": serve_gb <= spec.vram_gb}


def training_hours(*, params_b: float, training_tokens: float | None, epochs: int, tokens_per_s: float | None,
                   eval_tokens: float | None = None, evals: int = DEFAULT_EVALS) -> dict[str, float | None]:
    """Wall-clock hours of one LoRA run: model load + training + evaluations.

    load = bf16 weights (2 bytes/param) / 1 GB/s + 120 s start-up; train = tokens x epochs / tokens/s;
    eval = evals x held-out tokens / (3 x tokens/s) (forward only). Held-out tokens default to 10 % of
    the training tokens per epoch.
    """
    if not tokens_per_s or training_tokens is None:
        return {"load": None, "train": None, "eval": None, "total": None}
    load = (params_b * BF16_BYTES_PER_PARAM / LOAD_GB_PER_S + STARTUP_S) / 3600
    train = training_tokens * epochs / tokens_per_s / 3600
    held = eval_tokens if eval_tokens is not None else training_tokens * DEFAULT_EVAL_SHARE
    ev = evals * held / (tokens_per_s * EVAL_SPEEDUP) / 3600
    return {"load": load, "train": train, "eval": ev, "total": load + train + ev}


def own_gpu_price(d: P.DataFile, gpu_id: str, gpu_price: float | None, power_price: float | None,
                  watts: float | None = None) -> tuple[float | None, str]:
    """USD per hour of one GPU you own: amortised price (--gpu-price) + power (--power-price x board watts)."""
    if gpu_price is None and power_price is None:
        return None, ""
    parts, total = [], 0.0
    if gpu_price is not None:
        total += gpu_price
        parts.append(f"${gpu_price:g}/h amortised")
    if power_price is not None:
        w = watts or d.gpu_specs[gpu_id].tdp_watts
        if w is None:
            raise UsageError(f"no board power known for {gpu_id}; pass --gpu-watts W with --power-price")
        total += power_price * w / 1000
        parts.append(f"{w:g} W x ${power_price:g}/kWh")
    return total, " + ".join(parts)


def self_hosted_options(d: P.DataFile, *, params_b: float, training_tokens: float | None, epochs: int,
                        base_cost_per_request: float | None, requests_per_month: float | None,
                        gpu: str | None = None, gpu_price: float | None = None, power_price: float | None = None,
                        gpu_watts: float | None = None, throughput: float | None = None,
                        eval_tokens: float | None = None, evals: int = DEFAULT_EVALS,
                        on: _dt.date | None = None) -> list[dict[str, Any]]:
    """One row per priced GPU offer: rentals from the data file, and your own GPU (``gpu``) when priced.

    ``gpu_price``/``power_price`` price only your own ``gpu``, never a rental row.
    """
    rows = []
    for p, g, spec in P.gpu_offers(d, include_unpriced=True):
        if gpu is not None and g.id != gpu:
            continue
        if g.price_per_hour is not None:
            price, origin, how = g.price_per_hour, "data", None
        elif p.kind == "own_hardware" and gpu is not None:
            price, how = own_gpu_price(d, g.id, gpu_price, power_price, gpu_watts)
            origin = "override"
            if price is None:
                continue
        else:
            continue
        plan = lora_plan(d, g.id, params_b)
        tps = throughput if throughput else plan["tokens_per_s"]
        hrs = training_hours(params_b=params_b, training_tokens=training_tokens, epochs=epochs,
                             tokens_per_s=tps, eval_tokens=eval_tokens, evals=evals)
        hours = hrs["total"]
        train_cost = hours * price if hours is not None else None
        fixed = price * HOURS_PER_MONTH
        m_base = base_cost_per_request * requests_per_month if (
            base_cost_per_request is not None and requests_per_month is not None) else None
        m_save = m_base - fixed if m_base is not None else None
        be_months = None
        if train_cost is not None and m_save is not None and m_save > 0:
            be_months = train_cost / m_save
        st = P.provider_status(p, on)
        rows.append({
            "provider": p.id, "gpu": g.id, "gpu_name": spec.name, "tier": g.tier,
            "price_per_hour": _r(price, 4), "price_origin": origin, "price_basis": how,
            "as_of": g.as_of, "source": g.source,
            "method": plan["method"], "fits": plan["fits"], "memory_gib": plan["memory_gib"],
            "vram_gib": plan["vram_gib"], "bf16_serving_fits": plan["bf16_serving_fits"],
            "tokens_per_s": _r(tps, 1) if tps else None,
            "throughput_origin": "override" if throughput else "derived",
            "training_hours": _r(hours, 3),
            "hours_breakdown": {k: _r(v, 3) for k, v in hrs.items() if k != "total"},
            "training_cost": _r(train_cost, 4),
            "fixed_monthly_cost": _r(fixed, 2), "monthly_base_cost": _r(m_base, 4),
            "monthly_savings": _r(m_save, 4), "break_even_months": _r(be_months, 4),
            "pays_back": (be_months is not None) if (m_save is not None and train_cost is not None) else None,
            "status": st.label, "on_prem": p.on_prem,
        })
    return rows


# ---------------------------------------------------------------------- the estimate

@dataclass
class Workload:
    training_tokens: Optional[int]          # per epoch (dataset tokens)
    examples: Optional[int]
    epochs: int
    epochs_source: str
    method: str
    base_prompt_tokens: Optional[int]
    ft_prompt_tokens: Optional[int]
    output_tokens: Optional[int]
    cached_share: float
    requests_per_month: Optional[float]
    params_b: Optional[float]
    params_source: str
    max_tokens_per_example: Optional[int] = None
    tokenizer: Optional[str] = None
    counted_from: Optional[list[str]] = None
    eval_tokens: Optional[int] = None
    evals: int = DEFAULT_EVALS
    cached_share_given: bool = True      # False: --cached-share was not passed (the 0 is a default)


@dataclass
class Overrides:
    train_price: Optional[float] = None
    base_input_price: Optional[float] = None
    base_output_price: Optional[float] = None
    ft_input_price: Optional[float] = None
    ft_output_price: Optional[float] = None
    base_cached_price: Optional[float] = None
    ft_cached_price: Optional[float] = None
    fixed_monthly_cost: Optional[float] = None
    gpu: Optional[str] = None
    gpu_price: Optional[float] = None
    power_price: Optional[float] = None
    gpu_watts: Optional[float] = None
    throughput: Optional[float] = None
    current_model: Optional[str] = None


PRICE_FLAGS = {"train_price": "--train-price", "base_input_price": "--base-input-price",
               "base_output_price": "--base-output-price", "ft_input_price": "--ft-input-price",
               "ft_output_price": "--ft-output-price", "base_cached_price": "--base-cached-price",
               "ft_cached_price": "--ft-cached-price", "fixed_monthly_cost": "--fixed-monthly-cost"}


def _price(name: str, data_value: float | None, override: float | None, entry, unit: str,
           assumptions: list, label: str) -> float | None:
    if override is not None:
        assumptions.append({"name": name, "value": override, "unit": unit, "origin": "override",
                            "flag": PRICE_FLAGS.get(name), "as_of": None, "source": "command line",
                            "applies_to": label})
        return override
    assumptions.append({"name": name, "value": data_value, "unit": unit,
                        "origin": "data" if data_value is not None else "missing",
                        "as_of": getattr(entry, "as_of", None), "source": getattr(entry, "source", None),
                        "note": getattr(entry, "price_note", None) if data_value is None else None,
                        "applies_to": label})
    return data_value


@dataclass
class Baseline:
    """Today's model: what every request costs before any change."""

    label: str
    origin: str                      # current_model | flags | offering | none
    input_price: Optional[float]
    cached_price: Optional[float]
    output_price: Optional[float]
    smaller: list[str]
    status: Optional[P.Status] = None
    as_of: Optional[str] = None
    source: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.label, "origin": self.origin, "input_price": self.input_price,
                "cached_price": self.cached_price, "output_price": self.output_price,
                "status": self.status.label if self.status else None, "as_of": self.as_of, "source": self.source}


def resolve_baseline(d: P.DataFile, p: P.Provider | None, m: P.Offering | None, ov: Overrides,
                     on: _dt.date, assumptions: list) -> Baseline:
    """--base-*-price flags > --current-model > the fine-tuned offering's own base model."""
    if ov.current_model:
        c = d.current_model(ov.current_model)
        b = Baseline(f"{c.provider}/{c.id}", "current_model", c.input_price, c.cached_price, c.output_price,
                     list(c.smaller), c.status(on), c.as_of, c.source)
    elif m is not None and p is not None:
        b = Baseline(f"{p.id}/{m.id} (its own base model)", "offering", m.base_input_price, m.base_cached_price,
                     m.base_output_price, list(m.smaller), P.status_of(p, m, on), m.as_of, m.source)
    else:
        b = Baseline("command line", "flags", None, None, None, [])
    label = b.label
    for f, attr in (("base_input_price", "input_price"), ("base_output_price", "output_price"),
                    ("base_cached_price", "cached_price")):
        b_val = getattr(b, attr)
        v = _price(f, b_val, getattr(ov, f), b, "$ per 1M tokens", assumptions, f"baseline {label}")
        if getattr(ov, f) is not None and b.origin != "flags" and not b.origin.endswith("+flags"):
            b.origin += "+flags"
        setattr(b, attr, v)
    if b.label == "command line" and b.input_price is None:
        b.origin = "none"
    return b


def resolve_prices(p: P.Provider | None, m: P.Offering | None, method: str, ov: Overrides,
                   assumptions: list) -> dict[str, float | None]:
    """Training, fine-tuned inference and fixed serving prices of the offering to price."""
    label = f"{p.id}/{m.id}" if p and m else "custom"
    out = {}
    out["train_price"] = _price("train_price", m.training_price.get(method) if m else None, ov.train_price,
                                m, "$ per 1M training tokens", assumptions, label)
    for f in ("ft_input_price", "ft_output_price", "ft_cached_price"):
        out[f] = _price(f, getattr(m, f) if m else None, getattr(ov, f), m, "$ per 1M tokens", assumptions, label)
    # fixed monthly serving cost: 0 for per-token, hosting x 730 h for hosted/dedicated, unknown for provisioned
    if ov.fixed_monthly_cost is not None:
        out["fixed_monthly_cost"] = ov.fixed_monthly_cost
        assumptions.append({"name": "fixed_monthly_cost", "value": ov.fixed_monthly_cost, "unit": "$ per month",
                            "origin": "override", "flag": "--fixed-monthly-cost", "as_of": None,
                            "source": "command line", "applies_to": label})
    elif m is None:
        out["fixed_monthly_cost"] = 0.0
    else:
        fixed = m.fixed_monthly_cost()
        out["fixed_monthly_cost"] = fixed
        if m.serving != "per_token":
            assumptions.append({
                "name": "fixed_monthly_cost", "value": _r(fixed, 2), "unit": "$ per month",
                "origin": "data" if fixed is not None else "missing", "as_of": m.as_of, "source": m.source,
                "note": (f"{m.serving} serving: ${m.hosting_per_hour:g}/h x {m.hosting_gpus} x {HOURS_PER_MONTH:g} h"
                         + (f" ({m.hosting_unit})" if m.hosting_unit else "")) if fixed is not None else
                        f"{m.serving} serving price not in the data file - pass --fixed-monthly-cost",
                "applies_to": label})
    return out


def _limit_warnings(p: P.Provider, m: P.Offering, w: Workload) -> list[str]:
    out = []
    lim = m.limits
    if w.examples is not None and lim.min_examples and w.examples < lim.min_examples:
        out.append(f"{p.id}/{m.id} needs at least {lim.min_examples} examples; you have {w.examples}")
    if w.examples is not None and lim.max_examples and w.examples > lim.max_examples:
        out.append(f"{p.id}/{m.id} accepts at most {lim.max_examples:,} examples; you have {w.examples:,}")
    if (w.max_tokens_per_example is not None and lim.max_tokens_per_example
            and w.max_tokens_per_example > lim.max_tokens_per_example):
        out.append(f"{p.id}/{m.id}: longest example has {w.max_tokens_per_example:,} tokens, over the "
                   f"limit of {lim.max_tokens_per_example:,}")
    if w.method not in m.methods:
        out.append(f"{p.id}/{m.id} does not list method {w.method!r} (it lists: {', '.join(m.methods)})")
    return out


def prompt_only_rows(d: P.DataFile, b: Baseline, w: Workload, on: _dt.date,
                     extra: list[tuple[str, str]] = (), skipped: list | None = None) -> list[dict[str, Any]]:
    """Switch to a smaller/newer model with the SAME long prompt and no fine-tune: the saving that needs
    no training. Candidates: the baseline's ``smaller`` list and ``extra`` (provider, model) pairs.

    A candidate is never offered when it is retired, shuts down on or before today's model, or shuts down
    within the ~6-month horizon (:func:`providers.too_soon`, judged from the data file's dates); each one
    left out goes to ``skipped`` with the reason."""
    base_cpr = request_cost(w.base_prompt_tokens, w.output_tokens, b.input_price, b.output_price,
                            cached_share=w.cached_share, cached_price=b.cached_price)
    R = w.requests_per_month
    seen, rows = set(), []
    names = [f"{pv}/{mid}" for pv, mid in extra] + list(b.smaller)
    for name in names:
        try:
            c = d.current_model(name)
        except UsageError:
            continue
        key = (c.provider, c.id)
        if key in seen or f"{c.provider}/{c.id}" == b.label:
            continue
        seen.add(key)
        st = c.status(on)
        why = P.too_soon(c.retires, on, not_before=b.status.retires if b.status is not None else None)
        if why:
            if skipped is not None:
                skipped.append({"provider": c.provider, "model": c.id, "status": st.label, "reason": why})
            continue
        cpr = request_cost(w.base_prompt_tokens, w.output_tokens, c.input_price, c.output_price,
                           cached_share=w.cached_share, cached_price=c.cached_price)
        monthly = cpr * R if cpr is not None and R is not None else None
        m_base = base_cpr * R if base_cpr is not None and R is not None else None
        rows.append({"provider": c.provider, "model": c.id, "kind": "prompt_only", "status": st.label,
                     "cost_per_request": _r(cpr, 8), "monthly_cost": _r(monthly, 4),
                     "monthly_savings": _r(m_base - monthly, 4) if m_base is not None and monthly is not None else None,
                     "savings_until": c.retires.isoformat() if c.retires else None,
                     "note": "same prompt, no fine-tune: re-test quality on your held-out set before switching",
                     "as_of": c.as_of, "source": c.source})
    return rows


CACHE_MIN_TOKENS = 1024     # OpenAI / Azure OpenAI cache prompts of 1,024+ tokens automatically
CACHE_STEP_TOKENS = 128     # ... in increments of 128 tokens
CACHE_SOURCES = ("https://developers.openai.com/api/docs/guides/prompt-caching ; "
                 "https://learn.microsoft.com/azure/foundry/openai/how-to/prompt-caching ; "
                 "https://ai.google.dev/gemini-api/docs/caching (read 2026-11-30)")


def prompt_caching_note(w: Workload, b: Baseline) -> dict[str, Any] | None:
    """Automatic prompt caching overstates every saving when --cached-share is not given.

    OpenAI and Azure OpenAI cache a repeated prompt prefix of 1,024+ tokens automatically (in 128-token
    steps) and Gemini 2.5+ does implicit caching (minimum 1,024-4,096 tokens by model). The part of the
    prompt that fine-tuning would remove (base - fine-tuned prompt: instructions and examples sent with
    every request) is the typical repeated prefix, so it is the typical cached share. Returns the figure
    at that share (or asks for --cached-share when it cannot be derived); None when it does not apply.
    """
    if w.cached_share_given or w.cached_share or w.base_prompt_tokens is None:
        return None
    if w.base_prompt_tokens < CACHE_MIN_TOKENS or b.cached_price is None or b.input_price is None:
        return None
    head = (f"prompt caching: OpenAI and Azure OpenAI cache a repeated prompt prefix of {CACHE_MIN_TOKENS:,}+ "
            f"tokens automatically and Gemini caches implicitly, so part of today's {w.base_prompt_tokens:,}-token "
            f"prompt is probably billed at the cached price (${b.cached_price:g} vs ${b.input_price:g} per 1M) "
            f"and every saving below, computed without caching, is overstated")
    out: dict[str, Any] = {"applies": True, "min_tokens": CACHE_MIN_TOKENS, "source": CACHE_SOURCES,
                           "typical_cached_share": None, "monthly_base_cost_cached": None,
                           "monthly_savings_overstated_by": None}
    repeated = (w.base_prompt_tokens - w.ft_prompt_tokens) if w.ft_prompt_tokens is not None else 0
    cached = (repeated // CACHE_STEP_TOKENS) * CACHE_STEP_TOKENS if repeated >= CACHE_MIN_TOKENS else 0
    if not cached:
        out["warning"] = (head + ": pass --cached-share F (the share of prompt tokens your API usage reports "
                                 "as cached_tokens) for honest figures")
        return out
    share = round(cached / w.base_prompt_tokens, 2)
    plain = request_cost(w.base_prompt_tokens, w.output_tokens, b.input_price, b.output_price)
    with_cache = request_cost(w.base_prompt_tokens, w.output_tokens, b.input_price, b.output_price,
                              cached_share=share, cached_price=b.cached_price)
    R = w.requests_per_month
    out["typical_cached_share"] = share
    if plain is None or with_cache is None:
        out["warning"] = head + f": rerun with --cached-share {share:g} for honest figures"
        return out
    if R is not None:
        out["monthly_base_cost_cached"] = _r(with_cache * R, 2)
        out["monthly_savings_overstated_by"] = _r((plain - with_cache) * R, 2)
        fig = (f"today's cost is about {money(with_cache * R)}/month, not {money(plain * R)}, and each fine-tune "
               f"saving below is about {money((plain - with_cache) * R)}/month smaller")
    else:
        fig = (f"today's cost is about {money(with_cache, True)} per request, not {money(plain, True)}")
    out["warning"] = (head + f": if the {repeated:,} tokens fine-tuning would remove repeat on every request, "
                      f"a typical cached share is {share:g} ({cached:,} of {w.base_prompt_tokens:,} tokens): {fig} "
                      f"- rerun with --cached-share {share:g} (or your measured share) for every row")
    return out


def short_example_note(w: Workload) -> str | None:
    """The self-hosted hours assume packed 2,048-token rows at batch 2: with short unpacked examples
    (training.md's recipes: batch 1, no packing) they are a lower bound."""
    if not w.examples or not w.training_tokens:
        return None
    avg = w.training_tokens / w.examples
    if avg >= 512:
        return None
    return (f"self-hosted training hours are a LOWER BOUND: the throughput reference packs 2,048-token "
            f"sequences at batch 2 (4,096 tokens a step), while your examples average {avg:,.0f} tokens; trained "
            f"unpacked at batch 1 (training.md's recipes), each step carries ~{avg:,.0f} tokens and per-step "
            f"overhead and padding dominate, so expect several times longer - train with --packing, or measure "
            f"tokens/s with a short train_lora.py run and pass --throughput")


def _months_left(status: dict | None, on: _dt.date) -> float | None:
    if status and status["retires"] and status["status"] != "retired":
        return round((_dt.date.fromisoformat(status["retires"]) - on).days / DAYS_PER_MONTH, 2)
    return None


def _estimate_warnings(w: Workload, b: Baseline, prices: dict, main: dict, have_roi_input: bool,
                       status: dict | None, months_left: float | None, po_rows: list[dict]) -> list[str]:
    """Warnings about the numbers themselves: missing cached prices, a dearer fine-tune, a shutdown before
    break-even, and a prompt-only switch that saves as much as fine-tuning."""
    out = []
    if w.cached_share and (b.cached_price is None or (have_roi_input and prices["ft_cached_price"] is None)):
        out.append("--cached-share is set but a cached-input price is missing (baseline or fine-tuned): "
                   "those cached tokens are billed at the full input price (pass --base-cached-price/"
                   "--ft-cached-price)")
    if have_roi_input and main["training_cost"] is None and w.training_tokens is None:
        out.append("no training data size: pass --train FILE or --training-tokens N for the training cost")
    if (main["base_cost_per_request"] is not None and main["ft_cost_per_request"] is not None
            and main["ft_cost_per_request"] > main["base_cost_per_request"]):
        out.append("the fine-tuned model costs MORE per request than the base model "
                   f"({money(main['ft_cost_per_request'], True)} vs {money(main['base_cost_per_request'], True)}): "
                   "fine-tuned token prices are higher, so savings only come from a much shorter prompt")
    if months_left is not None:
        bem = main["break_even_months"]
        if bem is None or bem > months_left:
            out.append(f"does not pay back before the shutdown on {status['retires']} "
                       f"({months_left} months away)" + ("" if bem is None else f"; break-even needs {bem} months"))
    if po_rows and main["monthly_savings"] is not None:
        best = max(po_rows, key=lambda r: r["monthly_savings"] if r["monthly_savings"] is not None else -1e18)
        if best["monthly_savings"] is not None and best["monthly_savings"] >= main["monthly_savings"]:
            out.append(f"switching to {best['provider']}/{best['model']} with the same prompt and NO fine-tune "
                       f"saves {money(best['monthly_savings'])}/month, at least as much as fine-tuning "
                       f"({money(main['monthly_savings'])}): measure its quality first")
    return out


def _assumptions_for(d: P.DataFile, w: Workload, params_b: float) -> list[dict[str, Any]]:
    """How the workload and the self-hosted estimate were derived (epochs, tokens, throughput, hours)."""
    out: list[dict[str, Any]] = []
    out.append({"name": "epochs", "value": w.epochs, "origin": w.epochs_source,
                        "note": "OpenAI heuristic: 3; if n*3 < 100 then min(25, 100 // n); if n*3 > 25000 "
                                "then max(1, 25000 // n)" if w.epochs_source.startswith("auto") else None})
    if w.training_tokens is not None:
        out.append({"name": "training_tokens_per_epoch", "value": w.training_tokens,
                            "origin": "counted" if w.counted_from else "flag", "tokenizer": w.tokenizer,
                            "files": w.counted_from})
    for name, val in (("base_prompt_tokens", w.base_prompt_tokens), ("ft_prompt_tokens", w.ft_prompt_tokens),
                      ("output_tokens", w.output_tokens), ("cached_share", w.cached_share)):
        out.append({"name": name, "value": val, "origin": "flag"})

    ref = d.throughput_reference
    out.append({
        "name": "self_hosted_throughput", "origin": "derived",
        "value": f"{ref.lora_tokens_per_s:g} tok/s x (GPU TFLOPS / {d.gpu_specs[ref.gpu].peak_bf16_tflops:g}) "
                 f"x ({ref.params_b:g}B / {params_b:g}B)",
        "note": (f"reference: {ref.model} LoRA on {d.gpu_specs[ref.gpu].name}, {ref.setup} "
                 f"({ref.lora_tokens_per_s:g} tok/s, {ref.lora_memory_gib:g} GiB; QLoRA {ref.qlora_tokens_per_s:g} "
                 f"tok/s, {ref.qlora_memory_gib:g} GiB); scaling by peak TFLOPS assumes the same utilisation, "
                 f"so faster GPUs are estimated optimistically; rows as full as the reference's (packed 2,048 "
                 f"tokens, batch 2) are assumed, so with short unpacked examples the hours are a lower bound - "
                 f"measure with train_lora.py and pass --throughput"),
        "as_of": ref.as_of, "source": ref.source})
    out.append({"name": "self_hosted_training_hours", "origin": "derived",
                        "value": "model load + training + evaluations",
                        "note": (f"load = {BF16_BYTES_PER_PARAM} bytes/param / {LOAD_GB_PER_S:g} GB/s + "
                                 f"{STARTUP_S:g} s; evaluations = {w.evals} x held-out tokens "
                                 f"({'--eval-tokens' if w.eval_tokens is not None else f'{DEFAULT_EVAL_SHARE:.0%} of the training tokens'})"
                                 f" at {EVAL_SPEEDUP:g}x the training throughput (forward only)")})
    out.append({"name": "self_hosted_params_b", "value": params_b, "origin": w.params_source})
    out.append({"name": "self_hosted_serving", "value": HOURS_PER_MONTH, "unit": "GPU-hours per month",
                        "origin": "derived", "note": "one GPU of the same type running 24/7 serves the load "
                                                     "(capacity not checked); marginal cost per token ~0"})
    return out


def _target(d: P.DataFile, provider: str | None, model: str | None, w: Workload, on: _dt.date,
            warnings: list[str]) -> tuple[P.Provider | None, P.Offering | None, dict | None, int]:
    """The offering to fine-tune (or none), its status, and exit code 1 when it is retired."""
    if not provider:
        if model:
            raise UsageError("--model needs --provider")
        return None, None, None, 0
    p = d.provider(provider)
    if p.kind != "managed":
        raise UsageError(f"{p.id} is GPU rental/own hardware: its numbers are in the self_hosted "
                         f"section; pick a managed --provider for the API comparison, or use --gpu ID")
    m = d.offering(p, model, params_b=w.params_b if w.params_source == "flag" else None)
    st = P.status_of(p, m, on)
    lifecycle = list(st.warnings)
    if st.status == "retiring" and lifecycle:   # the first warning is the dated "is retiring" one
        lifecycle[0] = (lifecycle[0].replace(" is retiring:", " is a RETIRING offering:", 1)
                        + (f" - every saving below ends {st.retires}" if st.retires else "")
                        + "; for new work price the alternatives with --compare")
    warnings.extend(lifecycle)
    closed = P.closed_to_new_customers(p, m)
    if closed and st.status != "retired":
        warnings.append(f"{p.id}/{m.id}: NOT FOR NEW CUSTOMERS - {closed}")
    warnings.extend(_limit_warnings(p, m, w))
    if w.params_source == "default":
        size = m.params_b or (P._size_from_name(model.lower()) if (model and m.params_range_b) else None)
        if size:
            w.params_b, w.params_source = size, "model"
    return p, m, st.to_json(), 1 if st.status == "retired" else 0


def _baseline_warnings(b: Baseline, p: P.Provider | None, m: P.Offering | None, ov: Overrides) -> list[str]:
    out = []
    if b.status is not None and b.origin.startswith("current_model") and b.status.status != "available":
        out.append(f"today's model {b.label} is {b.status.label}: "
                   + ("it no longer answers - the baseline is what you would pay if it did"
                      if b.status.status == "retired" else
                      "you must move off it by then whether or not you fine-tune"))
    if p is not None and not ov.current_model and b.origin == "offering":
        out.append(f"no --current-model: the baseline is {p.id}/{m.id}'s own base price; if you run a "
                   f"bigger model today (e.g. gpt-4.1), pass --current-model NAME so the savings are "
                   f"measured against what you actually pay")
    return out


def estimate(d: P.DataFile, w: Workload, *, provider: str | None, model: str | None,
             ov: Overrides, on: _dt.date, compare: bool = False) -> tuple[dict[str, Any], int]:
    """The estimate_costs document and its exit code (1 when the chosen offering is retired)."""
    assumptions: list[dict[str, Any]] = []
    warnings: list[str] = []
    p, m, status, exit_code = _target(d, provider, model, w, on, warnings)
    b = resolve_baseline(d, p, m, ov, on, assumptions)
    warnings.extend(_baseline_warnings(b, p, m, ov))
    prices = resolve_prices(p, m, w.method, ov, assumptions)
    main = roi(training_tokens=w.training_tokens, epochs=w.epochs, train_price=prices["train_price"],
               base_prompt_tokens=w.base_prompt_tokens, ft_prompt_tokens=w.ft_prompt_tokens,
               output_tokens=w.output_tokens, base_input_price=b.input_price,
               base_output_price=b.output_price, ft_input_price=prices["ft_input_price"],
               ft_output_price=prices["ft_output_price"], requests_per_month=w.requests_per_month,
               cached_share=w.cached_share, base_cached_price=b.cached_price,
               ft_cached_price=prices["ft_cached_price"], fixed_monthly_cost=prices["fixed_monthly_cost"])
    have_roi_input = p is not None or any(v is not None for v in (ov.train_price, ov.ft_input_price))
    if not have_roi_input:
        for k in list(main):
            if k not in ("requests_per_month", "base_cost_per_request", "monthly_base_cost"):
                main[k] = None

    months_left = _months_left(status, on)
    extra = [(p.id, m.id)] if (p is not None and m is not None and b.origin.startswith("current_model")) else []
    po_skipped: list[dict[str, Any]] = []
    po_rows = prompt_only_rows(d, b, w, on, extra, po_skipped) if w.base_prompt_tokens is not None else []
    warnings.extend(_estimate_warnings(w, b, prices, main, have_roi_input, status, months_left, po_rows))
    caching = prompt_caching_note(w, b)
    if caching:
        warnings.append(caching["warning"])
    short = short_example_note(w)
    if short:
        warnings.append(short)

    # self-hosted alternative
    params_b = w.params_b
    sh_rows = self_hosted_options(d, params_b=params_b, training_tokens=w.training_tokens, epochs=w.epochs,
                                  base_cost_per_request=main["base_cost_per_request"],
                                  requests_per_month=w.requests_per_month, gpu=ov.gpu, gpu_price=ov.gpu_price,
                                  power_price=ov.power_price, gpu_watts=ov.gpu_watts, throughput=ov.throughput,
                                  eval_tokens=w.eval_tokens, evals=w.evals, on=on)
    assumptions.extend(_assumptions_for(d, w, params_b))
    doc: dict[str, Any] = {
        "provider": p.id if p else None, "model": m.id if m else None, "method": w.method,
        "judged_on": on.isoformat(), "data_as_of": d.as_of.isoformat(),
        "status": status,
        "baseline": b.to_json(),
        "training": {"tokens_per_epoch": w.training_tokens, "examples": w.examples, "epochs": w.epochs,
                     "epochs_source": w.epochs_source,
                     "billed_tokens": w.training_tokens * w.epochs if w.training_tokens is not None else None,
                     "price_per_1m": prices["train_price"] if have_roi_input else None,
                     "cost": main["training_cost"], "tokenizer": w.tokenizer, "counted_from": w.counted_from,
                     "max_tokens_per_example": w.max_tokens_per_example},
        **{k: v for k, v in main.items() if k != "training_tokens_billed"},
        "months_until_shutdown": months_left,
        "prompt_only": po_rows,
        "prompt_only_excluded": po_skipped,
        "prompt_caching": caching,
        "self_hosted": {"params_b": params_b, "params_source": w.params_source, "options": sh_rows},
        "compare": compare_rows(d, w, on=on, ov=ov, baseline=b) if compare else None,
        "assumptions": assumptions,
        "warnings": warnings,
    }
    return doc, exit_code


# ---------------------------------------------------------------------- compare

def _managed_row(p: P.Provider, m: P.Offering, st: P.Status, w: Workload, b: Baseline) -> dict[str, Any]:
    """One --compare row for a managed offering: training, per-request, fixed and monthly cost vs the baseline."""
    tp = m.training_price.get(w.method)
    fixed = m.fixed_monthly_cost()
    own_base = b.input_price is None
    r = roi(training_tokens=w.training_tokens, epochs=w.epochs, train_price=tp,
            base_prompt_tokens=w.base_prompt_tokens, ft_prompt_tokens=w.ft_prompt_tokens,
            output_tokens=w.output_tokens,
            base_input_price=m.base_input_price if own_base else b.input_price,
            base_output_price=m.base_output_price if own_base else b.output_price,
            base_cached_price=m.base_cached_price if own_base else b.cached_price,
            ft_input_price=m.ft_input_price, ft_output_price=m.ft_output_price,
            ft_cached_price=m.ft_cached_price, cached_share=w.cached_share,
            requests_per_month=w.requests_per_month, fixed_monthly_cost=fixed)
    notes = []
    closed = P.closed_to_new_customers(p, m)
    if closed:
        notes.append(f"NOT FOR NEW CUSTOMERS: {closed}")
    if st.status == "retiring" and st.retires:
        notes.append(f"savings end when it shuts down {st.retires}")
    if tp is None:
        notes.append(f"no {w.method} price")
    if m.ft_input_price is None:
        notes.append("no inference price")
    if m.serving in ("hosted", "dedicated") and fixed is not None:
        gpus = f" x {m.hosting_gpus}" if m.hosting_gpus > 1 else ""
        notes.append(f"{m.serving}: ${m.hosting_per_hour:g}/h{gpus} 24/7")
    if fixed is None:
        notes.append(f"{m.serving} serving price unknown")
    if m.caveat:
        notes.append(m.caveat)
    return {"provider": p.id, "model": m.id, "kind": "managed", "status": st.label,
            "new_customers": closed is None, "savings_until": _iso_or_none(st.retires),
            "train_price": tp, "training_cost": r["training_cost"],
            "ft_cost_per_request": r["ft_cost_per_request"], "base_cost_per_request": r["base_cost_per_request"],
            "fixed_monthly_cost": r["fixed_monthly_cost"], "monthly_ft_cost": r["monthly_ft_cost"],
            "monthly_savings": r["monthly_savings"], "break_even_months": r["break_even_months"],
            "pays_back": r["pays_back"], "serving": m.serving, "warnings": st.warnings,
            "note": "; ".join(notes) or None, "as_of": m.as_of, "source": m.source}


def _iso_or_none(d: _dt.date | None) -> str | None:
    return d.isoformat() if d else None


def compare_rows(d: P.DataFile, w: Workload, *, on: _dt.date, ov: Overrides, baseline: Baseline) -> dict[str, Any]:
    """The same workload across every non-retired offering, rented GPUs, and prompt-only switches."""
    b = baseline
    rows, excluded = [], []
    params_b = w.params_b
    for p in d.providers:
        if p.kind != "managed":
            continue
        models = p.models
        if any(m.params_range_b for m in p.models):   # size tiers: the one tier that prices this size
            try:
                models = [d.offering(p, params_b=params_b)]
            except UsageError:
                models = []
        for m in models:
            st = P.status_of(p, m, on)
            if st.status == "retired":
                excluded.append({"provider": p.id, "model": m.id, "status": st.label,
                                 "reason": st.warnings[0] if st.warnings else "retired"})
                continue
            rows.append(_managed_row(p, m, st, w, b))
    base_cpr = request_cost(w.base_prompt_tokens, w.output_tokens, b.input_price, b.output_price,
                            cached_share=w.cached_share, cached_price=b.cached_price)
    for s in self_hosted_options(d, params_b=params_b, training_tokens=w.training_tokens, epochs=w.epochs,
                                 base_cost_per_request=base_cpr, requests_per_month=w.requests_per_month,
                                 gpu=ov.gpu, gpu_price=ov.gpu_price, power_price=ov.power_price,
                                 gpu_watts=ov.gpu_watts, throughput=ov.throughput, eval_tokens=w.eval_tokens,
                                 evals=w.evals, on=on):
        note = "self-hosted LoRA, 1 GPU 24/7" if s["fits"] else f"{params_b:g}B does not fit on one GPU"
        rows.append({"provider": s["provider"], "model": f"{s['gpu']} ({s['tier']})", "kind": "self_hosted",
                     "status": s["status"], "train_price": None, "training_cost": s["training_cost"],
                     "ft_cost_per_request": 0.0 if s["fits"] else None, "base_cost_per_request": _r(base_cpr, 8),
                     "fixed_monthly_cost": s["fixed_monthly_cost"],
                     "monthly_ft_cost": s["fixed_monthly_cost"] if w.requests_per_month is not None else None,
                     "monthly_savings": s["monthly_savings"], "break_even_months": s["break_even_months"],
                     "pays_back": s["pays_back"], "serving": "self_hosted", "warnings": [],
                     "new_customers": True, "savings_until": None,
                     "note": note, "as_of": s["as_of"], "source": s["source"]})
    po_skipped: list[dict[str, Any]] = []
    for po in (prompt_only_rows(d, b, w, on, skipped=po_skipped)
               if b.input_price is not None and w.base_prompt_tokens is not None else []):
        rows.append({"provider": po["provider"], "model": po["model"], "kind": "prompt_only", "status": po["status"],
                     "train_price": None, "training_cost": 0.0, "ft_cost_per_request": po["cost_per_request"],
                     "base_cost_per_request": _r(base_cpr, 8), "fixed_monthly_cost": 0.0,
                     "monthly_ft_cost": po["monthly_cost"], "monthly_savings": po["monthly_savings"],
                     "break_even_months": 0.0 if (po["monthly_savings"] or 0) > 0 else None,
                     "pays_back": (po["monthly_savings"] or 0) > 0 if po["monthly_savings"] is not None else None,
                     "serving": "per_token", "warnings": [], "note": "prompt-only switch, no fine-tune",
                     "new_customers": True, "savings_until": po["savings_until"],
                     "as_of": po["as_of"], "source": po["source"]})
    # rows a new customer can buy first; offerings closed to new customers last (stable otherwise)
    rows.sort(key=lambda r: not r["new_customers"])
    label = b.label if b.input_price is not None else "each row's own base model"
    return {"baseline": label, "params_b": params_b, "rows": rows, "excluded": excluded,
            "prompt_only_excluded": po_skipped}


# ---------------------------------------------------------------------- counting a training file

def count_training_files(paths: list[str], *, tokenizer: str | None = None,
                         fallback_tokenizer: str | None = None) -> dict[str, Any]:
    """Examples and tokens of JSONL training files: the validator's own numbers.

    Runs :func:`finetune_kit.validate.validate_files` (what validate_jsonl.py runs) and returns
    the sum of its per-file ``stats`` (``examples`` = usable examples, ``total_tokens``), so the
    token count is by construction the one the validator reports. ``fallback_tokenizer`` (a
    provider's encoding such as o200k_base) is tried first when no ``tokenizer`` is given; when it
    cannot be loaded offline the count uses cl100k_base and says so.
    """
    from . import tokens, validate

    notes: list[str] = []
    if tokenizer:
        counter = tokens.get_counter(tokenizer=tokenizer)
    elif fallback_tokenizer:
        try:
            counter = tokens.get_counter(tokenizer=fallback_tokenizer)
        except UsageError as exc:
            counter = tokens.get_counter()
            notes.append(f"{fallback_tokenizer} is not available offline ({str(exc).split(':')[0]}); "
                         f"counted with {counter.name}, an approximation - pass --tokenizer FILE.tiktoken "
                         f"for the exact count")
    else:
        counter = tokens.get_counter()
    doc = validate.validate_files(paths, tokenizer=counter, min_examples=1)
    examples = sum(f["stats"]["examples"] or 0 for f in doc["files"])
    total = sum(f["stats"]["total_tokens"] or 0 for f in doc["files"])
    trainable = sum(f["stats"]["trainable_tokens"] or 0 for f in doc["files"])
    longest = max(((f["stats"]["tokens_per_example"] or {}).get("max") or 0 for f in doc["files"]), default=0)
    errors = sum(f["error_count"] for f in doc["files"])
    if errors:
        notes.append(f"the validator found {errors} error(s) in the training data; only the {examples} usable "
                     f"example(s) are counted - run validate_jsonl.py on the file")
    if examples == 0:
        raise UsageError(f"no valid training examples in {', '.join(map(str, paths))}; run validate_jsonl.py on it")
    return {"examples": examples, "total_tokens": total, "trainable_tokens": trainable,
            "max_tokens_per_example": longest, "validator_errors": errors, "tokenizer": counter.name,
            "notes": notes}


# ---------------------------------------------------------------------- human report

def _months(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x == 0:
        return "immediate"
    if x < 1:
        days = x * DAYS_PER_MONTH
        return "<0.1 days" if days < 0.1 else f"{days:,.1f} days"
    return f"{x:,.2f} months"


def _ft_cell(r: dict[str, Any]) -> str:
    if r["ft_cost_per_request"] is None:
        return "n/a"
    if r["kind"] == "self_hosted" or (r["serving"] == "dedicated" and not r["ft_cost_per_request"]):
        return "0 (fixed)"
    return money(r["ft_cost_per_request"], True)


def _until(saving: float | None, until: str | None) -> str:
    """A saving with its end date: a retiring offering's saving is not open-ended."""
    return money(saving) + (f" until {until}" if until and saving is not None else "")


def _compare_lines(cmp_: dict[str, Any]) -> list[str]:
    from .cli import table

    out = ["", f"Compare (same workload; baseline: {cmp_['baseline']}; size tier and self-hosted model "
               f"{cmp_['params_b']:g}B; monthly total = per-request cost x volume + fixed serving):"]
    out.append(table(["provider", "model", "status", "training", "FT $/request", "fixed/month",
                      "monthly total", "savings/month", "break-even", "note"],
                     [(r["provider"], r["model"], r["status"], money(r["training_cost"]), _ft_cell(r),
                       money(r["fixed_monthly_cost"]) if r["fixed_monthly_cost"] is not None else "n/a",
                       money(r["monthly_ft_cost"]), _until(r["monthly_savings"], r.get("savings_until")),
                       _months(r["break_even_months"]), r["note"] or "") for r in cmp_["rows"]],
                     "lllrrrrrrl"))
    if any(not r.get("new_customers", True) for r in cmp_["rows"]):
        out.append("Rows marked NOT FOR NEW CUSTOMERS (listed last) cannot be bought by an organisation that has not "
                   "fine-tuned there before; a saving 'until DATE' ends when the offering shuts down.")
    for e in cmp_["excluded"]:
        out.append(f"excluded: {e['provider']}/{e['model']} - {e['status']}, never recommended")
    for e in cmp_.get("prompt_only_excluded") or []:
        out.append(f"not offered as a prompt-only switch: {e['provider']}/{e['model']} - {e['reason']}")
    return out


def format_report(doc: dict[str, Any]) -> str:
    from .cli import color, table

    out: list[str] = []
    t = doc["training"]
    head = f"{doc['provider']}/{doc['model']}" if doc["provider"] else "custom prices"
    bl0 = doc.get("baseline") or {}
    if not (doc["provider"] or doc["training_cost"] is not None or doc["ft_cost_per_request"] is not None):
        if bl0.get("origin", "").startswith("current_model"):
            st = f", {bl0['status']}" if bl0.get("status") else ""
            out.append(f"Baseline: today's model {bl0['model']} (${bl0['input_price']:.2f}/${bl0['output_price']:.2f} "
                       f"per 1M in/out{st})")
            if doc["monthly_base_cost"] is not None:
                out.append(f"Today at {doc['requests_per_month']:,.0f} requests/month: "
                           f"{money(doc['base_cost_per_request'], True)} per request, {money(doc['monthly_base_cost'])}/month")
    if doc["provider"] or doc["training_cost"] is not None or doc["ft_cost_per_request"] is not None:
        status = f", {doc['status']['label']}" if doc["status"] else ""
        out.append(f"Fine-tuning estimate: {head} ({doc['method']}{status}), judged on {doc['judged_on']}, "
                   f"data file as of {doc['data_as_of']}")
        bl = doc.get("baseline") or {}
        if bl.get("input_price") is not None:
            st = f", {bl['status']}" if bl.get("status") else ""
            cached = f", cached {bl['cached_price']:.3f}".rstrip("0") if bl.get("cached_price") is not None else ""
            out.append(f"Baseline:   today's model {bl['model']} (${bl['input_price']:.2f}/${bl['output_price']:.2f} per 1M "
                       f"in/out{cached}{st}) [{bl['origin']}]")
        if t["tokens_per_epoch"] is not None:
            ex = f", {t['examples']:,} examples" if t["examples"] is not None else ""
            tok = f" ({t['tokenizer']})" if t["tokenizer"] else ""
            price = "n/a" if t["price_per_1m"] is None else f"${t['price_per_1m']:.2f}/1M"
            out.append(f"Training:   {t['tokens_per_epoch']:,} tokens{tok}{ex} x {t['epochs']} epoch{'' if t['epochs'] == 1 else 's'} "
                       f"[{t['epochs_source']}] = {t['billed_tokens']:,} billed tokens x {price} "
                       f"= {money(doc['training_cost'])}")
        if doc["base_cost_per_request"] is not None or doc["ft_cost_per_request"] is not None:
            out.append(f"Per request: base {money(doc['base_cost_per_request'], True)}, fine-tuned "
                       f"{money(doc['ft_cost_per_request'], True)}, saving {money(doc['savings_per_request'], True)}")
        if doc["requests_per_month"] is not None and doc["monthly_base_cost"] is not None:
            fixed = (f" (incl. {money(doc['fixed_monthly_cost'])} fixed serving)"
                     if doc["fixed_monthly_cost"] else "")
            out.append(f"Monthly at {doc['requests_per_month']:,.0f} requests: base {money(doc['monthly_base_cost'])}, "
                       f"fine-tuned {money(doc['monthly_ft_cost'])}{fixed}, savings {money(doc['monthly_savings'])}")
        if doc["break_even_requests"] is not None:
            months = f" = {_months(doc['break_even_months'])}" if doc["break_even_months"] is not None else ""
            out.append(f"Break-even: {doc['break_even_requests']:,} requests{months}")
        elif doc["no_break_even_reason"]:
            msg = f"Break-even: none - {doc['no_break_even_reason']}"
            out.append(color(msg, "red") if doc["pays_back"] is False else msg)
    po = doc.get("prompt_only") or []
    if po and not doc.get("compare"):
        out.append("")
        out.append("Prompt-only alternatives (same long prompt, no fine-tune - re-test quality first):")
        out.append(table(["provider", "model", "status", "$/request", "monthly", "savings/month"],
                         [(r["provider"], r["model"], r["status"], money(r["cost_per_request"], True),
                           money(r["monthly_cost"]), _until(r["monthly_savings"], r.get("savings_until")))
                          for r in po], "lllrrr"))
    if not doc.get("compare"):
        for e in doc.get("prompt_only_excluded") or []:
            out.append(f"not offered as a prompt-only switch: {e['provider']}/{e['model']} - {e['reason']}")
    sh = doc["self_hosted"]
    rows = [r for r in sh["options"] if r["fits"]]
    if rows and t["tokens_per_epoch"] is not None and not doc.get("compare"):
        out.append("")
        out.append(f"Self-hosted alternative: LoRA on one GPU, {sh['params_b']:g}B model "
                   f"[{sh['params_source']}], serving on the same GPU 24/7 (hours = load + training + evaluations):")
        out.append(table(["provider", "gpu", "method", "tok/s (est.)", "hours", "training", "serving/month",
                          "savings/month", "break-even"],
                         [(r["provider"], f"{r['gpu']} {r['tier']}", r["method"], f"{r['tokens_per_s']:,.0f}",
                           f"{r['training_hours']:,.2f}", money(r["training_cost"]), money(r["fixed_monthly_cost"]),
                           money(r["monthly_savings"]), _months(r["break_even_months"])) for r in rows],
                         "lllrrrrrr"))
        for r in rows:
            if r["price_basis"]:
                out.append(f"{r['provider']} {r['gpu']}: ${r['price_per_hour']:.4g}/h = {r['price_basis']}; "
                           f"hours = {r['hours_breakdown']['load']:.2f} load + {r['hours_breakdown']['train']:.2f} "
                           f"training + {r['hours_breakdown']['eval']:.2f} evaluation")
        skipped = [f"{r['gpu']}" for r in sh["options"] if not r["fits"]]
        if skipped:
            out.append(f"(does not fit on one GPU even with QLoRA: {', '.join(sorted(set(skipped)))})")
    cmp_ = doc.get("compare")
    if cmp_:
        out += _compare_lines(cmp_)
    if doc["warnings"]:
        out.append("")
        for w in doc["warnings"]:
            out.append(color(f"WARNING: {w}", "yellow"))
    priced = [a for a in doc["assumptions"] if a["name"].endswith("_price") and a.get("value") is not None]
    if priced:
        out.append("")
        out.append("Prices used ($ per 1M tokens): " + "; ".join(
            f"{a['name']} {a['value']:.2f} ({a['origin']}"
            + (f", as of {a['as_of']}" if a.get("as_of") else "") + ")" for a in priced))
    out.append("Every number with its source: rerun with --json (keys: assumptions, warnings).")
    while out and not out[0]:
        out.pop(0)
    return "\n".join(out)
