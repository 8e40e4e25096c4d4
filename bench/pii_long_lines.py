#!/usr/bin/env python3
"""Benchmark scan_pii's NER limits on pathological long lines (issue 20 item 8).

Texts: a 20 KB run of `[` followed by a sentence with a name and an e-mail (the case that took 118 s),
a 20 KB base64-like token + the same sentence, and 10,000 ordinary words + the sentence.
  - baseline: the installed spaCy pipeline sees each text whole (the scanner before the limits; in this
    script the limits are switched off by patching NER_MAX_RUN / NER_WINDOW_CHARS);
  - ours: `finetune_kit.pii.Scanner` with its limits (unbroken runs > 200 chars blanked for NER only,
    texts > 50k chars in overlapping windows).
Same engine, entities and texts in one run; the findings of both are printed side by side.

Run: .venv/bin/python bench/pii_long_lines.py
"""

from __future__ import annotations

import os
import random
import re
import string
import sys
import time
from pathlib import Path

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from finetune_kit import pii  # noqa: E402

TAIL = " Please call John Smith, or write to john.smith@example.com."


def texts() -> dict[str, str]:
    rnd = random.Random(0)
    b64 = "".join(rnd.choice(string.ascii_letters + string.digits + "+/") for _ in range(20000))
    words = " ".join(rnd.choice(["order", "refund", "parcel", "invoice", "status", "please", "today"])
                     for _ in range(10000))
    return {"20 KB of '['": "[" * 20000 + TAIL, "20 KB base64 token": b64 + TAIL, "10k words": words + TAIL}


def run(engine, items, *, limits: bool) -> tuple[float, list]:
    saved = (pii.NER_MAX_RUN, pii.NER_WINDOW_CHARS, pii._LONG_RUN)
    if not limits:
        pii.NER_WINDOW_CHARS = 10 ** 9
        pii._LONG_RUN = re.compile(r"(?!x)x")  # matches nothing: NER sees the text as it is
    try:
        t = time.perf_counter()
        hits = pii.Scanner(engine).analyze(items)
        return time.perf_counter() - t, hits
    finally:
        pii.NER_MAX_RUN, pii.NER_WINDOW_CHARS, pii._LONG_RUN = saved


def main() -> int:
    engine = pii.build_engine("auto", language="en", entities="default", threshold=0.4,
                              regions=pii.phone_regions("US"))
    if engine.choice.mode != "spacy":
        print("no spaCy pipeline installed: nothing to compare")
        return 1
    print(f"engine: {engine.choice.model} {engine.choice.version}")
    print("| text | baseline s | ours s | ratio | findings baseline | findings ours |")
    print("|---|---:|---:|---:|---|---|")
    for name, text in texts().items():
        base_s, base = run(engine, [text], limits=False)
        ours_s, ours = run(engine, [text], limits=True)
        show = lambda hs: ", ".join(f"{h.entity_type} '{text[h.start:h.end][:16]}'" for h in hs[0])  # noqa: E731
        print(f"| {name} | {base_s:.2f} | {ours_s:.2f} | {base_s / ours_s:.1f}x | {show(base)} | {show(ours)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
