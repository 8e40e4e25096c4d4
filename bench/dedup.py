#!/usr/bin/env python3
"""Benchmark the near-duplicate index (finetune_kit.dedup) against datasketch's own bulk APIs.

On the texts prepare_data compares (``prepare.near_text`` of bench/prepare.py's synthetic 100k
chats with planted near duplicates) it times each stage of ``NearDupIndex.extend`` and the
library alternative for that stage:

- signatures: our vectorised affine32 MinHash vs ``datasketch.MinHash.bulk`` fed the same
  shingle hashes (results checked bit-identical);
- LSH keys: ``LeanMinHash(hashvalues=row)`` per row vs ``LeanMinHash(minhash)`` of bulk output;
- index: keep-first dedup with the band pre-filter (ours) vs every text through
  ``MinHashLSH.insert``/``query``, vs ``MinHashLSH.insertion_session`` + query;
- the all-library path (``MinHash`` with its default sha1 hash over shingle bytes, exact
  Jaccard on Python sets), timed on a subset and scaled.

usage: python bench/dedup.py [--n 100000] [--seed 0] [--subset 10000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("FT_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
from datasketch import LeanMinHash, MinHash, MinHashLSH  # noqa: E402

from finetune_kit import chat, dedup  # noqa: E402
from finetune_kit import prepare as prep  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def keep_first(keys, leans, hashes, lsh, sk, thr, inserted_all=False):
    """Sequential keep-first dedup over an LSH; returns the removed keys."""
    removed, kept = set(), set()
    for k in keys:
        if hashes[k] is None:
            continue
        dup = False
        for c in lsh.query(leans[k]):
            if inserted_all and (c >= k or c not in kept):
                continue
            if sk.jaccard(hashes[k], hashes[c]) >= thr:
                dup = True
                break
        if dup:
            removed.add(k)
            continue
        kept.add(k)
        if not inserted_all:
            lsh.insert(k, leans[k], check_duplication=False)
    return removed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subset", type=int, default=10_000, help="texts for the all-library path")
    args = ap.parse_args()
    import prepare as bench_prepare  # bench/prepare.py: the same synthetic data

    rows, _, _ = bench_prepare.build(args.n, args.seed)
    texts = [prep.near_text(chat.ChatExample.model_validate(r)) for r in rows]
    thr = 0.85
    sk = dedup._Sketcher()
    params = dedup.lsh_params(thr)
    res: list[tuple[str, str, float]] = []

    hashes, t = timed(lambda: sk.shingle_hashes(texts))
    res.append(("shingle hashes (numpy crc32, ours)", "kept", t))
    nonempty = [h for h in hashes if h is not None]
    mat, t_mat = timed(lambda: sk.matrix(nonempty))
    res.append(("MinHash signatures: vectorised affine32 (ours)", "kept", t_mat))
    bulk, t_bulk = timed(lambda: MinHash.bulk([h.tolist() for h in nonempty], num_perm=dedup.NUM_PERM,
                                              seed=1, hashfunc=dedup._identity, scheme="affine32"))
    same = all(np.array_equal(b.hashvalues, r) for b, r in zip(bulk, mat))
    res.append((f"MinHash signatures: datasketch MinHash.bulk (identical: {same})", "alternative", t_bulk))
    _, t = timed(lambda: [sk.lean(r) for r in mat])
    res.append(("LeanMinHash(hashvalues=row) for every row (ours)", "kept", t))
    _, t = timed(lambda: [LeanMinHash(m) for m in bulk])
    res.append(("LeanMinHash(minhash) of MinHash.bulk output", "alternative", t))
    del bulk

    def ours():
        idx = dedup.NearDupIndex(thr)
        return idx.extend(enumerate(texts))
    matched, t_ours = timed(ours)
    res.append((f"NearDupIndex.extend end to end ({len(matched):,} near dups; shingles + signatures + "
                f"band pre-filter + LSH)", "kept", t_ours))

    keys = [i for i, h in enumerate(hashes) if h is not None]
    rowmap = {k: mat[n] for n, k in enumerate(keys)}
    hmap = dict(enumerate(hashes))
    leans = {k: sk.lean(rowmap[k]) for k in keys}
    collide = np.zeros(len(mat), dtype=bool)
    _, t = timed(lambda: [collide.__ior__(cnt[inv] > 1) for inv, cnt in sk.band_groups(mat, params)])
    res.append((f"band pre-filter alone ({int(collide.sum()):,} of {len(mat):,} texts share a band)", "kept", t))
    lsh = MinHashLSH(threshold=thr, num_perm=dedup.NUM_PERM, params=params)
    rem_plain, t = timed(lambda: keep_first(keys, leans, hmap, lsh, sk, thr))
    res.append(("keep-first over MinHashLSH, every text queried + inserted (no pre-filter)", "alternative", t))
    lsh = MinHashLSH(threshold=thr, num_perm=dedup.NUM_PERM, params=params)

    def session():
        with lsh.insertion_session() as s:
            for k in keys:
                s.insert(k, leans[k], check_duplication=False)
        return keep_first(keys, leans, hmap, lsh, sk, thr, inserted_all=True)
    rem_sess, t = timed(session)
    res.append(("MinHashLSH.insertion_session for all, then keep-first queries", "alternative", t))
    assert rem_plain == rem_sess == set(matched), "the variants disagree"

    sub = texts[:args.subset]

    def library():
        mhs = MinHash.bulk([dedup.shingles(t) for t in sub], num_perm=dedup.NUM_PERM)  # sha1_hash32
        sets = [dedup.shingles(t) for t in sub]
        lsh2 = MinHashLSH(threshold=thr, num_perm=dedup.NUM_PERM, params=params)
        removed = 0
        for k, (m, s) in enumerate(zip(mhs, sets)):
            lm = LeanMinHash(m)
            if any(len(s & sets[c]) / len(s | sets[c]) >= thr for c in lsh2.query(lm)):
                removed += 1
                continue
            lsh2.insert(k, lm)
        return removed
    _, t = timed(library)
    res.append((f"all-library path (MinHash sha1 over shingle bytes, sets) on {len(sub):,} texts, "
                f"scaled x{len(texts) / len(sub):.0f}", "alternative", t * len(texts) / len(sub)))

    print(f"# near-duplicate index: {len(texts):,} texts (bench/prepare.py data, seed {args.seed}), "
          f"threshold {thr}, {dedup.NUM_PERM} permutations, LSH {params[0]} bands x {params[1]} rows\n")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}\n")
    print("| stage / variant | in the code | seconds |")
    print("|---|---|---:|")
    for name, where, secs in res:
        print(f"| {name} | {where} | {secs:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
