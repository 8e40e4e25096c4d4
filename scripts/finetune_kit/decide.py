"""Should this problem be fine-tuned? The decision table behind should_finetune.py.

Rules, first match wins (thresholds in :data:`THRESHOLDS`):

1. failure mode ``knowledge`` (the model lacks facts)          -> ``rag``
2. requirements change ``often``                                -> ``prompt``
3. fewer than 10 good examples                                  -> ``collect_data``
4. 10-49 examples                                               -> ``prompt`` (few-shot), or ``collect_data``
                                                                   when the volume says fine-tuning will pay
5. failure mode ``format`` / ``style`` / ``task``               -> ``fine_tune``
6. more than 100k requests/month (any mode)                     -> ``fine_tune`` (cost)
7. ``cost`` / ``latency`` at low or unknown volume              -> ``prompt`` (shorter prompt, caching,
                                                                   smaller model; price it with estimate_costs.py)
8. nothing known                                                -> ``prompt`` (start there, measure)

Suggested providers come from the data file: retired offerings and closed training never appear;
retiring ones carry their dates; ``--privacy strict`` keeps self-hosted options only (rented or
own GPUs), ``on_prem`` keeps your own hardware only.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from typing import Any, Optional

from .bootstrap import lazy_module

costs = lazy_module(__package__ + ".costs")
P = lazy_module(__package__ + ".providers")

FAILURE_MODES = ("format", "style", "knowledge", "cost", "latency", "task")
RECOMMENDATIONS = ("fine_tune", "prompt", "rag", "collect_data")
THRESHOLDS = {"high_volume_requests_per_month": 100_000, "min_examples_fine_tune": 50,
              "min_examples_few_shot": 10}

FAILURE_HELP = {
    "format": "output format is inconsistent (JSON shape, fields, structure)",
    "style": "tone/voice/style is inconsistent",
    "knowledge": "the model lacks facts (your products, documents, recent events)",
    "cost": "requests are too expensive (long prompts, big model)",
    "latency": "responses are too slow",
    "task": "a narrow repeatable task (classify, extract, route, call tools) is done unreliably",
}


@dataclass
class Answers:
    failure_mode: Optional[str] = None
    examples: Optional[int] = None
    monthly_requests: Optional[float] = None
    requirements_change: Optional[str] = None
    privacy: str = "none"
    budget: Optional[float] = None


STRUCTURED_OUTPUTS = (
    "try structured outputs first: a JSON schema enforced at decoding time guarantees the shape without "
    "training - OpenAI/Azure structured outputs (response_format json_schema), Gemini responseSchema, "
    "vLLM guided decoding (guided_json), Ollama format=<schema>, llama.cpp GBNF grammars; fine-tune only for "
    "what a schema cannot express (field choice, wording, judgement)")


def _volume(a: Answers) -> str:
    return "unknown volume" if a.monthly_requests is None else f"{a.monthly_requests:,.0f} requests/month"


STRUCTURED_SHORT = ("structured outputs (JSON-schema constrained decoding) may fix the shape without any "
                    "training - try them first (next step 1)")


def recommend(a: Answers) -> tuple[str, list[str]]:
    """(recommendation, reasons) from the decision table.

    The first reason says why this recommendation and not its neighbour in the table (e.g. ``prompt``
    rather than ``collect_data`` or ``fine_tune``), in terms of the user's own numbers.
    """
    T = THRESHOLDS
    reasons: list[str] = []
    high = a.monthly_requests is not None and a.monthly_requests > T["high_volume_requests_per_month"]
    hv = f"{T['high_volume_requests_per_month']:,}"
    if a.failure_mode == "knowledge":
        reasons.append("rag, not fine_tune: the model lacks facts; fine-tuning changes behaviour and form, it does "
                       "not reliably add facts, while retrieval (RAG) supplies current facts with citations")
        reasons.append("fine-tune later only if the answers' format or style is still off once retrieval works")
        return "rag", reasons
    if a.requirements_change == "often":
        reasons.append("prompt, not fine_tune: requirements change often - every change would need new data and a "
                       "new training run, while a prompt changes in minutes"
                       + (f" (even at {a.examples:,} examples)" if a.examples else ""))
        return "prompt", reasons
    if a.examples is not None and a.examples < T["min_examples_few_shot"]:
        reasons.append(f"collect_data, not prompt: only {a.examples} good example(s) - fewer than "
                       f"{T['min_examples_few_shot']}, too few even to pick few-shot examples and measure a prompt "
                       f"on the rest (fine-tuning needs {T['min_examples_fine_tune']}+, OpenAI's minimum is 10)")
        return "collect_data", reasons
    if a.examples is not None and a.examples < T["min_examples_fine_tune"]:
        if high:
            reasons.append(f"collect_data, not prompt: at {_volume(a)} (over {hv}) a fine-tuned model with a short "
                           f"prompt is likely to pay off, so growing the {a.examples} examples to "
                           f"{T['min_examples_fine_tune']}+ is the priority; use a few of them as few-shot "
                           f"examples meanwhile")
            reasons.append(f"collect_data, not fine_tune: {a.examples} examples are fewer than "
                           f"{T['min_examples_fine_tune']} - too few to train and still hold out a test set")
            return "collect_data", reasons
        why = f"a {a.failure_mode} problem is a fine-tuning case, but " if a.failure_mode in ("format", "style", "task") else ""
        reasons.append(f"prompt, not fine_tune: {why}{a.examples} examples are fewer than "
                       f"{T['min_examples_fine_tune']} - put a few of your best in the prompt as few-shot examples "
                       f"and measure the prompt by k-fold cross-validation over all {a.examples} (every example "
                       f"tested once, never shown as its own example) - too few to split off a test set")
        reasons.append(f"prompt, not collect_data: at {_volume(a)} (not over {hv}) a fine-tune would not pay for "
                       f"itself soon; {a.examples} examples are enough to write and measure a prompt today")
        if a.failure_mode == "format":
            reasons.append(STRUCTURED_SHORT)
        return "prompt", reasons
    if a.examples is None:
        reasons.append(f"example count unknown: fine-tuning needs at least {T['min_examples_fine_tune']} good "
                       f"examples (better 100+) - count them before you start")
    if a.failure_mode in ("format", "style"):
        reasons.append(f"fine_tune, not prompt: {a.failure_mode} inconsistency is what fine-tuning fixes best - the "
                       f"model learns the shape from {a.examples or 'your'} examples instead of instructions")
        if a.failure_mode == "format":
            reasons.append(STRUCTURED_SHORT)
        if high:
            reasons.append(f"{_volume(a)}: a fine-tuned model with a short prompt can also cut cost")
        return "fine_tune", reasons
    if a.failure_mode == "task":
        reasons.append("fine_tune, not prompt: a narrow, repeatable task with examples - a fine-tuned (often "
                       "smaller) model does it more reliably and cheaply than a long instruction prompt")
        if high:
            reasons.append(f"{_volume(a)} makes the savings count")
        return "fine_tune", reasons
    if high:
        reasons.append(f"fine_tune, not prompt: {_volume(a)} (over {hv}) - replacing a long prompt or a large model "
                       f"by a fine-tuned one usually pays back; confirm the break-even with estimate_costs.py "
                       f"--current-model YOUR_MODEL, which also prices the prompt-only switch to a smaller model")
        return "fine_tune", reasons
    if a.failure_mode in ("cost", "latency"):
        vol = ("volume unknown" if a.monthly_requests is None
               else f"{a.monthly_requests:,.0f} requests/month is not over {hv}")
        reasons.append(f"prompt, not fine_tune: {a.failure_mode} at {vol} - savings rarely cover training and "
                       f"evaluation; shorten the prompt, use prompt caching or a smaller base model first, and "
                       f"price fine-tuning with estimate_costs.py --current-model YOUR_MODEL")
        return "prompt", reasons
    reasons.append("prompt, not fine_tune: no failure mode given - start with a prompt, measure it on a test set, "
                   "and come back with --failure-mode")
    return "prompt", reasons


# ---------------------------------------------------------------------- providers

def suggest_providers(d: P.DataFile, privacy: str, on: _dt.date, budget: float | None = None
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(suggested, excluded) providers for a privacy level, judged on a date."""
    suggested, excluded = [], []
    for p in d.providers:
        if privacy == "strict" and not p.self_hosted:
            excluded.append({"provider": p.id, "reason": "privacy strict: data would go to a third-party "
                                                         "training service; self-hosted options only"})
            continue
        if privacy == "on_prem" and not p.on_prem:
            excluded.append({"provider": p.id, "reason": "privacy on_prem: data must stay on your own hardware"})
            continue
        pst = P.provider_status(p, on)
        if pst.status == "retired":
            excluded.append({"provider": p.id, "reason": f"{pst.label}: never recommended"})
            continue
        models, gone, soon = [], [], []
        retiring: dict[str, list[str]] = {}
        if p.kind == "managed":
            for m in p.models:
                st = P.status_of(p, m, on)
                if st.status == "retired":
                    gone.append(f"{m.id} (shut down {st.retires})" if st.retires and on >= st.retires
                                else f"{m.id} ({st.label})")
                    continue
                why = P.too_soon(st.retires, on)
                if why:   # the same rule as the prompt-only switches: nothing that shuts down within ~6 months
                    soon.append(f"{m.id} ({why})")
                    continue
                models.append({"model": m.id, "status": st.label, "methods": list(m.methods),
                               "training_price": dict(m.training_price), "serving": m.serving,
                               "caveat": m.caveat})
                if st.status == "retiring":
                    retiring.setdefault(_dates(st), []).append(m.id)
            if not models:
                reason = ("every model is retired or shuts down too soon for new work: " if soon
                          else "every model is retired: ") + ", ".join(gone + soon)
                excluded.append({"provider": p.id, "reason": reason})
                continue
        # the provider's own warnings; a model's own retirement is said once, below, by date
        warnings = list(P.status_of(p, None, on).warnings)
        closed = P.closed_to_new_customers(p)
        if closed:
            warnings.append(f"{p.id}: NOT FOR NEW CUSTOMERS - {closed}")
        for dates, ids in sorted(retiring.items()):
            warnings.append(f"{p.id}: {', '.join(ids)} - {dates}")
        fixed = None
        if p.kind == "gpu_rental":
            prices = [g.price_per_hour for g in p.gpus if g.price_per_hour is not None]
            fixed = round(min(prices) * costs.HOURS_PER_MONTH, 2) if prices else None
        entry = {
            "provider": p.id, "name": p.name, "kind": p.kind, "status": pst.label,
            "status_date": pst.date.isoformat() if pst.date else None, "warnings": warnings,
            "self_hosted": p.self_hosted, "on_prem": p.on_prem,
            "residency": p.residency.model_dump(), "models": models,
            "retired_models": gone, "too_soon_models": soon,
            "new_customers": closed is None, "existing_customers_only": closed,
            "gpus": [{"gpu": g.id, "tier": g.tier, "price_per_hour": g.price_per_hour} for g in p.gpus],
            "min_monthly_serving_cost": fixed,
            "why": _why(p),
            "as_of": p.as_of, "source": p.source,
        }
        if budget is not None and fixed is not None and fixed > budget:
            entry["warnings"].append(f"cheapest GPU running 24/7 costs ${fixed:,.2f}/month, over the "
                                     f"${budget:,.2f} budget (serve on demand, or share the GPU)")
            entry["over_budget"] = True
        suggested.append(entry)
    order = {"available": 0, "retiring": 1}
    # what a new customer can buy first; offerings closed to new customers last
    suggested.sort(key=lambda e: (not e["new_customers"], order.get(e["status"].split(" ")[0], 2),
                                  e.get("over_budget", False)))
    return suggested, excluded


def _dates(st: "P.Status") -> str:
    """Both lifecycle dates of a retiring model, each with its own meaning."""
    parts = []
    if st.training_ends:
        parts.append(("training retirement no earlier than " if st.training_ends_no_earlier_than
                      else "no new fine-tuning jobs from ") + st.training_ends.isoformat())
    if st.retires:
        parts.append(f"they and their fine-tunes shut down {st.retires} ({(st.retires - st.on).days} days after "
                     f"{st.on})")
    return "; ".join(parts)


def _why(p: P.Provider) -> str:
    if p.kind == "managed" and p.notes:
        serving = sorted({m.serving for m in p.models})
        return (f"managed training; fine-tuned models served {' / '.join(s.replace('_', '-') for s in serving)}. "
                + p.notes[0])
    if p.kind == "own_hardware":
        return "data never leaves your premises; train with train_lora.py, serve the adapter yourself"
    if p.kind == "gpu_rental":
        return "rent a GPU by the hour, train with train_lora.py; you control the data and the weights"
    serving = sorted({m.serving for m in p.models})
    return f"managed training; fine-tuned models served {' / '.join(s.replace('_', '-') for s in serving)}"


# ---------------------------------------------------------------------- next steps

def _flags(**kv) -> str:
    """Command-line flags for the values the user gave; N / X placeholders for the ones still unknown."""
    out = []
    for flag, (value, placeholder) in kv.items():
        name = "--" + flag.replace("_", "-")
        if value is None:
            if placeholder:
                out.append(f"{name} {placeholder}")
        elif isinstance(value, float) and value.is_integer():
            out.append(f"{name} {int(value)}")
        else:
            out.append(f"{name} {value}")
    return " ".join(out)


def _script_prefix() -> str:
    """``python3 <this skill's real scripts dir>/`` - a command the user can paste, never a ``{baseDir}``."""
    import shlex

    from .bootstrap import SCRIPTS_DIR

    return f"python3 {shlex.quote(str(SCRIPTS_DIR))}/"


def _estimate_cmd(a: Answers, *, compare: bool = True) -> str:
    S = _script_prefix()
    return (S + "estimate_costs.py --current-model YOUR_MODEL" + (" --compare" if compare else "") + " "
            + _flags(train=(None, "data/train.jsonl"), base_prompt_tokens=(None, "N"), ft_prompt_tokens=(None, "N"), output_tokens=(None, "N"),
                     requests_per_month=(a.monthly_requests, "N")))


def _ask_again_cmd(a: Answers, examples: int | None) -> str:
    S = _script_prefix()
    return S + "should_finetune.py " + _flags(
        failure_mode=(a.failure_mode, "format"), examples=(examples, "N"),
        monthly_requests=(a.monthly_requests, None), requirements_change=(a.requirements_change, None),
        privacy=(a.privacy if a.privacy != "none" else None, None), budget=(a.budget, None))


def next_steps(rec: str, a: Answers, self_hosted_only: bool) -> list[dict[str, str]]:
    """What to run next; commands carry the user's own answers (placeholders only where unknown)."""
    S = _script_prefix()
    first = []
    if a.failure_mode == "format" and rec in ("fine_tune", "prompt"):
        first = [{"script": None, "why": STRUCTURED_OUTPUTS}]
    if rec == "fine_tune":
        return first + [   # SKILL.md's flow: prepare -> validate -> scan/redact -> cost -> baseline -> train
            {"script": "prepare_data.py", "why": "convert your export, redact personal data as it reads (so no split "
                                                 "and not removed.jsonl holds a raw value), deduplicate and split "
                                                 "train/validation/test without leakage",
             "command": S + "prepare_data.py YOUR_EXPORT.jsonl --redact pseudonym --output-dir data/"},
            {"script": "validate_jsonl.py", "why": "check format, token counts, duplicates and train/test leakage",
             "command": S + "validate_jsonl.py data/train.jsonl data/validation.jsonl data/test.jsonl"},
            {"script": "scan_pii.py", "why": "check all splits in one call before anything leaves the machine "
                                             "(exit 1 on any finding left)",
             "command": S + "scan_pii.py data/train.jsonl data/validation.jsonl data/test.jsonl --fail-on any"},
            {"script": "estimate_costs.py", "why": "training cost, savings against the model you run today, the "
                                                   "prompt-only switch, and break-even",
             "command": _estimate_cmd(a)},
            {"script": "evaluate.py", "why": "baseline first: score the model you would start from on the test "
                                             "split before paying for training (reused later as --predictions-a)",
             "command": S + "evaluate.py --base-model MODEL --test data/test.jsonl --output-dir eval/base"},
            {"script": "train_lora.py", "why": "train a LoRA adapter (locally or on a rented GPU)"
                                               + ("" if self_hosted_only else ", or upload to the chosen provider")},
            {"script": "evaluate.py", "why": "compare base vs fine-tuned on the held-out test set (paired test)"},
            {"script": "export_adapter.py", "why": "package the adapter for serving (vLLM, Ollama, merged weights)"},
        ]
    if rec == "collect_data":
        steps = [
            {"script": "collect_failures.py", "why": "turn logged failures into candidate training examples"},
            {"script": "validate_jsonl.py", "why": "check the examples as they accumulate"},
            {"script": "augment_data.py", "why": "expand carefully from real examples (review every synthetic one)"},
        ]
        if a.monthly_requests is not None:
            steps.append({"script": "estimate_costs.py", "why": "size the pay-off that justifies collecting data",
                          "command": _estimate_cmd(a)})
        steps.append({"script": "should_finetune.py",
                      "why": f"ask again at {THRESHOLDS['min_examples_fine_tune']}+ examples",
                      "command": _ask_again_cmd(a, THRESHOLDS["min_examples_fine_tune"])})
        return steps
    if rec == "rag":
        return [
            {"script": None, "why": "add retrieval over your documents (vector or keyword search) to the prompt"},
            {"script": "evaluate.py", "why": "measure answer quality with retrieval on a test set"},
            {"script": "should_finetune.py", "why": "fine-tune later only for the answers' format/style",
             "command": S + "should_finetune.py " + _flags(failure_mode=("format", None), examples=(a.examples, "N"),
                                                           monthly_requests=(a.monthly_requests, None))},
        ]
    return first + [
        {"script": None, "why": "write clear instructions and put your best examples in the prompt (few-shot)"},
        _measure_prompt_step(a),
        {"script": "collect_failures.py", "why": "keep collecting real failures as future training data"},
        {"script": "estimate_costs.py", "why": "price the prompt-only switch to a smaller model now, and "
                                               "fine-tuning when volume grows",
         "command": _estimate_cmd(a)},
    ]


def _measure_prompt_step(a: Answers) -> dict[str, str]:
    """How to measure a prompt: k-fold few-shot evaluation when the examples are too few for a test set."""
    S = _script_prefix()
    if a.examples is not None and THRESHOLDS["min_examples_few_shot"] <= a.examples < THRESHOLDS["min_examples_fine_tune"]:
        return {"script": "evaluate.py",
                "why": f"{a.examples} examples are too few to hold out a test set: measure zero-shot vs few-shot "
                       f"by k-fold, every example tested once and never shown as its own example (evaluation.md)",
                "command": S + "evaluate.py --base-model MODEL --test examples.jsonl --few-shot-cv 5 --shots 3"}
    return {"script": "evaluate.py", "why": "measure the prompt on a held-out test set (the baseline to beat)",
            "command": S + "evaluate.py --base-model MODEL --test data/test.jsonl --output-dir eval/base"}


# ---------------------------------------------------------------------- the document

def decide(a: Answers, d: P.DataFile, on: _dt.date, show_providers: bool = False) -> dict[str, Any]:
    """The should_finetune document. Provider details only when fine-tuning is recommended or asked for."""
    rec, reasons = recommend(a)
    shown = rec == "fine_tune" or show_providers
    suggested, excluded = suggest_providers(d, a.privacy, on, a.budget) if shown else ([], [])
    warnings: list[str] = []
    stale = P.stale_warning(d, on)
    if stale:
        warnings.append(stale)
    if a.privacy in ("strict", "on_prem"):
        reasons.append(f"privacy {a.privacy}: only "
                       + ("your own hardware" if a.privacy == "on_prem" else "self-hosted options (rented or own GPUs)")
                       + " are suggested")
    if a.privacy == "strict" and shown:
        warnings.append("RunPod community-cloud hosts are third parties: use secure cloud, or your own GPUs, "
                        "for sensitive data")
    if rec == "fine_tune" and a.budget is not None:
        fitting = [s for s in suggested if not s.get("over_budget")]
        if not fitting:
            warnings.append(f"no suggested option fits the ${a.budget:,.2f} budget as far as the data file "
                            f"knows; price your case with estimate_costs.py")
    for s in suggested:
        if s["status"].startswith("retiring") or any(m["status"].startswith("retiring") for m in s["models"]):
            warnings.extend(w for w in s["warnings"] if w not in warnings)
    return {
        "recommendation": rec,
        "reasons": reasons,
        "answers": asdict(a),
        "providers": suggested,
        "excluded_providers": excluded,
        "providers_shown": shown,
        "other_services": [{"id": o.id, "name": o.name, "status": o.status, "note": o.note, "as_of": o.as_of,
                            "source": o.source} for o in d.other_services] if shown else [],
        "warnings": warnings,
        "next_steps": next_steps(rec, a, a.privacy != "none"),
        "thresholds": dict(THRESHOLDS),
        "judged_on": on.isoformat(),
        "data_as_of": d.as_of.isoformat(),
    }


def format_report(doc: dict[str, Any]) -> str:
    from .cli import color

    rec = doc["recommendation"]
    label = {"fine_tune": "FINE-TUNE", "prompt": "PROMPT (no fine-tuning yet)", "rag": "RAG (retrieval) first",
             "collect_data": "COLLECT DATA first"}[rec]
    out = [color(f"Recommendation: {label}", "bold")]
    out += [f"  - {r}" for r in doc["reasons"]]
    if doc.get("providers_shown"):
        out.append("")
        out.append(f"Where (status judged on {doc['judged_on']}, data file as of {doc['data_as_of']}):")
        for s in doc["providers"]:
            models = ", ".join(m["model"] for m in s["models"]) if s["models"] else ", ".join(
                sorted({g["gpu"] for g in s["gpus"]}))
            out.append(f"  - {s['provider']} [{s['status']}]: {s['why']} ({models})")
            if s.get("over_budget"):
                out.append(f"      {s['warnings'][-1]}")
        gone = [f"{s['provider']}/{g}" for s in doc["providers"] for g in s["retired_models"]]
        if gone:
            out.append("  retired, never recommended: " + ", ".join(gone))
        if doc["excluded_providers"]:
            out.append("  not suggested: " + "; ".join(f"{e['provider']} ({e['reason']})"
                                                     for e in doc["excluded_providers"]))
        gone = [o for o in doc.get("other_services", []) if o["status"] == "deprecated"]
        if gone:
            out.append("  no longer offered: " + "; ".join(f"{o['name']} ({o['note'].split('.')[0]})" for o in gone))
    elif doc["recommendation"] != "fine_tune":
        out.append("")
        out.append("(Provider details are shown when fine-tuning is recommended; pass --show-providers to see them.)")
    if doc["warnings"]:
        out.append("")
        out += [color(f"WARNING: {w}", "yellow") for w in doc["warnings"]]
    out.append("")
    out.append("Next steps:")
    for i, s in enumerate(doc["next_steps"], 1):
        name = s["script"] or "(no script)"
        out.append(f"  {i}. {name}: {s['why']}")
        if s.get("command"):
            out.append(f"     {s['command']}")
    return "\n".join(out)
