"""Whole, consistent redaction (issue 13) and language-aware scanning (issue 21).

Pattern-only engine unless stated (fast); the NER cases live at the end with one shared spaCy engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_json, run_script

pytest.importorskip("presidio_analyzer")

from finetune_kit import pii, pii_lang, pii_propagate  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    return pii.build_engine("patterns")


def _found(engine, text, lists=None):
    sc = pii.Scanner(engine)
    hits = pii.detect_units(sc, [pii.Unit(1, None, "t", ("t",), text)], lists)[0]
    return {(h.entity_type, text[h.start:h.end]) for h in hits}


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _chat(*turns, tool_args=None):
    msgs = []
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    if tool_args is not None:
        msgs.append({"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "lookup_order", "arguments": json.dumps(tool_args)}}]})
        msgs.append({"role": "tool", "tool_call_id": "c1", "content": "{\"ok\": true}"})
        msgs.append({"role": "assistant", "content": "Done."})
    return {"messages": msgs}


# ------------------------------------------------------------------ word boundaries, placeholders, ids


def test_cues_respect_word_boundaries(engine):
    """`{"symbol": "MSFT"}` was redacted to "MS<PERSON_3>" and "HIV" to "HI<PERSON_4>"."""
    for text in ('{"symbol": "MSFT"}', "The HIV test came back negative.", "Mister MSc DrJava HIMSS"):
        assert not {e for e, _ in _found(engine, text)} & {"PERSON"}, text
    assert ("PERSON", "Anna") in _found(engine, "Hi Anna, your parcel is on its way.")
    assert ("PERSON", "Anna Kowalski") in _found(engine, "Best regards,\nAnna Kowalski")


def test_placeholders_are_never_findings(engine):
    text = ("Hi <PERSON_1>, call <PHONE_NUMBER_19> or mail <EMAIL_ADDRESS:3f9a1c2b7d4e>; Dear <PERSON>, "
            "Mr <PERSON_2> lives at <STREET_ADDRESS_1>.")
    assert _found(engine, text) == set()


def test_id_shaped_tokens_are_not_names():
    for v in ("ORD-10002", "order_id", "MSFT", "HIV", "userId", "A-1234", "SKU_99"):
        assert pii_propagate.is_id_shaped(v), v
    for v in ("Anna", "Anna Kowalski", "McDonald", "São Paulo"):
        assert not pii_propagate.is_id_shaped(v), v
    H = pii.Hit
    text = "ORD-10002 and Anna"
    kept = pii_propagate.refine(text, [H(0, 9, "LOCATION", 0.85), H(14, 18, "PERSON", 0.85)])
    assert [text[h.start:h.end] for h in kept] == ["Anna"]


def test_json_keys_in_text_are_not_scanned():
    text = '{"Berlin": 3, "city": "Berlin"}'
    H = pii.Hit
    kept = pii_propagate.refine(text, [H(2, 8, "LOCATION", 0.85), H(23, 29, "LOCATION", 0.85)])
    assert [(h.start, h.end) for h in kept] == [(23, 29)]


def test_tools_schema_words_are_not_scanned():
    obj = {"messages": [{"role": "user", "content": 1}],  # invalid line: scanned as generic JSON
           "tools": [{"type": "function", "function": {
               "name": "lookup_order", "description": "Look up an order for Mr Smith",
               "parameters": {"type": "object", "properties": {"order_id": {"type": "string",
                                                                            "enum": ["Jordan", "Paris"]}},
                              "required": ["order_id"]}}}]}
    fmt, units, _ = pii.line_units(1, obj)
    texts = [u.text for u in units]
    assert fmt is None and "Look up an order for Mr Smith" in texts
    assert not {"lookup_order", "order_id", "string", "object", "function", "Jordan", "Paris"} & set(texts)


# ------------------------------------------------------------------ propagation and pseudonyms


def test_value_missed_in_one_message_is_redacted_in_both(engine, tmp_path):
    """The cue finds "Jana Novak" in one message; the other message has no cue (the detector misses
    it there), the order id only matches the user's --pattern in the tool call: all are redacted,
    each value with one pseudonym, the first name with the full name's."""
    src = _write(tmp_path / "t.jsonl", [
        _chat("My name is Jana Novak and order ORD-55012 never came.",
              "Jana Novak, I have reopened ORD-55012 for you. Thanks, Jana!",
              tool_args={"order_id": "ORD-55012", "customer": "Jana Novak"}),
        _chat("Is ORD-55012 refunded yet?", "Yes.")])
    out = tmp_path / "t.red.jsonl"
    code, doc = run_json("scan_pii", src, "--nlp", "patterns", "--pattern", r"ORDER_ID=ORD-\d{5}", "--redact", out)
    assert code == 0, doc
    red = out.read_text()
    assert "Jana" not in red and "Novak" not in red and "ORD-55012" not in red
    lines = [json.loads(x) for x in red.splitlines()]
    m = lines[0]["messages"]
    assert m[0]["content"] == "My name is <PERSON_1> and order <ORDER_ID_1> never came."
    assert m[1]["content"] == "<PERSON_1>, I have reopened <ORDER_ID_1> for you. Thanks, <PERSON_1>!"
    assert json.loads(m[2]["tool_calls"][0]["function"]["arguments"]) == {"order_id": "<ORDER_ID_1>",
                                                                          "customer": "<PERSON_1>"}
    assert lines[1]["messages"][0]["content"] == "Is <ORDER_ID_1> refunded yet?"
    assert doc["propagated_findings"] >= 1 and doc["redaction"]["distinct_values"] == 2
    assert any(f.get("source") == "propagated" and f.get("arg_path") == "$.customer" for f in doc["findings"])


def test_cross_file_pseudonyms_and_rescan_passes_fail_on_any(tmp_path):
    """train/validation/test given together: one pseudonym per value in every file; a rescan of the
    redacted files with --fail-on any passes (placeholders are not findings)."""
    d = tmp_path / "data"
    d.mkdir()
    _write(d / "train.jsonl", [_chat("Dear Tomasz Wojcik, your card 4111 1111 1111 1111 is blocked.", "ok"),
                               _chat("Write to jane.roe@example.org or call +1 415 555 0132.", "Noted.")])
    _write(d / "valid.jsonl", [_chat("Is jane.roe@example.org the right address for Tomasz Wojcik?", "Yes.")])
    _write(d / "test.jsonl", [_chat("Call +1 415 555 0132 after 5pm.", "Will do.")])
    out = tmp_path / "red"
    code, doc = run_json("scan_pii", d / "train.jsonl", d / "valid.jsonl", d / "test.jsonl", "--nlp", "patterns",
                         "--redact", out)
    assert code == 0 and len(doc["files"]) == 3 and doc["file"] is None
    train, valid, test = ((out / n).read_text() for n in ("train.jsonl", "valid.jsonl", "test.jsonl"))
    assert "<EMAIL_ADDRESS_1>" in train and "<EMAIL_ADDRESS_1>" in valid
    assert "<PERSON_1>" in train and "<PERSON_1>" in valid  # found by the cue in train only
    assert "<PHONE_NUMBER_1>" in train and "<PHONE_NUMBER_1>" in test
    for raw in ("Tomasz", "Wojcik", "jane.roe", "555 0132", "4111"):
        assert raw not in train + valid + test
    code, doc = run_json("scan_pii", out / "train.jsonl", out / "valid.jsonl", out / "test.jsonl", "--nlp",
                         "patterns", "--fail-on", "any")
    assert code == 0 and doc["total_findings"] == 0, doc["findings"]
    (d / "empty.jsonl").write_text("", encoding="utf-8")  # an empty split next to the others: skipped
    code, doc = run_json("scan_pii", d / "train.jsonl", d / "valid.jsonl", d / "empty.jsonl", "--nlp", "patterns",
                         "--redact", tmp_path / "exists.jsonl")
    assert code == 0  # several inputs: OUT is a directory (created)
    assert (tmp_path / "exists.jsonl" / "train.jsonl").is_file()


def test_user_lists_patterns_and_entity_removal(tmp_path):
    deny = tmp_path / "deny.txt"
    deny.write_text("# CRM export\nbob ferreira\nEMPLOYEE_ID\tE-7781\n", encoding="utf-8")
    allow = tmp_path / "allow.txt"
    allow.write_text("Anna Kowalski\n", encoding="utf-8")  # a staff alias: never redacted
    src = _write(tmp_path / "t.jsonl", [_chat("Bob Ferreira (E-7781) asked about ACC-991-22. My name is Anna "
                                              "Kowalski. I live in Norway.", "ok")])
    out = tmp_path / "o.jsonl"
    code, doc = run_json("scan_pii", src, "--nlp", "patterns", "--deny-list", deny, "--allow-list", allow,
                         "--pattern", r"ACCOUNT=ACC-\d{3}-\d{2}", "--entities", "default,-LOCATION", "--redact", out)
    assert code == 0, doc
    text = json.loads(out.read_text())["messages"][0]["content"]
    assert text == "<PERSON_1> (<EMPLOYEE_ID_1>) asked about <ACCOUNT_1>. My name is Anna Kowalski. I live in Norway."
    assert "LOCATION" not in doc["entities"] and "ACCOUNT" in doc["entities"]
    assert {f.get("source") for f in doc["findings"]} >= {"deny_list"}
    for bad in (["--pattern", "NOEQUALS"], ["--pattern", "X=("], ["--deny-list", tmp_path / "missing.txt"],
                ["--entities", "default,-NOPE"]):
        cp = run_script("scan_pii", src, "--nlp", "patterns", *map(str, bad))
        assert cp.returncode == 2 and "Traceback" not in cp.stderr and cp.stderr.strip(), bad


# ------------------------------------------------------------------ paths, secrets, placeholders in any language


def test_home_paths_and_secret_assignments_keep_their_shape(engine, tmp_path):
    src = _write(tmp_path / "t.jsonl", [_chat(
        r"Open C:\Users\hoang.nguyen\Desktop\notes.txt and /home/alice/proj/.env (not /home/user/x)",
        'secret_token = "Xk9mPq2LwZz8vB4t"\nAPI_KEY=webhooksecretvalue2024abc\n"authToken": "q8Lk2mZx7Rt4WvB1nYc8"',
        tool_args={"webhookSecret": "hunter2hunter2hunter2", "max_tokens": "4096"})])
    out = tmp_path / "o.jsonl"
    code, doc = run_json("scan_pii", src, "--nlp", "patterns", "--redact", out)
    assert code == 0
    m = json.loads(out.read_text())["messages"]
    assert m[0]["content"] == (r"Open C:\Users\<USERNAME_1>\Desktop\notes.txt and /home/<USERNAME_2>/proj/.env "
                               r"(not /home/user/x)")
    assert m[1]["content"] == 'secret_token = "<SECRET_1>"\nAPI_KEY=<SECRET_2>\n"authToken": "<SECRET_3>"'
    assert json.loads(m[2]["tool_calls"][0]["function"]["arguments"]) == {"webhookSecret": "<SECRET_4>",
                                                                          "max_tokens": "4096"}


@pytest.mark.parametrize("text", [
    "API_KEY=你的API密钥", 'api_key: "<你的密钥>"', 'OPENAI_API_KEY="YOUR_API_KEY_HERE"', "password: mật_khẩu_của_bạn",
    'token = "请替换为您的令牌"', "SECRET_KEY=changeme", '"tokenizer": "meta-llama/Llama-3.1-8B"', "max_tokens: 4096",
    "password = os.environ['DB_PASSWORD']"])
def test_placeholders_in_any_language_are_not_secrets(engine, text):
    assert not {e for e, _ in _found(engine, text)} & set(pii.SECRET_ENTITIES), text


# ------------------------------------------------------------------ language-aware scanning


def test_language_detection():
    assert pii_lang.detect("Xin chào, tôi tên là Nguyễn Văn An, tôi cần giúp đỡ") == "vi"
    assert pii_lang.detect("你好，我叫王小明，我的订单还没有到，请帮我查一下") == "zh"
    assert pii_lang.detect("Hi, my order has not arrived yet, can you check it?") == "en"
    assert pii_lang.detect("ok thx") == "en"  # too short to tell: the scan's language
    assert pii_lang.detect("好的") == "zh"    # short, but the script says so
    assert "zh_core_web_sm" in pii_lang.install_hint("zh") and "xx_ent_wiki_sm" in pii_lang.install_hint("vi")


def test_split_long_texts_for_ner():
    text = ("word " * 4000) + "mail jane.roe@example.org now " + ("more " * 3000)
    pieces = pii.split_long(text, 5000)
    assert len(pieces) > 1 and all(len(p) <= 5000 for _, p in pieces)
    assert all(text[o:o + len(p)] == p for o, p in pieces)
    covered = set()
    for o, p in pieces:
        covered.update(range(o, o + len(p)))
    assert covered == set(range(len(text)))


def test_long_text_is_scanned_in_pieces(engine, monkeypatch):
    from finetune_kit import pii_engine

    monkeypatch.setattr(pii_engine, "MAX_NER_CHARS", 1000)
    text = ("filler text " * 200) + "write to jane.roe@example.org " + ("tail " * 300)
    hits = pii.Scanner(engine).analyze([text])[0]
    assert [(h.entity_type, text[h.start:h.end]) for h in hits if h.entity_type == "EMAIL_ADDRESS"] == [
        ("EMAIL_ADDRESS", "jane.roe@example.org")]


# ------------------------------------------------------------------ with the installed spaCy pipeline

ner = pytest.mark.skipif(not pii.installed_spacy_models("en"), reason="no spaCy English pipeline installed")

MIXED = [
    _chat("你好，我叫王小明，我的邮箱是 wang.xiaoming@example.cn，电话 13812345678。请帮我查一下订单。",
          "好的，王小明先生，我马上为您查询。API_KEY=你的API密钥"),
    _chat("Xin chào, tôi là Nguyễn Văn An. Số điện thoại của tôi là 0912 345 678, email an.nguyen@example.vn.",
          'Cảm ơn anh An. Formal? Casual? Warm? secret_token = "Zx8vB4tXk9mPq2Lw"'),
    _chat("Hello, this is Robert Johnson from Chicago. Please ship to 221B Baker Street, London NW1 6XE.",
          "Thanks Robert, noted."),
]


@ner
def test_english_ner_is_not_applied_to_chinese_or_vietnamese(tmp_path):
    src = _write(tmp_path / "mixed.jsonl", MIXED)
    out = tmp_path / "mixed.red.jsonl"
    cp = run_script("scan_pii", src, "--redact", out, "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    langs = doc["languages"]["by_language"]
    assert langs["zh"]["texts"] == 2 and langs["zh"]["no_name_detection"] == 2
    assert langs["vi"]["texts"] == 2 and langs["vi"]["no_name_detection"] == 2
    assert langs["en"]["no_name_detection"] == 0 and "zh_core_web_sm" in langs["zh"]["install"]
    assert "no name/place detection" in cp.stderr.lower() or "NO name/place detection" in cp.stderr
    red = [json.loads(x)["messages"] for x in out.read_text().splitlines()]
    zh, vi, en = red
    # patterns still work there: e-mails, phones, secrets; the placeholder "你的API密钥" is not a secret
    assert "<EMAIL_ADDRESS_" in zh[0]["content"] and "<PHONE_NUMBER_" in zh[0]["content"]
    assert zh[1]["content"].endswith("API_KEY=你的API密钥")
    assert "<EMAIL_ADDRESS_" in vi[0]["content"] and "<PHONE_NUMBER_" in vi[0]["content"]
    assert "<SECRET_" in vi[1]["content"]
    # no English-NER damage: "Formal? Casual? Warm?" stays, and so does every emoji-free sentence shape
    assert "Formal? Casual? Warm?" in vi[1]["content"]
    # the English text got NER: name and place found
    assert "Robert Johnson" not in en[0]["content"] and "Robert" not in en[1]["content"]
    assert "Chicago" not in en[0]["content"] and "Baker Street" not in en[0]["content"]


@pytest.fixture(scope="module")
def ner_engine():
    return pii.build_engine("auto")


@ner
def test_first_name_of_full_name_gets_its_pseudonym_and_ids_stay(ner_engine):
    rs = pii.RedactionSession(pii.Scanner(ner_engine))
    objs = [_chat("Hi, I'm Anna Kowalski. Order ORD-10002 is late.",
                  "Sorry Anna! I checked ORD-10002: it ships today. Anna Kowalski's refund is booked.")]
    (red,) = rs.redact_objects(objs)
    u, a = red["messages"][0]["content"], red["messages"][1]["content"]
    assert u == "Hi, I'm <PERSON_1>. Order ORD-10002 is late."
    assert a == "Sorry <PERSON_1>! I checked ORD-10002: it ships today. <PERSON_1>'s refund is booked."
    assert objs[0]["messages"][0]["content"].startswith("Hi, I'm Anna")  # inputs untouched


@ner
def test_prepare_redact_leaves_no_raw_value_in_any_output(tmp_path):
    planted = {"name": "Tomasz Wojcik", "email": "tomasz.wojcik@example.org", "phone": "+1 415 555 0132",
               "card": "4111 1111 1111 1111", "secret": "Zx8vB4tXk9mPq2Lw", "order": "ORD-77123"}
    P = planted
    rows = [_chat(f"My name is {P['name']}, order {P['order']}. Mail {P['email']} or call {P['phone']}.",
                  f"Thanks {P['name'].split()[0]}, I've found {P['order']}."),
            _chat(f"card {P['card']} please", "Noted."),
            _chat(f"card {P['card']} please", "Noted."),  # exact duplicate -> removed.jsonl
            _chat(f'secret_token = "{P["secret"]}"', "Rotate it now."),
            {"messages": [{"role": "wizard", "content": f"{P['name']} at {P['email']}"}]},  # unconvertible
            ] + [_chat(f"Question {i} about shipping times to Canada?", f"Usually {i + 2} days.") for i in range(8)]
    src = _write(tmp_path / "raw.jsonl", rows)
    out = tmp_path / "out"
    code, doc = run_json("prepare_data", src, "--output-dir", out, "--redact", "pseudonym",
                         "--pattern", r"ORDER_ID=ORD-\d{5}", "--no-near-dup")
    assert code in (0, 1), doc
    files = sorted(out.iterdir())
    assert {f.name for f in files} >= {"train.jsonl", "removed.jsonl", "manifest.json"}
    removed = (out / "removed.jsonl").read_text()
    assert "exact_duplicate" in removed and "<CREDIT_CARD_1>" in removed and "<PERSON_1>" in removed
    everything = "".join(f.read_text(encoding="utf-8") for f in files)
    for k, v in P.items():
        assert v not in everything, f"raw {k} in prepare outputs"
    assert "Tomasz" not in everything and "Wojcik" not in everything
    man = json.loads((out / "manifest.json").read_text())
    assert man["redaction"]["mode"] == "pseudonym" and man["redaction"]["replacements"] >= 8
    cp = run_script("prepare_data", src, "--output-dir", tmp_path / "o2", "--pattern", "X=y")
    assert cp.returncode == 2 and "only apply with --redact" in cp.stderr


def _tiny_token_classifier(path: Path) -> Path:
    """A real (tiny, random) BERT token-classification model saved as a HF directory, biased so
    that every token is B-PER: the transformers path must turn that into PERSON findings."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "anna", "kowalski", "xin", "chào", "an"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")
    labels = {0: "O", 1: "B-PER", 2: "I-PER"}
    cfg = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, id2label=labels,
                     label2id={v: k for k, v in labels.items()})
    model = BertForTokenClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@ner
def test_nlp_hf_model_through_presidio_transformers_engine(tmp_path):
    pytest.importorskip("transformers")
    d = _tiny_token_classifier(tmp_path / "tiny-ner")
    eng = pii.build_engine(f"auto,hf:{d}@vi")
    assert eng.choice.mode == "spacy" and eng.ner["vi"].choice.mode == "transformers"
    texts = ["xin chào an, tôi cần giúp đỡ về đơn hàng của tôi", "hello anna kowalski, mail me at an@example.vn"]
    sc = pii.Scanner(eng)
    vi, en = sc.analyze(texts)
    assert any(h.entity_type == "PERSON" for h in vi)             # the HF model ran on the vi text
    assert sc.lang.no_ner["vi"] == 0 and sc.lang.texts["vi"] == 1
    assert any(h.entity_type == "EMAIL_ADDRESS" for h in en)
    cp = run_script("scan_pii", _write(tmp_path / "x.jsonl", [_chat("xin chào")]), "--nlp", "hf:/no/such/dir")
    assert cp.returncode == 2 and "hf:" in cp.stderr


def test_fresh_agent_leftovers_dob_uk_postcode_and_sign_off_lines():
    """What a new user's helpdesk export still leaked or broke (fresh-agent trial): a date of birth, a UK
    postcode cut in half by a US-state reading of 'NW', and a name span that swallowed the next line."""
    from finetune_kit import pii
    from finetune_kit.pii_propagate import refine

    eng = pii.build_engine("patterns", language="en", entities="default", threshold=0.4,
                           regions=pii.phone_regions("default"))
    sc = pii.Scanner(eng)
    cases = {"My DOB is 12/03/1988, thanks": ("DATE_OF_BIRTH", "12/03/1988"),
             "date of birth: March 3, 1990": ("DATE_OF_BIRTH", "March 3, 1990"),
             "Aisha Khan, 14 Baker Street, London NW1 6XE": ("STREET_ADDRESS", "14 Baker Street, London NW1 6XE"),
             "Ship to 12 Main Street, Springfield, IL 62704 please": ("STREET_ADDRESS",
                                                                       "12 Main Street, Springfield, IL 62704")}
    for text, want in cases.items():
        got = {(h.entity_type, text[h.start:h.end]) for h in refine(text, sc.analyze([text])[0])}
        assert want in got, (text, got)
    assert not [h for h in sc.analyze(["The meeting is on 12/03/2026."])[0] if h.entity_type == "DATE_OF_BIRTH"]
    text = "Please update. Kevin Liu\nSent from my iPhone"

    class H:  # a NER span over the line break, as spaCy's small model produces it
        def __init__(self, s, e, t, sc=0.85, src=None, can=None):
            self.start, self.end, self.entity_type, self.score, self.source, self.canonical = s, e, t, sc, src, can
    out = refine(text, [H(text.index("Kevin"), text.index("Sent") + 4, "PERSON")])
    assert [text[h.start:h.end] for h in out] == ["Kevin Liu"]
