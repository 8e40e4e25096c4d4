"""Raw exports and agent logs -> clean, deduplicated, leak-free train/validation/test chat JSONL.

Pipeline (``prepare(opts)``; ``scripts/prepare_data.py`` is the CLI), one function per stage:

1. read    ``read_inputs``: every input through the reader registered for its kind in
           ``finetune_kit/readers`` (JSONL lines or the elements of a JSON array, CSV/TSV records,
           OpenClaw session windows). Rows that cannot be read are kept as removed records.
2. convert ``convert_row_to_chat``: each row to an OpenAI chat line through the row format
           registered for it (``readers.ROW_FORMATS``) and the chat.py models, normalising on the
           way (role aliases, object tool arguments -> JSON strings, legacy ``function_call``,
           whitespace-only turns ...) and counting every normalisation.
3. clean   ``clean_row``: ``--system`` adds/replaces the system prompt, provenance metadata,
           ``--tools``; the result is checked with ``chat.check_record`` (errors -> removed as
           unconvertible).
4. dedup   ``dedup_rows``: exact (normalised text) and near-duplicate (``dedup.NearDupIndex``:
           datasketch MinHash LSH on word 3-shingles of the conversation without system prompt,
           verified by exact Jaccard); the first occurrence is kept; removed rows go to
           removed.jsonl with the reason and the row they duplicate.
5. split   ``split_rows``: deterministic by seed into train/validation/test; ``--group-by`` groups
           and (with ``--keep-near-dups``) near-duplicate clusters are units that never straddle
           splits (union-find), optional ``--stratify``; never an empty train split.
6. verify  ``check_split_leakage``: leakage across splits is re-checked (exact, near-duplicate, group).
7. write   ``build_manifest`` / ``write_outputs``: data mix (multi-turn, tool calls, refusal-like
           answers by ``REFUSAL_PATTERNS``, tags) against a target mix, the splits, removed.jsonl and
           manifest.json written atomically; the validator library runs on the outputs.
8. report  ``report``: the --json document, the human summary, the exit code.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import chat, cli, jsonl
from .dedup import NUM_PERM, SHINGLE, NearDupIndex
from .errors import BlockingProblem, UsageError
from .readers import (ROW_FORMATS, ReadContext, Row, Unconvertible, convert_row, detect_row_format, file_kind,
                      normalise_tools, reader_for)
from .readers import bump as _bump
from .readers.tabular import csv_example

FORMATS = ("auto", "chat", "prompt-completion", "alpaca", "sharegpt", "csv", "tsv", "openclaw")
SPLITS = ("train", "validation", "test")
DEFAULT_TARGET_MIX = {"normal": 0.30, "edge": 0.20, "refusal": 0.20, "multi_turn": 0.15, "tool_calls": 0.15}

# Refusal-like answers (documented in data-prep.md). Matched case-insensitively against the first
# 400 characters of each assistant text; one match makes the example "refusal".
REFUSAL_PATTERNS = [
    r"\bI(?:'m| am) (?:sorry|afraid)[,.]? (?:but )?I (?:can(?:'|no)t|cannot|won't|will not|am unable|'m unable|am not able|'m not able)\b",
    r"\bI (?:can(?:'|no)?t|cannot|won't|will not) (?:help|assist|provide|do|comply|create|write|share|generate|give|support)\b(?: you)?(?: with)?",
    r"\bI(?:'m| am) (?:not able|unable) to (?:help|assist|provide|comply|do|create|write|share|generate)\b",
    r"\bI must (?:decline|refuse)\b",
    r"\bI(?:'m| am) not (?:allowed|permitted|able) to\b",
    r"\b(?:as an ai|as a language model)\b",
    r"\b(?:against|violates?) (?:my|our|the) (?:guidelines|polic(?:y|ies)|usage policy|terms)\b",
    r"\bI (?:can(?:'|no)?t|cannot|won't) (?:help|assist) with (?:that|this)\b",
]
_REFUSAL_RE = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.IGNORECASE)

# ------------------------------------------------------------------------------ options / rows


@dataclass
class Options:
    inputs: list[str]
    output_dir: str
    fmt: str = "auto"
    system: str | None = None
    prompt_column: str | None = None
    completion_column: str | None = None
    system_column: str | None = None
    input_column: str | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42
    group_by: str | None = None
    stratify: str | None = None
    near_dup: bool = True
    near_dup_threshold: float = 0.85
    keep_near_dups: bool = False
    tag_field: str | None = None
    target_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TARGET_MIX))
    agent_id: str | None = None
    date_range: str | None = None
    min_samples: int | None = None
    keep_inbound_metadata: bool = False
    tools_file: str | None = None
    force: bool = False
    validate: bool = True
    redact: Any = None  # a pii.RedactSpec: redact every row before dedup/split/write (--redact MODE)



# ------------------------------------------------------------------------------ parsing helpers


def parse_split(spec: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in str(spec).split(",")]
    except ValueError as exc:
        raise UsageError(f"--split {spec!r}: expected three numbers like 0.8,0.1,0.1") from exc
    if len(parts) != 3 or any(p < 0 or math.isnan(p) for p in parts) or sum(parts) <= 0:
        raise UsageError(f"--split {spec!r}: expected three non-negative numbers like 0.8,0.1,0.1")
    if parts[0] <= 0:
        raise UsageError(f"--split {spec!r}: the train share must be > 0")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def parse_target_mix(spec: str | None) -> dict[str, float]:
    if not spec:
        return dict(DEFAULT_TARGET_MIX)
    out: dict[str, float] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError(f"--target-mix: {part!r} is not NAME=SHARE (e.g. refusal=0.2)")
        k, v = part.split("=", 1)
        try:
            f = float(v)
        except ValueError as exc:
            raise UsageError(f"--target-mix: {v!r} is not a number") from exc
        if not 0 <= f <= 1:
            raise UsageError(f"--target-mix: share for {k!r} must be between 0 and 1")
        out[_category(k.strip())] = f
    if not out:
        raise UsageError("--target-mix is empty")
    return out


def _category(name: str) -> str:
    n = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    return {"refusals": "refusal", "multiturn": "multi_turn", "multi": "multi_turn", "tool_call": "tool_calls",
            "tools": "tool_calls", "tool_use": "tool_calls", "edge_case": "edge", "edge_cases": "edge",
            "edgecase": "edge"}.get(n, n)


def lookup(fields: dict[str, Any], metadata: dict[str, Any] | None, name: str) -> Any:
    """A field for --group-by/--stratify/--tag-field: top-level of the source row, then its
    ``metadata``, then the output line's metadata; ``a.b`` walks nested objects."""
    for src in (fields, fields.get("metadata") if isinstance(fields.get("metadata"), dict) else None, metadata):
        if not isinstance(src, dict):
            continue
        cur: Any = src
        ok = True
        for part in name.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                ok = False
                break
        if ok and cur is not None:
            return cur
    return None


def _hashable(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)



def apply_system(ex: chat.ChatExample, system: str | None, counts: dict[str, int]) -> chat.ChatExample:
    if system is None:
        return ex
    msgs = list(ex.messages)
    if msgs and msgs[0].role in ("system", "developer"):
        if msgs[0].text() != system:
            _bump(counts, "system_prompt_replaced")
        msgs[0] = chat.Message(role=msgs[0].role, content=system)
    else:
        msgs.insert(0, chat.Message(role="system", content=system))
        _bump(counts, "system_prompt_added")
    return ex.model_copy(update={"messages": msgs})



# ------------------------------------------------------------------------------ dedup / similarity


_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def exact_key(ex: chat.ChatExample) -> str:
    """sha256 of the normalised conversation (all messages incl. system, tool calls with canonical args)."""
    parts = []
    for m in ex.messages:
        s = f"{m.role}\x1f{_norm(m.text())}"
        for tc in m.tool_calls or []:
            try:
                args = json.dumps(json.loads(tc.function.arguments), sort_keys=True, ensure_ascii=False)
            except ValueError:
                args = _norm(tc.function.arguments)
            s += f"\x1e{tc.function.name}({args})"
        parts.append(s)
    return hashlib.sha256("\x1d".join(parts).encode("utf-8")).hexdigest()


def near_text(ex: chat.ChatExample) -> str:
    """The text near-duplicate detection compares: the conversation without system/developer
    prompts (a shared system prompt would make every pair look alike)."""
    out = []
    for m in ex.messages:
        if m.role in ("system", "developer"):
            continue
        out.append(f"{m.role} {m.text()}")
        for tc in m.tool_calls or []:
            out.append(f"{tc.function.name} {tc.function.arguments}")
    return "\n".join(out)


class _UnionFind:
    def __init__(self, n: int):
        self.p = list(range(n))

    def find(self, a: int) -> int:
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.p[rb] = ra
            else:
                self.p[ra] = rb


# ------------------------------------------------------------------------------ split


def split_targets(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Example counts per split: round half up for validation/test, the rest to train (>= 1)."""
    if n <= 0:
        return [0, 0, 0]
    val = int(math.floor(n * ratios[1] + 0.5))
    test = int(math.floor(n * ratios[2] + 0.5))
    while val + test > n - 1 and (val or test):  # train keeps at least one example
        if test >= val and test:
            test -= 1
        else:
            val -= 1
    return [n - val - test, val, test]


def assign_units(units: list[list[int]], ratios: tuple[float, float, float], rng: random.Random) -> dict[int, int]:
    """unit members -> split index. Units are shuffled (seeded), then placed largest first into the
    split with the largest remaining deficit, so groups stay whole and the counts hit the targets
    exactly when every unit has one example."""
    n = sum(len(u) for u in units)
    targets = split_targets(n, ratios)
    order = list(range(len(units)))
    rng.shuffle(order)
    order.sort(key=lambda i: -len(units[i]))  # stable: ties keep the shuffled order
    fill = [0, 0, 0]
    out: dict[int, int] = {}
    for ui in order:
        size = len(units[ui])
        deficits = [targets[s] - fill[s] for s in range(3)]
        best = max(range(3), key=lambda s: (deficits[s], -s))
        if deficits[best] <= 0:
            best = 0
        elif size > deficits[best] and best != 0 and size > 1:
            # a group bigger than what validation/test still need goes to train unless train is full
            best = 0 if deficits[0] > 0 else best
        fill[best] += size
        for i in units[ui]:
            out[i] = best
    if fill[0] == 0 and n:  # never an empty train split
        ui = order[-1]
        for i in units[ui]:
            out[i] = 0
    return out


# ------------------------------------------------------------------------------ mix report


def is_refusal(ex: chat.ChatExample) -> bool:
    return any(m.role == "assistant" and _REFUSAL_RE.search(m.text()[:400]) for m in ex.messages)


def categories(ex: chat.ChatExample, tags: Iterable[str] = ()) -> set[str]:
    cats = set()
    if sum(1 for m in ex.messages if m.role == "user") >= 2:
        cats.add("multi_turn")
    if any(m.tool_calls for m in ex.messages if m.role == "assistant"):
        cats.add("tool_calls")
    if is_refusal(ex):
        cats.add("refusal")
    cats |= {_category(t) for t in tags}
    return cats


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def mix_report(examples: list[tuple[chat.ChatExample, list[str]]], target: dict[str, float],
               tag_field: str | None, tolerance: float = 0.75) -> dict[str, Any]:
    """Shares of multi-turn / tool-call / refusal-like examples (+ tags) against a target mix.

    Categories overlap (a multi-turn refusal counts for both); ``normal`` = none of them.
    ``short`` = below ``tolerance`` x target; ``add_to_reach`` = examples of that kind to add
    (keeping the others) to reach the target share.
    """
    n = len(examples)
    counts: Counter = Counter()
    tag_counts: Counter = Counter()
    for ex, tags in examples:
        cats = categories(ex, tags)
        tag_counts.update(tags)
        if not cats & (set(target) | {"multi_turn", "tool_calls", "refusal"}) - {"normal"}:
            cats.add("normal")
        counts.update(cats)
    measurable = {"normal", "multi_turn", "tool_calls", "refusal"}
    rows = []
    short = []
    for cat, t in target.items():
        c = counts.get(cat, 0)
        share = c / n if n else 0.0
        if cat not in measurable and not tag_field:
            status, add = "unknown", None
        else:
            add = max(0, math.ceil((t * n - c) / (1 - t))) if t < 1 and share < t else 0
            status = "short" if share < tolerance * t else "over" if t and share > t / tolerance and cat != "normal" \
                else "ok"
            if status == "short":
                short.append(cat)
        rows.append({"category": cat, "target": t, "count": c, "share": round(share, 4), "status": status,
                     "add_to_reach": add})
    return {"examples": n, "categories": rows, "short": short,
            "measured": {k: counts.get(k, 0) for k in ("multi_turn", "tool_calls", "refusal", "normal")},
            "tags": dict(sorted(tag_counts.items())) if tag_field else None, "tag_field": tag_field,
            "refusal_heuristic": "REFUSAL_PATTERNS in finetune_kit/prepare.py (see data-prep.md)"}


# ------------------------------------------------------------------------------ pipeline stages


@dataclass
class Deduped:
    """Result of the dedup stage."""

    kept: list[Row]                      # converted rows that survived, input order
    removed: list[dict[str, Any]]        # removed.jsonl records (duplicates + unreadable/unconvertible), input order
    keys: dict[int, str]                 # row index -> exact key
    index: NearDupIndex | None           # MinHash index of the survivors (None with --no-near-dup)
    clusters: _UnionFind                 # --keep-near-dups clusters (row indexes)
    near_pairs: int = 0                  # near-duplicate matches kept together (--keep-near-dups)


@dataclass
class Split:
    """Result of the split stage."""

    rows: dict[int, list[Row]]           # split index (0 train, 1 validation, 2 test) -> rows
    units: list[list[int]]               # row indexes that had to stay together
    group_missing: int = 0               # rows without a --group-by value
    strata: dict[str, dict[str, int]] | None = None


def check_output_dir(opts: Options) -> Path:
    """Fail fast (before the work) on an output that exists and may not be replaced."""
    out_dir = Path(opts.output_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output {out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not opts.force:
        raise UsageError(f"output directory {out_dir} already exists and is not empty; pass --force to replace it")
    if opts.fmt != "openclaw" and (opts.agent_id or opts.date_range):
        raise UsageError("--agent-id/--date-range select OpenClaw sessions; use them with --from openclaw")
    return out_dir


def read_inputs(opts: Options, ctx: ReadContext) -> tuple[list[Row], list[dict[str, Any]]]:
    """Stage 1 (read): every input through the reader registered for its kind."""
    rows: list[Row] = []
    inputs_info: list[dict[str, Any]] = []
    if opts.fmt == "openclaw" and not opts.inputs:
        from . import openclaw_sessions as oc
        state = oc.default_state_dir()
        if not state.exists():
            raise UsageError(f"no OpenClaw state dir at {state} ($OPENCLAW_STATE_DIR or ~/.openclaw); "
                             "pass the sessions folder as INPUT")
        opts.inputs = [str(state)]
    if not opts.inputs:
        raise UsageError("no input: give one or more files (or --from openclaw [SESSIONS_DIR])")
    for inp in opts.inputs:
        p = Path(inp).expanduser()
        if not p.exists():
            raise UsageError(f"input not found: {p}")
        kind = file_kind(p, opts.fmt)
        if p.is_dir() and kind != "openclaw":
            raise UsageError(f"{p} is a directory; only --from openclaw reads directories")
        info: dict[str, Any] = {"file": p.name, "format": kind}
        before = len(rows)
        rows.extend(reader_for(kind)(p, kind, ctx, len(rows)))
        info["rows"] = len(rows) - before
        if p.is_file():
            info["sha256"] = jsonl.sha256_file(p)
        inputs_info.append(info)
    return rows, inputs_info


def convert_row_to_chat(row: Row, counts: dict[str, int], fmt_counts: Counter) -> None:
    """Stage 2 (convert): one source row -> ``row.example`` (or ``row.error``)."""
    if row.error or row.example is not None:
        if row.example is not None:
            fmt_counts[row.fmt or "openclaw"] += 1
        return
    try:
        if row.fmt in ("csv", "tsv"):
            fmt_counts[row.fmt] += 1
            ex = csv_example(row, counts)
        else:
            obj = row.raw
            if not isinstance(obj, dict):
                raise Unconvertible("not_an_object", f"the row is JSON {type(obj).__name__}, not an object")
            fmt = row.fmt if row.fmt and row.fmt != "auto" else detect_row_format(obj)
            if fmt is None:
                keys = ", ".join(sorted(map(str, obj))[:8]) or "no keys"
                raise Unconvertible("unknown_format", f"not a supported row (keys: {keys}); supported: "
                                    "messages (chat), prompt/completion, instruction/output (alpaca), "
                                    "conversations (sharegpt)")
            if fmt not in ROW_FORMATS:
                raise Unconvertible("unknown_format", f"--from {fmt} cannot read a JSON row")
            row.fmt = fmt
            fmt_counts[fmt] += 1
            ex = convert_row(fmt, obj, counts, str(row.index))
        row.example = ex
    except Unconvertible as exc:
        row.error = {"reason": "unconvertible", "code": exc.code, "detail": str(exc)}


def clean_row(row: Row, opts: Options, counts: dict[str, int], warn_codes: Counter,
              tools: list[dict[str, Any]] | None) -> None:
    """Stage 3 (clean): --system, provenance metadata, --tools, then the single chat parser
    (``chat.check_record``); errors make the row unconvertible, warnings are counted."""
    if row.example is None:
        return
    ex = apply_system(row.example, opts.system, counts)
    md = dict(ex.metadata or {})
    if row.source != "openclaw":
        md.setdefault("source_file", row.source)
        md.setdefault("source_line", row.line)
        md.setdefault("source_format", row.fmt)
    update: dict[str, Any] = {"metadata": md or None}
    if tools and ex.tools is None and any(m.tool_calls for m in ex.messages) and row.source != "openclaw":
        update["tools"] = [chat.Tool(**t) for t in normalise_tools(tools, counts) or []]
        _bump(counts, "tools_attached_from_file")
    ex = ex.model_copy(update=update)
    obj = ex.to_json()
    model, findings = chat.check_record(obj, "chat", row.line)
    errors = [f for f in findings if f.severity == "error"]
    if errors or model is None:
        row.error = {"reason": "unconvertible", "code": errors[0].code if errors else "invalid",
                     "detail": errors[0].message if errors else "the converted line is not valid",
                     "findings": [f.to_dict() for f in findings]}
        row.raw = row.raw if row.raw is not None else obj
        row.example = None
        return
    for f in findings:
        warn_codes[f.code] += 1
    row.example = chat.as_chat(model)
    row.line_obj = obj


def convert_and_clean(rows: list[Row], opts: Options, ctx: ReadContext) -> tuple[Counter, Counter]:
    """Stages 2+3 per row; a row's normalisations count only when the row ends up converted."""
    fmt_counts: Counter = Counter()
    warn_codes: Counter = Counter()
    for r in cli.progress(rows, desc="convert", unit="row"):
        local: dict[str, int] = {}
        convert_row_to_chat(r, local, fmt_counts)
        clean_row(r, opts, local, warn_codes, ctx.tools)
        if r.example is not None:
            for k, v in local.items():
                _bump(ctx.counts, k, v)
    return fmt_counts, warn_codes


def check_enough(rows: list[Row], is_oc: bool, opts: Options, oc_stats: dict[str, Any]) -> list[Row]:
    """The converted rows; BlockingProblem/UsageError when too few sessions/rows are left."""
    n_input = len(rows)
    converted = [r for r in rows if r.example is not None]
    if n_input == 0 and not is_oc:
        raise UsageError(f"no rows in {', '.join(opts.inputs)}: the input is empty")
    if is_oc:
        need = opts.min_samples if opts.min_samples is not None else 1
        have = oc_stats.get("sessions_qualifying", 0)
        if have < need:
            raise BlockingProblem(
                f"only {have} OpenClaw session(s) qualify (need {need}): {oc_stats.get('sessions_read', 0)} read, "
                f"filtered out {oc_stats.get('sessions_filtered_out') or {}}; widen --date-range/--agent-id "
                "or collect more conversations")
    elif opts.min_samples is not None and len(converted) < opts.min_samples:
        raise BlockingProblem(f"only {len(converted)} rows converted (need {opts.min_samples})")
    if not converted:
        first = next((r for r in rows if r.error), None)
        why = f"{first.ref_text()}: {first.error.get('code')}: {first.error.get('detail')}" if first else ""
        raise UsageError(f"no row could be converted ({n_input} read; first problem {why}); supported "
                         f"formats: {', '.join(FORMATS[1:])} (see --from)")
    return converted


def dedup_rows(rows: list[Row], converted: list[Row], opts: Options) -> Deduped:
    """Stage 4 (dedup): exact keys first, then MinHash near duplicates; the first occurrence is
    kept. The removed records (duplicates and every unreadable/unconvertible row) come back in
    input order."""
    removed: list[dict[str, Any]] = []
    exact_first: dict[str, int] = {}
    keys: dict[int, str] = {}
    by_index = {r.index: r for r in rows}
    survivors: list[Row] = []
    for r in converted:
        k = exact_key(r.example)
        keys[r.index] = k
        if k in exact_first:
            first = by_index[exact_first[k]]
            removed.append({"reason": "exact_duplicate", **r.ref(), "duplicate_of": first.ref(),
                            "example": r.line_obj, "_i": r.index})
            continue
        exact_first[k] = r.index
        survivors.append(r)
    dd = Deduped(kept=[], removed=removed, keys=keys, index=None, clusters=_UnionFind(len(rows)))
    if opts.near_dup:
        _near_dedup(survivors, by_index, opts, dd)
    else:
        dd.kept = survivors
    for r in rows:
        if r.error:
            rec = {"reason": r.error.get("reason", "unconvertible"), **r.ref(), "code": r.error.get("code"),
                   "detail": r.error.get("detail")}
            if r.error.get("findings"):
                rec["findings"] = r.error["findings"]
            rec["raw"] = r.raw
            rec["_i"] = r.index
            removed.append(rec)
    removed.sort(key=lambda d: d["_i"])  # input order of the removed rows
    for d in removed:
        del d["_i"]
    return dd


def _near_dedup(survivors: list[Row], by_index: dict[int, Row], opts: Options, dd: Deduped) -> None:
    index = dd.index = NearDupIndex(opts.near_dup_threshold)
    matched = index.extend(((r.index, near_text(r.example)) for r in survivors),
                           drop_duplicates=not opts.keep_near_dups,
                           progress=lambda it: cli.progress(it, desc="near-dup", unit="ex"))
    for r in survivors:
        matches = matched.get(r.index)
        if matches and not opts.keep_near_dups:
            best, best_j = matches[0]
            dd.removed.append({"reason": "near_duplicate", **r.ref(), "duplicate_of": by_index[best].ref(),
                               "similarity": round(best_j, 4), "example": r.line_obj, "_i": r.index})
            continue
        if matches:  # --keep-near-dups: the whole cluster goes to one split
            dd.near_pairs += 1
            for cand, _ in matches:
                dd.clusters.union(r.index, cand)
        dd.kept.append(r)


def split_rows(dd: Deduped, opts: Options) -> Split:
    """Stage 5 (split): groups (--group-by) and kept near-duplicate clusters are units; units are
    assigned by seed, per stratum with --stratify; never an empty train split."""
    kept, uf = dd.kept, dd.clusters
    group_missing = 0
    if opts.group_by:
        first_of: dict[str, int] = {}
        for r in kept:
            v = lookup(r.fields, r.example.metadata, opts.group_by)
            if v is None:
                group_missing += 1
                continue
            key = _hashable(v)
            if key in first_of:
                uf.union(r.index, first_of[key])
            else:
                first_of[key] = r.index
    members: dict[int, list[int]] = defaultdict(list)
    for r in kept:
        members[uf.find(r.index)].append(r.index)
    units = [members[k] for k in sorted(members)]
    rng = random.Random(opts.seed)
    strata_report = None
    if opts.stratify:
        assignment, strata_report = _assign_stratified(kept, units, opts, rng)
    else:
        assignment = assign_units(units, opts.split, rng)
    out: dict[int, list[Row]] = {0: [], 1: [], 2: []}
    for r in kept:
        out[assignment[r.index]].append(r)
    return Split(rows=out, units=units, group_missing=group_missing, strata=strata_report)


def _assign_stratified(kept: list[Row], units: list[list[int]], opts: Options,
                       rng: random.Random) -> tuple[dict[int, int], dict[str, dict[str, int]]]:
    label_of = {r.index: _hashable(lookup(r.fields, r.example.metadata, opts.stratify)) if
                lookup(r.fields, r.example.metadata, opts.stratify) is not None else "(none)" for r in kept}
    by_stratum: dict[str, list[list[int]]] = defaultdict(list)
    for u in units:
        lab = Counter(label_of[i] for i in u).most_common()
        best = sorted(lab, key=lambda x: (-x[1], x[0]))[0][0]
        by_stratum[best].append(u)
    assignment: dict[int, int] = {}
    strata_report: dict[str, dict[str, int]] = {}
    for lab in sorted(by_stratum):
        a = assign_units(by_stratum[lab], opts.split, rng)
        assignment.update(a)
        c = Counter(a.values())
        strata_report[lab] = {SPLITS[s]: c.get(s, 0) for s in range(3)}
    if not any(v == 0 for v in assignment.values()):  # never an empty train split
        for i in units[0]:
            assignment[i] = 0
    return assignment, strata_report


def check_split_leakage(sp: Split, dd: Deduped, opts: Options) -> dict[str, Any]:
    """Stage 6 (verify): exact / near-duplicate / group leakage across splits, re-checked."""
    leakage = _check_leakage(sp.rows, dd.keys, dd.index)
    if not opts.group_by:
        leakage["group"] = None
        return leakage
    seen: dict[str, int] = {}
    bad = set()
    for s in range(3):
        for r in sp.rows[s]:
            v = lookup(r.fields, r.example.metadata, opts.group_by)
            if v is None:
                continue
            k = _hashable(v)
            if k in seen and seen[k] != s:
                bad.add(k)
            seen.setdefault(k, s)
    leakage["group"] = len(bad)
    return leakage


def build_manifest(opts: Options, inputs_info: list[dict[str, Any]], rows: list[Row], n_converted: int,
                   fmt_counts: Counter, counts: dict[str, int], warn_codes: Counter, dd: Deduped, sp: Split,
                   leakage: dict[str, Any], mix: dict[str, Any], oc_stats: dict[str, Any] | None) -> dict[str, Any]:
    removed = dd.removed
    n_exact = sum(1 for d in removed if d["reason"] == "exact_duplicate")
    n_near = sum(1 for d in removed if d["reason"] == "near_duplicate")
    manifest: dict[str, Any] = {
        "tool": "prepare_data", "manifest_version": 1, "seed": opts.seed,
        "parameters": {
            "from": opts.fmt, "split": list(opts.split), "group_by": opts.group_by, "stratify": opts.stratify,
            "near_dup": opts.near_dup, "near_dup_threshold": opts.near_dup_threshold,
            "keep_near_dups": opts.keep_near_dups, "num_perm": NUM_PERM, "shingle_words": SHINGLE,
            "system": opts.system, "tag_field": opts.tag_field, "target_mix": opts.target_mix,
            "prompt_column": opts.prompt_column, "completion_column": opts.completion_column,
            "system_column": opts.system_column, "agent_id": opts.agent_id, "date_range": opts.date_range,
            "min_samples": opts.min_samples, "keep_inbound_metadata": opts.keep_inbound_metadata,
            "tools_file": Path(opts.tools_file).name if opts.tools_file else None},
        "inputs": inputs_info,
        "counts": {"input_rows": len(rows), "converted": n_converted,
                   "unconvertible": sum(1 for r in rows if r.error),
                   "exact_duplicates": n_exact, "near_duplicates": n_near,
                   "kept": len(dd.kept), "train": len(sp.rows[0]), "validation": len(sp.rows[1]),
                   "test": len(sp.rows[2]), "removed": len(removed)},
        "formats": dict(sorted(fmt_counts.items())),
        "normalisation": dict(sorted(counts.items())),
        "check_warnings": dict(sorted(warn_codes.items())),
        "dedup": {"exact_removed": n_exact, "near_removed": n_near,
                  "near_dup_enabled": opts.near_dup, "threshold": opts.near_dup_threshold,
                  "kept_near_dup_pairs": dd.near_pairs if opts.keep_near_dups else 0,
                  "method": "MinHash LSH (datasketch) candidates verified by exact Jaccard of hashed word 3-shingles "
                            "of the conversation without system prompt",
                  "lsh_bands_rows": list(dd.index.params) if dd.index is not None else None},
        "split": {"ratios": list(opts.split), "targets": dict(zip(SPLITS, split_targets(len(dd.kept), opts.split))),
                  "units": len(sp.units), "group_by": opts.group_by,
                  "group_missing": sp.group_missing if opts.group_by else None, "stratify": sp.strata},
        "leakage": leakage,
        "mix": mix,
        "files": {},
    }
    if oc_stats is not None:
        manifest["openclaw"] = oc_stats
    assert manifest["counts"]["input_rows"] == len(dd.kept) + len(removed), "row accounting broke"
    return manifest


def write_outputs(out_dir: Path, manifest: dict[str, Any], sp: Split, removed: list[dict[str, Any]],
                  opts: Options, timings: dict[str, float]) -> dict[str, Any] | None:
    """Stage 7 (write): the splits, removed.jsonl and manifest.json, atomically; the validator
    library runs on the written splits before the directory is moved into place."""
    validation = None
    t1 = time.time()
    with jsonl.atomic_dir(out_dir, force=opts.force, inputs=opts.inputs) as tmp:
        names = {0: "train.jsonl", 1: "validation.jsonl", 2: "test.jsonl"}
        for s, name in names.items():
            jsonl.write_jsonl(tmp / name, (r.line_obj for r in sp.rows[s]), force=True)
        jsonl.write_jsonl(tmp / "removed.jsonl", removed, force=True)
        for name in list(names.values()) + ["removed.jsonl"]:
            n = sum(1 for _ in open(tmp / name, "rb"))
            manifest["files"][name] = {"rows": n, "sha256": jsonl.sha256_file(tmp / name)}
        timings["mix_write"] += time.time() - t1
        t1 = time.time()
        if opts.validate:
            validation = _validate(tmp, [names[s] for s in range(3) if sp.rows[s]], out_dir)
            if validation is not None:
                manifest["validation"] = {"valid": validation.get("valid"),
                                          "errors": sum(len(f.get("errors", [])) for f in validation.get("files", [])),
                                          "warnings": sum(len(f.get("warnings", [])) for f in validation.get("files", []))}
        jsonl.write_json(tmp / "manifest.json", manifest, force=True)
    timings["validate"] = time.time() - t1
    return validation


def run_warnings(sp: Split, opts: Options, mix: dict[str, Any]) -> list[str]:
    warnings = []
    try:
        from .validate import MIN_EXAMPLES
    except ImportError:
        MIN_EXAMPLES = 10
    if len(sp.rows[0]) < MIN_EXAMPLES:
        warnings.append(f"the train split has {len(sp.rows[0])} examples; OpenAI fine-tuning requires at "
                        f"least {MIN_EXAMPLES} (improvements usually start at 50-100)")
    if any(len(sp.rows[s]) == 0 for s in (1, 2)) and any(opts.split[s] > 0 for s in (1, 2)):
        warnings.append("validation and/or test split is empty (too few examples/groups for the requested split)")
    if mix["short"]:
        warnings.append("short of the target mix: " + ", ".join(mix["short"]))
    return warnings


def report(out_dir: Path, opts: Options, manifest: dict[str, Any], dd: Deduped, validation: dict[str, Any] | None,
           warnings: list[str], timings: dict[str, float], t0: float) -> cli.Result:
    """Stage 8 (report): the --json document, the human summary and the exit code."""
    leakage, removed = manifest["leakage"], dd.removed
    blocking = []
    if any(v for k, v in leakage.items() if k in ("exact", "near_dup", "group") and v):
        blocking.append("leakage across splits")
    if validation is not None and not validation.get("valid", True):
        blocking.append("the validator found errors")
    data = {"output_dir": str(out_dir),
            "files": {k: {**v, "path": str(out_dir / k)} for k, v in manifest["files"].items()},
            "counts": manifest["counts"], "formats": manifest["formats"], "normalisation": manifest["normalisation"],
            "check_warnings": manifest["check_warnings"], "dedup": manifest["dedup"], "split": manifest["split"],
            "leakage": leakage, "mix": manifest["mix"], "removed_reasons": dict(Counter(d["reason"] for d in removed)),
            "removed_codes": dict(Counter(d.get("code") for d in removed if d.get("code"))),
            "openclaw": manifest.get("openclaw"), "validation": validation, "warnings": warnings,
            "blocking": blocking,
            "timings": {k: round(v, 3) for k, v in timings.items()}, "seconds": round(time.time() - t0, 2)}
    text = _human(data, manifest, validation)
    outputs = [out_dir / n for n in ("train.jsonl", "validation.jsonl", "test.jsonl", "removed.jsonl", "manifest.json")]
    return cli.Result(data, text, exit_code=1 if blocking else 0,
                      inputs=[i for i in opts.inputs if Path(i).is_file()] + ([opts.tools_file] if opts.tools_file else []),
                      outputs=outputs,
                      summary={k: manifest["counts"][k] for k in ("input_rows", "kept", "train", "validation", "test",
                                                                 "removed")})


def prepare(opts: Options) -> cli.Result:
    """read -> convert -> clean -> dedup -> split -> verify -> write -> report (see the module doc)."""
    t0 = time.time()
    out_dir = check_output_dir(opts)
    tools = load_tools_file(opts.tools_file) if opts.tools_file else None
    ctx = ReadContext(opts=opts, counts={}, stats={}, tools=tools)
    rows, inputs_info = read_inputs(opts, ctx)
    fmt_counts, warn_codes = convert_and_clean(rows, opts, ctx)
    redaction = opts.redact.apply(rows) if opts.redact else None  # PII out before anything is copied
    is_oc = any(i["format"] == "openclaw" for i in inputs_info)
    converted = check_enough(rows, is_oc, opts, ctx.stats)
    timings = {"read_convert": time.time() - t0}

    t1 = time.time()
    dd = dedup_rows(rows, converted, opts)
    timings["dedup"] = time.time() - t1
    t1 = time.time()
    sp = split_rows(dd, opts)
    timings["split"] = time.time() - t1
    t1 = time.time()
    leakage = check_split_leakage(sp, dd, opts)
    timings["leakage_check"] = time.time() - t1

    t1 = time.time()
    mix = mix_report([(r.example, _tags(lookup(r.fields, r.example.metadata, opts.tag_field)) if opts.tag_field else [])
                      for r in dd.kept], opts.target_mix, opts.tag_field)
    manifest = build_manifest(opts, inputs_info, rows, len(converted), fmt_counts, ctx.counts, warn_codes, dd, sp,
                              leakage, mix, ctx.stats if is_oc else None)
    if redaction:
        manifest["redaction"] = redaction
    timings["mix_write"] = time.time() - t1
    validation = write_outputs(out_dir, manifest, sp, dd.removed, opts, timings)
    return report(out_dir, opts, manifest, dd, validation, run_warnings(sp, opts, mix), timings, t0)


def load_tools_file(path: str) -> list[dict[str, Any]]:
    """The tool definitions of a ``--tools FILE``: a JSON list (or ``{"tools": [...]}``) of objects;
    UsageError (exit 2) when unreadable or of another shape."""
    p = jsonl.check_readable(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"--tools {p}: not a JSON file ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        data = data["tools"]
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise UsageError(f"--tools {p}: expected a JSON list of tool definitions")
    return data



def _check_leakage(split_rows: dict[int, list[Row]], keys: dict[int, str],
                   index: NearDupIndex | None) -> dict[str, Any]:
    """Re-check, independently of how the split was made, that no exact or near duplicate crosses
    splits: exact keys by set intersection; near duplicates with ``NearDupIndex.pairs_across``
    (re-bands the MinHash signatures of all kept examples with numpy, not the LSH used for dedup,
    and verifies every cross-split candidate pair with the exact Jaccard)."""
    exact_sets = [set(keys[r.index] for r in split_rows[s]) for s in range(3)]
    exact = len(exact_sets[0] & exact_sets[1]) + len(exact_sets[0] & exact_sets[2]) + len(exact_sets[1] & exact_sets[2])
    out: dict[str, Any] = {"exact": exact, "near_dup": None, "checked": ["exact"]}
    if index is None:
        return out
    pairs, checked = index.pairs_across({r.index: s for s in range(3) for r in split_rows[s]})
    out["near_dup"] = len(pairs)
    out["near_dup_candidates_checked"] = checked
    out["checked"].append("near_dup")
    return out


def _validate(tmp: Path, names: list[str], final_dir: Path) -> dict[str, Any] | None:
    try:
        from .validate import validate_files
    except ImportError as exc:  # the validator library is part of the skill; say so if it is missing
        return {"valid": None, "error": f"validator unavailable ({exc})", "files": []}
    # min_examples=1: small validation/test splits are fine; prepare warns about a small train split itself
    doc = validate_files([str(tmp / n) for n in names], min_examples=1)
    for f in doc.get("files", []):
        f["file"] = str(final_dir / Path(str(f.get("file", ""))).name)
    for lk in doc.get("leakage", []):
        for k in ("file_a", "file_b"):
            if k in lk:
                lk[k] = str(final_dir / Path(str(lk[k])).name)
    return doc


def _human(data: dict[str, Any], manifest: dict[str, Any], validation: dict[str, Any] | None) -> str:
    c = data["counts"]
    lines = [f"prepared {c['kept']:,} of {c['input_rows']:,} rows -> {data['output_dir']} "
             f"(formats: {', '.join(f'{k} {v:,}' for k, v in data['formats'].items()) or '-'})", ""]
    rows = [(name, f"{v['rows']:,}", v["sha256"][:16]) for name, v in data["files"].items()]
    lines.append(cli.table(["file", "rows", "sha256"], rows, "lrl"))
    if data["removed_reasons"]:
        lines.append("")
        lines.append("removed (see removed.jsonl): " + ", ".join(f"{k} {v:,}" for k, v in
                                                               sorted(data["removed_reasons"].items())))
        if data["removed_codes"]:
            lines.append("  unconvertible because: " + ", ".join(f"{k} {v}" for k, v in
                                                                 Counter(data["removed_codes"]).most_common(6)))
    if data["normalisation"]:
        lines.append("normalised: " + ", ".join(f"{k} {v:,}" for k, v in data["normalisation"].items()
                                                  if not k.startswith("role_alias:")))
    lk = data["leakage"]
    lines.append("leakage across splits (re-checked): exact {e}, near-duplicate {n}, group {g}".format(
        e=lk["exact"], n="not checked (--no-near-dup)" if lk["near_dup"] is None else lk["near_dup"],
        g="-" if lk.get("group") is None else lk["group"]))
    oc = data.get("openclaw")
    if oc:
        fb = oc.get("feedback", {})
        lines.append(f"openclaw: {oc.get('sessions_read', 0)} sessions read, {oc.get('sessions_qualifying', 0)} "
                     f"qualify, {oc.get('windows', 0)} conversations; filtered out: "
                     f"{oc.get('sessions_filtered_out') or 'none'}; feedback +{fb.get('positive', 0)} "
                     f"-{fb.get('negative', 0)}")
    mix = data["mix"]
    lines.append("")
    lines.append(f"data mix vs target ({mix['examples']:,} examples; refusal = regex heuristic):")
    lines.append(cli.table(["category", "target", "have", "share", "status", "add to reach"],
                           [(r["category"], f"{r['target']:.0%}", r["count"], f"{r['share']:.1%}", r["status"],
                             "-" if r["add_to_reach"] is None else r["add_to_reach"]) for r in mix["categories"]],
                           "lrrrlr"))
    if data.get("warnings"):
        lines.append("")
        lines.extend(f"warning: {w}" for w in data["warnings"])
    if validation is not None:
        lines.append("")
        if validation.get("error"):
            lines.append(f"validator: {validation['error']}")
        else:
            lines.append("validator (validate_jsonl.py library):")
            for f in validation.get("files", []):
                st = f.get("stats") or {}
                tok = f", {st['total_tokens']:,} tokens ({st['trainable_tokens']:,} trainable)" \
                    if st.get("total_tokens") is not None else ""
                lines.append(f"  {Path(f['file']).name}: {'VALID' if f['valid'] else 'INVALID'} - "
                             f"{f['examples']:,} examples, {f.get('error_count', len(f['errors']))} errors, "
                             f"{f.get('warning_count', len(f['warnings']))} warnings{tok}")
            if not validation.get("valid", True):
                from .validate import format_report
                bad = {"valid": False, "files": [f for f in validation["files"] if not f["valid"]],
                       "leakage": validation.get("leakage", [])}
                lines.append(format_report(bad, max_errors=5))
            else:
                lines.append(f"  details: python3 {Path(__file__).resolve().parents[1] / 'validate_jsonl.py'} <file>")
    if data["blocking"]:
        lines.append("")
        lines.append(cli.color("BLOCKING: " + "; ".join(data["blocking"]), "red"))
    return "\n".join(lines)
