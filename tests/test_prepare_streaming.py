"""prepare_data's disk-backed engine (spill.py) gives byte-identical outputs to the in-memory path.

The input mixes everything the dedup/split/write stages handle: exact duplicates (case and
whitespace variants), near duplicates of several edit sizes (some below the threshold), chains of
near duplicates (C near B near A), rows without words, unreadable lines, unconvertible rows,
groups, strata and tags. Both engines run on it with the same seed; every output file must be
byte-identical and the reported counts, split details, leakage and mix equal. The disk engine is
run with tiny MinHash chunks and a real worker process so the process-pool path is exercised.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from finetune_kit import prepare as prep
from finetune_kit import spill

pytest.importorskip("datasketch")
np = pytest.importorskip("numpy")

FILES = ("train.jsonl", "validation.jsonl", "test.jsonl", "removed.jsonl")


def _chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _corpus(n: int, seed: int = 5) -> list:
    rnd = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)] + ["the", "a", "of", "and", "to"] * 20
    base = []
    for i in range(n):
        q = " ".join(rnd.choices(vocab, k=rnd.randint(6, 14))) + "?"
        a = " ".join(rnd.choices(vocab, k=rnd.randint(18, 40))) + "."
        row = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
               "metadata": {"user": f"u{rnd.randrange(n // 6)}", "lang": rnd.choice(["en", "de", "fr"]),
                            "tags": rnd.sample(["edge", "billing", "tools"], rnd.randint(0, 2))}}
        if i % 17 == 0:
            row["metadata"].pop("user")                       # missing group value
        if i % 23 == 0:
            row["messages"].insert(0, {"role": "system", "content": "You are terse."})
        base.append(row)
    rows: list = list(base)
    for _ in range(n // 3):
        r = json.loads(json.dumps(rnd.choice(base)))
        words = r["messages"][1]["content"].split()
        kind = rnd.choice(["case", "one", "two", "append", "chain", "four"])
        if kind == "case":
            r["messages"][1]["content"] = "  " + r["messages"][1]["content"].upper()
        elif kind in ("one", "two", "four"):
            for _ in range({"one": 1, "two": 2, "four": 4}[kind]):
                words[rnd.randrange(len(words))] = rnd.choice(vocab)
            r["messages"][1]["content"] = " ".join(words)
        elif kind == "append":
            r["messages"][1]["content"] += " and one more"
        else:                                                  # a copy of a copy (chains)
            r = json.loads(json.dumps(rows[rnd.randrange(len(rows))]))
            r["messages"][1]["content"] += " x"
        rows.insert(rnd.randrange(len(rows) + 1), r)
    for t in range(4):                     # ties: C is equally similar to the kept rows A and B
        core = " ".join(rnd.choices(vocab[:300], k=40))
        a, b = core + " pa qa ra sa", core + " pb qb rb sb"     # J(A, B) = 38/46 < 0.85
        for text in (b, a) if t % 2 else (a, b):
            rows.insert(rnd.randrange(len(rows) + 1), _chat(f"tie {t}", text))
        rows.append(_chat(f"tie {t}", core))                    # J(C, A) = J(C, B) = 38/42
    rows.insert(5, "{not json")
    rows.insert(9, {"messages": [{"role": "wizard", "content": "hi"}]})
    rows.insert(11, {"unknown": 1})
    rows.insert(13, {"messages": [{"role": "user", "content": "?!"}, {"role": "assistant", "content": "..."}]})
    rows.insert(14, {"messages": [{"role": "user", "content": "?!"}, {"role": "assistant", "content": "... "}]})
    return rows


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _run(src: Path, out: Path, engine: str, validate: bool = False, **kw) -> dict:
    opts = prep.Options(inputs=[str(src)], output_dir=str(out), engine=engine, validate=validate, **kw)
    data = prep.prepare(opts).data
    doc = {k: v for k, v in data.items() if k not in ("timings", "seconds", "output_dir", "files")} | \
        {"files": {k: {"rows": v["rows"], "sha256": v["sha256"]} for k, v in data["files"].items()}}
    return json.loads(json.dumps(doc).replace(str(out), "<out>"))   # the validator names the output folder


CASES = {
    "default": {},
    "group+stratify+tags": {"group_by": "user", "stratify": "lang", "tag_field": "tags", "seed": 7},
    "keep-near-dups+group": {"keep_near_dups": True, "group_by": "metadata.user", "split": (0.6, 0.2, 0.2)},
    "exact-only": {"near_dup": False, "stratify": "lang"},
    "threshold-0.7": {"near_dup_threshold": 0.7, "seed": 1},
}


@pytest.mark.parametrize("case", list(CASES))
def test_disk_engine_identical_to_in_memory(tmp_path, monkeypatch, case):
    monkeypatch.setattr(spill, "CHUNK_ROWS", 97)     # many MinHash jobs, in a worker process
    src = _write(tmp_path / "in.jsonl", _corpus(600))
    before = src.read_bytes()
    mem = _run(src, tmp_path / "mem", "memory", **CASES[case])
    disk = _run(src, tmp_path / "disk", "disk", workers=1, **CASES[case])
    assert src.read_bytes() == before                            # the input is never modified
    for name in FILES:                                           # byte-identical outputs
        assert (tmp_path / "disk" / name).read_bytes() == (tmp_path / "mem" / name).read_bytes(), name
    assert disk == mem
    c = disk["counts"]
    assert c["exact_duplicates"] > 0 and c["unconvertible"] >= 3
    if CASES[case].get("near_dup", True) and not CASES[case].get("keep_near_dups"):
        assert c["near_duplicates"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepare-spill-")]  # scratch removed


# ------------------------------------------------------------------ issue 12 features in both engines

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "prepare"))
import formats as F  # noqa: E402
import openclaw_channels as channels  # noqa: E402


def _both(tmp_path: Path, monkeypatch, src: Path, **kw) -> tuple[dict, dict]:
    """Both engines on one input (tiny MinHash chunks, a real worker); outputs byte-identical,
    reports equal; returns (memory, disk) reports."""
    monkeypatch.setattr(spill, "CHUNK_ROWS", 13)
    mem = _run(src, tmp_path / "mem", "memory", validate=True, **kw)
    disk = _run(src, tmp_path / "disk", "disk", validate=True, workers=1, **kw)
    for name in (*FILES, "manifest.json"):
        assert (tmp_path / "disk" / name).read_bytes() == (tmp_path / "mem" / name).read_bytes(), name
    assert disk == mem
    return mem, disk


def _lines(folder: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (folder / name).read_text(encoding="utf-8").splitlines()]


def _pref(rnd: random.Random, i: int, vocab: list[str]) -> dict:
    """One preference row in one of the public shapes (formats.py), content varied by ``i``."""
    q = f"q{i} " + " ".join(rnd.choices(vocab, k=8)) + "?"
    good, bad = " ".join(rnd.choices(vocab, k=20)) + ".", " ".join(rnd.choices(vocab, k=12)) + "."
    shape = i % 4
    if shape == 0:
        row = json.loads(json.dumps(F.PREF_OPENAI))
        row["input"]["messages"][0]["content"] = q
        row["preferred_output"][0]["content"], row["non_preferred_output"][0]["content"] = good, bad
    elif shape == 1:
        row = json.loads(json.dumps(F.PREF_CHOSEN_MESSAGES))
        for side, text in (("chosen", good), ("rejected", bad)):
            row[side]["messages"][1]["content"], row[side]["messages"][2]["content"] = q, text
    elif shape == 2:
        row = {"prompt": q, "chosen": good, "rejected": bad}
    else:
        row = json.loads(json.dumps(F.PREF_TRL_CONVERSATIONAL))
        row["prompt"][0]["content"], row["chosen"][0]["content"], row["rejected"][0]["content"] = q, good, bad
    row["metadata"] = {"user": f"u{i % 7}"}
    return row


def _pref_corpus(n: int, seed: int = 3) -> list:
    rnd = random.Random(seed)
    vocab = [f"p{i}" for i in range(200)]
    rows: list = [_pref(rnd, i, vocab) for i in range(n)]
    for k in range(0, n, 9):                        # exact duplicates of the preferred side
        dup = json.loads(json.dumps(rows[k]))
        rows.insert(rnd.randrange(len(rows) + 1), dup)
    for k in range(4, n, 11):                       # near duplicates: the preferred answer's last word changed
        nd = json.loads(json.dumps(rows[k]))
        side = nd.get("preferred_output") or nd["chosen"]
        holder = side["messages"][-1] if isinstance(side, dict) else side[-1] if isinstance(side, list) else nd
        key = "chosen" if holder is nd else "content"
        holder[key] = holder[key].rsplit(" ", 1)[0] + " changed."
        rows.insert(rnd.randrange(len(rows) + 1), nd)
    rows.insert(3, F.PREF_TRL_IMPLICIT_TEXT)          # no prompt: unconvertible, said
    rows.insert(7, "{not json")
    return rows


@pytest.mark.parametrize("kw", [{}, {"system": "Answer in one line.", "group_by": "user", "seed": 4}])
def test_preference_lines_identical_in_both_engines(tmp_path, monkeypatch, kw):
    src = _write(tmp_path / "pref.jsonl", _pref_corpus(90))
    mem, _ = _both(tmp_path, monkeypatch, src, min_examples=1, **kw)
    train = _lines(tmp_path / "disk", "train.jsonl")
    assert train and all("preferred_output" in r and "messages" not in r for r in train)   # preference lines
    if kw.get("system"):
        assert all(r["input"]["messages"][0] == {"role": "system", "content": kw["system"]} for r in train)
    dups = [r for r in _lines(tmp_path / "disk", "removed.jsonl") if r["reason"].endswith("duplicate")]
    assert dups and all("preferred_output" in r["example"] for r in dups)  # removed copies as written
    c = mem["counts"]
    assert c["exact_duplicates"] > 0 and c["near_duplicates"] > 0 and c["unconvertible"] == 2
    assert mem["normalisation"]["preference_lines_kept"] == c["converted"] and mem["validation"]["valid"]


def test_invalid_preference_line_leaves_the_data_in_both_engines(tmp_path, monkeypatch):
    """A preference row whose final line fails the parser becomes an unconvertible row only once
    the run writes preference lines - decided after the whole input in the disk engine."""
    real = prep.preference_line

    def strict(r, opts):
        if "q5 " in json.dumps(r.pref) or "q12 " in json.dumps(r.pref):
            return None, {"reason": "unconvertible", "code": "test_rejected", "detail": "rejected by the test"}
        return real(r, opts)
    monkeypatch.setattr(prep, "preference_line", strict)
    src = _write(tmp_path / "pref.jsonl", _pref_corpus(40, seed=8))
    mem, _ = _both(tmp_path, monkeypatch, src, min_examples=1)
    assert mem["removed_codes"].get("test_rejected", 0) >= 2
    assert mem["normalisation"]["preference_lines_kept"] == mem["counts"]["converted"]


def test_mixed_chat_and_preference_identical_in_both_engines(tmp_path, monkeypatch):
    prefs = _pref_corpus(30, seed=4)
    chats = F.chat_rows(60)
    rows = [x for pair in zip(chats, prefs) for x in pair] + chats[len(prefs):]
    twin = json.loads(json.dumps(prefs[2]))      # a chat row equal to a preference row's preferred answer
    mem, _ = _both(tmp_path, monkeypatch, _write(tmp_path / "mixed.jsonl", rows + [twin]), min_examples=1)
    assert all("messages" in r for r in _lines(tmp_path / "disk", "train.jsonl"))      # chat examples only
    assert mem["normalisation"]["preference_to_sft_preferred_answer"] > 0
    assert any("preference row(s) are mixed" in w for w in mem["warnings"])


def test_coercions_refused_identically_in_both_engines(tmp_path, monkeypatch):
    rows = F.chat_rows(30) + [{"messages": [{"role": "user", "content": "6*7?"}, {"role": "assistant", "content": 42}]},
                              {"conversation": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
    src = _write(tmp_path / "c.jsonl", rows)
    mem, _ = _both(tmp_path, monkeypatch, src, min_examples=1)
    assert mem["counts"]["unconvertible"] == 2
    assert set(mem["removed_codes"]) == {"content_wrong_type", "messages_missing"}
    mem, _ = _both(tmp_path / "coerce", monkeypatch, src, min_examples=1, coerce=True)
    assert mem["counts"]["unconvertible"] == 0 and mem["normalisation"]["content_number_to_string"] == 1


def _classifier(n: int, multi_every: int | None, seed: int = 2) -> list:
    """Single-turn classifier rows (text -> label), some tagged ``multi_turn`` by their source
    (a tag never makes the data agentic); every ``multi_every``-th row a real two-turn chat."""
    rnd = random.Random(seed)
    vocab = [f"c{i}" for i in range(150)]
    rows = []
    for i in range(n):
        text = " ".join(rnd.choices(vocab, k=12))
        row = {"prompt": f"Classify: {text}", "completion": rnd.choice(["billing", "bug", "other"]),
               "metadata": {"tags": ["multi_turn"] if i % 5 == 0 else ["edge"] if i % 7 == 0 else []}}
        if multi_every and i % multi_every == 0:
            row = {"messages": [{"role": "user", "content": f"Classify: {text}"},
                                {"role": "assistant", "content": "Which product?"},
                                {"role": "user", "content": "the app"}, {"role": "assistant", "content": "bug"}],
                   "metadata": row["metadata"]}
        rows.append(row)
    return rows + rows[:5]


@pytest.mark.parametrize("multi_every,target", [(None, None), (100, None), (12, "default")])
def test_derived_mix_target_identical_in_both_engines(tmp_path, monkeypatch, multi_every, target):
    """No --target-mix: single-turn data has its mix only reported; >= 5 % multi-turn data gets the
    agent default - decided over the kept rows, after the stream in the disk engine."""
    src = _write(tmp_path / "cls.jsonl", _classifier(300, multi_every))
    mem, _ = _both(tmp_path, monkeypatch, src, tag_field="tags", min_examples=1)
    mix = mem["mix"]
    assert mem["counts"]["exact_duplicates"] == 5 and mix["tags"]["multi_turn"] > 0
    if target is None:
        assert mix["target"] is None and mix["short"] == [] and {r["status"] for r in mix["categories"]} == {"measured"}
    else:
        assert mix["target"] == prep.DEFAULT_TARGET_MIX and "default agent mix" in mix["target_source"]
        assert {r["category"] for r in mix["categories"]} == set(prep.DEFAULT_TARGET_MIX)


@pytest.mark.parametrize("kw", [{"max_tokens": 700, "group_by": "session_id"},
                                {"include_deleted": True, "keep_unanswered_tool_calls": True, "max_tokens": 0,
                                 "near_dup": False}])
def test_openclaw_state_dir_identical_in_both_engines(tmp_path, monkeypatch, kw):
    info = channels.build_state(tmp_path / "state")
    mem, _ = _both(tmp_path, monkeypatch, tmp_path / "state", fmt="openclaw", min_examples=1, **kw)
    o = mem["openclaw"]
    assert o["stripped"] and o["dropped"] and o["sessions_read"] == info["sessions"] + bool(kw.get("include_deleted"))
    if kw["max_tokens"]:
        assert o["windowing"]["examples_windowed"] == 1 and o["windowing"]["max_tokens"] == 700
    assert mem["mix"]["target"] == prep.DEFAULT_TARGET_MIX           # agent sessions: the agent mix


def test_disk_engine_inline_and_pool_agree(tmp_path, monkeypatch):
    """One chunk hashed in the main process == many chunks hashed by two workers."""
    src = _write(tmp_path / "in.jsonl", _corpus(300, seed=9))
    _run(src, tmp_path / "a", "disk", workers=0)
    monkeypatch.setattr(spill, "CHUNK_ROWS", 31)
    _run(src, tmp_path / "b", "disk", workers=2)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_assign_sizes_matches_member_lists():
    rnd = random.Random(3)
    units = []
    k = 0
    for _ in range(200):
        size = rnd.choice([1, 1, 1, 2, 3, 9])
        units.append(list(range(k, k + size)))
        k += size
    for ratios in [(0.8, 0.1, 0.1), (0.5, 0.5, 0.0), (1.0, 0.0, 0.0)]:
        by_unit = spill.assign_sizes([len(u) for u in units], ratios, random.Random(11))
        by_member = prep.assign_units(units, ratios, random.Random(11))
        assert all(by_member[i] == s for u, s in zip(units, by_unit) for i in u)
        sizes = [sum(len(u) for u, s in zip(units, by_unit) if s == x) for x in range(3)]
        assert sum(sizes) == k and sizes[0] > 0


def test_band_keys_group_exactly_like_band_values():
    """Rows share a 64-bit band key exactly when their raw band values are equal."""
    from finetune_kit import dedup

    rnd = np.random.default_rng(0)
    m = rnd.integers(0, 2**32, size=(500, 128), dtype=np.uint64).astype(np.uint32)
    m[100:150, 8:16] = m[0, 8:16]              # 51 rows share band 1
    m[300] = m[299]                            # identical signatures share every band
    keys = dedup.band_keys(m, (16, 8))
    for b in range(16):
        raw = np.ascontiguousarray(m[:, b * 8:(b + 1) * 8]).view(np.dtype((np.void, 32))).ravel()
        _, inv_raw = np.unique(raw, return_inverse=True)
        _, inv_key = np.unique(keys[:, b], return_inverse=True)
        same_raw = inv_raw.ravel()[:, None] == inv_raw.ravel()[None, :]
        same_key = inv_key.ravel()[:, None] == inv_key.ravel()[None, :]
        assert (same_raw == same_key).all()


# ------------------------------------------------------------------------------ past one machine: datatrove


def test_datatrove_removed_list_feeds_prepare(tmp_path):
    """datatrove's MinHash pipeline (local executor) finds the planted near duplicates of a tiny
    corpus; prepare_data --near-dup-removed drops exactly the listed rows, splits the rest and
    still re-checks near-duplicate leakage with its own signatures."""
    pytest.importorskip("datatrove")
    pytest.importorskip("orjson")
    from conftest import run_json

    from finetune_kit import datatrove_dedup as dt

    rnd = random.Random(21)
    vocab = [f"v{i}" for i in range(500)]
    base = [_chat(" ".join(rnd.choices(vocab, k=10)), " ".join(rnd.choices(vocab, k=40))) for _ in range(60)]
    rows, planted = list(base), {}
    for k in range(12):                               # one word changed at the end: J ~ 0.95
        r = json.loads(json.dumps(base[k * 5]))
        r["messages"][1]["content"] = r["messages"][1]["content"].rsplit(" ", 1)[0] + " changed"
        rows.append(r)
        planted[len(rows)] = k * 5 + 1                # line of the copy -> line of its original
    data_dir = tmp_path / "exports"
    data_dir.mkdir()
    _write(data_dir / "part.jsonl", rows)

    removed = dt.run(str(data_dir), str(tmp_path / "work"), executor="local", tasks=2, workers=1)
    got = {d["line"]: d for d in removed}
    assert all(d["source"] == "part.jsonl" for d in removed)
    assert set(got) <= set(planted) | {planted[ln] for ln in planted}       # no unrelated row
    for ln, orig in planted.items():                  # one row of every planted pair goes ...
        assert (ln in got) != (orig in got)
        gone = ln if ln in got else orig              # ... naming the other as what it duplicates
        assert got[gone]["duplicate_of"] == {"source": "part.jsonl", "line": orig if gone == ln else ln}

    # the CLI writes the same list; prepare_data consumes it
    out_list = tmp_path / "removed_list.jsonl"
    code, doc = run_json("near_dedup_cluster", str(data_dir), "--work", str(tmp_path / "work2"),
                         "--output", str(out_list), "--tasks", "1")
    assert code == 0 and doc["removed"] == len(removed) == 12
    code, doc = run_json("prepare_data", str(data_dir / "part.jsonl"), "--near-dup-removed", str(out_list),
                         "--output-dir", str(tmp_path / "prep"))
    assert code == 0 and doc["counts"]["near_duplicates"] == 12 and doc["counts"]["kept"] == 60
    assert doc["dedup"]["removed_list"] == {"file": "removed_list.jsonl", "entries": 12,
                                             "removed_as_near_duplicate": 12}
    assert doc["leakage"]["near_dup"] == 0 and "near_dup" in doc["leakage"]["checked"]
    rem = [json.loads(x) for x in (tmp_path / "prep" / "removed.jsonl").read_text().splitlines()]
    assert {r["line"] for r in rem} == {d["line"] for d in removed}
    assert all(r["reason"] == "near_duplicate" and r["similarity"] is None and "datatrove" in r["detected_by"]
               and r["duplicate_of"]["source"] == "part.jsonl" for r in rem)


def test_disk_engine_cleans_up_when_prepare_fails(tmp_path):
    """Nothing convertible -> exit-2 error after streaming; the scratch folder is still removed."""
    from finetune_kit.errors import UsageError

    src = _write(tmp_path / "bad.jsonl", ["{not json", {"unknown": 1}])
    with pytest.raises(UsageError, match="no row could be converted"):
        _run(src, tmp_path / "out", "disk")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepare-spill-")]
