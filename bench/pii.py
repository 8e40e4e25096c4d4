#!/usr/bin/env python3
"""Benchmark scan_pii: speed against a naive presidio loop, and precision/recall per entity.

Speed (`--part speed`): the same chat messages (a synthetic support-chat dataset: a repeated
system prompt, user turns of which ~30% carry PII, assistant turns, tool calls with JSON
arguments) are analysed
  - naive: presidio `AnalyzerEngine.analyze(text)` per text, the engine built the standard way
    (presidio loads the spaCy pipeline itself, all components), same recognizers, entities,
    threshold and phone regions;
  - scanner: `finetune_kit.pii.Scanner.analyze(texts)` (dedup, spaCy `pipe` batches, sound
    per-text recognizer pre-checks).
Both must return identical findings (checked and printed). Then both again on the distinct
texts only (what batching and pre-checks give without de-duplication), and the scanner with
--phone-regions US,GB (a different configuration, for reference). Once for pattern-only mode
and once with the installed spaCy pipeline, in one run.

Quality (`--part quality`): HELD-OUT data only, in one run, scan_pii.py's detection with default
flags against stock presidio (`AnalyzerEngine()` defaults) on the same installed spaCy pipeline:
  - bench/data/pii_labelled.jsonl (presidio-evaluator sentences, bench/pii_make_labelled.py), the
    rows of the held-out half of its templates (split by template hash, never used for tuning);
  - bench/data/pii_support.jsonl (support chats, bench/pii_make_support.py: own templates, Faker
    values of 11 locales), the held-out half of its templates.
A prediction is a true positive when it overlaps a gold span of the same type family (STREET_ADDRESS
and LOCATION are one family); predictions of types outside the in-scope list are ignored.
Secret fixtures (written with the recognizers) are reported on one line as a check, not a result.

Multilingual (`--part multilingual`): bench/data/pii_multilingual.jsonl (zh / vi / en support
messages, held out whole), per language, for each mode.

Run: .venv/bin/python bench/pii.py [--part speed|quality|multilingual|all] [--conversations N]
Exit 1 when the quality target is not met.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("FT_NO_PROGRESS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))

from finetune_kit import pii, pii_engine  # noqa: E402

LABELLED = HERE / "data" / "pii_labelled.jsonl"
GOLD_MAP = {"GPE": "LOCATION"}
EVAL_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS",
                 "STREET_ADDRESS", "PERSON", "LOCATION"] + pii.SECRET_ENTITIES


# ------------------------------------------------------------------ secret fixtures

def _rand(rng, alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(obj) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def secret_fixtures(rng: random.Random, n_each: int = 25) -> list[dict]:
    """Positive examples (gold spans) of every secret type, plus look-alike negatives."""
    A, D = string.ascii_letters + string.digits, string.digits
    B64 = string.ascii_letters + string.digits + "/+"
    rows = []

    def pos(entity, template, value, extra=()):
        text = template.format(v=value)
        s = text.index(value)
        spans = [[entity, s, s + len(value)]]
        for e2, v2 in extra:  # other true values in the same text (e.g. the IP of a database URL)
            s2 = text.index(v2)
            spans.append([e2, s2, s2 + len(v2)])
        rows.append({"text": text, "spans": spans, "group": "secrets", "source": "fixture"})

    def mixed(alpha, n):
        while True:
            v = _rand(rng, alpha, n)
            if any(c.isdigit() for c in v) and any(c.isalpha() for c in v):
                return v

    for _ in range(n_each):
        pos("AWS_ACCESS_KEY", rng.choice(["export AWS_ACCESS_KEY_ID={v}", "my key id is {v}, region eu-west-1",
                                          "aws configure set aws_access_key_id {v}", '{{"AccessKeyId": "{v}"}}']),
            rng.choice(["AKIA", "ASIA"]) + _rand(rng, string.ascii_uppercase + "234567", 16))
        pos("AWS_SECRET_KEY", rng.choice(["aws_secret_access_key = {v}", "export AWS_SECRET_ACCESS_KEY={v}",
                                          "The AWS secret is {v}", '"SecretAccessKey": "{v}"']),
            mixed(B64, 40))
        pos("API_KEY", rng.choice(["OPENAI_API_KEY={v}",
                                   "use this key: {v}", "client = OpenAI(api_key=\"{v}\")",
                                   "Authorization: Bearer {v}"]),
            rng.choice(["sk-proj-" + mixed(A + "_-", 48), "sk-" + mixed(A, 48), "sk-ant-api03-" + mixed(A + "_-", 60),
                        "sk_live_" + mixed(A, 24), "AIza" + mixed(A + "_-", 35), "hf_" + mixed(A, 34)]))
        tok = (rng.choice(["ghp_", "gho_", "ghs_"]) + mixed(A, 36) if rng.random() < 0.7
               else "github_pat_" + mixed(A + "_", 82))
        if rng.random() < 0.33:  # a token inside URL credentials is both
            pos("GITHUB_TOKEN", "git remote set-url origin https://x-access-token:{v}@github.com/o/r", tok,
                [("URL_CREDENTIALS", "x-access-token:" + tok)])
        else:
            pos("GITHUB_TOKEN", rng.choice(["GITHUB_TOKEN={v}", "token: {v}"]), tok)
        pos("SLACK_TOKEN", rng.choice(["SLACK_BOT_TOKEN={v}", "slack token {v} for #ops", "xoxtoken: {v}"]),
            "xox" + rng.choice("bpas") + "-" + _rand(rng, D, 12) + "-" + _rand(rng, D, 12) + "-" + mixed(A, 24))
        body = "\n".join(_rand(rng, B64, 64) for _ in range(rng.randint(3, 8)))
        kind = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
        pos("PRIVATE_KEY", rng.choice(["here is the key:\n{v}\nthanks", "{v}", "cat id_rsa\n{v}"]),
            f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----")
        jwt = ".".join([_b64url({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}),
                        _b64url({"sub": _rand(rng, D, 8), "name": "x", "iat": rng.randint(1_600_000_000, 1_800_000_000)}),
                        _rand(rng, A + "_-", 43)])
        pos("JWT", rng.choice(["Authorization: Bearer {v}", "session cookie {v}", '{{"id_token": "{v}"}}']), jwt)
        user = rng.choice(["admin", "deploy", "app_user", "root", "svc-ml"])
        pw = mixed(A + "!#%^*", rng.randint(10, 20))
        host = rng.choice(["db.internal:5432/prod", "10.0.3.7:6379", "mongo.example.net/app"])
        scheme = rng.choice(["postgres", "redis", "mongodb", "https", "mysql"])
        pos("URL_CREDENTIALS", "connect with " + scheme + "://{v}@" + host, f"{user}:{pw}",
            [("IP_ADDRESS", "10.0.3.7")] if host.startswith("10.") else [])
        pos("SECRET", rng.choice(["password = {v}", 'DB_PASSWORD="{v}"', "client_secret: {v}", "passwd={v}"]),
            mixed(A + "!#%", rng.randint(10, 18)))
    negatives = [
        "We use scikit-learn and sk-learn style APIs for the task-management service.",
        "The commit sha is 3f786850e387550fdab836ed7e6dc881de23001b and aws is our cloud.",
        "Connect with postgres://user:password@localhost:5432/db (replace the placeholders).",
        "Set password = os.environ['DB_PASSWORD'] and token = tokenizer(text).",
        "The api_key: ${OPENAI_API_KEY} is read from the environment.",
        "ghp_ tokens start with ghp_ followed by 36 characters.",
        "A JWT looks like header.payload.signature, e.g. eyJhbGciOi... (truncated).",
        "-----BEGIN PUBLIC KEY----- is not a secret.",
        "The AKIA prefix marks long-term AWS access keys.",
        "xoxb- is the prefix of Slack bot tokens.",
        "Our secret sauce is the eval set; password: <your password here>.",
        "uuid 123e4567-e89b-12d3-a456-426614174000 and build 20240115-1337.",
    ]
    for t in negatives:
        rows.append({"text": t, "spans": [], "group": "secret-negatives", "source": "fixture"})
    return rows


HELDOUT_SETS = {  # name -> (file, what it is)
    "presidio-evaluator": (HERE / "data" / "pii_labelled.jsonl",
                           "presidio-evaluator 0.3.2 sentences, held-out half of the templates"),
    "support chats": (HERE / "data" / "pii_support.jsonl",
                      "own support-chat templates + Faker values of 11 locales, held-out half of the templates"),
}
MULTILINGUAL = HERE / "data" / "pii_multilingual.jsonl"
IN_SCOPE = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "STREET_ADDRESS",
            "PERSON", "LOCATION"]
# a street address found as a place (or a town inside an address block) is the same information
FAMILY = {"LOCATION": {"LOCATION", "STREET_ADDRESS"}, "STREET_ADDRESS": {"STREET_ADDRESS", "LOCATION"}}


def load_rows(path: Path, split: str | None = "heldout") -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            if split is not None and d.get("split", "heldout") != split:
                continue
            d["spans"] = [[GOLD_MAP.get(e, e), s, t] for e, s, t in d["spans"]]
            rows.append(d)
    return rows


def load_labelled() -> list[dict]:  # every row (the speed benchmark's PII sentences)
    return load_rows(LABELLED, None)


def score(rows: list[dict], preds: list[list[tuple[str, int, int]]], entities=IN_SCOPE) -> dict:
    """Overlap matching within a type family; predictions of out-of-scope types are ignored."""
    gold_n, rec, pred_n, prec = Counter(), Counter(), Counter(), Counter()
    for r, hits in zip(rows, preds):
        gold = [(e, s, t) for e, s, t in r["spans"] if e in entities]
        for e, s, t in gold:
            gold_n[e] += 1
            if any(h[0] in FAMILY.get(e, {e}) and h[1] < t and s < h[2] for h in hits):
                rec[e] += 1
        for h in hits:
            if h[0] not in entities:
                continue
            pred_n[h[0]] += 1
            if any(h[0] in FAMILY.get(e, {e}) and h[1] < t and s < h[2] for e, s, t in gold):
                prec[h[0]] += 1
    out = {e: {"gold": gold_n[e], "recall": rec[e] / gold_n[e] if gold_n[e] else None, "predicted": pred_n[e],
               "precision": prec[e] / pred_n[e] if pred_n[e] else None} for e in entities if gold_n[e] or pred_n[e]}
    g, p = sum(gold_n.values()), sum(pred_n.values())
    out["_all"] = {"gold": g, "recall": sum(rec.values()) / g if g else None, "predicted": p,
                   "precision": sum(prec.values()) / p if p else None}
    return out


def stock_presidio(model: str | None):
    """presidio's AnalyzerEngine with its defaults, on the same installed spaCy pipeline (or no_op)."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider, SpacyNlpEngine

    if model:
        ne = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
        ne.nlp = {"en": pii.load_spacy(model)}  # presidio's load() would try to download
    else:
        ne = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "no_op",
                                                  "models": [{"lang_code": "en", "model_name": "no_op"}]}).create_engine()
    an = AnalyzerEngine(nlp_engine=ne)
    return lambda texts: [[(x.entity_type, x.start, x.end) for x in an.analyze(t, language="en")] for t in texts]


def ours(nlp: str, threshold: float, languages: bool = True):
    """scan_pii.py's detection with default flags: the Scanner plus refinement (pii.detect_units)."""
    eng = pii.build_engine(nlp, entities="default", threshold=threshold)
    sc = pii.Scanner(eng, languages=languages)

    def run(texts):
        units = [pii.Unit(i, None, "text", ("text",), t) for i, t in enumerate(texts)]
        return [[(h.entity_type, h.start, h.end) for h in hits] for hits in pii.detect_units(sc, units)]
    return run, eng


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def quality(nlp: str, threshold: float) -> bool:
    eng_model = pii.resolve_nlp(nlp).model if pii.resolve_nlp(nlp).mode == "spacy" else None
    ours_run, eng = ours(nlp, threshold)
    engines = [("stock presidio `AnalyzerEngine` (defaults)", stock_presidio(eng_model)),
               (f"scan_pii.py default flags (--nlp {nlp})", ours_run)]
    if eng.choice.mode != "patterns":
        engines.append(("scan_pii.py --nlp patterns", ours("patterns", threshold)[0]))
    model = f"{eng.choice.model} {eng.choice.version or ''}".strip() if eng.choice.mode != "patterns" else "none"
    print(f"\n## Quality on held-out data (spaCy pipeline: {model}; threshold {threshold}; in-scope types: "
          f"{', '.join(IN_SCOPE)})\n")
    met = True
    results = {}
    for set_name, (path, what) in HELDOUT_SETS.items():
        rows = load_rows(path)
        texts = [r["text"] for r in rows]
        results[set_name] = {name: score(rows, run(texts)) for name, run in engines}
        print(f"### {set_name}: {len(rows)} texts ({what})\n")
        print("| engine | in-scope recall | precision | gold spans | predictions |")
        print("|---|---:|---:|---:|---:|")
        for name, _ in engines:
            a = results[set_name][name]["_all"]
            print(f"| {name} | {_f(a['recall'])} | {_f(a['precision'])} | {a['gold']} | {a['predicted']} |")
        print()
        print("| entity | gold | stock recall | stock precision | ours recall | ours precision |")
        print("|---|---:|---:|---:|---:|---:|")
        st, ou = results[set_name][engines[0][0]], results[set_name][engines[1][0]]
        for e in IN_SCOPE:
            if e in ou or e in st:
                g = (ou.get(e) or st.get(e))["gold"]
                sr, orr = st.get(e, {}), ou.get(e, {})
                print(f"| {e} | {g} | {_f(sr.get('recall'))} | {_f(sr.get('precision'))} | {_f(orr.get('recall'))} | "
                      f"{_f(orr.get('precision'))} |")
        print()
    # all held-out sets together
    print("### all held-out sets together\n")
    print("| engine | in-scope recall | precision |")
    print("|---|---:|---:|")
    for name, _ in engines:
        g = sum(results[s][name]["_all"]["gold"] for s in results)
        rec = sum((results[s][name]["_all"]["recall"] or 0) * results[s][name]["_all"]["gold"] for s in results)
        p = sum(results[s][name]["_all"]["predicted"] for s in results)
        pc = sum((results[s][name]["_all"]["precision"] or 0) * results[s][name]["_all"]["predicted"] for s in results)
        r_all, p_all = rec / g, (pc / p if p else 0)
        print(f"| {name} | {r_all:.3f} | {p_all:.3f} |")
        if name == engines[1][0]:
            ours_all = (r_all, p_all)
        if name == engines[0][0]:
            stock_all = (r_all, p_all)
    met = ours_all[0] >= 0.90 and ours_all[1] >= 0.85 and ours_all[0] > stock_all[0]
    print(f"\ntarget (in-scope recall >= 0.90 at precision >= 0.85, recall above stock presidio): "
          f"{'MET' if met else 'NOT MET'} ({ours_all[0]:.3f} / {ours_all[1]:.3f} vs stock {stock_all[0]:.3f})")
    return met


def secrets_check(threshold: float) -> None:
    """Secret recognizers on the fixtures written with them: shows they work, NOT a held-out number."""
    rows = secret_fixtures(random.Random(13))
    run, _ = ours("patterns", threshold)
    res = score(rows, run([r["text"] for r in rows]), EVAL_ENTITIES)
    a = res["_all"]
    print(f"\n## Secret fixtures (written with the recognizers - a check, not a held-out result): {len(rows)} texts, "
          f"recall {_f(a['recall'])}, precision {_f(a['precision'])}")


def multilingual(nlp: str, threshold: float) -> None:
    """zh / vi / en messages: what each mode finds, per language (held out whole)."""
    rows = load_rows(MULTILINGUAL)
    eng_model = pii.resolve_nlp(nlp).model if pii.resolve_nlp(nlp).mode == "spacy" else None
    modes = [("scan_pii.py default (language-aware)", ours(nlp, threshold)[0])]
    if eng_model:
        modes.append(("English NER on every text (language routing off)", ours(nlp, threshold, languages=False)[0]))
        modes.append(("stock presidio `AnalyzerEngine` (English spaCy)", stock_presidio(eng_model)))
    modes.append(("--nlp patterns", ours("patterns", threshold)[0]))
    ents = ["PERSON", "STREET_ADDRESS", "PHONE_NUMBER", "EMAIL_ADDRESS", "LOCATION"]
    print(f"\n## Multilingual held-out set: {len(rows)} support messages ({MULTILINGUAL.name}: zh / vi / en, "
          f"names, addresses, phones, e-mails of each locale)\n")
    print("| mode | language | recall (all) | precision (all) | PERSON recall | phone+e-mail recall | "
          "wrong PERSON/LOCATION spans |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, run in modes:
        for lang in ("zh", "vi", "en"):
            sub = [r for r in rows if r["lang"] == lang]
            preds = run([r["text"] for r in sub])
            res = score(sub, preds, ents)
            a = res["_all"]
            pr = res.get("PERSON", {}).get("recall")
            pe_g = sum(res.get(e, {}).get("gold", 0) for e in ("PHONE_NUMBER", "EMAIL_ADDRESS"))
            pe_r = sum((res.get(e, {}).get("recall") or 0) * res.get(e, {}).get("gold", 0)
                       for e in ("PHONE_NUMBER", "EMAIL_ADDRESS"))
            wrong = sum(1 for r, hs in zip(sub, preds) for h in hs if h[0] in ("PERSON", "LOCATION") and not any(
                h[1] < t and s < h[2] for _, s, t in r["spans"]))
            print(f"| {name} | {lang} | {_f(a['recall'])} | {_f(a['precision'])} | {_f(pr)} | "
                  f"{_f(pe_r / pe_g if pe_g else None)} | {wrong} |")


# ------------------------------------------------------------------ speed

SYSTEM_PROMPTS = [
    "You are Acme Bank's support assistant. Be concise, never ask for full card numbers, and escalate "
    "fraud reports to a human agent. Use the tools to look up orders and accounts.",
    "You are a helpful assistant for the Acme online store. Answer questions about orders, returns and "
    "shipping. Policy: returns within 30 days, refunds in 5-7 business days.",
    "You are a coding assistant. Explain briefly, show code when useful, and never invent APIs.",
]
USER_PLAIN = [
    "My order #{n5} hasn't arrived yet, it's been {n1} days.", "How do I reset my password?",
    "Can I return shoes I bought {n1} weeks ago?", "The build fails with exit code {n3} after {n2} minutes.",
    "What's the difference between a list and a tuple in Python?", "Is express shipping available to Canada?",
    "I was charged twice for the same purchase yesterday.", "Please cancel my subscription.",
    "How many items can I put in one order?", "Why does my loop print the last value {n1} times?",
]
ASSISTANT_PLAIN = [
    "Sorry about the delay. I checked order {n5}: it left our warehouse {n1} days ago and should arrive "
    "within 2 business days. I'll keep an eye on it.",
    "You can reset it from Settings > Security > Reset password; a link is valid for {n2} minutes.",
    "Yes - returns are accepted within 30 days if the items are unused. Start the return from your "
    "order page and print the label.",
    "Exit code 137 usually means the process was killed for using too much memory. Try reducing the "
    "batch size from {n2} to {n1} or give the job more RAM.",
    "A list is mutable and a tuple is not; tuples can be dictionary keys and are slightly faster to create.",
    "I've refunded the duplicate charge of ${n2}.{n1}9; it will show in 5-7 business days.",
    "Done - your subscription ends on the last day of this billing period and you won't be charged again.",
    "Here's a fix:\n\n```python\nfor i, x in enumerate(items):\n    print(i, x)\n```\nThe closure captured the variable, not its value.",
]


def chat_dataset(rng: random.Random, labelled: list[dict], conversations: int) -> list[dict]:
    pii_sentences = [r["text"] for r in labelled]

    def fill(t):
        return t.format(n1=rng.randint(2, 9), n2=rng.randint(10, 99), n3=rng.randint(100, 999),
                        n5=rng.randint(10000, 99999))

    lines = []
    for c in range(conversations):
        msgs = [{"role": "system", "content": SYSTEM_PROMPTS[c % len(SYSTEM_PROMPTS)]}]
        for turn in range(rng.randint(2, 4)):
            user = rng.choice(pii_sentences) if rng.random() < 0.3 else fill(rng.choice(USER_PLAIN))
            msgs.append({"role": "user", "content": user})
            if rng.random() < 0.25:
                cid = f"call_{c}_{turn}"
                args = {"order_id": str(rng.randint(10000, 99999)),
                        "note": rng.choice(pii_sentences) if rng.random() < 0.3 else "customer asked for status"}
                msgs.append({"role": "assistant", "tool_calls": [{"id": cid, "type": "function", "function": {
                    "name": "lookup_order", "arguments": json.dumps(args)}}]})
                msgs.append({"role": "tool", "tool_call_id": cid,
                             "content": json.dumps({"status": "shipped", "eta_days": rng.randint(1, 5)})})
            msgs.append({"role": "assistant", "content": fill(rng.choice(ASSISTANT_PLAIN))})
        lines.append({"messages": msgs})
    return lines


def speed(modes: list[str], conversations: int, threshold: float, batch_size: int) -> None:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    rng = random.Random(5)
    data = chat_dataset(rng, load_labelled(), conversations)
    texts, n_msgs = [], 0
    for i, obj in enumerate(data, 1):
        _, units, n = pii.line_units(i, obj)
        n_msgs += n
        texts += [u.text for u in units]
    uniq = len(set(texts))
    print(f"\n## Speed: {len(data)} conversations, {n_msgs} messages, {len(texts)} texts "
          f"({uniq} distinct), {sum(map(len, texts)):,} characters, threshold {threshold}\n")
    print("| engine | method | seconds | msgs/s | speed-up | identical findings |")
    print("|---|---|---:|---:|---:|---|")
    for mode in modes:
        eng = pii.build_engine(mode, entities="default", threshold=threshold)
        # naive reference: presidio builds its own NLP engine the standard way (full pipeline)
        if eng.choice.mode == "spacy":
            conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": eng.choice.model}],
                    "ner_model_configuration": {"model_to_presidio_entity_mapping": pii_engine._NER_MAPPING,
                                                "labels_to_ignore": pii_engine._NER_IGNORE}}
        else:
            conf = {"nlp_engine_name": "no_op", "models": [{"lang_code": "en", "model_name": "no_op"}]}
        naive_nlp = NlpEngineProvider(nlp_configuration=conf).create_engine()
        naive = pii.Engine(AnalyzerEngine(registry=eng.analyzer.registry, nlp_engine=naive_nlp,
                                          supported_languages=["en"]), naive_nlp, eng.choice, "en",
                           eng.entities, threshold, eng.regions)
        pii.naive_analyze(naive, texts[:20])  # warm-up (lazy recognizer loading)
        t = time.perf_counter()
        ref = pii.naive_analyze(naive, texts)
        t_naive = time.perf_counter() - t
        sc = pii.Scanner(eng, batch_size=batch_size, languages=False)  # one language: comparable 1:1
        t = time.perf_counter()
        got = sc.analyze(texts)
        t_scan = time.perf_counter() - t
        sc_r = pii.Scanner(eng, batch_size=batch_size)  # the default: each text's language detected first
        t = time.perf_counter()
        got_r = sc_r.analyze(texts)
        t_route = time.perf_counter() - t
        routed = sum(n for lang, n in sc_r.lang.texts.items() if lang != "en")
        same = ref == got
        name = "patterns (no_op)" if eng.choice.mode == "patterns" else f"spaCy {eng.choice.model}"
        print(f"| {name} | naive per-text `analyze` | {t_naive:.2f} | {n_msgs / t_naive:,.0f} | 1.00x | - |")
        print(f"| {name} | Scanner (batched) | {t_scan:.2f} | {n_msgs / t_scan:,.0f} | "
              f"{t_naive / t_scan:.2f}x | {'yes' if same else 'NO'} |")
        print(f"| {name} | Scanner + language detection (default) | {t_route:.2f} | {n_msgs / t_route:,.0f} | "
              f"{t_naive / t_route:.2f}x | {'yes' if got_r == ref else f'{routed} texts not English'} |")
        # the same without duplicates: what batching + pre-checks give on their own
        distinct = list(dict.fromkeys(texts))
        t = time.perf_counter()
        ref_d = pii.naive_analyze(naive, distinct)
        t_naive_d = time.perf_counter() - t
        t = time.perf_counter()
        got_d = pii.Scanner(eng, batch_size=batch_size, languages=False).analyze(distinct)
        t_scan_d = time.perf_counter() - t
        print(f"| {name} | naive, distinct texts only ({len(distinct)}) | {t_naive_d:.2f} | "
              f"{len(distinct) / t_naive_d:,.0f} texts/s | 1.00x | - |")
        print(f"| {name} | Scanner, distinct texts only | {t_scan_d:.2f} | {len(distinct) / t_scan_d:,.0f} texts/s | "
              f"{t_naive_d / t_scan_d:.2f}x | {'yes' if ref_d == got_d else 'NO'} |")
        # a different configuration, not like-for-like: phone numbers of US+GB only
        eng2 = pii.build_engine(mode, entities="default", threshold=threshold, regions=("US", "GB"),
                                _spacy_nlp=eng.nlp_engine.nlp["en"] if eng.choice.mode == "spacy" else None)
        sc2 = pii.Scanner(eng2, batch_size=batch_size, languages=False)
        t = time.perf_counter()
        sc2.analyze(texts)
        t2 = time.perf_counter() - t
        print(f"| {name} | Scanner, --phone-regions US,GB | {t2:.2f} | {n_msgs / t2:,.0f} | "
              f"{t_naive / t2:.2f}x | (other config) |")
        if not same:
            diff = sum(1 for a, b in zip(ref, got) if a != b)
            print(f"\nWARNING: {diff} texts differ between naive and scanner ({name})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["speed", "quality", "multilingual", "all"], default="all")
    ap.add_argument("--conversations", type=int, default=300)
    ap.add_argument("--threshold", type=float, default=pii.DEFAULT_THRESHOLD)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--nlp", default="auto", help="spaCy mode to compare with patterns (default: auto)")
    a = ap.parse_args(argv)
    pii.import_presidio_lean()
    modes = ["patterns"]
    if pii.resolve_nlp(a.nlp).mode == "spacy":
        modes.append(a.nlp)
    else:
        print("note: no spaCy pipeline installed; pattern-only results", file=sys.stderr)
    import platform

    print(f"# bench/pii.py - {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    if a.part in ("speed", "all"):
        speed(modes, a.conversations, a.threshold, a.batch_size)
    met = True
    if a.part in ("quality", "all"):
        met = quality(a.nlp, a.threshold)
        secrets_check(a.threshold)
    if a.part in ("multilingual", "all"):
        multilingual(a.nlp, a.threshold)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
