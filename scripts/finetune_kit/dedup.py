"""Near-duplicate detection: the one implementation used by prepare_data and augment_data.

"Near duplicate" means: the exact Jaccard similarity of the two texts' word 3-shingle sets is
at least the threshold. How it is found:

- shingles: NFKC, lower-cased ``\\w+`` words; every run of 3 words is one shingle (a text of
  1-2 words is one shingle). :func:`shingles` is the reference definition; the index keeps
  each text's shingles as a sorted unique array of 32-bit hashes (crc32 of every word,
  combined per position), computed for many texts at once with numpy;
- MinHash: exactly datasketch's ``affine32`` scheme (``datasketch.MinHash(num_perm, seed=1,
  scheme="affine32")`` fed those hashes gives the same values), vectorised over many texts;
- candidates: ``datasketch.MinHashLSH`` over ``datasketch.LeanMinHash`` signatures, banded by
  :func:`lsh_params` (0.85 -> 16 bands x 8 rows);
- every candidate is verified with the *exact* Jaccard of the hashed shingle sets (the MinHash
  estimate alone has a standard error of ~0.03 at 128 permutations).

Public API: :class:`NearDupIndex` (``add``, ``query``, ``check``, the bulk ``extend`` and
``pairs_across``), :func:`shingles`, :func:`lsh_params`, and for the disk-backed engine
(``finetune_kit.spill``) :func:`sketch_chunk` (shingle hashes + 64-bit LSH band keys of many texts,
run in worker processes). Texts without any word are never near duplicates of anything (``add``
returns False).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import defaultdict
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from .errors import require

NUM_PERM = 128
SHINGLE = 3
SEED = 1

_WORD = re.compile(r"\w+")


def shingles(text: str, k: int = SHINGLE) -> set[bytes]:
    """Word k-shingles of a text (NFKC, lower-cased ``\\w+`` words); < k words: the whole text.
    The reference definition (the index uses the same sets, hashed)."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    if not words:
        return set()
    if len(words) < k:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i:i + k]).encode("utf-8") for i in range(len(words) - k + 1)}


def lsh_params(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows): the most selective banding that still makes a pair at the threshold a
    candidate with probability >= 0.99 (0.85 -> 16 bands x 8 rows: p = 0.994)."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1 - (1 - threshold ** r) ** b >= 0.99:
            return b, r
    return num_perm, 1


def _identity(x):
    return x


class _Sketcher:
    """Bulk shingle hashing and datasketch-identical MinHash signatures (numpy)."""

    def __init__(self, num_perm: int = NUM_PERM, seed: int = SEED):
        ds = require("datasketch", "for near-duplicate detection")
        import numpy as np

        self.ds, self.np = ds, np
        self.num_perm, self.seed = num_perm, seed
        base = ds.MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity, scheme="affine32")
        self.scheme = base.scheme
        self.a = np.asarray(base.permutations[0], dtype=np.uint32)
        self.b = np.asarray(base.permutations[1], dtype=np.uint32)

    def shingle_hashes(self, texts: Sequence[str]) -> list:
        """Sorted unique uint32 hashes of the word 3-shingles of each text (None: no words).
        Word hashes: crc32; a shingle's hash combines its three word hashes; texts of 1-2 words
        hash all their words as one shingle (FNV-1a over the word hashes)."""
        np = self.np
        words: list[int] = []
        lens: list[int] = []
        for t in texts:
            ws = _WORD.findall(unicodedata.normalize("NFKC", t).lower())
            words.extend(map(zlib.crc32, map(str.encode, ws)))
            lens.append(len(ws))
        n = len(texts)
        out: list = [None] * n
        if not words:
            return out
        w = np.array(words, dtype=np.uint32)
        ln = np.array(lens, dtype=np.int64)
        offs = np.concatenate([[0], np.cumsum(ln)])
        with np.errstate(over="ignore"):
            h = (w[:-2] * np.uint32(0x9E3779B1) + w[1:-1]) * np.uint32(0x85EBCA77) + w[2:] if len(w) >= 3 \
                else np.empty(0, dtype=np.uint32)
            doc = np.repeat(np.arange(n, dtype=np.int64), ln)[:len(h)]
            pos = np.arange(len(h), dtype=np.int64)
            valid = (pos - offs[doc]) <= (ln[doc] - SHINGLE)
            key = (doc[valid].astype(np.uint64) << np.uint64(32)) | h[valid].astype(np.uint64)
            short = np.nonzero((ln > 0) & (ln < SHINGLE))[0]
            if len(short):
                extra = []
                for d in short:
                    x = np.uint32(0x811C9DC5)
                    for v in w[offs[d]:offs[d + 1]]:
                        x = (x ^ v) * np.uint32(0x01000193)
                    extra.append((int(d) << 32) | int(x))
                key = np.concatenate([key, np.array(extra, dtype=np.uint64)])
        key.sort()  # sort-based unique (numpy's hash-based np.unique is slower here)
        keep = np.empty(len(key), dtype=bool)
        keep[:1] = True
        np.not_equal(key[1:], key[:-1], out=keep[1:])
        u = key[keep]
        docs_of = (u >> np.uint64(32)).astype(np.int64)
        vals = (u & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        bounds = np.searchsorted(docs_of, np.arange(n + 1))
        for d in range(n):
            if bounds[d + 1] > bounds[d]:
                out[d] = vals[bounds[d]:bounds[d + 1]]
        return out

    def _fmix32(self, h):
        np = self.np
        with np.errstate(over="ignore"):
            h = h ^ (h >> np.uint32(16))
            h = h * np.uint32(0x85EBCA6B)
            h = h ^ (h >> np.uint32(13))
            h = h * np.uint32(0xC2B2AE35)
            return h ^ (h >> np.uint32(16))

    def matrix(self, hashes: Sequence, batch_rows: int = 8192):
        """(n, num_perm) uint32 MinHash values of non-empty shingle-hash arrays; equal to
        ``datasketch.MinHash(num_perm, seed, scheme="affine32")`` fed the same hashes."""
        np = self.np
        n = len(hashes)
        out = np.empty((n, self.num_perm), dtype=np.uint32)
        if not n:
            return out
        lens = np.array([len(h) for h in hashes], dtype=np.int64)
        offs = np.concatenate([[0], np.cumsum(lens)])
        allh = self._fmix32(np.concatenate(hashes))
        buf = np.empty((max(batch_rows, int(lens.max())), self.num_perm), dtype=np.uint32)
        i = 0
        with np.errstate(over="ignore"):
            while i < n:
                j = max(i + 1, min(n, int(np.searchsorted(offs, offs[i] + batch_rows, side="right")) - 1))
                s, e = offs[i], offs[j]
                p = buf[:e - s]
                np.multiply(allh[s:e, None], self.a[None, :], out=p)
                np.add(p, self.b[None, :], out=p)
                out[i:j] = np.minimum.reduceat(p, offs[i:j] - s, axis=0)
                i = j
        return out

    def lean(self, row):
        return self.ds.LeanMinHash(seed=self.seed, hashvalues=row, scheme=self.scheme)

    def jaccard(self, a, b) -> float:
        inter = len(self.np.intersect1d(a, b, assume_unique=True))
        return inter / (len(a) + len(b) - inter)

    def band_groups(self, m, bands: tuple[int, int]):
        """Per LSH band: (group id of every row, rows per group) - rows with equal band values
        share a group id."""
        np = self.np
        b, r = bands
        for band in range(b):
            sl = np.ascontiguousarray(m[:, band * r:(band + 1) * r]).view(np.dtype((np.void, 4 * r))).ravel()
            _, inv, cnt = np.unique(sl, return_inverse=True, return_counts=True)
            yield inv.ravel(), cnt


_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def band_keys(matrix, bands: tuple[int, int]):
    """(n, bands) uint64: one key per LSH band of each signature row. Two rows share a band key
    when their ``rows`` MinHash values in that band are equal (the banding datasketch's
    MinHashLSH does with the raw bytes); the 32 bytes of a band are folded into 64 bits with
    splitmix64-style mixing, so unequal bands collide with probability ~2^-64 per pair - and
    every candidate is verified with the exact Jaccard anyway, so a collision can only cost
    one extra comparison, never a wrong removal."""
    import numpy as np

    b, r = bands
    n = matrix.shape[0]
    out = np.empty((n, b), dtype=np.uint64)
    m = matrix.astype(np.uint64)
    with np.errstate(over="ignore"):
        for band in range(b):
            h = np.full(n, np.uint64(0x9E3779B97F4A7C15 ^ band), dtype=np.uint64)
            for c in range(band * r, (band + 1) * r):
                h ^= m[:, c]
                h *= np.uint64(_MIX1)
                h ^= h >> np.uint64(31)
            h *= np.uint64(_MIX2)
            h ^= h >> np.uint64(29)
            out[:, band] = h
    return out


_WORKER_SKETCHER: dict[int, _Sketcher] = {}


def sketch_chunk(texts: Sequence[str], threshold: float, num_perm: int = NUM_PERM):
    """Shingle hashes and LSH band keys of many texts, for the disk-backed engine (picklable, runs
    in worker processes): ``(lens, hashes, keys)`` - ``lens[i]`` the number of unique shingle
    hashes of text i (0: no words, never a near duplicate), ``hashes`` all texts' sorted unique
    uint32 shingle hashes concatenated, ``keys`` (n, bands) uint64 from :func:`band_keys` over
    the datasketch-identical MinHash signatures (rows of texts without words are 0)."""
    import numpy as np

    sk = _WORKER_SKETCHER.get(num_perm)
    if sk is None:
        sk = _WORKER_SKETCHER[num_perm] = _Sketcher(num_perm)
    hs = sk.shingle_hashes(texts)
    lens = np.array([0 if h is None else len(h) for h in hs], dtype=np.int32)
    nonempty = [h for h in hs if h is not None]
    params = lsh_params(threshold, num_perm)
    keys = np.zeros((len(texts), params[0]), dtype=np.uint64)
    if nonempty:
        keys[lens > 0] = band_keys(sk.matrix(nonempty), params)
        flat = np.concatenate(nonempty)
    else:
        flat = np.empty(0, dtype=np.uint32)
    return lens, flat, keys


class NearDupIndex:
    """An index of texts that answers "which stored texts are near duplicates of this one?".

    ``add(key, text)`` stores a text, ``query(text)`` lists ``(key, jaccard)`` of the stored texts
    with a Jaccard >= ``threshold`` (best first; ties: the earlier added first), ``check(text)``
    returns the best such key or None. ``extend(items)`` is the bulk path (signatures computed for
    all items at once, keep-first de-duplication in item order); ``pairs_across(labels)`` lists
    the near-duplicate pairs whose labels differ (a leakage check across splits). Keys are any
    hashable values.
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = NUM_PERM):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.params = lsh_params(threshold, num_perm)
        self._sk = _Sketcher(num_perm)
        self._lsh = self._sk.ds.MinHashLSH(threshold=threshold, num_perm=num_perm, params=self.params)
        self._hashes: dict[Hashable, Any] = {}   # key -> sorted unique uint32 shingle hashes
        self._rows: dict[Hashable, Any] = {}     # key -> MinHash signature (uint32 row)
        self._order: dict[Hashable, int] = {}    # key -> insertion rank (tie-break)
        self._pending: list[Hashable] = []       # stored but not yet in the LSH (see extend)

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._hashes

    # ------------------------------------------------------------ one text at a time

    def add(self, key: Hashable, text: str) -> bool:
        """Store ``text`` under ``key`` (False, and nothing stored, when it has no words or the key
        is already stored)."""
        if key in self._hashes:
            return False
        h = self._sk.shingle_hashes([text])[0]
        if h is None:
            return False
        self._flush()
        row = self._sk.matrix([h])[0]
        self._store(key, h, row)
        self._lsh.insert(key, self._sk.lean(row), check_duplication=False)
        return True

    def query(self, text: str) -> list[tuple[Hashable, float]]:
        """``(key, exact Jaccard)`` of the stored texts at or above the threshold, best first."""
        h = self._sk.shingle_hashes([text])[0]
        if h is None or not self._hashes:
            return []
        self._flush()
        return self._matches(h, self._sk.matrix([h])[0])

    def check(self, text: str) -> Hashable | None:
        """The key of the stored text ``text`` is most similar to, if it is a near duplicate."""
        m = self.query(text)
        return m[0][0] if m else None

    def similarity(self, key_a: Hashable, key_b: Hashable) -> float:
        """Exact Jaccard of two stored texts' shingle sets."""
        return self._sk.jaccard(self._hashes[key_a], self._hashes[key_b])

    # ------------------------------------------------------------ bulk

    def extend(self, items: Iterable[tuple[Hashable, str]], *, drop_duplicates: bool = True,
               progress: Callable[[Iterable], Iterable] | None = None) -> dict[Hashable, list[tuple[Hashable, float]]]:
        """Add many texts in order; returns ``{key: matches}`` (``query`` results at the time the
        item came, i.e. against the index and the earlier items) for the items that matched.

        ``drop_duplicates``: an item that matches is not stored (keep-first de-duplication), else
        every item is stored (e.g. to cluster near duplicates). Equal to calling ``query`` + ``add``
        item by item, but signatures are computed in bulk and items that share no LSH band value
        with any other text skip the LSH (they cannot be candidates); they are inserted lazily
        if the index is used again."""
        np = self._sk.np
        items = [(k, t) for k, t in items if k not in self._hashes]
        hashes = self._sk.shingle_hashes([t for _, t in items])
        todo = [(k, h) for (k, _), h in zip(items, hashes) if h is not None]
        out: dict[Hashable, list[tuple[Hashable, float]]] = {}
        if not todo:
            return out
        self._flush()
        mat = self._sk.matrix([h for _, h in todo])
        old = len(self._rows)
        full = np.vstack([np.stack(list(self._rows.values())), mat]) if old else mat
        collides = np.zeros(len(full), dtype=bool)
        for inv, cnt in self._sk.band_groups(full, self.params):
            collides |= cnt[inv] > 1
        collides = collides[old:]
        seen: set[Hashable] = set()
        it = progress(range(len(todo))) if progress else range(len(todo))
        for i in it:
            key, h = todo[i]
            if key in seen:  # the same key twice in one call: the first wins
                continue
            seen.add(key)
            row = mat[i]
            if not collides[i]:  # no band shared with any other text: cannot be a candidate
                self._store(key, h, row)
                self._pending.append(key)
                continue
            matches = self._matches(h, row)
            if matches:
                out[key] = matches
                if drop_duplicates:
                    continue
            self._store(key, h, row)
            self._lsh.insert(key, self._sk.lean(row), check_duplication=False)
        return out

    def pairs_across(self, label_of: Mapping[Hashable, Hashable]) -> tuple[list[tuple[Hashable, Hashable, float]], int]:
        """Near-duplicate pairs among the stored keys in ``label_of`` whose labels differ:
        ``([(key_a, key_b, jaccard)], candidate pairs checked)``. Independent of the LSH index:
        the stored signatures are re-banded with numpy and every candidate pair is verified with
        the exact Jaccard."""
        np = self._sk.np
        keys = [k for k in label_of if k in self._rows]
        if not keys:
            return [], 0
        m = np.stack([self._rows[k] for k in keys])
        lab = [label_of[k] for k in keys]
        cands: set[tuple[int, int]] = set()
        for inv, cnt in self._sk.band_groups(m, self.params):
            multi = np.nonzero(cnt[inv] > 1)[0]
            groups: dict[int, list[int]] = defaultdict(list)
            for pos in multi:
                groups[int(inv[pos])].append(int(pos))
            for g in groups.values():
                if len({lab[p] for p in g}) < 2:
                    continue
                for x in range(len(g)):
                    for y in range(x + 1, len(g)):
                        if lab[g[x]] != lab[g[y]]:
                            cands.add((g[x], g[y]))
        pairs = []
        for x, y in sorted(cands):
            j = self.similarity(keys[x], keys[y])
            if j >= self.threshold:
                pairs.append((keys[x], keys[y], j))
        return pairs, len(cands)

    # ------------------------------------------------------------ internals

    def _store(self, key: Hashable, h, row) -> None:
        self._hashes[key] = h
        self._rows[key] = row
        self._order[key] = len(self._order)

    def _flush(self) -> None:
        for key in self._pending:
            self._lsh.insert(key, self._sk.lean(self._rows[key]), check_duplication=False)
        self._pending.clear()

    def _matches(self, h, row) -> list[tuple[Hashable, float]]:
        out = []
        for cand in self._lsh.query(self._sk.lean(row)):
            j = self._sk.jaccard(h, self._hashes[cand])
            if j >= self.threshold:
                out.append((cand, j))
        out.sort(key=lambda kj: (-kj[1], self._order[kj[0]]))
        return out
