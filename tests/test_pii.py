"""scan_pii.py / finetune_kit.pii: recognizers, reports without raw values, redaction modes.

Pattern-only engine (no spaCy model) unless stated; NER tests are in test_pii_ner.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SCRIPTS, run_json, run_script

pytest.importorskip("presidio_analyzer")

from finetune_kit import pii, pii_recognizers  # noqa: E402


def _with_check_digit(prefix: str, length: int) -> str:
    body = prefix + "0" * (length - len(prefix) - 1)
    for d in "0123456789":
        if pii_recognizers.luhn_ok(body + d):
            return body + d
    raise AssertionError


# planted values: none of them may appear in any report unless --show-values
PLANTED = {
    "EMAIL_ADDRESS": "jane.roe@example.org",
    "PHONE_NUMBER": "(415) 555-0132",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "US_SSN": "536-22-8726",
    "IBAN_CODE": "GB82WEST12345698765432",
    "IP_ADDRESS": "203.0.113.77",
    "AWS_ACCESS_KEY": "AKIAQWERTYUIOPASDF23",
    "API_KEY": "sk-proj-9fKq2LmZx7Rt4WvB1nYc8HdJe5GuA3Ps",
    "GITHUB_TOKEN": "ghp_7bX2kLq9Zt4Rm8Wv1Nc6Hd3Js5Gu0Ap2Ye7F",
    "SLACK_TOKEN": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "URL_PASSWORD": "Tr0ub4dor&3x",
}


def _line(user: str, assistant: str = "Noted.", tool_args: dict | None = None) -> dict:
    msgs = [{"role": "system", "content": "You are a support assistant."}, {"role": "user", "content": user}]
    if tool_args is not None:
        msgs.append({"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "lookup", "arguments": json.dumps(tool_args)}}]})
        msgs.append({"role": "tool", "tool_call_id": "c1", "content": "{\"ok\": true}"})
    msgs.append({"role": "assistant", "content": assistant})
    return {"messages": msgs}


@pytest.fixture()
def planted_file(tmp_path) -> Path:
    P = PLANTED
    lines = [
        _line(f"Hi, my e-mail is {P['EMAIL_ADDRESS']} and my phone is {P['PHONE_NUMBER']}."),
        _line(f"Card {P['CREDIT_CARD']}, SSN {P['US_SSN']}, IBAN {P['IBAN_CODE']}.", "Thanks."),
        _line("Please check the account.", "Checking.",
              tool_args={"email": P["EMAIL_ADDRESS"], "note": f"login from {P['IP_ADDRESS']}"}),
        _line(f"my keys: {P['AWS_ACCESS_KEY']} and {P['API_KEY']}", f"Never paste tokens like {P['GITHUB_TOKEN']}."),
        _line(f"slack {P['SLACK_TOKEN']} db postgres://admin:{P['URL_PASSWORD']}@db.internal:5432/app"),
    ] + [_line(f"Question number {i} about shipping times?", "Usually 3-5 business days.") for i in range(6)]
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def engine():
    return pii.build_engine("patterns")


def _types(engine, text):
    return {(h.entity_type, text[h.start:h.end]) for h in pii.Scanner(engine).analyze([text])[0]}


# ------------------------------------------------------------------ recognizers

GH = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0Ijo"
       "xNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq9xQ2\nx8Kq1Lm0Zp3Rt5Wv7Bn9YcHdJeGuA3Ps\n-----END RSA PRIVATE KEY-----"

POSITIVE = [
    ("AWS_ACCESS_KEY", "export AWS_ACCESS_KEY_ID={v}", "AKIAQWERTYUIOPASDF23"),
    ("AWS_ACCESS_KEY", "temporary creds {v} expire soon", "ASIAZXCVBNMASDFGHJ45"),
    ("AWS_SECRET_KEY", "aws_secret_access_key = {v}", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("AWS_SECRET_KEY", "AKIAQWERTYUIOPASDF23 / {v}", "Zk3pQ8rT2vW6yA1cE5gI9kM3oQ7sU1wY4aC6eG8i"),
    ("API_KEY", "OPENAI_API_KEY={v}", "sk-proj-9fKq2LmZx7Rt4WvB1nYc8HdJe5GuA3Ps_x-Q"),
    ("API_KEY", "key {v} works", "sk-ant-api03-Zx7Rt4WvB1nYc8HdJe5GuA3PsQ2w"),
    ("API_KEY", "stripe {v}", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("API_KEY", "maps {v}", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"),
    ("API_KEY", "HF_TOKEN={v}", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("GITHUB_TOKEN", "GITHUB_TOKEN={v}", GH),
    ("GITHUB_TOKEN", "token {v}", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123"),
    ("SLACK_TOKEN", "SLACK_BOT_TOKEN={v}", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("SLACK_TOKEN", "post to {v}", "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    ("PRIVATE_KEY", "here:\n{v}\nthanks", PEM),
    ("PRIVATE_KEY", "truncated: {v}", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"),
    ("JWT", "Authorization: Bearer {v}", JWT),
    ("URL_CREDENTIALS", "DATABASE_URL=postgres://{v}@db.internal:5432/app", "admin:Tr0ub4dor&3x"),
    ("URL_CREDENTIALS", "git clone https://{v}@github.com/o/r", "bob:s3cretPassw0rd"),
    ("SECRET", 'DB_PASSWORD="{v}"', "Xk9#mPq2Lw!z"),
    ("SECRET", "client_secret: {v}", "a8F2kQ9zL1xW7rT3"),
    ("STREET_ADDRESS", "I live at {v}.", "221B Baker Street, London NW1 6XE"),
    ("STREET_ADDRESS", "ship it to {v} please", "1600 Pennsylvania Avenue, Washington, DC 20500"),
    ("STREET_ADDRESS", "send it to {v} please", "742 Evergreen Terrace Apt 4"),
    ("STREET_ADDRESS", "office: {v}", "Via Roma 12"),
    ("STREET_ADDRESS", "mail: {v}", "P.O. Box 1234"),
    ("STREET_ADDRESS", "Address:\n{v}.", "Unit 8033 Box 4018\nDPO AA 74127"),
    ("CREDIT_CARD", "card {v} exp 12/29", "2223 0031 2200 3222"),  # Mastercard 2-series
    ("CREDIT_CARD", "card {v}", _with_check_digit("453957876362148667", 19)),           # 19-digit Visa
    ("PERSON", "Hello, my name is {v} and I need help", "Jana Novak"),
    ("PERSON", "Dear {v},", "Mr Tomasz Wojcik"),
    ("PERSON", "I want to add my son {v} to the account", "Torben"),
    ("PHONE_NUMBER", "call me on {v} tomorrow", "06-82237745"),       # NL, not in the default regions
    ("PHONE_NUMBER", "{v} office", "+41 53 147 37 99"),
    ("EMAIL_ADDRESS", "write to {v}", "jane.roe@example.org"),
    ("PHONE_NUMBER", "phone {v}", "(415) 555-0132"),
    ("IBAN_CODE", "IBAN {v}", "DE89370400440532013000"),
    ("IP_ADDRESS", "from {v}", "203.0.113.77"),
    ("US_SSN", "SSN {v}", "536-22-8726"),
    ("CREDIT_CARD", "visa {v}", "4111111111111111"),
]


@pytest.mark.parametrize("entity,template,value", POSITIVE, ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(POSITIVE)])
def test_recognizer_finds(engine, entity, template, value):
    text = template.format(v=value)
    found = _types(engine, text)
    spans = [v for e, v in found if e == entity]
    if entity == "PERSON" and value.startswith("Mr "):
        value = value[3:]
    assert any(value in s or s in value for s in spans), f"{entity} not found in {text!r}: {found}"
    if entity in pii.SECRET_ENTITIES or entity in ("EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS"):
        assert value in spans, f"{entity}: span {spans} != {value!r}"


NEGATIVE = [
    ("API_KEY", "We use scikit-learn and sk-learn style APIs for the task-management service."),
    ("AWS_SECRET_KEY", "the commit is 3f786850e387550fdab836ed7e6dc881de23001b and wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY1"),
    ("AWS_ACCESS_KEY", "The AKIA prefix marks long-term AWS keys."),
    ("GITHUB_TOKEN", "ghp_ tokens start with ghp_ followed by 36 characters."),
    ("SLACK_TOKEN", "xoxb- is the prefix of bot tokens."),
    ("PRIVATE_KEY", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----"),
    ("JWT", "a JWT looks like eyJhbGciOiJub3RqdXN0.eyJzdWIiOiJ4In0.abc but this header is not JSON: eyJxxxxxxx.eyJyyyyyy.zzz"),
    ("URL_CREDENTIALS", "connect with postgres://user:password@localhost:5432/db or redis://:${REDIS_PASS}@cache"),
    ("SECRET", "password = os.environ['DB_PASSWORD'] and token = tokenizer(text) and api_key: <your key>"),
    ("STREET_ADDRESS", "I drove 2 hours to the Park and waited 3 days for the results."),
    ("PHONE_NUMBER", "my order number is 482913 and it shipped on 2024-05-17"),
    ("CREDIT_CARD", "invoice 4111 1111 1111 1112 is not a valid card"),
    ("PERSON", "Hi team, dear colleagues, thanks all"),
]


@pytest.mark.parametrize("entity,text", NEGATIVE, ids=[e for e, _ in NEGATIVE])
def test_recognizer_ignores_lookalikes(engine, entity, text):
    found = _types(engine, text)
    assert not [v for e, v in found if e == entity], found


def test_scanner_matches_presidio_per_text(engine):
    """Dedup + pre-checks + batching must not change presidio's findings (short numbers, unicode digits)."""
    texts = ["call 030 1234 now", "Tel. 0301234", "+49 30 123456", "x 650-752-7354x549 y", "no digits here",
             "１２３-４５６-７８９０ fullwidth", "ids 12 34 56", "mail a@b.co", "a@b", "2024", "",
             "IBAN GB82WEST12345698765432", "card 4111-1111-1111-1111", "ssn 536 22 8726", "   ",
             "You are a support assistant.", "You are a support assistant.", PEM, JWT]
    assert pii.Scanner(engine).analyze(texts) == pii.naive_analyze(engine, texts)


def test_offsets_in_content_and_arguments(engine, tmp_path):
    args = json.dumps({"note": "café \"quoted\" ✓ mail bob@example.com", "n": [1, {"deep": "ip 10.1.2.3"}]})
    assert "\\u00e9" in args  # escapes before the value shift raw offsets
    line = _line("write to ann@example.org now", tool_args=json.loads(args))
    line["messages"][2]["tool_calls"][0]["function"]["arguments"] = args
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps(line) + "\n", encoding="utf-8")
    doc = pii.scan_file(p, pii.Scanner(engine), pii.ScanOptions())
    by = {f["preview"]: f for f in doc["findings"]}
    c = next(f for f in doc["findings"] if f["path"] == "messages[1].content")
    assert line["messages"][1]["content"][c["start"]:c["end"]] == "ann@example.org"
    a = next(f for f in doc["findings"] if f["path"].endswith("function.arguments") and f["entity_type"] == "EMAIL_ADDRESS")
    assert args[a["start"]:a["end"]] == "bob@example.com" and a["arg_path"] == "$.note" and a["message_index"] == 2
    ip = next(f for f in doc["findings"] if f["entity_type"] == "IP_ADDRESS")
    assert args[ip["start"]:ip["end"]] == "10.1.2.3" and ip["arg_path"] == "$.n[1].deep"
    assert by  # previews present


def test_preview_never_contains_value():
    for e, v in [("EMAIL_ADDRESS", "jane.roe@example.org"), ("PHONE_NUMBER", "(415) 555-0132"),
                 ("API_KEY", PLANTED["API_KEY"]), ("PERSON", "Jana Novak"), ("URL_CREDENTIALS", "admin:Tr0ub4dor&3x"),
                 ("CREDIT_CARD", "4111 1111 1111 1111"), ("PRIVATE_KEY", PEM)]:
        p = pii.preview(e, v)
        assert v not in p and "***" in p
    assert pii.preview("EMAIL_ADDRESS", "jane.roe@example.org") == "j***@e***.org"


# ------------------------------------------------------------------ CLI: reports never hold raw values

def _assert_no_planted(*texts: str):
    for t in texts:
        for k, v in PLANTED.items():
            assert v not in t, f"raw {k} value leaked: {v!r}"


def test_cli_report_has_no_raw_values(planted_file, tmp_path):
    log = tmp_path / "audit.jsonl"
    cp = run_script("scan_pii", planted_file, "--nlp", "patterns", "--json", "--audit-log", log)
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    _assert_no_planted(cp.stdout, cp.stderr, log.read_text())
    s = doc["summary"]
    for e in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS",
              "AWS_ACCESS_KEY", "API_KEY", "GITHUB_TOKEN", "SLACK_TOKEN", "URL_CREDENTIALS"):
        assert s.get(e, {}).get("count", 0) >= 1, (e, s)
    assert s["EMAIL_ADDRESS"]["count"] == 2 and s["EMAIL_ADDRESS"]["lines"] == 2
    f = doc["findings"][0]
    assert set(f) >= {"line", "message_index", "path", "entity_type", "start", "end", "score", "preview"}
    assert "value" not in f and doc["values_shown"] is False
    assert doc["nlp"]["mode"] == "patterns" and doc["lines"] == 11
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["script"] == "scan_pii" and rec["summary"]["by_entity"]["EMAIL_ADDRESS"] == 2
    # human output: summary table + first findings, still masked
    cp = run_script("scan_pii", planted_file, "--nlp", "patterns")
    assert cp.returncode == 0 and "| entity" in cp.stdout and "j***@e***.org" in cp.stdout
    _assert_no_planted(cp.stdout, cp.stderr)


def test_cli_show_values_and_fail_on(planted_file):
    code, doc = run_json("scan_pii", planted_file, "--nlp", "patterns", "--show-values", "--fail-on", "any")
    assert code == 1 and doc["failed"] is True
    values = {f["value"] for f in doc["findings"]}
    assert PLANTED["EMAIL_ADDRESS"] in values and PLANTED["API_KEY"] in values
    # every reported offset points at the value in the original line
    lines = [json.loads(x) for x in planted_file.read_text().splitlines()]
    for f in doc["findings"]:
        if f["path"].endswith(".content"):
            i = f["message_index"]
            assert lines[f["line"] - 1]["messages"][i]["content"][f["start"]:f["end"]] == f["value"]
    code, doc = run_json("scan_pii", planted_file, "--nlp", "patterns", "--fail-on", "JWT,PRIVATE_KEY")
    assert code == 0 and doc["failed"] is False
    code, doc = run_json("scan_pii", planted_file, "--nlp", "patterns", "--fail-on", "API_KEY")
    assert code == 1 and doc["failed_entities"] == ["API_KEY"]
    code, doc = run_json("scan_pii", planted_file, "--nlp", "patterns", "--fail-on", "secrets")
    assert code == 1 and {"API_KEY", "GITHUB_TOKEN", "SLACK_TOKEN"} <= set(doc["failed_entities"])
    assert "EMAIL_ADDRESS" not in doc["failed_entities"]
    cp = run_script("scan_pii", planted_file, "--nlp", "patterns", "--fail-on", "NOT_AN_ENTITY")
    assert cp.returncode == 2 and cp.stderr.count("\n") == 1


# ------------------------------------------------------------------ redaction

def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _validate(path: Path) -> dict:
    from finetune_kit import validate

    return validate.validate_files([path], tokenizer="none", show_progress=False)


@pytest.mark.parametrize("mode", ["replace", "mask", "hash", "pseudonym"])
def test_redaction_modes(planted_file, tmp_path, mode, engine):
    out = tmp_path / f"red.{mode}.jsonl"
    before = _sha(planted_file)
    env = {"FT_PII_SALT": "0123456789abcdef0123456789abcdef"} if mode == "hash" else {}
    code, doc = run_json("scan_pii", planted_file, "--nlp", "patterns", "--redact", out, "--mode", mode, env=env)
    assert code == 0, doc
    assert _sha(planted_file) == before  # input untouched
    text = out.read_text(encoding="utf-8")
    _assert_no_planted(text)
    red = doc["redaction"]
    assert red["mode"] == mode and red["replacements"] == doc["total_findings"] and red["lines_changed"] == 5
    rows = [json.loads(x) for x in text.splitlines()]
    assert len(rows) == 11
    args = json.loads(rows[2]["messages"][2]["tool_calls"][0]["function"]["arguments"])  # still valid JSON
    assert set(args) == {"email", "note"}
    user0, user2_email = rows[0]["messages"][1]["content"], args["email"]
    if mode == "replace":
        assert "<EMAIL_ADDRESS>" in user0 and user2_email == "<EMAIL_ADDRESS>"
    elif mode == "mask":
        assert user2_email == "****.***@*******.***"
    elif mode == "hash":
        assert red["salt_source"] == "FT_PII_SALT"
        assert user2_email.startswith("<EMAIL_ADDRESS:") and user2_email in user0  # same value, same hash
    else:  # pseudonym: one placeholder per distinct value, consistent across lines
        assert user2_email == "<EMAIL_ADDRESS_1>" and "<EMAIL_ADDRESS_1>" in user0
        assert "<API_KEY_1>" in rows[3]["messages"][1]["content"]
        assert "postgres://<URL_CREDENTIALS_1>@db.internal" in rows[4]["messages"][1]["content"]
    assert rows[5] == json.loads(planted_file.read_text().splitlines()[5])  # untouched lines kept
    v = _validate(out)
    assert v["valid"], v["files"][0]["errors"][:3]
    if mode != "mask":  # a rescan of the redacted file finds nothing left
        again = pii.scan_file(out, pii.Scanner(engine), pii.ScanOptions())
        assert again["total_findings"] == 0, again["summary"]


def test_hash_mode_needs_salt_and_is_keyed(planted_file, tmp_path):
    cp = run_script("scan_pii", planted_file, "--nlp", "patterns", "--redact", tmp_path / "h.jsonl", "--mode", "hash")
    assert cp.returncode == 2 and "salt" in cp.stderr and not (tmp_path / "h.jsonl").exists()
    r = pii.Redactor("hash", "a" * 32)
    assert r.replacement("EMAIL_ADDRESS", "A@B.com") == r.replacement("EMAIL_ADDRESS", "a@b.com")
    assert pii.Redactor("hash", "b" * 32).replacement("EMAIL_ADDRESS", "a@b.com") != r.replacement("EMAIL_ADDRESS", "a@b.com")
    p = pii.Redactor("pseudonym")
    assert [p.replacement("PHONE_NUMBER", x) for x in ("(415) 555-0132", "415-555-0132", "415 555 0199")] == \
        ["<PHONE_NUMBER_1>", "<PHONE_NUMBER_1>", "<PHONE_NUMBER_2>"]


def test_overlaps_merge_to_longest_span():
    hits = [pii.Hit(10, 30, "URL_CREDENTIALS", 0.9), pii.Hit(15, 40, "EMAIL_ADDRESS", 1.0), pii.Hit(50, 55, "PERSON", 0.85)]
    assert pii.merge_overlaps(hits) == [pii.Hit(10, 40, "EMAIL_ADDRESS", 1.0), pii.Hit(50, 55, "PERSON", 0.85)]


def test_redact_output_rules(planted_file, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("keep\n")
    cp = run_script("scan_pii", planted_file, "--nlp", "patterns", "--redact", out)
    assert cp.returncode == 2 and "--force" in cp.stderr and out.read_text() == "keep\n"
    cp = run_script("scan_pii", planted_file, "--nlp", "patterns", "--redact", planted_file, "--force")
    assert cp.returncode == 2 and "input" in cp.stderr
    cp = run_script("scan_pii", planted_file, "--nlp", "patterns", "--redact", out, "--force")
    assert cp.returncode == 0 and out.read_text() != "keep\n"
    cp = run_script("scan_pii", planted_file, "--nlp", "patterns", "--mode", "mask")
    assert cp.returncode == 2 and "--redact" in cp.stderr


def test_invalid_lines_are_scanned_not_skipped(tmp_path):
    p = tmp_path / "mixed.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "mail a.b@example.com"}], "extra": 1}\n'
                 "not json, mail c.d@example.com\n\n"
                 '{"prompt": "ip 198.51.100.4", "completion": "ok"}\n', encoding="utf-8")
    out = tmp_path / "m.red.jsonl"
    code, doc = run_json("scan_pii", p, "--nlp", "patterns", "--redact", out, "--mode", "replace")
    assert code == 0 and doc["summary"]["EMAIL_ADDRESS"]["count"] == 2 and doc["unparsed_lines"] == 2
    assert {x["code"] for x in doc["problems"]} == {"not_a_valid_line", "invalid_json"}
    red = out.read_text().splitlines()
    assert "a.b@example.com" not in out.read_text() and "c.d@example.com" not in out.read_text()
    assert json.loads(red[0])["extra"] == 1 and red[2] == "" and "<IP_ADDRESS>" in red[3]


# ------------------------------------------------------------------ CLI contract

def test_bad_inputs_exit_2(tmp_path):
    garbage = tmp_path / "g.jsonl"
    garbage.write_bytes(bytes(range(256)) * 4)
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    for args in ([garbage], [empty], [tmp_path / "missing.jsonl"], [tmp_path], [],
                 [empty, "--threshold", "2"], [empty, "--phone-regions", "XX"], [empty, "--entities", "FOO"]):
        cp = run_script("scan_pii", *args, "--nlp", "patterns")
        assert cp.returncode == 2, (args, cp.stdout, cp.stderr)
        assert cp.stderr.startswith("error:") and cp.stderr.count("\n") == 1 and "Traceback" not in cp.stderr
    cp = run_script("scan_pii", "--help")
    assert cp.returncode == 0 and cp.stdout.rstrip().splitlines()[-1].strip().startswith(f"python3 {SCRIPTS}/scan_pii.py")


def test_nlp_model_not_installed_is_usage_error(planted_file):
    cp = run_script("scan_pii", planted_file, "--nlp", "en_core_web_trf_not_here")
    assert cp.returncode == 2 and "not installed" in cp.stderr and "spacy download" in cp.stderr


BLOCK_SPACY_MODELS = """
import importlib.abc, runpy, sys
class _NoModels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0].startswith(('en_core_web', 'en_core_news')):
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, _NoModels())
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_auto_without_any_spacy_model_falls_back_loudly(planted_file):
    """Simulate a machine with no spaCy pipeline installed: auto -> patterns + a loud warning."""
    cp = subprocess.run([sys.executable, "-c", BLOCK_SPACY_MODELS, str(SCRIPTS / "scan_pii.py"), str(planted_file),
                         "--json"], capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["nlp"]["mode"] == "patterns" and doc["nlp"]["requested"] == "auto"
    assert doc["undetectable_entities"] == []  # LOCATION: country names and places after cues only
    assert "WARNING" in cp.stderr and "PATTERN-ONLY" in cp.stderr and "spacy download" in cp.stderr
    assert doc["summary"]["EMAIL_ADDRESS"]["count"] == 2


def test_list_entities():
    code, doc = run_json("scan_pii", "--list-entities", "--nlp", "patterns")
    assert code == 0
    ents = {e["entity"]: e for e in doc["entities"]}
    for e in pii.SECRET_ENTITIES + ["STREET_ADDRESS", "EMAIL_ADDRESS"]:
        assert ents[e]["detectable"] and ents[e]["default"]
    assert ents["LOCATION"]["detectable"] is True and ents["USERNAME"]["default"]  # countries/place cues only
