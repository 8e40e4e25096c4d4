"""Regenerate the tables and worked examples in providers.md / costs.md from the data file.

Between marker comments in the guides:

    <!-- BEGIN GENERATED: <table name> -->  ...  <!-- END GENERATED: <table name> -->
    <!-- BEGIN EXAMPLE: <name> -->  a ```bash block with one command, then a ```text block
                                     holding that command's real output  <!-- END EXAMPLE: <name> -->

Run after editing data/providers.yaml (from the skill root):

    cd scripts && python3 -m finetune_kit.docs_tables --write   # rewrite the generated parts in place
    cd scripts && python3 -m finetune_kit.docs_tables --check   # exit 1 if a guide is out of date

(``python3 scripts/finetune_kit/docs_tables.py --write`` does the same by path.)

Tables judge lifecycle status on the data file's own ``as_of`` date, so the output depends on
the file only; worked examples pin ``--as-of`` for the same reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by path: python3 scripts/finetune_kit/docs_tables.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "finetune_kit"

from . import costs  # noqa: E402
from . import providers as P  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
GUIDES = ("providers.md", "costs.md")
GEN_RE = re.compile(r"(<!-- BEGIN GENERATED: ([a-z0-9-]+) -->\n)(.*?)(<!-- END GENERATED: \2 -->)", re.S)
EX_RE = re.compile(r"(<!-- BEGIN EXAMPLE: ([a-z0-9-]+) -->\n)(.*?)(<!-- END EXAMPLE: \2 -->)", re.S)
CMD_RE = re.compile(r"```bash\n(python3 \{baseDir\}/scripts/[a-z_]+\.py[^\n]*)\n```", re.S)


def _fmt(x, nd=2) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def _md(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _source(s: str) -> str:
    """Short form of a source for tables (the first URL's host + path, or the text)."""
    first = s.split(" ; ")[0]
    return re.sub(r"^https?://(www\.)?", "", first)


# ---------------------------------------------------------------------- tables

def t_offerings(d: P.DataFile) -> str:
    on = d.as_of
    rows = []
    for p in d.providers:
        if p.kind != "managed":
            continue
        for m in p.models:
            st = P.status_of(p, m, on)
            size = ""
            if m.params_range_b:
                size = f" ({m.params_range_b[0]:g}-{m.params_range_b[1]:g}B)"
            rows.append((p.id, f"`{m.id}`{size}", ", ".join(m.methods), _fmt(m.training_price.get("sft")),
                         _fmt(m.training_price.get("dpo")), _serving(m),
                         f"**{st.label}**" if st.status != "available" else st.label,
                         m.training_ends.isoformat() if m.training_ends else "-", m.as_of))
    return _md(["provider", "model / tier", "methods", "SFT $/1M train tok", "DPO $/1M", "serving",
                f"status on {on}", "training closes", "as of"], rows)


def _serving(m: P.Offering) -> str:
    out = m.serving.replace("_", "-")
    if m.hosting_per_hour is not None:
        out += f" (${m.hosting_per_hour:.2f}/h" + (f" x {m.hosting_gpus}" if m.hosting_gpus > 1 else "") + ")"
    elif m.serving_unit:
        out += f" ({m.serving_unit})"
    return out


def t_limits(d: P.DataFile) -> str:
    rows = []
    for p in d.providers:
        for m in p.models:
            lim = m.limits
            if P.status_of(p, m, d.as_of).status == "retired":
                continue
            if not any(v is not None for v in lim.model_dump().values()):
                continue
            rows.append((p.id, f"`{m.id}`", lim.min_examples or "-",
                         f"{lim.max_tokens_per_example:,}" if lim.max_tokens_per_example else "-",
                         f"{lim.max_examples:,}" if lim.max_examples else "-",
                         f"{lim.max_file_gb:g} GB" if lim.max_file_gb else "-", m.as_of))
    return _md(["provider", "model", "min examples", "max tokens/example", "max examples", "max file", "as of"],
               rows)


def t_residency(d: P.DataFile) -> str:
    rows = []
    for p in d.providers:
        regions = ", ".join(p.residency.regions) if p.residency.regions else "unknown"
        per_model = sorted({f"{m.id}: {', '.join(m.regions)}" for m in p.models if m.regions})
        if per_model:
            regions += " (" + "; ".join(per_model) + ")"
        rows.append((p.id, p.name, "yes" if p.self_hosted else "no", regions, p.residency.note))
    return _md(["provider", "name", "self-hosted", "training regions", "note"], rows)


def t_lifecycle(d: P.DataFile) -> str:
    events = []
    for p in d.providers:
        for ev in p.lifecycle:
            events.append((ev.date, p.id, ev.event))
        for m in p.models:
            if m.retires and not any(ev.date == m.retires and ev.applies_to and m.id in ev.applies_to
                                     for ev in p.lifecycle):
                events.append((m.retires, p.id, f"`{m.id}` and its fine-tunes shut down"))
        if p.training_ends and not any(ev.date == p.training_ends for ev in p.lifecycle):
            events.append((p.training_ends, p.id, "no new fine-tuning jobs"))
        ends: dict = {}
        for m in p.models:
            if m.training_ends and not any(ev.date == m.training_ends for ev in p.lifecycle):
                ends.setdefault(m.training_ends, []).append(m.id)
        for date, ids in ends.items():
            events.append((date, p.id, f"training closes (no earlier than) for {', '.join(ids)}"))
    events.sort()
    return _md(["date", "provider", "event"], [(e[0].isoformat(), e[1], e[2]) for e in events])


def t_gpus(d: P.DataFile) -> str:
    ref = d.throughput_reference
    rows = []
    for p, g, spec in P.gpu_offers(d):
        plan = costs.lora_plan(d, g.id, ref.params_b)
        rows.append((p.id, spec.name, g.tier, _fmt(g.price_per_hour), f"{spec.vram_gb:g} GB",
                     f"{spec.peak_bf16_tflops:g}", f"{plan['tokens_per_s']:,.0f}",
                     _fmt(g.price_per_hour * costs.HOURS_PER_MONTH), g.as_of))
    return _md(["provider", "GPU", "tier", "$/GPU-hour", "VRAM", "peak bf16 TFLOPS",
                f"est. LoRA tok/s ({ref.params_b:g}B)", "24/7 $/month", "as of"], rows)


def t_training_prices(d: P.DataFile) -> str:
    rows = []
    for p in d.providers:
        for m in p.models:
            if P.status_of(p, m, d.as_of).status == "retired":
                continue
            if all(v is None for v in m.training_price.values()):
                rows.append((p.id, f"`{m.id}`", "-", "-", m.price_note, m.as_of, _source(m.source)))
                continue
            rows.append((p.id, f"`{m.id}`", _fmt(m.training_price.get("sft")), _fmt(m.training_price.get("dpo")),
                         "", m.as_of, _source(m.source)))
    return _md(["provider", "model / tier", "SFT $/1M train tok", "DPO $/1M", "note", "as of", "source"], rows)


def t_inference_prices(d: P.DataFile) -> str:
    rows = []
    for p in d.providers:
        for m in p.models:
            st = P.status_of(p, m, d.as_of)
            if st.status == "retired" or m.ft_input_price is None:
                continue
            base = (f"{_fmt(m.base_input_price)} / {_fmt(m.base_output_price)}" if m.base_input_price is not None
                    else "-")
            cached = " / ".join(_fmt(x, 3) for x in (m.base_cached_price, m.ft_cached_price)) if (
                m.base_cached_price is not None or m.ft_cached_price is not None) else "-"
            markup = (f"{m.ft_input_price / m.base_input_price:.1f}x / {m.ft_output_price / m.base_output_price:.1f}x"
                      if m.base_input_price and m.base_output_price else "-")
            fixed = m.fixed_monthly_cost()
            rows.append((p.id, f"`{m.id}`", base, f"{_fmt(m.ft_input_price)} / {_fmt(m.ft_output_price)}", cached,
                         markup, _fmt(fixed), st.label, m.as_of))
    return _md(["provider", "model", "base in / out $/1M", "fine-tuned in / out $/1M", "cached in base / FT",
                "fine-tuned markup", "fixed $/month (24/7)", f"status on {d.as_of}", "as of"], rows)


def t_other_services(d: P.DataFile) -> str:
    return _md(["service", "status", "what to know", "as of", "source"],
               [(o.name, f"**{o.status}**" if o.status == "deprecated" else o.status, o.note, o.as_of,
                 _source(o.source)) for o in d.other_services])


def t_current_models(d: P.DataFile) -> str:
    rows = []
    for p in d.providers:
        for m in p.models:
            if m.smaller:
                rows.append((f"`{p.id}/{m.id}`", ", ".join(f"`{x}`" for x in m.smaller)))
    return _md(["--current-model", "prompt-only alternatives always priced"], rows)


def t_gpu_costs(d: P.DataFile) -> str:
    ref = d.throughput_reference
    tokens = 10_000_000
    rows = []
    for size in (ref.params_b, 70):
        for p, g, spec in P.gpu_offers(d):
            plan = costs.lora_plan(d, g.id, size)
            if not plan["fits"]:
                rows.append((f"{size:g}B", p.id, f"{spec.name} ({g.tier})", "does not fit", "-", "-", "-"))
                continue
            hours = costs.training_hours(params_b=size, training_tokens=tokens, epochs=1,
                                         tokens_per_s=plan["tokens_per_s"])["total"]
            rows.append((f"{size:g}B", p.id, f"{spec.name} ({g.tier})", plan["method"],
                         f"{plan['tokens_per_s']:,.0f}", f"{hours:,.2f}", _fmt(hours * g.price_per_hour)))
    return _md(["model", "provider", "GPU", "method", "est. tok/s",
                "hours per 10M training tokens (incl. load + 10 evals)", "$ per 10M training tokens"], rows)


TABLES = {
    "offerings": t_offerings,
    "limits": t_limits,
    "residency": t_residency,
    "lifecycle": t_lifecycle,
    "gpus": t_gpus,
    "training-prices": t_training_prices,
    "inference-prices": t_inference_prices,
    "gpu-costs": t_gpu_costs,
    "other-services": t_other_services,
    "current-models": t_current_models,
}


# ---------------------------------------------------------------------- examples

def run_example(command: str, root: Path = ROOT) -> str:
    """Run a documented command (``{baseDir}`` = the skill root) and return its stdout."""
    import shlex

    argv = shlex.split(command.replace("{baseDir}", str(root)))
    argv[0] = sys.executable
    env = dict(os.environ, NO_COLOR="1", FT_NO_PROGRESS="1")
    env.pop("FT_PROVIDERS_FILE", None)
    env.pop("FT_AUDIT_LOG", None)
    cp = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    if cp.returncode not in (0, 1):
        raise RuntimeError(f"example failed ({cp.returncode}): {command}\n{cp.stderr}")
    return cp.stdout


def render(text: str, d: P.DataFile, *, examples: bool = True, root: Path = ROOT) -> str:
    def table(m):
        name = m.group(2)
        if name not in TABLES:
            raise KeyError(f"unknown generated table {name!r}")
        return m.group(1) + TABLES[name](d) + m.group(4)

    def example(m):
        body = m.group(3)
        cmd = CMD_RE.search(body)
        if not cmd:
            raise ValueError(f"example {m.group(2)!r} has no ```bash command block")
        out = run_example(cmd.group(1), root)
        return f"{m.group(1)}```bash\n{cmd.group(1)}\n```\n\n```text\n{out.rstrip()}\n```\n{m.group(4)}"

    text = GEN_RE.sub(table, text)
    if examples:
        text = EX_RE.sub(example, text)
    return text


def sync(write: bool, root: Path = ROOT, examples: bool = True) -> list[str]:
    """Guides whose generated parts differ from the data file (rewritten when ``write``)."""
    from .jsonl import write_text

    d = P.load(P.DATA_PATH)
    stale = []
    for g in GUIDES:
        path = root / g
        if not path.is_file():
            continue
        old = path.read_text(encoding="utf-8")
        new = render(old, d, examples=examples, root=root)
        if new != old:
            stale.append(g)
            if write:
                write_text(path, new, force=True)
    return stale


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="docs_tables.py", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated parts of the guides")
    mode.add_argument("--check", action="store_true", help="exit 1 if a guide is out of date")
    ap.add_argument("--no-examples", action="store_true", help="tables only (do not rerun the examples)")
    a = ap.parse_args(argv)
    stale = sync(a.write, examples=not a.no_examples)
    if a.write:
        print("updated: " + ", ".join(stale) if stale else "guides already up to date")
        return 0
    if stale:
        print("out of date: " + ", ".join(stale) + " - run: cd scripts && python3 -m finetune_kit.docs_tables --write",
              file=sys.stderr)
        return 1
    print("guides match the data file")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------- numbers quoted in prose

PRICE_RE = re.compile(r"(?<![\w.])\d+\.\d{2}(?![\w.])")   # prices are written with two decimals
DATE_RE = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")
FENCE_RE = re.compile(r"```.*?```", re.S)


def prose(text: str) -> str:
    """The hand-written parts of a guide: generated tables, examples and code blocks removed."""
    text = GEN_RE.sub("", text)
    text = EX_RE.sub("", text)
    return FENCE_RE.sub("", text)


def quote_problems(text: str, d_path: str | os.PathLike | None = None) -> list[str]:
    """Prices (x.yz) and dates in the prose that the data file does not contain."""
    path = P.data_path(d_path)
    numbers = P.raw_numbers(path)
    raw = path.read_text(encoding="utf-8")
    out = []
    body = prose(text)
    for m in PRICE_RE.finditer(body):
        if float(m.group(0)) not in numbers:
            out.append(f"price {m.group(0)} is not in {path.name}")
    for m in DATE_RE.finditer(body):
        if m.group(0) not in raw:
            out.append(f"date {m.group(0)} is not in {path.name}")
    return out
