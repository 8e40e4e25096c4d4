#!/usr/bin/env python3
"""Generate two held-out labelled PII sets, independent of presidio-evaluator's templates.

1. ``bench/data/pii_support.jsonl`` - English customer-support messages: names in greetings,
   introductions and sign-offs, shipping addresses of 11 countries (one line or an address block),
   international phone numbers, e-mails, cards, IBANs, IPs, cities/countries; plus messages that
   carry only non-PII ids (order numbers, SKUs, tickets, dates) as distractors.
2. ``bench/data/pii_multilingual.jsonl`` - the same kind of messages in Chinese, Vietnamese and
   English (names, addresses, phone numbers of zh_CN / vi_VN / en_US), for language-aware scanning.

Values come from PyPI ``faker`` (its locale providers); the templates are this file's own, written
for this benchmark. The support set is split by template (half tune, half held-out, by a hash of the
template id); the multilingual set is held out whole. Every value's span is recorded as it is inserted.

Faker is not a project dependency: install it beside the project, e.g.
    pip install --target /tmp/pe-target faker
    python bench/pii_make_support.py --faker-path /tmp/pe-target
(the generated files are committed, so bench/pii.py does not need faker).
Output line: {"text", "spans": [[ENTITY, start, end], ...], "group", "source", "lang", "template", "split"}.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SLOT = re.compile(r"\{(\w+)\}")
GOLD = {"first": "PERSON", "full": "PERSON", "full2": "PERSON", "agent": "PERSON", "email": "EMAIL_ADDRESS",
        "phone": "PHONE_NUMBER", "addr": "STREET_ADDRESS", "addr_block": "STREET_ADDRESS", "city": "LOCATION",
        "city2": "LOCATION", "country": "LOCATION", "card": "CREDIT_CARD", "iban": "IBAN_CODE", "ip": "IP_ADDRESS"}
EN_LOCALES = {"en_US": "United States", "en_GB": "United Kingdom", "de_DE": "Germany", "fr_FR": "France",
              "es_ES": "Spain", "it_IT": "Italy", "pl_PL": "Poland", "nl_NL": "Netherlands", "pt_BR": "Brazil",
              "en_IN": "India", "en_AU": "Australia"}

SUPPORT = [
    "Hi {first}, thanks for contacting Acme support. I can see order {order} was shipped to {addr}. Is that still correct?",
    "Hello, this is {full}. My package never arrived at {addr}. Tracking says it was delivered on {date}.",
    "Thanks for your patience, {first}!\n\nBest regards,\n{agent}\nAcme Customer Care",
    "Customer: Hey, can you change the delivery address on {order} to {addr}?\nAgent: Sure {first}, done.",
    "Please call me back on {phone}, I'm available after 5pm. - {full}",
    "My email is {email} and my phone number is {phone}.",
    "I'd like the refund on the card I paid with, the number is {card}, expiry 09/27.",
    "Hi {agent}, I was charged twice. Please refund to IBAN {iban} (account holder {full}).",
    "We noticed a sign-in to your account from {ip} near {city}, {country}. Was this you, {first}?",
    "Ship to:\n{full}\n{addr_block}\nPhone: {phone}",
    "Dear {full},\n\nyour return of {sku} has arrived at our {city} warehouse. The refund will be issued within 5 business days.\n\nKind regards,\n{agent}",
    "Good morning {first}! I'm {agent} and I'll be helping you today.",
    "I'm travelling from {city} to {city2} next week, can the parcel be held at a pickup point in {city2}?",
    "Yes, that's right: {addr}. Please leave it with my neighbour {full2} if I'm out.",
    "Thanks {first}, I've updated your number to {phone} and your e-mail to {email}.",
    "Order {order} ({sku}) was delivered to {addr} on {date} and signed for by {first}.",
    "Could you send the invoice for {order} to {email}? It should be addressed to {full}, {addr}.",
    "Hi there, my name's {full} and I live in {city}. Do you deliver to {country}?",
    "{agent} from Acme Support here. Hello {first}, ticket {ticket} is now closed.",
    "Cheers,\n{first}",
    "The courier ({full2}) tried to reach you at {phone} but nobody answered.",
    "New billing address: {addr}. Card on file: {card}.",
    "Can I pick it up myself? I work in {city} most days. Thanks, {full}",
    "Agent {agent}: I have escalated {ticket} - {first} will get an e-mail at {email} within 24 hours.",
]
DISTRACTORS = [
    "The SKU {sku} is out of stock until {date}; order {order} will ship as soon as it is back.",
    "Error 500 when calling /api/v2/orders/{order}: please retry in a few minutes.",
    "Ticket {ticket} was merged into {ticket2}. Status: waiting for warehouse.",
    "Your order {order} contains 3 items ({sku}, {sku2}) and qualifies for free shipping.",
    "Returns are accepted within 30 days. Use the code RET-{n4} on the label.",
]
ZH = [
    "你好，我叫{full}，我的订单{order}还没到。收货地址是{addr}。",
    "请把发票发到{email}，谢谢。我的手机号是{phone}。",
    "{full}您好！您的包裹已发往{addr}，预计{n1}天内送达。",
    "联系人：{full}\n电话：{phone}\n地址：{addr}",
    "客服{agent}：已为您把邮箱更新为{email}，如有问题请拨打{phone}。",
    "订单{order}的收件人是{full}，请核对地址：{addr}。",
    "好的，我们会尽快处理退款。祝您生活愉快！",
]
VI = [
    "Xin chào, tôi là {full}. Đơn hàng {order} của tôi vẫn chưa đến. Địa chỉ giao hàng: {addr}.",
    "Số điện thoại của tôi là {phone}, email {email}.",
    "Chào anh {first}, đơn hàng đã được gửi tới {addr}.",
    "Người nhận: {full}\nĐịa chỉ: {addr}\nSĐT: {phone}",
    "Cảm ơn chị {first}. Nhân viên {agent} sẽ liên hệ qua {email}.",
    "Tôi muốn đổi địa chỉ nhận hàng sang {addr}, được không ạ?",
    "Dạ, đơn hàng sẽ được giao trong {n1} ngày làm việc.",
]
EN_ML = [
    "Hi, I'm {full}. Order {order} still hasn't arrived at {addr}.",
    "You can reach me at {phone} or {email}.",
    "Thanks {first}! {agent} will follow up by e-mail.",
    "Deliver to: {full}, {addr}. Phone {phone}.",
    "The parcel is on its way and should arrive within {n1} days.",
]


def fill(template: str, values: dict[str, str]) -> tuple[str, list]:
    out, spans, pos = [], [], 0
    for m in SLOT.finditer(template):
        out.append(template[pos:m.start()])
        start = sum(map(len, out))
        v = values[m.group(1)]
        out.append(v)
        if m.group(1) in GOLD:
            spans.append([GOLD[m.group(1)], start, start + len(v)])
        pos = m.end()
    out.append(template[pos:])
    return "".join(out), spans


def distractors(rng: random.Random) -> dict[str, str]:
    return {"order": f"{rng.choice(['ORD', 'A', '#'])}{'-' if rng.random() < 0.5 else ''}{rng.randint(10000, 999999)}",
            "sku": f"{rng.choice(['SKU', 'ITM', 'P'])}-{rng.randint(100, 9999)}-{rng.choice('ABCDXYZ')}",
            "sku2": f"SKU-{rng.randint(100, 9999)}", "ticket": f"TCK-{rng.randint(1000, 99999)}",
            "ticket2": f"TCK-{rng.randint(1000, 99999)}", "n4": str(rng.randint(1000, 9999)),
            "n1": str(rng.randint(2, 9)),
            "date": rng.choice(["2026-03-14", "14/03/2026", "March 14", "last Tuesday", "Mon 9 Nov"])}


def en_values(fk, locale: str, rng: random.Random) -> dict[str, str]:
    first, last = fk.first_name(), fk.last_name()
    addr_lines = [x.strip() for x in fk.address().splitlines() if x.strip()]
    country = EN_LOCALES.get(locale, "")
    if rng.random() < 0.5 and country:
        addr_lines.append(country)
    v = {"first": first, "full": f"{first} {last}", "full2": fk.name(), "agent": fk.first_name(),
         "email": fk.email(), "phone": fk.phone_number(), "addr": ", ".join(addr_lines),
         "addr_block": "\n".join(addr_lines), "city": fk.city(), "city2": fk.city(), "country": country or "Canada",
         "card": fk.credit_card_number(), "iban": fk.iban(), "ip": fk.ipv4_public()}
    v.update(distractors(rng))
    return v


def ml_values(fk, lang: str, rng: random.Random) -> dict[str, str]:
    v = distractors(rng)
    if lang == "zh":
        v.update({"full": fk.name(), "agent": fk.name(), "email": fk.email(), "phone": fk.phone_number(),
                  "addr": fk.address().replace("\n", " ")})
    elif lang == "vi":
        full = fk.name()
        parts = [p for p in full.split() if p not in ("Ông", "Bà", "Cô", "Chị", "Anh", "Bác", "Em", "Cụ")]
        full = " ".join(parts)
        v.update({"full": full, "first": parts[-1], "agent": " ".join(fk.name().split()[-2:]), "email": fk.email(),
                  "phone": fk.phone_number(), "addr": fk.address().replace("\n", ", ")})
    else:
        v.update({"full": fk.name(), "first": fk.first_name(), "agent": fk.first_name(), "email": fk.email(),
                  "phone": fk.phone_number(), "addr": fk.address().replace("\n", ", ")})
    return v


def split_of(template_id: str) -> str:
    """Support templates: half tune, half held-out, by a hash of the template id (split by template).
    The multilingual set is held out whole."""
    import hashlib

    return "heldout" if int(hashlib.sha1(template_id.encode()).hexdigest(), 16) % 2 else "tune"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faker-path", help="directory where faker was installed with pip --target")
    ap.add_argument("--support", type=int, default=1000)
    ap.add_argument("--multilingual", type=int, default=150, help="rows per language")
    ap.add_argument("--seed", type=int, default=21)
    a = ap.parse_args(argv)
    if a.faker_path:
        sys.path.append(a.faker_path)
    import faker

    rng = random.Random(a.seed)
    fakers = {loc: faker.Faker(loc) for loc in list(EN_LOCALES) + ["zh_CN", "vi_VN"]}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(a.seed + i)
    rows = []
    for _ in range(a.support):
        loc = rng.choice(list(EN_LOCALES))
        pool = DISTRACTORS if rng.random() < 0.12 else SUPPORT
        t = rng.choice(pool)
        text, spans = fill(t, en_values(fakers[loc], loc, rng))
        tid = f"support-{(SUPPORT + DISTRACTORS).index(t)}"
        rows.append({"text": text, "spans": spans, "group": "support", "source": f"faker {faker.VERSION} {loc}",
                     "lang": "en", "template": tid, "split": split_of(tid)})
    write(HERE / "data" / "pii_support.jsonl", rows)
    rows = []
    for lang, templates, loc in (("zh", ZH, "zh_CN"), ("vi", VI, "vi_VN"), ("en", EN_ML, "en_US")):
        for _ in range(a.multilingual):
            t = rng.choice(templates)
            text, spans = fill(t, ml_values(fakers[loc], lang, rng))
            rows.append({"text": text, "spans": spans, "group": lang, "source": f"faker {faker.VERSION} {loc}",
                         "lang": lang, "template": f"{lang}-{templates.index(t)}", "split": "heldout"})
    write(HERE / "data" / "pii_multilingual.jsonl", rows)
    return 0


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} labelled texts to {path}")


if __name__ == "__main__":
    sys.exit(main())
