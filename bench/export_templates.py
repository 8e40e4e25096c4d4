#!/usr/bin/env python3
"""Check the Ollama TEMPLATEs written by export_adapter.py with Go's real text/template.

For each chat-template family (ChatML = SmolLM2's own template; Llama-3 and Gemma-3 style
Jinja templates set on the same tokenizer) and several conversations, compare:
  jinja  - the tokenizer's own rendering (apply_chat_template, BOS stripped: llama.cpp adds it)
  go     - export.GO_TEMPLATES[family] executed by Go's text/template, with Ollama's rule that
           the Modelfile SYSTEM is put first when the conversation has no system message
  python - export.simulate_go_template (what the unit tests use)
Needs `go` on PATH (Debian: apt-get install golang-go). Usage: python bench/export_templates.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("FT_CACHE_DIR", str(ROOT / ".cache" / "fine-tuning"))

from finetune_kit import export, models  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from chat_templates import GEMMA, LLAMA3  # noqa: E402

CONVS = [
    [{"role": "user", "content": "Route: my card was charged twice"}],
    [{"role": "system", "content": "Reply with JSON."}, {"role": "user", "content": "Where is my parcel?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Reset my password"}],
    [{"role": "user", "content": "Line one\nline two"}, {"role": "assistant", "content": "{\"a\": 1}"},
     {"role": "user", "content": "and now?"}],
]


def main() -> int:
    go = shutil.which("go")
    if not go:
        print("go not found: apt-get install golang-go", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp())
    binary = tmp / "gotmpl"
    subprocess.run([go, "build", "-o", str(binary), str(ROOT / "bench" / "export_templates" / "main.go")],
                   check=True, env={**os.environ, "GO111MODULE": "off", "GOCACHE": str(tmp / "gocache")})
    tok = models.load_tokenizer("smollm2-135m")
    original = tok.chat_template
    rows, bad = [], 0
    for label, tmpl_src in (("chatml (SmolLM2)", original), ("llama3", LLAMA3), ("gemma3", GEMMA)):
        tok.chat_template = tmpl_src
        info = export.detect_template(tok)
        fam = info["family"]
        for i, conv in enumerate(CONVS):
            jinja = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            for bos in ("<|begin_of_text|>", tok.bos_token):
                if fam != "chatml" and bos and jinja.startswith(bos):
                    jinja = jinja[len(bos):]
                    break
            msgs = list(conv)
            if info["default_system"] and msgs[0]["role"] != "system":   # Ollama's SYSTEM rule
                msgs = [{"role": "system", "content": info["default_system"]}] + msgs
            cp = subprocess.run([str(binary)], input=json.dumps({"template": export.GO_TEMPLATES[fam],
                                                                 "messages": msgs}),
                                capture_output=True, text=True)
            gout = cp.stdout if cp.returncode == 0 else f"<error {cp.stderr.strip()}>"
            sim = export.simulate_go_template(fam, conv, info["default_system"])
            ok = gout == jinja == sim
            bad += not ok
            rows.append((label, fam, i, ok, gout == jinja, sim == gout))
            if not ok:
                print(f"--- {label} conv {i}\njinja : {jinja!r}\ngo    : {gout!r}\npython: {sim!r}")
    print(f"{'template':18} {'family':7} conv  all-equal  go==jinja  python==go")
    for r in rows:
        print(f"{r[0]:18} {r[1]:7} {r[2]:>4}  {str(r[3]):9}  {str(r[4]):9}  {r[5]}")
    print(f"{len(rows) - bad}/{len(rows)} renderings identical")
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
