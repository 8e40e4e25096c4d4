#!/usr/bin/env python3
"""Generate bench/data/pii_labelled.jsonl: a labelled PII set from PyPI `presidio-evaluator`.

presidio-evaluator (Microsoft's benchmark generator) fills ~200 sentence templates with fake
values (Faker + its own name/address records) and records each value's span. We sample the
templates per target entity so that every entity has enough examples, and fix one artefact
of its templates (a literal backslash-n instead of a newline, which glues the next value to
an 'n' and makes phone numbers unmatchable).

presidio-evaluator pulls heavy dependencies (pandas, plotly, scikit-learn, transformers), so
it is NOT a project dependency. Install it beside the project, e.g.
    pip install --target /tmp/pe-target --no-deps presidio-evaluator==0.3.2 faker python-dotenv
and run  python bench/pii_make_labelled.py --pe-path /tmp/pe-target
(the generated file is committed, so bench/pii.py does not need presidio-evaluator).
Output line: {"text", "spans": [[ENTITY, start, end], ...], "group", "source", "template", "split"}.

Held-out discipline: every row records its template (a short hash of the template text) and a
split decided by that hash - ``tune`` or ``heldout``, about half of the templates each - so no
template of the held-out half is ever seen while tuning (split by template, not by row).
bench/pii.py reports the held-out rows only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
from pathlib import Path

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
HERE = Path(__file__).resolve().parent

GROUPS = {  # group -> template placeholders that put that entity in a sentence
    "EMAIL_ADDRESS": ["email"],
    "PHONE_NUMBER": ["phone_number"],
    "CREDIT_CARD": ["credit_card_number"],
    "IBAN_CODE": ["iban"],
    "US_SSN": ["ssn"],
    "IP_ADDRESS": ["ip_address"],
    "PERSON": ["person", "name", "first_name", "last_name", "name_female", "name_male"],
    "STREET_ADDRESS": ["address", "street_name"],
    "LOCATION": ["city", "country"],
}


def unescape(text: str, spans: list) -> tuple[str, list]:
    """Turn literal '\\n' into newlines and move the spans accordingly."""
    out, remap, i = [], {}, 0
    while i < len(text):
        remap[i] = len(out)
        if text.startswith("\\n", i):
            out.append("\n")
            remap[i + 1] = remap[i] + 1
            i += 2
        else:
            out.append(text[i])
            i += 1
    remap[len(text)] = len(out)
    new = "".join(out)
    return new, [[e, remap[s], remap[t]] for e, s, t in spans]


def template_key(template: str) -> str:
    return hashlib.sha1(template.strip().encode("utf-8")).hexdigest()[:10]


def split_of(template_key: str) -> str:
    """Half of the templates are held out, chosen by their hash (stable, independent of the sampling)."""
    return "heldout" if int(template_key, 16) % 2 else "tune"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pe-path", help="directory where presidio-evaluator was installed with pip --target")
    ap.add_argument("--per-group", type=int, default=170)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "data" / "pii_labelled.jsonl"))
    a = ap.parse_args(argv)
    if a.pe_path:
        sys.path.append(a.pe_path)
    from presidio_evaluator.data_generator import PresidioSentenceFaker, presidio_templates_file_path

    templates = [t.strip() for t in presidio_templates_file_path.read_text().splitlines() if t.strip()]
    random.seed(a.seed)
    rows = []
    for group, keys in GROUPS.items():
        pat = re.compile(r"\{\{(?:" + "|".join(keys) + r")\}\}")
        subset = [t for t in templates if pat.search(t)]
        faker = PresidioSentenceFaker("en_US", lower_case_ratio=0.05, sentence_templates=subset,
                                      random_seed=a.seed)
        for s in faker.generate_new_fake_sentences(a.per_group):
            spans = [[sp.entity_type, sp.start_position, sp.end_position] for sp in s.spans]
            text, spans = unescape(s.full_text, spans)
            tid = template_key(subset[s.template_id])
            rows.append({"text": text, "spans": sorted(spans, key=lambda x: x[1]), "group": group,
                         "source": "presidio-evaluator 0.3.2", "template": tid, "split": split_of(tid)})
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} labelled sentences to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
