"""finetune_kit.dedup: the near-duplicate index shared by prepare_data and augment_data."""

from __future__ import annotations

import random

import pytest

from finetune_kit import dedup

ds = pytest.importorskip("datasketch")
np = pytest.importorskip("numpy")


def _jaccard(a: str, b: str) -> float:
    sa, sb = dedup.shingles(a), dedup.shingles(b)
    return len(sa & sb) / len(sa | sb)


def _texts(n: int, seed: int = 3) -> list[str]:
    """n unrelated texts plus edited copies (1-3 words replaced) of random earlier ones."""
    rnd = random.Random(seed)
    vocab = [f"w{i}" for i in range(400)]
    out = [" ".join(rnd.choices(vocab, k=rnd.randint(20, 40))) for _ in range(n)]
    for _ in range(n // 2):
        words = out[rnd.randrange(len(out))].split()
        for _ in range(rnd.choice([1, 1, 2, 3])):
            words[rnd.randrange(len(words))] = rnd.choice(["zzz", "yyy", "xxx"])
        out.insert(rnd.randrange(len(out) // 2, len(out) + 1), " ".join(words))
    return out


def test_bulk_minhash_equals_datasketch_and_jaccard_is_exact():
    sk = dedup._Sketcher()
    texts = ["the quick brown fox jumps over the lazy dog again and again",
             "The QUICK brown fox jumps over the lazy dog again and again!",
             "completely unrelated words about harbors and silver engines", "two words", "", "x"]
    hashes = sk.shingle_hashes(texts)
    assert hashes[4] is None and len(hashes[3]) == len(hashes[5]) == 1
    for t, h in zip(texts, hashes):                     # same sets as the reference shingles
        assert (h is None and not dedup.shingles(t)) or len(h) == len(dedup.shingles(t))
    assert np.array_equal(hashes[0], hashes[1])          # case/punctuation do not change word shingles
    nonempty = [h for h in hashes if h is not None]
    m = sk.matrix(nonempty, batch_rows=3)                # tiny batches exercise the chunking
    for h, row in zip(nonempty, m):                      # bit-identical with datasketch's own MinHash
        ref = ds.MinHash(num_perm=dedup.NUM_PERM, seed=1, hashfunc=lambda x: x, scheme="affine32")
        ref.update_batch(h.tolist())
        assert np.array_equal(ref.hashvalues, row)
    bulk = ds.MinHash.bulk([h.tolist() for h in nonempty], num_perm=dedup.NUM_PERM, seed=1,
                           hashfunc=lambda x: x, scheme="affine32")
    assert all(np.array_equal(b.hashvalues, row) for b, row in zip(bulk, m))
    a, b = dedup.shingles(texts[0]), dedup.shingles(texts[2])
    assert sk.jaccard(hashes[0], hashes[2]) == pytest.approx(len(a & b) / len(a | b))
    assert dedup.lsh_params(0.85) == (16, 8) and dedup.lsh_params(0.5)[1] <= 3


def test_index_add_query_check():
    idx = dedup.NearDupIndex(0.85)
    base = " ".join(f"word{i}" for i in range(60))
    assert idx.add("a", base) and not idx.add("a", base)  # a key is stored once
    assert not idx.add("empty", "  ?! ") and "empty" not in idx and len(idx) == 1
    near = base.replace("word30", "other")               # 3 of 58 shingles differ
    (key, j), = idx.query(near)
    assert key == "a" and j == pytest.approx(_jaccard(base, near)) and j >= 0.85
    assert idx.check(base.upper() + " !") == "a"          # same word shingles: J = 1
    assert idx.check(" ".join(f"term{i}" for i in range(60))) is None
    assert idx.check("") is None
    # best first; equal similarity: the earlier added key first
    idx.add("b", near)
    assert [k for k, _ in idx.query(near)] == ["b", "a"]
    idx.add("c", near + " ")
    assert [k for k, _ in idx.query(near)][:2] == ["b", "c"]
    with pytest.raises(ValueError):
        dedup.NearDupIndex(0)


@pytest.mark.parametrize("drop", [True, False])
def test_extend_equals_one_at_a_time_and_brute_force(drop):
    texts = _texts(60)
    thr = 0.8
    bulk = dedup.NearDupIndex(thr)
    got = bulk.extend(enumerate(texts), drop_duplicates=drop)
    one = dedup.NearDupIndex(thr)
    want = {}
    for k, t in enumerate(texts):
        m = one.query(t)
        if m:
            want[k] = m
        if not (m and drop):
            one.add(k, t)
    assert got == want and len(bulk) == len(one)
    # brute force over the exact shingle sets (keep-first when dropping)
    stored: list[int] = []
    expect = {}
    for k, t in enumerate(texts):
        hits = [s for s in stored if _jaccard(t, texts[s]) >= thr]
        if hits:
            expect[k] = set(hits)
        if not (hits and drop):
            stored.append(k)
    assert expect and {k: {c for c, _ in v} for k, v in got.items()} == expect


def test_extend_then_incremental_use_sees_every_stored_text():
    """Items that skipped the LSH during extend (no shared band) are still found later."""
    idx = dedup.NearDupIndex(0.85)
    texts = [f"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu {i} nu xi omicron pi"
             for i in range(3)] + ["one two three four five six seven eight nine ten eleven twelve"]
    assert idx.extend(enumerate(texts)) == {}
    assert idx.check("one two three four five six seven eight nine ten eleven twelve!") == 3
    existing = "one two three four five six seven eight nine ten eleven twelve thirteen"
    assert idx.extend([("new", existing)]) == {"new": [(3, pytest.approx(_jaccard(texts[3], existing)))]}


def test_pairs_across_labels():
    texts = _texts(40, seed=11)
    idx = dedup.NearDupIndex(0.8)
    idx.extend(enumerate(texts), drop_duplicates=False)
    labels = {k: k % 3 for k in range(len(texts))}
    pairs, checked = idx.pairs_across(labels)
    expect = {(a, b) for a in range(len(texts)) for b in range(a + 1, len(texts))
              if labels[a] != labels[b] and _jaccard(texts[a], texts[b]) >= 0.8}
    assert expect and {tuple(sorted((a, b))) for a, b, _ in pairs} == expect and checked >= len(expect)
    assert all(j == pytest.approx(_jaccard(texts[a], texts[b])) for a, b, j in pairs)
    same, _ = idx.pairs_across({k: 0 for k in range(len(texts))})
    assert same == []


def test_sketch_chunk_is_the_index_hashing_in_one_picklable_call():
    """The disk engine's worker call returns the same shingle hashes as the index and one band key
    per LSH band of the same signatures (rows without words: length 0, key 0)."""
    texts = _texts(30) + ["", "?!"]
    lens, flat, keys = dedup.sketch_chunk(texts, 0.85)
    sk = dedup._Sketcher()
    hs = sk.shingle_hashes(texts)
    offs = np.concatenate([[0], np.cumsum(lens)])
    for i, h in enumerate(hs):
        if h is None:
            assert lens[i] == 0 and not keys[i].any()
        else:
            assert np.array_equal(flat[offs[i]:offs[i + 1]], h)
    m = sk.matrix([h for h in hs if h is not None])
    assert np.array_equal(keys[lens > 0], dedup.band_keys(m, dedup.lsh_params(0.85)))
    assert keys.shape == (len(texts), 16) and keys.dtype == np.uint64
