#!/usr/bin/env python3
"""Benchmark prepare_data: dedup + split wall time on 100k examples and near-duplicate recall.

Builds a synthetic chat dataset (Zipf-distributed vocabulary, 25-70 word answers, 8-25 word
questions), plants exact duplicates (case/whitespace variants) and near duplicates of known
edit sizes, runs the real pipeline (``finetune_kit.prepare.prepare``, validator off: it is
benchmarked in bench/validate.py) once with near-dup detection and once exact-only, and reports
stage timings, recall per planted kind (with the true 3-shingle Jaccard of each kind), false
positives among the unique rows, and the re-checked cross-split leakage.

usage: python bench/prepare.py [--n 100000] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("FT_NO_PROGRESS", "1")

from finetune_kit import chat, dedup  # noqa: E402
from finetune_kit import prepare as prep  # noqa: E402


def vocabulary(rng: random.Random, size: int = 5000) -> tuple[list[str], list[float]]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(size * 2)})[:size]
    rng.shuffle(words)
    weights = [1.0 / (r + 1) ** 1.05 for r in range(len(words))]  # Zipf-like
    return words, list(itertools.accumulate(weights))  # cumulative: O(log V) per draw


def sentence(rng: random.Random, words, weights, n: int) -> str:
    return " ".join(rng.choices(words, cum_weights=weights, k=n))


def edit(rng: random.Random, text: str, words, kind: str) -> str:
    w = text.split()
    if kind == "case_ws":            # exact duplicate after normalisation
        return "  " + text.upper().replace(" ", "  ") + " "
    if kind == "1_word":
        i = rng.randrange(len(w))
        w[i] = rng.choice(words)
    elif kind == "2_words":
        for i in rng.sample(range(len(w)), 2):
            w[i] = rng.choice(words)
    elif kind == "append_3":
        w += rng.choices(words, k=3)
    elif kind == "delete_1":
        del w[rng.randrange(len(w))]
    elif kind == "punct":            # punctuation only: the word shingles are unchanged
        return text.replace(" ", ", ", 2) + "!"
    return " ".join(w)


KINDS = {"case_ws": 0.25, "punct": 0.15, "1_word": 0.2, "delete_1": 0.15, "append_3": 0.15, "2_words": 0.10}


def build(n: int, seed: int, planted_share: float = 0.1):
    rng = random.Random(seed)
    words, weights = vocabulary(rng)
    n_planted = int(n * planted_share)
    base = []
    for i in range(n - n_planted):
        q = sentence(rng, words, weights, rng.randint(8, 25)) + "?"
        a = sentence(rng, words, weights, rng.randint(25, 70)) + "."
        base.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                     "metadata": {"user": f"u{rng.randrange(n // 20)}"}})
    rows = list(base)
    planted = []  # (line, kind, original line)
    kinds = list(KINDS)
    for _ in range(n_planted):
        k = rng.choices(kinds, [KINDS[x] for x in kinds])[0]
        j = rng.randrange(len(base))
        r = json.loads(json.dumps(base[j]))
        r["messages"][1]["content"] = edit(rng, r["messages"][1]["content"], words, k)
        if k == "case_ws":
            r["messages"][0]["content"] = edit(rng, r["messages"][0]["content"], words, k)
        pos = rng.randrange(len(base), len(rows) + 1)  # after its original
        rows.insert(pos, r)
    # recover line numbers of planted rows (1-based), and which base row each copies
    first_line = {}
    for ln, r in enumerate(rows, 1):
        key = json.dumps(r, sort_keys=True)
        first_line.setdefault(key, ln)
    base_keys = {json.dumps(b, sort_keys=True): i for i, b in enumerate(base)}
    base_line = {i: first_line[k] for k, i in base_keys.items()}
    for ln, r in enumerate(rows, 1):
        key = json.dumps(r, sort_keys=True)
        if key in base_keys and first_line[key] == ln:
            continue
        planted.append(ln)
    return rows, set(planted), base_line


def pct(k: int, n: int) -> str:
    return f"{k:,}/{n:,} ({100 * k / n:.2f}%)"


def true_jaccard(a: dict, b: dict) -> float:
    sa = dedup.shingles(prep.near_text(chat.ChatExample.model_validate(a)))
    sb = dedup.shingles(prep.near_text(chat.ChatExample.model_validate(b)))
    return len(sa & sb) / len(sa | sb)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="keep the outputs here (default: a temp dir)")
    args = ap.parse_args()

    t = time.time()
    rows, planted, _ = build(args.n, args.seed)
    gen_s = time.time() - t
    work = Path(args.out or tempfile.mkdtemp(prefix="bench-prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "input.jsonl"
    with open(src, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")

    results, cpu, load = {}, {}, {}
    for label, near in (("near-dup (MinHash LSH, J>=0.85)", True), ("exact only", False)):
        out = work / ("out_near" if near else "out_exact")
        opts = prep.Options(inputs=[str(src)], output_dir=str(out), near_dup=near, validate=False, force=True,
                            group_by="metadata.user")
        t, c = time.time(), time.process_time()
        res = prep.prepare(opts)
        results[label] = (res.data, time.time() - t, out)
        cpu[label] = time.process_time() - c
        load[label] = os.getloadavg()[0]

    # ground truth per planted row: its kind and true Jaccard to the row it copies
    data_near, _, out_near = results["near-dup (MinHash LSH, J>=0.85)"]
    removed_near = {r["line"]: r for r in map(json.loads, open(out_near / "removed.jsonl"))}
    removed_exact = {r["line"]: r for r in map(json.loads, open(results["exact only"][2] / "removed.jsonl"))}
    # true Jaccard to the original: find the original by the first row sharing the question text
    q_first: dict[str, int] = {}
    for ln, r in enumerate(rows, 1):
        q_first.setdefault(prep._norm(r["messages"][0]["content"]), ln)
    buckets: dict[str, list[tuple[int, float]]] = {}
    for ln in sorted(planted):
        orig = q_first[prep._norm(rows[ln - 1]["messages"][0]["content"])]
        j = true_jaccard(rows[ln - 1], rows[orig - 1]) if orig != ln else 1.0
        if j >= 0.999 and prep.exact_key(chat.ChatExample.model_validate(rows[ln - 1])) == \
                prep.exact_key(chat.ChatExample.model_validate(rows[orig - 1])):
            kind = "exact (case/whitespace)"
        elif j >= 0.999:
            kind = "near, J=1.0 (punctuation)"
        elif j >= 0.85:
            kind = "near, 0.85<=J<1"
        else:
            kind = "near, J<0.85 (e.g. 2 words changed)"
        buckets.setdefault(kind, []).append((ln, j))

    unique_lines = set(range(1, len(rows) + 1)) - planted
    fp_near = sum(1 for ln in removed_near if ln in unique_lines)
    fp_exact = sum(1 for ln in removed_exact if ln in unique_lines)

    print(f"# prepare_data benchmark: {len(rows):,} examples ({len(planted):,} planted duplicates)\n")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"data generation {gen_s:.1f} s; group-by metadata.user ({args.n // 20:,} users)\n")
    print("wall-clock seconds per stage (the machine is shared: 1-min load average shown; CPU s = this "
          "process's CPU time for the whole run)\n")
    print("| run | total s | CPU s | load | read+convert s | dedup s | split s | leakage re-check s | write s "
          "| kept | removed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, (d, secs, _) in results.items():
        tm = d["timings"]
        print(f"| {label} | {secs:.1f} | {cpu[label]:.1f} | {load[label]:.1f} | {tm['read_convert']:.1f} | "
              f"{tm['dedup']:.1f} | {tm['split']:.2f} | {tm['leakage_check']:.1f} | {tm['mix_write']:.1f} | "
              f"{d['counts']['kept']:,} | {d['counts']['removed']:,} |")
    print()
    print("| planted kind | rows | mean true J | recall exact-only | recall near-dup |")
    print("|---|---:|---:|---:|---:|")
    tot = {"n": 0, "e": 0, "x": 0}
    for kind in sorted(buckets):
        items = buckets[kind]
        e = sum(1 for ln, _ in items if ln in removed_exact)
        x = sum(1 for ln, _ in items if ln in removed_near)
        tot["n"] += len(items)
        tot["e"] += e
        tot["x"] += x
        print(f"| {kind} | {len(items):,} | {statistics.mean(j for _, j in items):.3f} | "
              f"{pct(e, len(items))} | {pct(x, len(items))} |")
    at_thr = [ln for k, v in buckets.items() if "J<0.85" not in k for ln, _ in v]
    print(f"| **all planted** | {tot['n']:,} | | {pct(tot['e'], tot['n'])} | {pct(tot['x'], tot['n'])} |")
    print(f"| **planted with J>=0.85** | {len(at_thr):,} | | "
          f"{pct(sum(1 for ln in at_thr if ln in removed_exact), len(at_thr))} | "
          f"{pct(sum(1 for ln in at_thr if ln in removed_near), len(at_thr))} |")
    print()
    print(f"false positives (unique rows removed): near-dup run {fp_near}, exact-only run {fp_exact} "
          f"(of {len(unique_lines):,})")
    lk = data_near["leakage"]
    print(f"leakage re-check (near-dup run): exact {lk['exact']}, near-dup {lk['near_dup']}, group {lk['group']}")
    d = results["exact only"][0]
    print(f"exact-only run leaves {sum(1 for ln in planted if ln not in removed_exact):,} planted near-duplicates "
          f"in the data; its leakage re-check (exact) = {d['leakage']['exact']}")
    target = 60.0
    secs = results["near-dup (MinHash LSH, J>=0.85)"][0]["timings"]
    ds = secs["dedup"] + secs["split"]
    print(f"\ndedup + split (near-dup run): {ds:.1f} s (target < {target:.0f} s): {'PASS' if ds < target else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
