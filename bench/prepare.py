#!/usr/bin/env python3
"""Benchmark prepare_data: time, peak memory and near-duplicate recall, disk engine vs in-memory.

Builds a synthetic chat dataset (Zipf-distributed vocabulary, 25-70 word answers, 8-25 word
questions; grouped by ``metadata.user``), plants exact duplicates (case/whitespace variants) and
near duplicates of known edit sizes after the originals, and runs the real pipeline
(``finetune_kit.prepare.prepare``, validator off: it is benchmarked in bench/validate.py), each
run in its own process so its peak RSS is its own:

- at ``min(n, 100k)`` rows: the in-memory engine (the baseline: every row, signature and the LSH
  index in RAM), the disk engine (spill.py) on the same file - their outputs must be
  byte-identical - and an exact-only run (the recall baseline);
- at ``n`` rows, when ``n > 100k``: the disk engine alone (the in-memory one needs ~15 GB at 1M).

Reports wall/CPU seconds per stage, peak RSS (the main process, its MinHash worker processes,
and the sampled peak of the whole process tree), recall per planted kind (with the true 3-shingle
Jaccard of each kind), false removals among the unique rows and the re-checked leakage. The data
is generated row by row (the 1M input is never held in memory); for a given ``--n``/``--seed``
it is the same data as earlier versions of this benchmark.

usage: python bench/prepare.py [--n 100000] [--in-memory-n 100000] [--seed 0] [--out DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("FT_NO_PROGRESS", "1")

from finetune_kit import chat, dedup  # noqa: E402
from finetune_kit import prepare as prep  # noqa: E402

IN_MEMORY_MAX = 100_000
FILES = ("train.jsonl", "validation.jsonl", "test.jsonl", "removed.jsonl")


# ------------------------------------------------------------------------------ data


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


def build(n: int, seed: int, path: Path, planted_share: float = 0.1) -> dict:
    """Write the dataset to ``path`` row by row; return the ground truth of the planted rows.

    The base rows come first, then the planted copies, each inserted at a random place among the
    copies so far (the same random draws as the in-memory generator this replaces, so the same
    data for the same n/seed). Only the planted rows (10 %) and the base rows' byte offsets are
    held in memory."""
    rng = random.Random(seed)
    words, weights = vocabulary(rng)
    n_planted = int(n * planted_share)
    n_base = n - n_planted
    offsets = [0] * n_base
    seen_base: set[bytes] = set()
    base_dups: list[int] = []                     # base lines equal to an earlier base line
    with open(path, "wb") as fh:
        for i in range(n_base):
            q = sentence(rng, words, weights, rng.randint(8, 25)) + "?"
            a = sentence(rng, words, weights, rng.randint(25, 70)) + "."
            row = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                   "metadata": {"user": f"u{rng.randrange(n // 20)}"}}
            offsets[i] = fh.tell()
            fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            h = hashlib.blake2b(json.dumps(row, sort_keys=True).encode(), digest_size=16).digest()
            if h in seen_base:
                base_dups.append(i + 1)
            seen_base.add(h)
    del seen_base
    kinds = list(KINDS)
    tail: list[tuple[dict, int]] = []             # (planted row, its base index), in file order
    with open(path, "rb") as src:
        def base_row(j: int) -> dict:
            src.seek(offsets[j])
            return json.loads(src.readline())
        for _ in range(n_planted):
            k = rng.choices(kinds, [KINDS[x] for x in kinds])[0]
            j = rng.randrange(n_base)
            r = base_row(j)
            r["messages"][1]["content"] = edit(rng, r["messages"][1]["content"], words, k)
            if k == "case_ws":
                r["messages"][0]["content"] = edit(rng, r["messages"][0]["content"], words, k)
            pos = rng.randrange(n_base, n_base + len(tail) + 1)  # after its original
            tail.insert(pos - n_base, (r, j))
        with open(path, "ab") as fh:
            for r, _ in tail:
                fh.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
        # ground truth: the original = the first row with the same (normalised) question
        planted_lines = list(range(n_base + 1, n + 1)) + base_dups
        q_of = {ln: prep._norm(r["messages"][0]["content"]) for ln, (r, _) in zip(range(n_base + 1, n + 1), tail)}
        for ln in base_dups:
            q_of[ln] = prep._norm(base_row(ln - 1)["messages"][0]["content"])
        wanted = set(q_of.values())
        q_first: dict[str, int] = {}
        with open(path, "rb") as fh:
            for ln, line in enumerate(fh, 1):
                q = prep._norm(json.loads(line)["messages"][0]["content"])
                if q in wanted:
                    q_first.setdefault(q, ln)
        buckets: dict[str, list[tuple[int, float]]] = {}
        for ln in sorted(planted_lines):
            row = tail[ln - n_base - 1][0] if ln > n_base else base_row(ln - 1)
            orig = q_first[q_of[ln]]
            orig_row = base_row(orig - 1) if orig <= n_base else tail[orig - n_base - 1][0]
            j = true_jaccard(row, orig_row) if orig != ln else 1.0
            if j >= 0.999 and exact(row) == exact(orig_row):
                kind = "exact (case/whitespace)"
            elif j >= 0.999:
                kind = "near, J=1.0 (punctuation)"
            elif j >= 0.85:
                kind = "near, 0.85<=J<1"
            else:
                kind = "near, J<0.85 (e.g. 2 words changed)"
            buckets.setdefault(kind, []).append((ln, j))
    return {"planted": set(planted_lines), "buckets": buckets, "rows": n, "bytes": path.stat().st_size}


def exact(row: dict) -> str:
    return prep.exact_key(chat.ChatExample.model_validate(row))


def true_jaccard(a: dict, b: dict) -> float:
    sa = dedup.shingles(prep.near_text(chat.ChatExample.model_validate(a)))
    sb = dedup.shingles(prep.near_text(chat.ChatExample.model_validate(b)))
    return len(sa & sb) / len(sa | sb)


# ------------------------------------------------------------------------------ runs (one process each)


def child(spec: dict) -> None:
    """Runs one prepare in this process; prints one JSON line with its measurements."""
    opts = prep.Options(inputs=[spec["input"]], output_dir=spec["out"], near_dup=spec["near"], validate=False,
                        force=True, group_by="metadata.user", engine=spec["engine"], workers=spec.get("workers"))
    t, c = time.time(), time.process_time()
    data = prep.prepare(opts).data
    wall = time.time() - t
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"wall": wall, "cpu_main": time.process_time() - c, "cpu_workers": kids.ru_utime + kids.ru_stime,
                      "rss_main_mb": me.ru_maxrss / 1024, "rss_worker_mb": kids.ru_maxrss / 1024,
                      "load": os.getloadavg()[0], "timings": data["timings"], "counts": data["counts"],
                      "leakage": data["leakage"], "files": {k: v["sha256"] for k, v in data["files"].items()}}))


def run(label: str, src: Path, out: Path, engine: str, near: bool, workers: int | None) -> dict:
    spec = {"input": str(src), "out": str(out), "engine": engine, "near": near, "workers": workers}
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                            env={**os.environ, "FT_NO_PROGRESS": "1"})
    peak = [0.0]

    def sample() -> None:  # the whole tree (main + MinHash workers) at once, every 0.2 s
        try:
            import psutil
        except ImportError:
            return
        try:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak[0] = max(peak[0], rss / 2**20)
                time.sleep(0.2)
        except psutil.Error:
            pass
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, _ = proc.communicate()
    th.join()
    if proc.returncode:
        raise SystemExit(f"{label}: prepare failed (exit {proc.returncode})")
    res = json.loads(stdout.decode().strip().splitlines()[-1])
    res.update(label=label, rss_tree_mb=peak[0] or None, out=out)
    res["removed_lines"] = {json.loads(x).get("line") for x in open(out / "removed.jsonl", encoding="utf-8")}
    return res


# ------------------------------------------------------------------------------ report


def pct(k: int, n: int) -> str:
    return f"{k:,}/{n:,} ({100 * k / n:.2f}%)" if n else "-"


def runs_table(results: list[dict]) -> None:
    print("| run | rows | total s | CPU s main + workers | load | peak RSS main / workers / tree MB | "
          "read+convert s | dedup s | split s | leakage s | write s | kept | removed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        tm, c = r["timings"], r["counts"]
        tree = f"{r['rss_tree_mb']:,.0f}" if r.get("rss_tree_mb") else "-"
        print(f"| {r['label']} | {c['input_rows']:,} | {r['wall']:.1f} | {r['cpu_main']:.1f} + {r['cpu_workers']:.1f} "
              f"| {r['load']:.1f} | {r['rss_main_mb']:,.0f} / {r['rss_worker_mb']:,.0f} / {tree} | "
              f"{tm['read_convert']:.1f} | {tm['dedup']:.1f} | {tm['split']:.2f} | {tm['leakage_check']:.1f} | "
              f"{tm['mix_write']:.1f} | {c['kept']:,} | {c['removed']:,} |")
    print()


def recall_table(truth: dict, results: list[dict]) -> None:
    buckets = truth["buckets"]
    print("| planted kind | rows | mean true J | " + " | ".join(f"recall {r['label']}" for r in results) + " |")
    print("|---|---:|---:|" + "---:|" * len(results))
    for kind in sorted(buckets):
        items = buckets[kind]
        cells = [pct(sum(1 for ln, _ in items if ln in r["removed_lines"]), len(items)) for r in results]
        print(f"| {kind} | {len(items):,} | {statistics.mean(j for _, j in items):.3f} | " + " | ".join(cells) + " |")
    allp = [ln for v in buckets.values() for ln, _ in v]
    at_thr = [ln for k, v in buckets.items() if "J<0.85" not in k for ln, _ in v]
    for name, lines in (("**all planted**", allp), ("**planted with J>=0.85**", at_thr)):
        print(f"| {name} | {len(lines):,} | | " +
              " | ".join(pct(sum(1 for ln in lines if ln in r["removed_lines"]), len(lines)) for r in results) + " |")
    print()
    unique = truth["rows"] - len(truth["planted"])
    for r in results:
        fp = sum(1 for ln in r["removed_lines"] if ln is not None and ln not in truth["planted"])
        lk = r["leakage"]
        print(f"- {r['label']}: false removals (unique rows removed) {fp} of {unique:,}; leakage re-check "
              f"exact {lk['exact']}, near-dup {lk['near_dup']}, group {lk['group']}")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="rows of the large run (default 100k)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="keep the inputs/outputs here (default: a temp dir)")
    ap.add_argument("--workers", type=int, default=None, help="MinHash worker processes (default: cores - 1)")
    ap.add_argument("--in-memory-n", type=int, default=IN_MEMORY_MAX,
                    help="rows of the in-memory vs disk comparison (default 100k)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0

    work = Path(args.out or tempfile.mkdtemp(prefix="bench-prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    small_n = min(args.n, args.in_memory_n)
    print(f"# prepare_data benchmark: disk engine at {args.n:,} rows, in-memory engine at {small_n:,}\n")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"group-by metadata.user; 10 % planted duplicates; the cores are shared with other sessions "
          f"(1-min load average per run below)\n")

    t = time.time()
    small = build(small_n, args.seed, work / f"input_{small_n}.jsonl")
    print(f"data: {small_n:,} rows, {small['bytes'] / 2**20:,.0f} MiB, generated in {time.time() - t:.0f} s")
    res_small = [run("in-memory", work / f"input_{small_n}.jsonl", work / "out_mem", "memory", True, args.workers),
                 run("disk", work / f"input_{small_n}.jsonl", work / "out_disk", "disk", True, args.workers),
                 run("disk, exact only", work / f"input_{small_n}.jsonl", work / "out_exact", "disk", False,
                     args.workers)]
    mem, disk = res_small[0], res_small[1]
    same = all((mem["out"] / f).read_bytes() == (disk["out"] / f).read_bytes() for f in FILES)
    print(f"\n## {small_n:,} rows: in-memory vs disk engine (same input, same seed)\n")
    runs_table(res_small)
    print(f"disk engine outputs byte-identical to the in-memory engine (train/validation/test/removed.jsonl): "
          f"**{'yes' if same else 'NO'}**; wall time disk/in-memory {disk['wall'] / mem['wall']:.2f}x, "
          f"peak RSS (main) disk/in-memory {disk['rss_main_mb'] / mem['rss_main_mb']:.2f}x\n")
    recall_table(small, res_small)

    if args.n > small_n:
        t = time.time()
        big = build(args.n, args.seed, work / f"input_{args.n}.jsonl")
        print(f"data: {args.n:,} rows, {big['bytes'] / 2**20:,.0f} MiB, generated in {time.time() - t:.0f} s")
        res_big = [run("disk", work / f"input_{args.n}.jsonl", work / "out_big", "disk", True, args.workers)]
        print(f"\n## {args.n:,} rows: disk engine\n")
        runs_table(res_big)
        recall_table(big, res_big)
        r = res_big[0]
        tree = r.get("rss_tree_mb") or (r["rss_main_mb"] + r["rss_worker_mb"])
        ok = r["wall"] <= 600 and tree <= 2048
        print(f"target 1M rows <= 600 s and peak RSS <= 2 GB: {r['wall']:.0f} s, {tree:,.0f} MB (main + workers): "
              f"{'PASS' if ok else 'FAIL'}")
    if not args.out:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
