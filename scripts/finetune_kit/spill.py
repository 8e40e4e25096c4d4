"""Disk-backed engine for prepare_data's dedup -> split -> leakage re-check -> write stages.

Memory stays flat in the number of rows: every finished row is spilled to a scratch store on
disk as soon as it is converted, and only compact per-row keys stay in memory (16 bytes of the
exact-duplicate hash, a 64-bit group hash, small integer codes - ~50 bytes a row, ~50 MB at a
million rows). The near-duplicate data lives on disk too: each text's sorted unique shingle
hashes in one flat file (read back with ``pread`` only to verify candidate pairs) and one file of
64-bit LSH band keys per band (loaded one band at a time, 8 bytes a row).

Stages (same results as the in-memory path in ``prepare.py``: same kept rows, same removed rows
and ``duplicate_of``, same split assignment for the same seed, same leakage counts):

1. ``add``      spill the row; hash its near-dup text in a process pool (shingles + MinHash +
                band keys, :func:`dedup.sketch_chunk`, chunks of rows; the main process keeps
                converting meanwhile, so both cores work);
2. ``dedup``    exact duplicates by sorting the 16-byte keys (first occurrence kept); near
                duplicates by replaying ``NearDupIndex.extend`` exactly: rows that share no band
                key with any other row cannot be candidates; the others are visited in input
                order and compared (exact Jaccard) with the earlier *kept* rows that share a
                band key - the candidates datasketch's MinHashLSH would return;
3. ``split``    units (``--group-by`` groups, ``--keep-near-dups`` clusters; union-find over
                arrays) ordered by their first row, then :func:`assign_sizes` - the same seeded
                shuffle and greedy placement as ``prepare.assign_units``, on unit sizes only;
4. ``leakage``  exact keys and groups across splits by sorting; near duplicates across splits by
                re-banding the kept rows' band keys (one band at a time) and verifying every
                cross-split candidate pair with the exact Jaccard;
5. ``write``    one sequential scan of the store in input order writes train/validation/test
                and removed.jsonl byte-identically to the in-memory path.

A decision that needs every row before any output line is known (prepare: write preference lines
only when every converted row is a preference row) uses alternative lines: each row is spilled
with its alternative output line (or the removed record it would become); ``use_alt_lines`` before
``dedup`` switches to them, and rows whose alternative is a removed record leave the data.

Why SQLite (stdlib ``sqlite3``) and not Arrow via ``datasets``: the store must work in the core
install (``datasets``/``pyarrow`` are only in the ``train`` extra, ~100 MB, and the data tools run
on a bare ``python3`` + the light core deps); the write pass needs both an ordered scan and random
access by row number (the row a duplicate duplicates) - a B-tree keyed by row number gives both;
rows are variable-size JSON text, which SQLite stores as-is, with a bounded page cache, no schema
inference and no re-encoding of nested messages. The store is scratch: journal and fsync off, it
lives in a temp folder beside the output and is deleted when prepare ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import tempfile
from array import array
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Hashable

from . import dedup, jsonl
from .cli import NoBar
from .errors import UsageError

SPLIT_NAMES = ("train", "validation", "test")
FILES = ("train.jsonl", "validation.jsonl", "test.jsonl")
CHUNK_ROWS = 4096          # rows per MinHash job
INSERT_BATCH = 2000        # rows per SQLite executemany


def _dump(obj: Any) -> str:
    """One JSONL line without its newline, exactly as ``jsonl.dumps_line`` writes it."""
    return jsonl.dumps_line(obj)[:-1]


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def default_workers() -> int:
    """Worker processes for MinHash: the cores beyond the one the main process converts on
    (at least 1, at most 4); ``FT_PREPARE_WORKERS`` overrides (0 = hash in the main process)."""
    env = os.environ.get("FT_PREPARE_WORKERS")
    if env is not None and env.strip().isdigit():
        return int(env)
    return max(1, min(4, (os.cpu_count() or 2) - 1))


# ------------------------------------------------------------------------------ split helpers


def split_targets(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Example counts per split: round half up for validation/test, the rest to train (>= 1)."""
    import math

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


def assign_sizes(sizes: list[int], ratios: tuple[float, float, float], rng: random.Random) -> list[int]:
    """Split index per unit, from the units' sizes only. Units are shuffled (seeded), then placed
    largest first into the split with the largest remaining deficit, so groups stay whole and
    the counts hit the targets exactly when every unit has one example; never an empty train
    split. (``prepare.assign_units`` is this on lists of members.)"""
    n = sum(sizes)
    targets = split_targets(n, ratios)
    order = list(range(len(sizes)))
    rng.shuffle(order)
    order.sort(key=lambda i: -sizes[i])  # stable: ties keep the shuffled order
    fill = [0, 0, 0]
    out = [0] * len(sizes)
    for ui in order:
        size = sizes[ui]
        deficits = [targets[0] - fill[0], targets[1] - fill[1], targets[2] - fill[2]]
        best = max(range(3), key=lambda s: (deficits[s], -s))
        if deficits[best] <= 0:
            best = 0
        elif size > deficits[best] and best != 0 and size > 1:
            # a group bigger than what validation/test still need goes to train unless train is full
            best = 0 if deficits[0] > 0 else best
        fill[best] += size
        out[ui] = best
    if fill[0] == 0 and n:  # never an empty train split
        out[order[-1]] = 0
    return out


def _roots(parent, np):
    """Pointer jumping until every entry points at its root."""
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


# ------------------------------------------------------------------------------ the engine


class SpillEngine:
    """Bounded-memory dedup/split/write over rows spilled to a scratch folder.

    Feed every row once, in input order, with :meth:`add_converted` / :meth:`add_removed`;
    then call :meth:`dedup`, :meth:`split`, :meth:`leakage`, :meth:`mix_counts` and
    :meth:`write` (in that order), and :meth:`close` (or use it as a context manager).
    """

    def __init__(self, workdir: str | os.PathLike | None = None, *, near_dup: bool = True,
                 threshold: float = 0.85, keep_near_dups: bool = False, num_perm: int = dedup.NUM_PERM,
                 workers: int | None = None, chunk_rows: int | None = None,
                 progress: Callable[..., Any] | None = None, external_near: bool = False):
        import numpy as np

        self.np = np
        try:
            self._own_dir = tempfile.mkdtemp(prefix=".prepare-spill-", dir=workdir)
        except OSError as exc:
            raise UsageError(f"cannot create the scratch folder in {workdir or tempfile.gettempdir()}: "
                             f"{exc.strerror or exc}; choose a writable --output-dir location") from None
        self.dir = Path(self._own_dir)
        self.near_dup, self.threshold, self.keep_near_dups = near_dup, threshold, keep_near_dups
        # external_near: near duplicates come from a removed list (near_dedup_cluster.py) instead of
        # the own search; the own sketches (near_dup) then only serve the leakage re-check
        self.external_near = external_near
        self._external: dict[int, str] = {}  # c-index -> removed.jsonl fragment (duplicate_of ...)
        self.num_perm = num_perm
        self.params = dedup.lsh_params(threshold, num_perm)
        self.workers = default_workers() if workers is None else workers
        self.chunk_rows = max(1, chunk_rows or CHUNK_ROWS)
        self._progress = progress or (lambda it=None, **kw: NoBar(it))
        self.db = sqlite3.connect(self.dir / "rows.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-16384")  # 16 MB page cache
        # alt: a converted row's alternative output line (a preference row's preference line, or the
        # removed record it becomes), written instead of body after use_alt_lines()
        self.db.execute("CREATE TABLE rows (pos INTEGER PRIMARY KEY, ref TEXT NOT NULL, body TEXT NOT NULL, alt TEXT)")
        self._batch: list[tuple[int, str, str, str | None]] = []
        self.n_rows = 0
        # converted rows ("c-space", input order)
        self._cpos = array("q")            # row position of each converted row
        self._exact = bytearray()          # 16 bytes of the exact-duplicate sha256 per converted row
        self._group = array("q")           # 64-bit hash of the --group-by value
        self._has_group = bytearray()      # 1 when the row has a --group-by value
        self._stratum = array("i")         # code of the --stratify label
        self._strata: dict[str, int] = {}
        self._mix = array("i")             # code of the row's (categories, tags) for the mix report
        self._mixes: dict[Hashable, int] = {}
        self._alt = bytearray()            # 0 no alternative, 1 an alternative line, 2 removed under alt lines
        self._alt_reasons: Counter = Counter()
        self._alt_codes: Counter = Counter()
        self.alt_lines = False
        self.removed_reasons: Counter = Counter()
        self.removed_codes: Counter = Counter()
        # near-dup sketches, on disk
        self._lens = array("i")            # unique shingle hashes per converted row (0: no words)
        self._pending_texts: list[str] = []
        self._inflight: deque = deque()
        self._pool = None
        self._hashes_fh = open(self.dir / "shingles.u32", "wb") if near_dup else None
        self._band_fhs = [open(self.dir / f"band{b:02d}.u64", "wb") for b in range(self.params[0])] if near_dup else []
        self._sketched = 0
        self._bar = None
        self._closed_input = False
        self.result: dict[str, Any] = {}

    # ------------------------------------------------------------------ stage 1: spill + sketch

    def add_converted(self, ref: dict[str, Any], line: dict[str, Any], *, exact_key: str, near_text: str,
                      group: str | None = None, stratum: str | None = None, mix_key: Hashable = None,
                      external: dict[str, Any] | None = None, alt_line: dict[str, Any] | None = None,
                      alt_removed: dict[str, Any] | None = None) -> None:
        """A row that converted: ``ref`` (source/line/session), its output ``line``, the hex sha256
        of its normalised conversation, the text near-dup detection compares, its --group-by value
        (as a string, None when missing), its --stratify label and its mix-report key;
        ``external``: its removed-list record when an external near-dup pass removed it;
        ``alt_line``: the line written instead of ``line`` after :meth:`use_alt_lines`, or
        ``alt_removed``: the removed.jsonl record the row becomes then (it leaves the data)."""
        if external is not None:
            by = external.get("detected_by") or "removed list"
            dup = external.get("duplicate_of")
            self._external[self.n_converted] = (f'"duplicate_of": {_dump(dup) if isinstance(dup, dict) else "null"}, '
                                                f'"similarity": null, "detected_by": {_dump(str(by))}')
        alt = None
        if alt_line is not None:
            alt = _dump(alt_line)
            self._alt.append(1)
        elif alt_removed is not None:
            alt = _dump(alt_removed)
            self._alt.append(2)
            self._alt_reasons[alt_removed.get("reason", "unconvertible")] += 1
            if alt_removed.get("code"):
                self._alt_codes[alt_removed["code"]] += 1
        else:
            self._alt.append(0)
        self._insert(_dump(ref), _dump(line), alt)
        self._cpos.append(self.n_rows - 1)
        self._exact += bytes.fromhex(exact_key)[:16]
        self._group.append(_hash64(group) if group is not None else 0)
        self._has_group.append(group is not None)
        self._stratum.append(self._strata.setdefault(stratum if stratum is not None else "(none)", len(self._strata)))
        self._mix.append(self._mixes.setdefault(mix_key, len(self._mixes)))
        if self.near_dup:
            self._pending_texts.append(near_text)
            if len(self._pending_texts) >= self.chunk_rows:
                self._submit()

    def add_removed(self, ref: dict[str, Any], record: dict[str, Any]) -> None:
        """A row that could not be read or converted: its removed.jsonl ``record`` as written."""
        self._insert(_dump(ref), _dump(record))
        self.removed_reasons[record.get("reason", "unconvertible")] += 1
        if record.get("code"):
            self.removed_codes[record["code"]] += 1

    @property
    def n_converted(self) -> int:
        return len(self._cpos)

    def use_alt_lines(self) -> int:
        """Write every converted row's alternative line instead of its line (prepare: every converted
        row is a preference row); rows whose alternative is a removed record become removed rows and
        take no part in dedup, split and leakage. Call after the input, before :meth:`dedup`;
        returns how many rows left the data."""
        if hasattr(self, "status"):
            raise RuntimeError("use_alt_lines() after dedup()")
        self.alt_lines = True
        self.removed_reasons.update(self._alt_reasons)
        self.removed_codes.update(self._alt_codes)
        return sum(self._alt_reasons.values())

    def _insert(self, ref: str, body: str, alt: str | None = None) -> None:
        self._batch.append((self.n_rows, ref, body, alt))
        self.n_rows += 1
        if len(self._batch) >= INSERT_BATCH:
            self._flush_rows()

    def _flush_rows(self) -> None:
        if self._batch:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)", self._batch)
            self.db.execute("COMMIT")
            self._batch.clear()

    def _submit(self, final: bool = False) -> None:
        texts, self._pending_texts = self._pending_texts, []
        if self._pool is None and self.workers > 0 and not final:
            import concurrent.futures as cf
            import multiprocessing as mp

            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
            self._bar = self._progress(total=None, desc="minhash", unit="row")
        if self._pool is None:  # small input (one chunk) or no workers: hash here
            self._store_sketch(dedup.sketch_chunk(texts, self.threshold, self.num_perm))
            return
        self._inflight.append(self._pool.submit(dedup.sketch_chunk, texts, self.threshold, self.num_perm))
        while len(self._inflight) > 2 * self.workers:  # bounded queue: memory stays flat
            self._store_sketch(self._inflight.popleft().result())

    def _store_sketch(self, res) -> None:
        lens, flat, keys = res
        self._lens.extend(lens.tolist())
        flat.tofile(self._hashes_fh)
        for b, fh in enumerate(self._band_fhs):
            self.np.ascontiguousarray(keys[:, b]).tofile(fh)
        self._sketched += len(lens)
        if self._bar is not None:
            self._bar.update(len(lens))

    def finish_input(self) -> None:
        """All rows added: flush the store and wait for the last sketches."""
        if self._closed_input:
            return
        self._flush_rows()
        if self._pending_texts:
            self._submit(final=True)
        while self._inflight:
            self._store_sketch(self._inflight.popleft().result())
        self._closed_input = True
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._bar is not None:
            self._bar.close()
        for fh in [self._hashes_fh, *self._band_fhs]:
            if fh is not None:
                fh.close()
        assert not self.near_dup or self._sketched == self.n_converted, "sketch accounting broke"

    # ------------------------------------------------------------------ helpers over the sketches

    def _band(self, b: int):
        return self.np.fromfile(self.dir / f"band{b:02d}.u64", dtype=self.np.uint64)

    def _open_hashes(self):
        np = self.np
        self._offs = np.zeros(self.n_converted + 1, dtype=np.int64)
        np.cumsum(np.frombuffer(self._lens, dtype=np.int32), out=self._offs[1:])
        self._hfd = os.open(self.dir / "shingles.u32", os.O_RDONLY)

    def _hashes(self, c: int):
        s, e = int(self._offs[c]), int(self._offs[c + 1])
        return self.np.frombuffer(os.pread(self._hfd, 4 * (e - s), 4 * s), dtype=self.np.uint32)

    def _jaccard(self, a, b) -> float:
        inter = len(self.np.intersect1d(a, b, assume_unique=True))
        return inter / (len(a) + len(b) - inter)

    # ------------------------------------------------------------------ stage 2: dedup

    def dedup(self) -> dict[str, Any]:
        """Exact then near-duplicate removal. Returns counts; per-row outcomes stay in arrays."""
        self.finish_input()
        np = self.np
        n = self.n_converted
        key = np.frombuffer(bytes(self._exact), dtype=">u8").reshape(n, 2) if n else np.zeros((0, 2), ">u8")
        # 0 kept, 1 exact duplicate, 2 near duplicate, 3 removed by use_alt_lines (not in the data)
        self.status = np.zeros(n, dtype=np.uint8)
        if self.alt_lines:
            self.status[np.frombuffer(bytes(self._alt), dtype=np.uint8) == 2] = 3
        live = np.flatnonzero(self.status == 0)
        lk = key[live]
        order = live[np.lexsort((lk[:, 1], lk[:, 0]))]  # stable: equal keys stay in input order
        ks = key[order]
        new = np.ones(len(order), dtype=bool)
        if len(order) > 1:
            new[1:] = (ks[1:, 0] != ks[:-1, 0]) | (ks[1:, 1] != ks[:-1, 1])
        first = order[np.flatnonzero(new)][np.cumsum(new) - 1]  # first occurrence of each row's key
        self.dup_of = np.full(n, -1, dtype=np.int64)
        self.dup_of[order] = first
        self.status[order[first != order]] = 1
        self.dup_of[self.status != 1] = -1
        self._exact_key = key
        del self._exact
        self.similarity: dict[int, float] = {}
        self.near_unions: list[tuple[int, int]] = []
        near_pairs = 0
        if self.near_dup:
            self._open_hashes()
        if self.external_near:
            for c in self._external:
                if self.status[c] == 0:
                    self.status[c] = 2
        elif self.near_dup:
            near_pairs = self._near_pass()
        counts = {"exact": int((self.status == 1).sum()), "near": int((self.status == 2).sum()),
                  "kept": int((self.status == 0).sum()), "near_pairs": near_pairs}
        for reason, k in (("exact_duplicate", counts["exact"]), ("near_duplicate", counts["near"])):
            if k:
                self.removed_reasons[reason] += k
        self.result["dedup"] = counts
        return counts

    def _buckets(self, items):
        """For the rows ``items`` (c-indices): CSR of the LSH buckets (band, key) each row shares
        with at least one other row: ``(rows_with_buckets, starts, bucket_ids)``."""
        np = self.np
        rows_l, ids_l = [], []
        next_id = 0
        for b in range(self.params[0]):
            k = self._band(b)[items]
            o = np.argsort(k, kind="stable")
            ks = k[o]
            if len(ks) < 2:
                continue
            brk = np.flatnonzero(ks[1:] != ks[:-1]) + 1
            starts = np.concatenate([[0], brk])
            sizes = np.diff(np.concatenate([starts, [len(ks)]]))
            multi = sizes > 1
            if not multi.any():
                continue
            gid = np.repeat(np.arange(len(starts)), sizes)
            sel = multi[gid]
            rows_l.append(o[sel])
            _, dense = np.unique(gid[sel], return_inverse=True)
            ids_l.append(dense.ravel() + next_id)
            next_id += int(multi.sum())
        if not rows_l:
            return np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, np.int64)
        rows = np.concatenate(rows_l)
        ids = np.concatenate(ids_l)
        o = np.argsort(rows, kind="stable")
        rows, ids = rows[o], ids[o]
        uniq, starts = np.unique(rows, return_index=True)
        return uniq, np.concatenate([starts, [len(rows)]]), ids

    def _near_pass(self) -> int:
        """Replays ``NearDupIndex.extend`` (keep-first) over the exact survivors with words."""
        np = self.np
        items = np.flatnonzero((self.status == 0) & (np.frombuffer(self._lens, dtype=np.int32) > 0))
        coll, starts, ids = self._buckets(items)
        # stored (kept) rows per bucket: the first in a flat list, any further ones in a dict
        # (in keep-first mode a bucket rarely holds two kept rows) - ~8 bytes per bucket
        first: list[int] = [-1] * (int(ids.max()) + 1 if len(ids) else 0)
        more: dict[int, list[int]] = {}
        near_pairs = 0
        thr = self.threshold
        bar = self._progress(total=len(coll), desc="near-dup", unit="row")
        for k in range(len(coll)):
            c = int(items[coll[k]])
            bks = ids[starts[k]:starts[k + 1]].tolist()
            cands: set[int] = set()
            for bk in bks:
                f = first[bk]
                if f >= 0:
                    cands.add(f)
                    if bk in more:
                        cands.update(more[bk])
            matches = []
            if cands:
                h = self._hashes(c)
                for cand in cands:
                    j = self._jaccard(h, self._hashes(cand))
                    if j >= thr:
                        matches.append((cand, j))
            if matches:
                matches.sort(key=lambda kj: (-kj[1], kj[0]))  # best first; ties: the earlier row
                if not self.keep_near_dups:
                    self.status[c] = 2
                    self.dup_of[c] = matches[0][0]
                    self.similarity[c] = matches[0][1]
                    bar.update(1)
                    continue
                near_pairs += 1
                self.near_unions.extend((c, cand) for cand, _ in matches)
            for bk in bks:
                if first[bk] < 0:
                    first[bk] = c
                else:
                    more.setdefault(bk, []).append(c)
            bar.update(1)
        bar.close()
        return near_pairs

    # ------------------------------------------------------------------ stage 3: split

    def split(self, ratios: tuple[float, float, float], seed: int, *, group_by: bool = False,
              stratify: bool = False) -> dict[str, Any]:
        """Assign every kept row a split; returns the manifest's split details."""
        np = self.np
        kept = np.flatnonzero(self.status == 0)          # c-indices, input order
        nk = len(kept)
        parent = np.arange(nk, dtype=np.int64)            # over positions in `kept`
        group_missing = None
        if group_by:
            has = np.frombuffer(bytes(self._has_group), dtype=np.uint8)[kept].astype(bool)
            group_missing = int(nk - has.sum())
            g = np.frombuffer(self._group, dtype=np.int64)[kept]
            pos = np.flatnonzero(has)
            if len(pos):
                _, first, inv = np.unique(g[pos], return_index=True, return_inverse=True)
                parent[pos] = pos[first][inv.ravel()]   # the group's first kept row
        if self.near_unions:
            pairs = np.searchsorted(kept, np.array(self.near_unions, dtype=np.int64)).tolist()
            par = parent.tolist()

            def find(a: int) -> int:
                while par[a] != a:
                    par[a] = par[par[a]]
                    a = par[a]
                return a
            for a, b in pairs:
                ra, rb = find(a), find(b)
                if ra != rb:
                    if ra < rb:
                        par[rb] = ra
                    else:
                        par[ra] = rb
            parent = np.array(par, dtype=np.int64)
        root = _roots(parent, np) if nk else parent
        # units ordered by their first row (the union-find root is the smallest member)
        roots, unit_of, sizes = np.unique(root, return_inverse=True, return_counts=True)
        unit_of = unit_of.ravel()
        sizes_l = sizes.tolist()
        rng = random.Random(seed)
        unit_split = np.zeros(len(roots), dtype=np.int8)
        strata_report = None
        if stratify:
            labels = sorted(self._strata, key=lambda s: s)
            rank = np.empty(len(self._strata), dtype=np.int64)
            for r, lab in enumerate(labels):
                rank[self._strata[lab]] = r
            lab_rank = rank[np.frombuffer(self._stratum, dtype=np.int32)[kept]]
            # majority label per unit; ties: the smallest label
            pair, cnt = np.unique(np.stack([unit_of, lab_rank], axis=1), axis=0, return_counts=True)
            o = np.lexsort((pair[:, 1], -cnt, pair[:, 0]))
            pair = pair[o]
            firsts = np.concatenate([[True], pair[1:, 0] != pair[:-1, 0]]) if len(pair) else np.zeros(0, bool)
            unit_label = np.empty(len(roots), dtype=np.int64)
            unit_label[pair[firsts, 0]] = pair[firsts, 1]
            strata_report = {}
            for r, lab in enumerate(labels):
                us = np.flatnonzero(unit_label == r)
                if not len(us):
                    continue
                a = assign_sizes([sizes_l[u] for u in us.tolist()], ratios, rng)
                unit_split[us] = a
                c = Counter()
                for u, s in zip(us.tolist(), a):
                    c[s] += sizes_l[u]
                strata_report[lab] = {SPLIT_NAMES[s]: c.get(s, 0) for s in range(3)}
            if nk and not (unit_split == 0).any():  # never an empty train split
                unit_split[0] = 0
        elif len(roots):
            unit_split[:] = assign_sizes(sizes_l, ratios, rng)
        self.split_of = np.full(self.n_converted, -1, dtype=np.int8)
        self.split_of[kept] = unit_split[unit_of]
        counts = [int((self.split_of == s).sum()) for s in range(3)]
        out = {"units": len(roots), "group_missing": group_missing, "stratify": strata_report, "counts": counts}
        self.result["split"] = out
        return out

    # ------------------------------------------------------------------ stage 4: leakage re-check

    def leakage(self, *, group_by: bool = False) -> dict[str, Any]:
        """Exact / near-duplicate / group leakage across splits, re-checked from the stored keys
        (independently of how the split was made)."""
        np = self.np
        kept = np.flatnonzero(self.split_of >= 0)
        lab = self.split_of[kept].astype(np.int64)
        out: dict[str, Any] = {"exact": self._cross(self._exact_key[kept], lab), "near_dup": None,
                               "checked": ["exact"]}
        if self.near_dup:
            pairs, checked = self._near_across(kept, lab)
            out["near_dup"] = pairs
            out["near_dup_candidates_checked"] = checked
            out["checked"].append("near_dup")
        if group_by:
            has = np.frombuffer(bytes(self._has_group), dtype=np.uint8)[kept].astype(bool)
            g = np.frombuffer(self._group, dtype=np.int64)[kept][has].view(np.uint64)
            out["group"] = self._cross(np.stack([g, np.zeros_like(g)], axis=1), lab[has], pairs=False)
        else:
            out["group"] = None
        return out

    def _cross(self, key, lab, pairs: bool = True) -> int:
        """Keys found in more than one split: the number of split pairs that share a key
        (``pairs``) or the number of such keys."""
        np = self.np
        if not len(lab):
            return 0
        k = np.concatenate([key.astype(np.uint64).reshape(len(lab), -1), lab.astype(np.uint64)[:, None]], axis=1)
        u = np.unique(k, axis=0)
        same = np.concatenate([[False], np.all(u[1:, :-1] == u[:-1, :-1], axis=1)])
        grp = np.cumsum(~same) - 1
        nsplit = np.bincount(grp)
        return int((nsplit * (nsplit - 1) // 2).sum()) if pairs else int((nsplit > 1).sum())

    def _near_across(self, kept, lab) -> tuple[int, int]:
        np = self.np
        items_mask = np.frombuffer(self._lens, dtype=np.int32)[kept] > 0
        items, ilab = kept[items_mask], lab[items_mask]
        cands: set[tuple[int, int]] = set()
        bar = self._progress(total=self.params[0], desc="leakage", unit="band")
        for b in range(self.params[0]):
            k = self._band(b)[items]
            o = np.argsort(k, kind="stable")
            ks = k[o]
            bar.update(1)
            if len(ks) < 2:
                continue
            brk = np.flatnonzero(ks[1:] != ks[:-1]) + 1
            starts = np.concatenate([[0], brk])
            ends = np.concatenate([brk, [len(ks)]])
            for s, e in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist()):
                g = o[s:e]
                gl = ilab[g]
                if (gl == gl[0]).all():
                    continue
                g, gl = g.tolist(), gl.tolist()
                for x in range(len(g)):
                    for y in range(x + 1, len(g)):
                        if gl[x] != gl[y]:
                            a, c = int(items[g[x]]), int(items[g[y]])
                            cands.add((a, c) if a < c else (c, a))
        bar.close()
        found = sum(1 for a, c in cands if self._jaccard(self._hashes(a), self._hashes(c)) >= self.threshold)
        return found, len(cands)

    # ------------------------------------------------------------------ mix + write

    def mix_counts(self) -> tuple[int, dict[Hashable, int]]:
        """(kept rows, {mix key given to add_converted: kept rows with it})."""
        np = self.np
        codes = np.frombuffer(self._mix, dtype=np.int32)[self.split_of >= 0]
        cnt = np.bincount(codes, minlength=len(self._mixes))
        keys = list(self._mixes)
        return int(len(codes)), {keys[i]: int(c) for i, c in enumerate(cnt.tolist()) if c}

    def write(self, folder: Path) -> dict[str, int]:
        """train/validation/test.jsonl and removed.jsonl in ``folder``, in input order, in one scan
        of the store. Returns rows written per file."""
        np = self.np
        n_rows = self.n_rows
        crow = np.full(n_rows, -1, dtype=np.int64)  # row position -> c-index (-1: not converted)
        cpos = np.frombuffer(self._cpos, dtype=np.int64)
        crow[cpos] = np.arange(len(cpos))
        counts = dict.fromkeys([*FILES, "removed.jsonl"], 0)
        get_ref = self.db.cursor()
        bar = self._progress(total=n_rows, desc="write", unit="row")
        with jsonl.atomic_open(folder / FILES[0], "w", force=True) as f0, \
                jsonl.atomic_open(folder / FILES[1], "w", force=True) as f1, \
                jsonl.atomic_open(folder / FILES[2], "w", force=True) as f2, \
                jsonl.atomic_open(folder / "removed.jsonl", "w", force=True) as fr:
            outs = (f0, f1, f2)
            for pos, ref, body, alt in self.db.execute("SELECT pos, ref, body, alt FROM rows ORDER BY pos"):
                bar.update(1)
                c = crow[pos]
                if c < 0 or self.status[c] == 3:
                    fr.write((body if c < 0 else alt) + "\n")
                    counts["removed.jsonl"] += 1
                    continue
                if self.alt_lines and alt is not None:
                    body = alt
                s = int(self.split_of[c])
                if s >= 0:
                    outs[s].write(body + "\n")
                    counts[FILES[s]] += 1
                    continue
                if self.dup_of[c] < 0:  # removed by the external near-dup list
                    fr.write(f'{{"reason": "near_duplicate", {ref[1:-1]}, {self._external[int(c)]}, '
                             f'"example": {body}}}\n')
                    counts["removed.jsonl"] += 1
                    continue
                first = int(cpos[self.dup_of[c]])
                dref = get_ref.execute("SELECT ref FROM rows WHERE pos = ?", (first,)).fetchone()[0]
                if self.status[c] == 1:
                    fr.write(f'{{"reason": "exact_duplicate", {ref[1:-1]}, "duplicate_of": {dref}, '
                             f'"example": {body}}}\n')
                else:
                    sim = json.dumps(round(self.similarity[int(c)], 4))
                    fr.write(f'{{"reason": "near_duplicate", {ref[1:-1]}, "duplicate_of": {dref}, '
                             f'"similarity": {sim}, "example": {body}}}\n')
                counts["removed.jsonl"] += 1
        bar.close()
        return counts

    # ------------------------------------------------------------------ cleanup

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        for fh in [self._hashes_fh, *self._band_fhs]:
            if fh is not None and not fh.closed:
                fh.close()
        if getattr(self, "_hfd", None) is not None:
            os.close(self._hfd)
            self._hfd = None
        self.db.close()
        shutil.rmtree(self._own_dir, ignore_errors=True)

    def __enter__(self) -> "SpillEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


