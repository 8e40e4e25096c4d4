#!/usr/bin/env python3
"""Generate the demo's synthetic task: routing support tickets to a strict JSON answer.

Each row is a customer ticket and the routing a helpdesk agent gave it:
    {"category": "billing|technical|account|shipping", "priority": "high|normal"}
The rules are deterministic, so a small model can learn them from a few hundred rows:
  - category: the topic of the ticket (billing = charges, invoices, refunds; technical = errors,
    crashes, bugs; account = login, password, profile; shipping = parcels, delivery, tracking);
  - priority: "high" when the customer says the ticket is urgent ("URGENT:", "This is urgent!",
    "Urgent request:", ...), otherwise "normal".

Planted problems the pipeline must catch (recorded in the --truth file):
  - PII: e-mail addresses (reserved example.* domains) and phone numbers (UK drama range
    020 7946 0xxx and US +1 NXX-555-01xx fictional numbers) in some tickets;
  - exact duplicates (the same row exported twice) and near duplicates (the same ticket with a
    small edit such as a trailing "Thanks!").

Output: a CSV export (columns ticket_id, message, category, routing) that prepare_data.py
converts with --prompt-column message --completion-column routing. Same --seed, same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from finetune_kit import cli, jsonl  # noqa: E402
from finetune_kit.errors import UsageError  # noqa: E402

CATEGORIES = ("billing", "technical", "account", "shipping")
SYSTEM_PROMPT = ('Route the ticket. Reply with JSON only: {"category": "billing|technical|account|shipping", '
                 '"priority": "high|normal"}; high only if urgent.')

TEMPLATES = {
    "billing": [
        "I was charged twice for my {plan} subscription this month",
        "My invoice {inv} shows the wrong amount",
        "Please refund the payment for order {order}, I cancelled it",
        "Why was my card billed {amount} when my plan costs less?",
        "I need a copy of invoice {inv} for my accountant",
        "The discount code was not applied and I paid {amount}",
        "You charged my credit card after I cancelled the {plan} plan",
        "Can I get a refund for the duplicate charge of {amount}?",
        "The VAT on invoice {inv} is wrong",
        "My payment of {amount} failed but the money left my bank account",
    ],
    "technical": [
        "The app crashes every time I open the {feature} page",
        "I get error {code} when I upload a file",
        "The {feature} page does not load since the last update",
        "Sync keeps failing with error {code} on my laptop",
        "The export button in {feature} does nothing when I click it",
        "Notifications stopped working after the update to version {version}",
        "The mobile app freezes on the {feature} screen",
        "Search returns a blank page with error {code}",
        "The API returns error {code} for every request since this morning",
        "Images in {feature} are broken and show a grey box",
    ],
    "account": [
        "I cannot log in to my account even with the right password",
        "Please reset the password for my account",
        "How do I change the email address on my profile?",
        "Please delete my account and all my data",
        "The two-factor code never arrives when I try to sign in",
        "My account was locked after too many login attempts",
        "I want to change the username on my account",
        "Someone else may have access to my account, I see logins I do not recognise",
        "How can I add a second user to my account?",
        "I never received the verification email for my new account",
    ],
    "shipping": [
        "My package for order {order} has not arrived yet",
        "The tracking number {track} shows no updates for a week",
        "The parcel arrived damaged and the box was open",
        "Can I change the delivery address for order {order}?",
        "I received the wrong item in my parcel for order {order}",
        "The courier says order {order} was delivered but I have nothing",
        "How long does delivery to {city} usually take?",
        "Part of order {order} is missing from the package",
        "The delivery for order {order} is late by five days",
        "Can you ship order {order} to a pickup point in {city} instead?",
    ],
}
SLOTS = {
    "plan": ["Pro", "Basic", "Team", "Premium", "Starter"],
    "inv": ["INV-20731", "INV-18842", "INV-33019", "INV-40276", "INV-51190", "INV-27764"],
    "order": ["#48213", "#51977", "#60342", "#39105", "#72648", "#58830", "#44719"],
    "amount": ["$49.00", "$12.99", "$120.00", "EUR 35.50", "$89.90", "GBP 18.00"],
    "feature": ["reports", "dashboard", "settings", "calendar", "projects", "invoices"],
    "code": ["500", "E1042", "403", "0x80070005", "TIMEOUT-7", "429"],
    "version": ["4.2.1", "5.0", "3.9.8", "5.1.2"],
    "track": ["1Z999AA10123456784", "JD014600003828", "RR123456785GB", "9400100000000000000000"],
    "city": ["Leeds", "Lyon", "Denver", "Porto", "Bremen", "Austin"],
}
GREETINGS = ["", "", "", "Hi, ", "Hello, ", "Hi team, ", "Good morning, ", "Hey, "]
URGENT = [("URGENT: ", ""), ("", " This is urgent!"), ("Urgent request: ", ""), ("", " It is urgent, please reply today."),
          ("", " Marking this as urgent.")]
CALM = ["", "", "", " Thanks.", " Thank you in advance.", " No rush.", " Kind regards.", " Thanks for your help."]
CONTEXT = [
    "I have been a customer for three years and this is the first time something like this has happened to me.",
    "I already tried the steps in your help centre article and restarted everything twice, but nothing changed.",
    "My colleague on the same team has the same problem since yesterday, so it is probably not just my setup.",
    "I contacted support last week about this and was told it would be fixed, but I have not heard back since.",
]
FIRST = ["james", "maria", "li", "ahmed", "sofia", "john", "emma", "lucas", "priya", "noah"]
LAST = ["smith", "garcia", "chen", "khan", "rossi", "brown", "muller", "silva", "patel", "jones"]
DOMAINS = ["example.com", "example.org", "example.net"]


def _email(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"


def _phone(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"+44 20 7946 0{rng.randint(0, 999):03d}"
    return f"+1 {rng.choice(['212', '312', '415', '617'])}-555-01{rng.randint(0, 99):02d}"


def _fill(tmpl: str, rng: random.Random) -> str:
    out = tmpl
    for k, vals in SLOTS.items():
        if "{" + k + "}" in out:
            out = out.replace("{" + k + "}", rng.choice(vals))
    return out


def routing(category: str, priority: str) -> str:
    return json.dumps({"category": category, "priority": priority})


def generate(n: int = 320, seed: int = 7, pii_share: float = 0.12, exact_dups: int = 16,
             near_dups: int = 16) -> tuple[list[dict], dict]:
    """Rows (dicts with ticket_id, message, category, routing) and the truth about planted items."""
    if n < 20:
        raise UsageError("--rows must be at least 20")
    rng = random.Random(seed)
    rows: list[dict] = []
    truth: dict = {"seed": seed, "rows": 0, "pii": {"email": [], "phone": []}, "exact_duplicates": [],
                   "near_duplicates": [], "by_category": {}, "by_priority": {}}
    seen = set()
    while len(rows) < n:
        cat = CATEGORIES[len(rows) % len(CATEGORIES)]
        body = _fill(rng.choice(TEMPLATES[cat]), rng)
        high = rng.random() < 0.35
        pre, post = rng.choice(URGENT) if high else ("", rng.choice(CALM))
        greet = rng.choice(GREETINGS)
        lead = body if (not greet or body.startswith(("I ", "I'"))) else body[0].lower() + body[1:]
        text = f"{pre}{greet}{lead}.{post}".replace("?.", "?")
        kind = None
        if rng.random() < pii_share:
            kind = rng.choice(["email", "phone"])
            val = _email(rng) if kind == "email" else _phone(rng)
            text += rng.choice([f" You can reach me at {val}.", f" My contact is {val}.",
                                f" Reply to {val} please."])
        if text in seen:
            continue
        seen.add(text)
        idx = len(rows)
        if kind:
            truth["pii"][kind].append(idx)
        rows.append({"message": text, "category": cat, "routing": routing(cat, "high" if high else "normal")})
    # exact duplicates: a row exported twice; near duplicates: the same ticket lightly edited
    originals = rng.sample(range(len(rows)), exact_dups + near_dups)
    for i in originals[:exact_dups]:
        truth["exact_duplicates"].append([i, len(rows)])
        rows.append(dict(rows[i]))
        for kind in ("email", "phone"):
            if i in truth["pii"][kind]:
                truth["pii"][kind].append(len(rows) - 1)
    for i in originals[exact_dups:]:
        # a near duplicate needs enough shared text: give the ticket some context first
        rows[i]["message"] = rows[i]["message"] + " " + rng.choice(CONTEXT)
        r = dict(rows[i])
        r["message"] = r["message"] + rng.choice([" Thanks!", " Cheers.", " Many thanks."])
        truth["near_duplicates"].append([i, len(rows)])
        rows.append(r)
        for kind in ("email", "phone"):
            if i in truth["pii"][kind]:
                truth["pii"][kind].append(len(rows) - 1)
    # shuffle the export order deterministically, keeping the truth in sync
    order = list(range(len(rows)))
    rng.shuffle(order)
    pos = {old: new for new, old in enumerate(order)}
    rows = [rows[i] for i in order]
    for k in ("email", "phone"):
        truth["pii"][k] = sorted(pos[i] for i in truth["pii"][k])
    for k in ("exact_duplicates", "near_duplicates"):
        truth[k] = sorted(sorted([pos[a], pos[b]]) for a, b in truth[k])
    for i, r in enumerate(rows):
        r["ticket_id"] = f"T{10000 + i}"
        prio = json.loads(r["routing"])["priority"]
        truth["by_category"][r["category"]] = truth["by_category"].get(r["category"], 0) + 1
        truth["by_priority"][prio] = truth["by_priority"].get(prio, 0) + 1
    truth["rows"] = len(rows)
    truth["system_prompt"] = SYSTEM_PROMPT
    truth["csv_line_of_row"] = "row i is on CSV line i + 2 (line 1 is the header)"
    return rows, truth


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["ticket_id", "message", "category", "routing"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in ("ticket_id", "message", "category", "routing")})
    return buf.getvalue()


def build_parser():
    p = cli.make_parser(
        "make_sample_data",
        "Write the demo's synthetic support-ticket routing data as a CSV export, with planted PII\n"
        "and duplicates, plus a truth file describing what was planted. Deterministic by --seed.",
        ["python3 {baseDir}/demo/make_sample_data.py --output demo-output/tickets.csv",
         "python3 {baseDir}/demo/make_sample_data.py --output t.csv --truth t.truth.json --rows 500 --seed 3 --json"])
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="CSV file to write")
    p.add_argument("--truth", metavar="FILE", help="JSON describing the planted PII and duplicates "
                   "(default: OUTPUT with .truth.json)")
    p.add_argument("--rows", type=int, default=320, help="unique tickets before duplicates (default 320)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    return p


def handle(args) -> cli.Result:
    rows, truth = generate(n=args.rows, seed=args.seed)
    out = Path(args.output)
    truth_path = Path(args.truth) if args.truth else out.with_suffix(".truth.json")
    jsonl.check_output(truth_path, force=args.force)
    jsonl.write_text(out, to_csv(rows), force=args.force)
    jsonl.write_json(truth_path, truth, force=args.force)
    doc = {"output": str(out), "truth": str(truth_path), "rows": truth["rows"],
           "pii_rows": {k: len(v) for k, v in truth["pii"].items()},
           "exact_duplicates": len(truth["exact_duplicates"]), "near_duplicates": len(truth["near_duplicates"]),
           "by_category": truth["by_category"], "by_priority": truth["by_priority"],
           "system_prompt": SYSTEM_PROMPT, "sha256": jsonl.sha256_file(out)}
    text = (f"wrote {truth['rows']} tickets to {out} ({doc['pii_rows']['email']} with e-mails, "
            f"{doc['pii_rows']['phone']} with phones, {doc['exact_duplicates']} exact and "
            f"{doc['near_duplicates']} near duplicates); truth in {truth_path}")
    return cli.Result(doc, text, outputs=[out, truth_path], summary={"rows": truth["rows"]})


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
