"""Raw exports and agent logs -> clean, deduplicated, leak-free train/validation/test chat JSONL.

Pipeline (``prepare(opts)``; ``scripts/prepare_data.py`` is the CLI), one function per stage:

1. read    ``read_inputs``: every input through the reader registered for its kind in
           ``finetune_kit/readers`` (JSONL lines or the elements of a JSON array, CSV/TSV records,
           OpenClaw session windows). Rows that cannot be read are kept as removed records.
2. convert ``convert_row_to_chat``: each row to an OpenAI chat line through the row format
           registered for it (``readers.ROW_FORMATS``) and the chat.py models, normalising on the
           way (role aliases, object tool arguments -> JSON strings, legacy ``function_call``,
           whitespace-only turns ...) and counting every normalisation.
3. clean   ``_refuse_coercion`` (rows that need a coercion the validator rejects are removed
           unless ``--coerce``), ``clean_row``: ``--system`` adds/replaces the system prompt,
           provenance metadata, ``--tools``; the result is checked with ``chat.check_record``
           (errors -> removed as unconvertible). Steps 2-3 run per row in
           ``convert_and_clean_row``. Preference rows: ``use_preference_lines`` decides over all
           rows whether the outputs are preference lines (every row is one) or chat examples of the
           preferred answers (mixed with chat rows, with a warning).
4. dedup   ``dedup_rows``: exact (normalised text) and near-duplicate (``dedup.NearDupIndex``:
           datasketch MinHash LSH on word 3-shingles of the conversation without system prompt,
           verified by exact Jaccard); the first occurrence is kept; removed rows go to
           removed.jsonl with the reason and the row they duplicate.
5. split   ``split_rows``: deterministic by seed into train/validation/test; ``--group-by`` groups
           and (with ``--keep-near-dups``) near-duplicate clusters are units that never straddle
           splits (union-find), optional ``--stratify``; never an empty train split.
6. verify  ``check_split_leakage``: leakage across splits is re-checked (exact, near-duplicate, group).
7. write   ``build_manifest`` / ``write_outputs``: data mix (multi-turn, tool calls, refusal-like
           answers by ``REFUSAL_PATTERNS``, tags) against ``--target-mix`` or ``derive_target``, the
           splits, removed.jsonl and manifest.json written atomically; the validator library runs
           on the outputs with the validator's own flags.
8. report  ``report``: the --json document, the human summary, the exit code.

Two engines run stages 1-7 with byte-identical results (``Options.engine``): ``run_on_disk``
(default) streams each row through read -> convert -> clean into ``spill.SpillEngine``, which
spills it to a scratch SQLite file and keeps only compact keys in memory (flat memory at millions
of rows; MinHash in worker processes); ``run_in_memory`` holds every row and is the reference the
tests and ``bench/prepare.py`` compare against. Decisions over all rows (preference lines, the
derived mix target) are taken by the disk engine after streaming from what it recorded per row
(see ``run_on_disk``). ``--near-dup-removed`` replaces the own near-dup
search by a removed list from ``near_dedup_cluster.py`` (datatrove, past one machine).
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import cli, jsonl
from .bootstrap import lazy_module
from .dedup import NUM_PERM, SHINGLE, NearDupIndex, lsh_params
from .errors import BlockingProblem, UsageError
from .outputs import check_dir_output, load_json_input, owned_dir
from .readers import (ROW_FORMATS, ReadContext, Row, Unconvertible, convert_row, detect_row_format, file_kind,
                      normalise_tools, reader_for)
from .readers import bump as _bump
from .readers.tabular import csv_example
from .spill import assign_sizes, split_targets

chat = lazy_module(__package__ + ".chat")

FORMATS = ("auto", "chat", "prompt-completion", "alpaca", "sharegpt", "preference", "pairwise-preference", "csv",
           "tsv", "openclaw")
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
    target_mix: dict[str, float] | None = None   # None: derived from the data (derive_target)
    agent_id: str | None = None
    date_range: str | None = None
    min_samples: int | None = None
    keep_inbound_metadata: bool = False
    tools_file: str | None = None
    force: bool = False
    validate: bool = True
    tokenizer: str | None = None          # token counting (windowing, validator): as validate_jsonl.py
    model: str | None = None
    max_tokens: int | None = None         # per-example budget (OpenClaw windows); 0 = no limit
    keep_unanswered_tool_calls: bool = False
    include_deleted: bool = False
    coerce: bool = False                  # accept rows that need a COERCIONS fix (else removed with the code)
    min_examples: int = 10                # the validator's --min-examples (a training-file rule)
    # "disk": the bounded-memory engine (spill.py, the default); "memory": everything in RAM (the
    # reference implementation the tests and bench/prepare.py compare the disk engine against)
    engine: str = "disk"
    near_dup_removed: str | None = None  # removed list from near_dedup_cluster.py (replaces the own near-dup search)
    workers: int | None = None  # MinHash worker processes of the disk engine (None: cores - 1)
    redact: Any = None  # a pii.RedactSpec: redact every row before dedup/split/write (--redact MODE)



# ------------------------------------------------------------------------------ parsing helpers


def parse_split(spec: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in str(spec).split(",")]
    except ValueError as exc:
        raise UsageError(f"--split {spec!r}: expected three numbers like 0.8,0.1,0.1") from exc
    if len(parts) != 3 or any(p < 0 or not math.isfinite(p) for p in parts) or sum(parts) <= 0:
        raise UsageError(f"--split {spec!r}: expected three finite non-negative numbers like 0.8,0.1,0.1")
    if parts[0] <= 0:
        raise UsageError(f"--split {spec!r}: the train share must be > 0")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def parse_target_mix(spec: str | None) -> dict[str, float] | None:
    """``--target-mix``; None (not given) = derive the target from the data (see :func:`derive_target`)."""
    if not spec:
        return None
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


def assign_units(units: list[list[int]], ratios: tuple[float, float, float], rng: random.Random) -> dict[int, int]:
    """unit members -> split index (``spill.assign_sizes`` on the units' sizes: seeded shuffle,
    largest first into the split with the largest remaining deficit; groups stay whole)."""
    a = assign_sizes([len(u) for u in units], ratios, rng)
    return {i: s for u, s in zip(units, a) for i in u}


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


AGENT_SHARE = 0.05  # data with at least this share of multi-turn or tool-call examples is agent data
MEASURED = ("multi_turn", "tool_calls", "refusal")


def mix_key(ex: chat.ChatExample, tags: list[str]) -> tuple[frozenset, tuple]:
    """What the data mix needs of one example, whatever the target: its measured categories
    (multi-turn, tool calls, refusal-like; never ``normal``) and its tags. The disk engine counts
    these keys; the target (:func:`derive_target`) and ``normal`` are settled from the counts."""
    return frozenset(categories(ex)), tuple(tags)


def derive_target(examples: list[tuple[chat.ChatExample, list[str]]]) -> tuple[dict[str, float] | None, str]:
    """The target mix when ``--target-mix`` is not given: the agent default (DEFAULT_TARGET_MIX) for
    data that has multi-turn or tool-call examples (>= AGENT_SHARE of them); none - the mix is only
    reported - for single-turn data such as a classifier's, whose right mix the data cannot tell."""
    return target_from_counts(len(examples), Counter(mix_key(ex, tags) for ex, tags in examples))


def target_from_counts(n: int, by_key: dict[tuple[frozenset, tuple], int]) -> tuple[dict[str, float] | None, str]:
    """:func:`derive_target` from the counts of :func:`mix_key` keys over ``n`` examples."""
    n = n or 1
    agentic = sum(k for (cats, _), k in by_key.items() if {"multi_turn", "tool_calls"} & cats)
    if agentic / n >= AGENT_SHARE:
        return dict(DEFAULT_TARGET_MIX), (f"default agent mix ({agentic / n:.0%} of the examples are multi-turn or "
                                          "call tools); pass --target-mix to set your own")
    return None, "none: single-turn data, the mix is only reported; pass --target-mix to compare against a target"


def mix_report(examples: list[tuple[chat.ChatExample, list[str]]], target: dict[str, float] | None,
               tag_field: str | None, tolerance: float = 0.75) -> dict[str, Any]:
    """Shares of multi-turn / tool-call / refusal-like examples (+ tags) against a target mix.

    Categories overlap (a multi-turn refusal counts for both); ``normal`` = none of them.
    ``short`` = below ``tolerance`` x target; ``add_to_reach`` = examples of that kind to add
    (keeping the others) to reach the target share.
    """
    return mix_summary(len(examples), Counter(mix_key(ex, tags) for ex, tags in examples), target, tag_field,
                       tolerance)


def mix_summary(n: int, by_key: dict[tuple[frozenset, tuple], int], target: dict[str, float] | None,
                tag_field: str | None, tolerance: float = 0.75) -> dict[str, Any]:
    """:func:`mix_report` from counts: ``by_key`` maps :func:`mix_key` keys to how many of the ``n``
    examples have them (the disk engine counts these without keeping the examples); the target
    (when None) and ``normal`` are derived here, so both engines report the same mix."""
    source = "--target-mix"
    if target is None:
        target, source = target_from_counts(n, by_key)
    counts: Counter = Counter()
    tag_counts: Counter = Counter()
    for (measured, tags), k in by_key.items():
        cats = set(measured) | {_category(t) for t in tags}
        if not cats & (set(target or ()) | set(MEASURED)) - {"normal"}:
            cats.add("normal")
        for c in cats:
            counts[c] += k
        for t in tags:
            tag_counts[t] += k
    measurable = {"normal", "multi_turn", "tool_calls", "refusal"}
    rows = []
    short = []
    if target is None:  # report only: the measured shares, no target, nothing "short"
        rows = [{"category": cat, "target": None, "count": counts.get(cat, 0),
                 "share": round(counts.get(cat, 0) / n, 4) if n else 0.0, "status": "measured", "add_to_reach": None}
                for cat in ("normal", "multi_turn", "tool_calls", "refusal")]
    for cat, t in (target or {}).items():
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
    return {"examples": n, "categories": rows, "short": short, "target": target, "target_source": source,
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


OUTPUT_FILES = ("train.jsonl", "validation.jsonl", "test.jsonl", "removed.jsonl", "manifest.json")


def _input_paths(opts: Options) -> list[str]:
    """What the output directory must stay clear of: input files, and OpenClaw transcript files/folders."""
    from . import openclaw_sessions as oc

    paths: list[str] = []
    for inp in opts.inputs or ([str(oc.default_state_dir())] if opts.fmt == "openclaw" else []):
        p = Path(inp).expanduser()
        if p.is_dir():
            paths += oc.source_paths(p)
        else:
            paths.append(str(p))
    return paths


@dataclass
class Outcome:
    """What dedup -> split -> verify hand to the manifest, the writer and the report, from either
    engine (``run_in_memory`` / ``run_on_disk``)."""

    removed_reasons: Counter             # removed rows per reason (order differs by engine; report sorts)
    removed_codes: Counter               # unconvertible rows per code (likewise)
    near_pairs: int                      # near-duplicate matches kept together (--keep-near-dups)
    units: int                           # split units (groups / clusters / single rows)
    group_missing: int | None            # kept rows without a --group-by value
    strata: dict[str, dict[str, int]] | None
    sizes: list[int]                     # rows in train, validation, test
    leakage: dict[str, Any]
    mix: dict[str, Any]
    write: Callable[[Path], None]        # writes train/validation/test.jsonl + removed.jsonl into a folder
    input_rows: int = 0
    converted: int = 0
    close: Callable[[], None] = lambda: None  # frees the engine's scratch space (idempotent)
    removed_list: dict[str, Any] | None = None  # --near-dup-removed: file, entries, rows it removed

    @property
    def kept(self) -> int:
        return sum(self.sizes)

    @property
    def removed(self) -> int:
        return sum(self.removed_reasons.values())


@dataclass
class ReadSummary:
    """What the read/convert/clean stages report (either engine)."""

    inputs_info: list[dict[str, Any]]
    fmt_counts: Counter
    warn_codes: Counter
    is_oc: bool
    said: list[str] = field(default_factory=list)   # the stages' warnings (ReadContext.warnings): check_enough
    #                                                 and the report repeat them
    openclaw: dict[str, Any] | None = None          # the manifest's openclaw section (sessions, stripped,
    #                                                 dropped, windowing) when an input is OpenClaw
    redaction: dict[str, Any] | None = None         # --redact: the manifest's redaction record


def check_output_dir(opts: Options) -> Path:
    """Fail fast (before the work) on an output that may not be written (outputs.py: never around an
    input; --force replaces only the files listed in our manifest.json)."""
    out_dir = Path(opts.output_dir).expanduser()
    check_dir_output(out_dir, force=opts.force, inputs=_input_paths(opts), manifest="manifest.json",
                     names=OUTPUT_FILES, tool="prepare_data.py")
    if opts.fmt != "openclaw" and (opts.agent_id or opts.date_range):
        raise UsageError("--agent-id/--date-range select OpenClaw sessions; use them with --from openclaw")
    return out_dir


def read_inputs(opts: Options, ctx: ReadContext) -> tuple[list[Row], list[dict[str, Any]]]:
    """Stage 1 (read): every input through the reader registered for its kind."""
    inputs_info: list[dict[str, Any]] = []
    rows = list(iter_inputs(opts, ctx, inputs_info))
    return rows, inputs_info


def iter_inputs(opts: Options, ctx: ReadContext, inputs_info: list[dict[str, Any]]) -> Iterator[Row]:
    """The rows of every input, lazily (the disk engine never holds them all); ``inputs_info``
    gets one entry per input once it has been read. Bad inputs fail before any row is read."""
    if opts.fmt == "openclaw" and not opts.inputs:
        from . import openclaw_sessions as oc
        state = oc.default_state_dir()
        if not state.exists():
            raise UsageError(f"no OpenClaw state dir at {state} ($OPENCLAW_STATE_DIR or ~/.openclaw); "
                             "pass the sessions folder as INPUT")
        opts.inputs = [str(state)]
    if not opts.inputs:
        raise UsageError("no input: give one or more files (or --from openclaw [SESSIONS_DIR])")
    plan = []
    for inp in opts.inputs:
        p = Path(inp).expanduser()
        if not p.exists():
            raise UsageError(f"input not found: {p}")
        kind = file_kind(p, opts.fmt)
        if p.is_dir() and kind != "openclaw":
            raise UsageError(f"{p} is a directory; only --from openclaw reads directories")
        plan.append((p, kind))
    n = 0
    for p, kind in plan:
        info: dict[str, Any] = {"file": p.name, "format": kind}
        before = n
        for row in reader_for(kind)(p, kind, ctx, n):
            n += 1
            yield row
        info["rows"] = n - before
        if p.is_file():
            info["sha256"] = jsonl.sha256_file(p)
        inputs_info.append(info)


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
                                    "instruction/context/response (dolly), conversations (sharegpt), "
                                    "input/preferred_output or chosen/rejected (preference)")
            if fmt not in ROW_FORMATS:
                raise Unconvertible("unknown_format", f"--from {fmt} cannot read a JSON row")
            row.fmt = fmt
            fmt_counts[fmt] += 1
            ex = convert_row(fmt, obj, counts, str(row.index))
            if isinstance(ex, tuple):  # a preference row: (SFT view, OpenAI preference line)
                ex, row.pref = ex
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


# Normalisations that turn what the validator calls an error into data (counter -> the validator's
# code): without --coerce such a row goes to removed.jsonl with that code instead of being guessed at.
COERCIONS = {
    "content_number_to_string": "content_wrong_type",          # "content": 42 -> "42"
    "conversation_key_as_conversations": "messages_missing",   # {"conversation": [...]}
    "tool_arguments_missing_to_empty_object": "arguments_missing",
}


def _refuse_coercion(row: Row, counts: dict[str, int], opts: Options) -> None:
    if opts.coerce or row.example is None:
        return
    used = [k for k in COERCIONS if counts.get(k)]
    if used:
        row.error = {"reason": "unconvertible", "code": COERCIONS[used[0]],
                     "detail": f"the row needs a coercion the validator would reject ({', '.join(used)}); "
                               "fix the source, or pass --coerce to convert it anyway"}
        row.example = None


def convert_and_clean(rows: list[Row], opts: Options, ctx: ReadContext) -> tuple[Counter, Counter]:
    """Stages 2+3 per row; a row's normalisations count only when the row ends up converted."""
    fmt_counts: Counter = Counter()
    warn_codes: Counter = Counter()
    for r in cli.progress(rows, desc="convert", unit="row"):
        convert_and_clean_row(r, opts, ctx, fmt_counts, warn_codes)
    preference_lines(rows, opts, ctx)
    return fmt_counts, warn_codes


def convert_and_clean_row(r: Row, opts: Options, ctx: ReadContext, fmt_counts: Counter, warn_codes: Counter) -> None:
    """Stages 2+3 on one row; both engines run every row through this (the disk engine as it
    streams), so every per-row step gives the same result in both."""
    # Per-row hooks belong in this function so both engines get them (rewrite r.pref too). --redact is not
    # per-row (a value found in one row is redacted in all): it runs over all rows on the in-memory engine.
    local: dict[str, int] = {}
    convert_row_to_chat(r, local, fmt_counts)
    _refuse_coercion(r, local, opts)
    clean_row(r, opts, local, warn_codes, ctx.tools)
    if r.example is not None:
        for k, v in local.items():
            _bump(ctx.counts, k, v)


def use_preference_lines(n_converted: int, n_preference: int, ctx: ReadContext) -> bool:
    """The decision over all rows: preference rows stay preference data (OpenAI preference lines,
    for DPO) when every converted row is one; mixed with other rows, only their preferred answers
    are kept as chat examples (counted, and said in the warnings)."""
    if not n_preference:
        return False
    if n_preference < n_converted:
        _bump(ctx.counts, "preference_to_sft_preferred_answer", n_preference)
        ctx.warnings.append(f"{n_preference} preference row(s) are mixed with other rows: only their preferred "
                            "answers were kept (as chat examples); prepare them in a separate run to keep the pairs "
                            "for DPO")
        return False
    return True


def preference_line(r: Row, opts: Options) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """One converted preference row's output line when preference lines are written: the OpenAI
    preference line with ``--system`` and the chat line's metadata, checked by the single parser;
    ``(line, None)``, or ``(None, error)`` when the line is invalid (the row is then unconvertible)."""
    line = json.loads(json.dumps(r.pref))
    if opts.system is not None:
        msgs = line["input"]["messages"]
        if msgs and msgs[0].get("role") in ("system", "developer"):
            msgs[0] = {"role": msgs[0]["role"], "content": opts.system}
        else:
            msgs.insert(0, {"role": "system", "content": opts.system})
    md = {**(line.get("metadata") or {}), **((r.line_obj or {}).get("metadata") or {})}
    if md:
        line["metadata"] = md
    model, findings = chat.check_record(line, "preference", r.line)
    errors = [f for f in findings if f.severity == "error"]
    if errors or model is None:
        return None, {"reason": "unconvertible", "code": errors[0].code if errors else "invalid",
                      "detail": errors[0].message if errors else "the preference line is not valid",
                      "findings": [f.to_dict() for f in findings]}
    return line, None


def preference_lines(rows: list[Row], opts: Options, ctx: ReadContext) -> None:
    """In memory: every converted preference row's line becomes its preference line when
    :func:`use_preference_lines` says so (the disk engine decides the same after streaming and
    swaps the lines as it writes, ``spill.SpillEngine.use_alt_lines``)."""
    converted = [r for r in rows if r.example is not None]
    prefs = [r for r in converted if r.pref is not None]
    if not use_preference_lines(len(converted), len(prefs), ctx):
        return
    for r in prefs:
        line, error = preference_line(r, opts)
        if error is not None:
            r.error, r.example = error, None
            continue
        r.line_obj = line
    _bump(ctx.counts, "preference_lines_kept", sum(1 for r in prefs if r.example is not None))


def check_enough(rows: list[Row], is_oc: bool, opts: Options, oc_stats: dict[str, Any],
                 said: list[str] = ()) -> list[Row]:
    """The converted rows; BlockingProblem/UsageError when too few sessions/rows are left."""
    converted = [r for r in rows if r.example is not None]
    check_counts(len(rows), len(converted), next((r for r in rows if r.error), None),
                 dict(Counter(r.error.get("code") for r in rows if r.error)), is_oc, opts, oc_stats, said)
    return converted


def check_counts(n_input: int, n_converted: int, first_error: Row | None, unusable: dict[Any, int], is_oc: bool,
                 opts: Options, oc_stats: dict[str, Any], said: list[str] = ()) -> None:
    """BlockingProblem/UsageError when too few sessions/rows are left (from counts: the disk
    engine checks after streaming); ``unusable``: rows per error code; ``said``: the run's
    warnings so far (they often say why nothing qualified)."""
    if n_input == 0 and not is_oc:
        raise UsageError(f"no rows in {', '.join(opts.inputs)}: the input is empty")
    if is_oc:
        need = opts.min_samples if opts.min_samples is not None else 1
        have = oc_stats.get("sessions_qualifying", 0)
        if have < need:
            raise BlockingProblem(
                f"only {have} OpenClaw session(s) qualify (need {need}): {oc_stats.get('sessions_read', 0)} read, "
                f"filtered out {oc_stats.get('sessions_filtered_out') or {}}, unusable {unusable or {}}; "
                + (" ".join(said) if said else "widen --date-range/--agent-id or collect more conversations"))
    elif opts.min_samples is not None and n_converted < opts.min_samples:
        raise BlockingProblem(f"only {n_converted} rows converted (need {opts.min_samples})")
    if not n_converted:
        first = first_error
        why = f"{first.ref_text()}: {first.error.get('code')}: {first.error.get('detail')}" if first else ""
        raise UsageError(f"no row could be converted ({n_input} read; first problem {why}); supported "
                         f"formats: {', '.join(FORMATS[1:])} (see --from)")


def removed_record(r: Row) -> dict[str, Any]:
    """The removed.jsonl record of a row that could not be read or converted."""
    rec = {"reason": r.error.get("reason", "unconvertible"), **r.ref(), "code": r.error.get("code"),
           "detail": r.error.get("detail")}
    if r.error.get("findings"):
        rec["findings"] = r.error["findings"]
    rec["raw"] = r.raw
    return rec


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
            removed.append({**removed_record(r), "_i": r.index})
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


def build_manifest(opts: Options, rd: ReadSummary, counts: dict[str, int], out: Outcome) -> dict[str, Any]:
    n_exact = out.removed_reasons.get("exact_duplicate", 0)
    n_near = out.removed_reasons.get("near_duplicate", 0)
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
            "tokenizer": opts.tokenizer, "model": opts.model, "max_tokens": opts.max_tokens,
            "keep_unanswered_tool_calls": opts.keep_unanswered_tool_calls, "include_deleted": opts.include_deleted,
            "coerce": opts.coerce, "min_examples": opts.min_examples,
            "tools_file": Path(opts.tools_file).name if opts.tools_file else None},
        "inputs": rd.inputs_info,
        "counts": {"input_rows": out.input_rows, "converted": out.converted,
                   "unconvertible": out.input_rows - out.converted,
                   "exact_duplicates": n_exact, "near_duplicates": n_near,
                   "kept": out.kept, "train": out.sizes[0], "validation": out.sizes[1],
                   "test": out.sizes[2], "removed": out.removed},
        "formats": dict(sorted(rd.fmt_counts.items())),
        "normalisation": dict(sorted(counts.items())),
        "check_warnings": dict(sorted(rd.warn_codes.items())),
        "dedup": {"exact_removed": n_exact, "near_removed": n_near,
                  "near_dup_enabled": opts.near_dup, "threshold": opts.near_dup_threshold,
                  "kept_near_dup_pairs": out.near_pairs if opts.keep_near_dups else 0,
                  "method": "MinHash LSH (datasketch) candidates verified by exact Jaccard of hashed word 3-shingles "
                            "of the conversation without system prompt",
                  "lsh_bands_rows": list(lsh_params(opts.near_dup_threshold)) if opts.near_dup else None,
                  "removed_list": out.removed_list},
        "split": {"ratios": list(opts.split), "targets": dict(zip(SPLITS, split_targets(out.kept, opts.split))),
                  "units": out.units, "group_by": opts.group_by,
                  "group_missing": out.group_missing if opts.group_by else None, "stratify": out.strata},
        "leakage": out.leakage,
        "mix": out.mix,
        "files": {},
    }
    if rd.openclaw is not None:
        manifest["openclaw"] = rd.openclaw
    assert manifest["counts"]["input_rows"] == out.kept + out.removed, "row accounting broke"
    return manifest


def write_outputs(out_dir: Path, manifest: dict[str, Any], out: Outcome, opts: Options,
                  timings: dict[str, float]) -> dict[str, Any] | None:
    """Stage 7 (write): the splits, removed.jsonl and manifest.json, atomically; the validator
    library runs on the written splits before the directory is moved into place."""
    validation = None
    t1 = time.time()
    with owned_dir(out_dir, force=opts.force, inputs=_input_paths(opts), manifest="manifest.json",
                   tool="prepare_data.py") as tmp:
        names = {0: "train.jsonl", 1: "validation.jsonl", 2: "test.jsonl"}
        out.write(tmp)
        for name in list(names.values()) + ["removed.jsonl"]:
            n = sum(1 for _ in open(tmp / name, "rb"))
            manifest["files"][name] = {"rows": n, "sha256": jsonl.sha256_file(tmp / name)}
        timings["mix_write"] += time.time() - t1
        t1 = time.time()
        if opts.validate:
            validation = _validate(tmp, [names[s] for s in range(3) if out.sizes[s]], out_dir, opts)
            if validation is not None:
                manifest["validation"] = {"valid": validation.get("valid"),
                                          "errors": sum(len(f.get("errors", [])) for f in validation.get("files", [])),
                                          "warnings": sum(len(f.get("warnings", [])) for f in validation.get("files", []))}
        jsonl.write_json(tmp / "manifest.json", manifest, force=True)
    timings["validate"] = time.time() - t1
    return validation


def run_warnings(out: Outcome, opts: Options, mix: dict[str, Any], said: list[str] = ()) -> list[str]:
    warnings = list(said)
    try:
        from .validate import MIN_EXAMPLES
    except ImportError:
        MIN_EXAMPLES = 10
    if out.sizes[0] < MIN_EXAMPLES:
        warnings.append(f"the train split has {out.sizes[0]} examples; OpenAI fine-tuning requires at "
                        f"least {MIN_EXAMPLES} (improvements usually start at 50-100)")
    if any(out.sizes[s] == 0 for s in (1, 2)) and any(opts.split[s] > 0 for s in (1, 2)):
        warnings.append("validation and/or test split is empty (too few examples/groups for the requested split)")
    small = [(SPLITS[s], out.sizes[s]) for s in (1, 2) if 0 < out.sizes[s] < MIN_EXAMPLES]
    if small:
        n = out.kept
        need = math.ceil(MIN_EXAMPLES / min(x for x in opts.split[1:] if x > 0))
        warnings.append(f"{' and '.join(f'{k} has {v}' for k, v in small)} example(s): one example moves a score by "
                        f"{100 / min(v for _, v in small):.0f} points. With {n} examples use one held-out split "
                        "(e.g. --split 0.8,0.2,0) or evaluate by k-fold cross-validation (data-prep.md, small data "
                        f"sets); {need}+ examples give {MIN_EXAMPLES} per split at this --split")
    if mix["short"]:
        warnings.append("short of the target mix: " + ", ".join(mix["short"]))
    rl = out.removed_list
    if rl and rl["entries"] > rl["removed_as_near_duplicate"]:
        warnings.append(f"{rl['entries'] - rl['removed_as_near_duplicate']:,} of {rl['entries']:,} rows in "
                        f"{rl['file']} were not removed as near duplicates (not in the inputs, not converted, "
                        "or already exact duplicates)")
    return warnings


def report(out_dir: Path, opts: Options, manifest: dict[str, Any], out: Outcome, validation: dict[str, Any] | None,
           warnings: list[str], timings: dict[str, float], t0: float) -> cli.Result:
    """Stage 8 (report): the --json document, the human summary and the exit code."""
    leakage = manifest["leakage"]
    blocking = []
    if any(v for k, v in leakage.items() if k in ("exact", "near_dup", "group") and v):
        blocking.append("leakage across splits")
    if validation is not None and not validation.get("valid", True):
        blocking.append("the validator found errors")
    data = {"output_dir": str(out_dir),
            "files": {k: {**v, "path": str(out_dir / k)} for k, v in manifest["files"].items()},
            "counts": manifest["counts"], "formats": manifest["formats"], "normalisation": manifest["normalisation"],
            "check_warnings": manifest["check_warnings"], "dedup": manifest["dedup"], "split": manifest["split"],
            "leakage": leakage, "mix": manifest["mix"],
            # sorted: the engines count removed rows in different orders
            "removed_reasons": dict(sorted(out.removed_reasons.items())),
            "removed_codes": dict(sorted(out.removed_codes.items(), key=lambda kv: (-kv[1], str(kv[0])))),
            "openclaw": manifest.get("openclaw"), "validation": validation, "warnings": warnings,
            "blocking": blocking,
            "timings": {k: round(v, 3) for k, v in timings.items()}, "seconds": round(time.time() - t0, 2)}
    text = _human(data, manifest, validation)
    outputs = [out_dir / n for n in OUTPUT_FILES]
    return cli.Result(data, text, exit_code=1 if blocking else 0,
                      inputs=[i for i in opts.inputs if Path(i).is_file()] + ([opts.tools_file] if opts.tools_file else []),
                      outputs=outputs,
                      summary={k: manifest["counts"][k] for k in ("input_rows", "kept", "train", "validation", "test",
                                                                 "removed")})


# ------------------------------------------------------------------------------ the two engines
#
# Same results (tests/test_prepare_streaming.py checks byte-identical outputs): ``run_on_disk``
# (default) streams rows through read -> convert -> clean into spill.SpillEngine and keeps only
# compact keys in memory; ``run_in_memory`` holds every row (the reference implementation).


def run_in_memory(opts: Options, ctx: ReadContext, timings: dict[str, float], t0: float) -> tuple[ReadSummary, Outcome]:
    rows, inputs_info = read_inputs(opts, ctx)
    fmt_counts, warn_codes = convert_and_clean(rows, opts, ctx)
    redaction = opts.redact.apply(rows) if opts.redact else None  # PII out before anything is copied
    is_oc = any(i["format"] == "openclaw" for i in inputs_info)
    converted = check_enough(rows, is_oc, opts, ctx.stats, ctx.warnings)
    timings["read_convert"] = time.time() - t0
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
    timings["mix_write"] = time.time() - t1

    def write(folder: Path) -> None:
        for s, name in enumerate(("train.jsonl", "validation.jsonl", "test.jsonl")):
            jsonl.write_jsonl(folder / name, (r.line_obj for r in sp.rows[s]), force=True)
        jsonl.write_jsonl(folder / "removed.jsonl", dd.removed, force=True)

    out = Outcome(removed_reasons=Counter(d["reason"] for d in dd.removed),
                  removed_codes=Counter(d.get("code") for d in dd.removed if d.get("code")),
                  near_pairs=dd.near_pairs, units=len(sp.units), group_missing=sp.group_missing, strata=sp.strata,
                  sizes=[len(sp.rows[s]) for s in range(3)], leakage=leakage, mix=mix, write=write,
                  input_rows=len(rows), converted=len(converted))
    return ReadSummary(inputs_info, fmt_counts, warn_codes, is_oc, said=ctx.warnings,
                       openclaw=ctx.stats if is_oc else None, redaction=redaction), out


@dataclass
class StreamTally:
    """What :func:`check_counts` needs, counted as the rows stream by (the disk engine keeps no
    rows): the same numbers ``check_enough`` takes from the row list of the in-memory engine."""

    input_rows: int = 0
    converted: int = 0
    preference: int = 0                  # converted preference rows
    first_error: Row | None = None       # the first row (input order) that is not converted
    codes: dict[Any, list[int]] = field(default_factory=dict)       # error code -> [first row index, rows]
    pref_bad: int = 0                    # preference rows whose preference line is invalid
    pref_first_bad: Row | None = None
    pref_codes: dict[Any, list[int]] = field(default_factory=dict)

    def add(self, r: Row, pref_error: dict[str, Any] | None) -> None:
        self.input_rows += 1
        if r.example is None:
            if r.error:
                self.first_error = self.first_error or r
                _tally(self.codes, r.index, r.error.get("code"))
            return
        self.converted += 1
        if r.pref is not None:
            self.preference += 1
            if pref_error is not None:
                self.pref_bad += 1
                self.pref_first_bad = self.pref_first_bad or replace(r, error=pref_error, example=None)
                _tally(self.pref_codes, r.index, pref_error.get("code"))

    def preference_lines(self, ctx: ReadContext) -> None:
        """As :func:`preference_lines`: the rows whose preference line is invalid are unconvertible."""
        self.converted -= self.pref_bad
        _bump(ctx.counts, "preference_lines_kept", self.preference - self.pref_bad)
        for code, (first, k) in self.pref_codes.items():
            have = self.codes.setdefault(code, [first, 0])
            have[0], have[1] = min(have[0], first), have[1] + k
        bad = self.pref_first_bad
        if bad is not None and (self.first_error is None or bad.index < self.first_error.index):
            self.first_error = bad

    def unusable(self) -> dict[Any, int]:
        """Rows per error code, codes in input order of their first row (as a Counter over the rows)."""
        return {code: k for code, (_, k) in sorted(self.codes.items(), key=lambda kv: kv[1][0])}


def _tally(codes: dict[Any, list[int]], index: int, code: Any) -> None:
    have = codes.setdefault(code, [index, 0])
    have[1] += 1


def run_on_disk(opts: Options, ctx: ReadContext, timings: dict[str, float], t0: float,
                out_dir: Path) -> tuple[ReadSummary, Outcome]:
    """The same stages in bounded memory: each row is converted, cleaned and spilled as it is
    read; dedup/split/verify work on compact keys; the write pass scans the spill (spill.py).
    Decisions over all rows are taken after streaming from what was recorded per row: the
    preference-line decision (``use_preference_lines``; each preference row is spilled with its
    preference line, or the removed record it becomes, as its alternative line) and the target of
    the data mix (``mix_summary`` from target-independent keys)."""
    from .spill import SpillEngine

    external = None
    if opts.near_dup_removed:
        from .datatrove_dedup import load_removed_list
        external = load_removed_list(opts.near_dup_removed)
    eng = SpillEngine(out_dir.parent if out_dir.parent.is_dir() else None, near_dup=opts.near_dup,
                      threshold=opts.near_dup_threshold, keep_near_dups=opts.keep_near_dups,
                      workers=opts.workers, progress=cli.progress, external_near=external is not None)
    try:
        rd = ReadSummary([], Counter(), Counter(), False, said=ctx.warnings)
        tally = StreamTally()
        for r in cli.progress(iter_inputs(opts, ctx, rd.inputs_info), desc="convert", unit="row"):
            convert_and_clean_row(r, opts, ctx, rd.fmt_counts, rd.warn_codes)
            line = error = None
            if r.example is not None and r.pref is not None:
                line, error = preference_line(r, opts)
            tally.add(r, error)
            _feed(eng, r, opts, external, alt_line=line,
                  alt_removed=removed_record(replace(r, error=error, example=None)) if error else None)
        rd.is_oc = any(i["format"] == "openclaw" for i in rd.inputs_info)
        rd.openclaw = ctx.stats if rd.is_oc else None
        if use_preference_lines(tally.converted, tally.preference, ctx):
            eng.use_alt_lines()
            tally.preference_lines(ctx)
        check_counts(tally.input_rows, tally.converted, tally.first_error, tally.unusable(), rd.is_oc, opts,
                     ctx.stats, rd.said)
        timings["read_convert"] = time.time() - t0
        out = _disk_stages(eng, opts, timings)
        out.input_rows, out.converted = tally.input_rows, tally.converted
        if external is not None:
            out.removed_list = {"file": Path(opts.near_dup_removed).name, "entries": len(external),
                                "removed_as_near_duplicate": out.removed_reasons.get("near_duplicate", 0)}
    except BaseException:
        eng.close()
        raise
    return rd, out


def _disk_stages(eng, opts: Options, timings: dict[str, float]) -> Outcome:
    t1 = time.time()
    n = eng.dedup()
    timings["dedup"] = time.time() - t1
    t1 = time.time()
    sp = eng.split(opts.split, opts.seed, group_by=bool(opts.group_by), stratify=bool(opts.stratify))
    timings["split"] = time.time() - t1
    t1 = time.time()
    leakage = eng.leakage(group_by=bool(opts.group_by))
    timings["leakage_check"] = time.time() - t1
    t1 = time.time()
    n_kept, by_key = eng.mix_counts()
    mix = mix_summary(n_kept, by_key, opts.target_mix, opts.tag_field)
    timings["mix_write"] = time.time() - t1

    def write(folder: Path) -> None:
        eng.write(folder)

    return Outcome(removed_reasons=eng.removed_reasons, removed_codes=Counter(eng.removed_codes),
                   near_pairs=n["near_pairs"], units=sp["units"], group_missing=sp["group_missing"],
                   strata=sp["stratify"], sizes=sp["counts"], leakage=leakage, mix=mix, write=write,
                   close=eng.close)


def _feed(eng, r: Row, opts: Options, external: dict[tuple[str, int], Any] | None = None, *,
          alt_line: dict[str, Any] | None = None, alt_removed: dict[str, Any] | None = None) -> None:
    """Hand one finished row to the disk engine, with the keys its later stages need
    (``external``: the --near-dup-removed list, ``(source, line) -> duplicate_of``; ``alt_line`` /
    ``alt_removed``: a preference row's preference line, or the removed record it becomes, used
    when every converted row is a preference row)."""
    if r.example is None:
        eng.add_removed(r.ref(), removed_record(r))
        return
    ex = r.example
    group = stratum = None
    if opts.group_by:
        v = lookup(r.fields, ex.metadata, opts.group_by)
        group = _hashable(v) if v is not None else None
    if opts.stratify:
        v = lookup(r.fields, ex.metadata, opts.stratify)
        stratum = _hashable(v) if v is not None else "(none)"
    tags = _tags(lookup(r.fields, ex.metadata, opts.tag_field)) if opts.tag_field else []
    ext = None
    if external is not None and (r.source, r.line) in external:
        ext = {"duplicate_of": external[(r.source, r.line)], "detected_by": "near_dedup_cluster.py (datatrove)"}
    eng.add_converted(r.ref(), r.line_obj, exact_key=exact_key(ex), near_text=near_text(ex), group=group,
                      stratum=stratum, mix_key=mix_key(ex, tags), external=ext, alt_line=alt_line,
                      alt_removed=alt_removed)


def prepare(opts: Options) -> cli.Result:
    """read -> convert -> clean -> dedup -> split -> verify -> write -> report (see the module doc)."""
    t0 = time.time()
    out_dir = check_output_dir(opts)
    if opts.engine not in ("disk", "memory"):
        raise UsageError(f"engine {opts.engine!r}: expected 'disk' or 'memory'")
    if opts.near_dup_removed and (opts.keep_near_dups or opts.engine == "memory"):
        raise UsageError("--near-dup-removed drops the listed rows; it cannot be combined with --keep-near-dups")
    tools = load_tools_file(opts.tools_file) if opts.tools_file else None
    ctx = ReadContext(opts=opts, counts={}, stats={}, tools=tools)
    timings: dict[str, float] = {}
    if opts.redact is not None and opts.engine == "disk":
        # value propagation (a value found in one row is redacted in every row, one pseudonym per value)
        # needs every row before anything is written: --redact holds the rows in memory
        opts = replace(opts, engine="memory")
        ctx.opts = opts
        cli.note("note: --redact holds the rows in memory (a value found anywhere is redacted everywhere); "
                 "for inputs larger than memory, split them and redact each part")
    if opts.engine == "memory":
        rd, out = run_in_memory(opts, ctx, timings, t0)
    else:
        rd, out = run_on_disk(opts, ctx, timings, t0, out_dir)
    try:
        manifest = build_manifest(opts, rd, ctx.counts, out)
        if rd.redaction:
            manifest["redaction"] = rd.redaction
        validation = write_outputs(out_dir, manifest, out, opts, timings)
    finally:
        out.close()
    return report(out_dir, opts, manifest, out, validation, run_warnings(out, opts, out.mix, rd.said), timings, t0)


def load_tools_file(path: str) -> list[dict[str, Any]]:
    """The tool definitions of a ``--tools FILE``: a JSON list (or ``{"tools": [...]}``) of objects;
    UsageError (exit 2) when unreadable or of another shape."""
    p = jsonl.check_readable(path)
    data = load_json_input(p, "--tools")
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        data = data["tools"]
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise UsageError(f"--tools {p}: expected a JSON list of tool definitions")
    for i, t in enumerate(data):  # OpenAI {"type": "function", "function": {"name"}} or bare {"name", ...}
        fn = t.get("function") if isinstance(t.get("function"), dict) else t
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise UsageError(f"--tools {p}: tool {i} has no name; each tool is {{\"type\": \"function\", "
                             f"\"function\": {{\"name\": ..., \"parameters\": ...}}}}")
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


def _validate(tmp: Path, names: list[str], final_dir: Path, opts: Options) -> dict[str, Any] | None:
    try:
        from .validate import validate_files
    except ImportError as exc:  # the validator library is part of the skill; say so if it is missing
        return {"valid": None, "error": f"validator unavailable ({exc})", "files": []}
    # the same rules as validate_jsonl.py with the same flags: --min-examples applies to train.jsonl,
    # validation/test files only get a warning when small (validate.file_role)
    doc = validate_files([str(tmp / n) for n in names], min_examples=opts.min_examples, tokenizer=opts.tokenizer,
                         model=opts.model, max_tokens=opts.max_tokens or None)
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
                                                  if not k.startswith(("role_alias:", "openclaw_stripped:",
                                                                       "openclaw_dropped:"))))
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
        for key in ("stripped", "dropped"):
            if oc.get(key):
                lines.append(f"  {key}: " + ", ".join(f"{k} {v:,}" for k, v in oc[key].items()))
        w = oc.get("windowing") or {}
        if w.get("max_tokens"):
            lines.append(f"  token windows (--max-tokens {w['max_tokens']:,}, {w.get('max_tokens_source')}): "
                         f"{w.get('examples_windowed', 0)} of {w.get('examples_in', 0)} conversations cut into "
                         f"windows -> {w.get('windows', 0)} examples; {w.get('tokens_dropped', 0):,} of "
                         f"{w.get('tokens_in', 0):,} tokens dropped")
    mix = data["mix"]
    lines.append("")
    lines.append(f"data mix ({mix['examples']:,} examples; refusal = regex heuristic; target: {mix['target_source']}):")
    lines.append(cli.table(["category", "target", "have", "share", "status", "add to reach"],
                           [(r["category"], "-" if r["target"] is None else f"{r['target']:.0%}", r["count"],
                             f"{r['share']:.1%}", r["status"],
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
