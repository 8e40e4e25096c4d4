#!/usr/bin/env python3
"""Run the whole fine-tuning path on a bundled synthetic task and write demo-output/REPORT.md.

Task: route customer support tickets to a strict JSON answer {"category", "priority"}
(demo/make_sample_data.py: a few hundred tickets with planted PII and duplicates).

Stages, each a subprocess `python3 scripts/<verb>.py ... --json` exactly as an agent runs them:
should_finetune -> prepare_data -> validate_jsonl -> scan_pii (redaction) -> estimate_costs ->
train_lora (SmolLM2-135M-Instruct on CPU, a few minutes) -> evaluate (base vs fine-tuned on the
test split, paired tests) -> diagnose_training (--plot) -> export_adapter (--merge, and --gguf when
llama.cpp's converter is at hand: `make llama-cpp`) -> serve_gguf (bench/serve_gguf.py: base GGUF +
adapter.gguf served by llama.cpp on the test split, compared with evaluate's transformers answers;
needs llama-cpp-python, else reported as skipped).
A stage whose script does not exist is reported as "not available yet"; a stage whose input
did not get made is "skipped". Every stage's command, exit code, time and key results go to
REPORT.md; each stage's full --json document is kept in OUTPUT_DIR/stages/.

The output directory is worked in place (the adapter and export record absolute paths), so an
existing one is replaced only with --force.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from finetune_kit import cli  # noqa: E402
from finetune_kit.errors import UsageError  # noqa: E402

sys.path.insert(0, str(ROOT / "demo"))
import make_sample_data  # noqa: E402

BASE = "smollm2-135m"
# Training budget: 20 optimizer steps of 8 short examples (~0.7 epoch of the ~225-example train
# split) at a high LoRA learning rate: enough for the JSON format and most routing rules, and a
# few minutes on 2 CPU cores (timings in REPORT.md).
TRAIN = {"max_steps": 20, "batch_size": 8, "lr": "1e-3", "r": 16, "alpha": 32, "max_seq_length": 192,
         "eval_steps": 5, "logging_steps": 2}
PII_ENTITIES = "EMAIL_ADDRESS,PHONE_NUMBER,CREDIT_CARD,IBAN_CODE,US_SSN,IP_ADDRESS,secrets"


@dataclass
class Stage:
    key: str
    script: str
    title: str
    args: list[str] = field(default_factory=list)
    status: str = "pending"        # ok | failed | blocking | not available yet | skipped
    exit_code: int | None = None
    seconds: float | None = None
    doc: Any = None
    stderr_tail: str = ""
    note: str = ""

    @property
    def rel_path(self) -> str:   # scripts/<verb>.py, or a bench script given as "bench/<name>"
        return f"{self.script}.py" if "/" in self.script else f"scripts/{self.script}.py"

    def command(self) -> str:
        return " ".join(["python3", self.rel_path] + [shlex.quote(a) for a in self.args])


class Demo:
    def __init__(self, out: Path, quick: bool = False):
        self.out = out
        self.quick = quick
        self.stages: list[Stage] = []
        self.env = dict(os.environ)
        self.env.setdefault("FT_CACHE_DIR", str(ROOT / ".cache" / "fine-tuning"))
        self.env.setdefault("HF_HUB_OFFLINE", "1")
        self.env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.env.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        self.env["FT_NO_PROGRESS"] = "1"

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def run(self, st: Stage, needs: list[Path] = ()) -> Stage:
        self.stages.append(st)
        n = len(self.stages)
        script = ROOT / st.rel_path
        if not script.is_file():
            st.status, st.note = "not available yet", f"{st.rel_path} does not exist yet"
            self.log(f"[{n}] {st.title}: not available yet")
            return st
        missing = [str(p) for p in needs if not Path(p).exists()]
        if missing:
            st.status, st.note = "skipped", f"input missing (an earlier stage did not produce it): {', '.join(missing)}"
            self.log(f"[{n}] {st.title}: skipped ({st.note})")
            return st
        self.log(f"[{n}] {st.title}: {st.command()}")
        t = time.time()
        cp = subprocess.run([sys.executable, str(script), *st.args, "--json"], cwd=str(ROOT), env=self.env,
                            capture_output=True, text=True)
        st.seconds = round(time.time() - t, 1)
        st.exit_code = cp.returncode
        st.stderr_tail = "\n".join(ln for ln in cp.stderr.splitlines()
                                   if ln.strip() and "it/s]" not in ln and "examples/s]" not in ln)[-1500:]
        try:
            st.doc = json.loads(cp.stdout)
        except ValueError:
            st.doc = None
        (self.out / "stages").mkdir(exist_ok=True)
        (self.out / "stages" / f"{n:02d}_{st.key}.json").write_text(
            json.dumps(st.doc, indent=2, default=str) if st.doc is not None else cp.stdout, encoding="utf-8")
        if cp.returncode == 0 and st.doc is not None:
            st.status = "ok"
        elif cp.returncode == 1 and st.doc is not None and "error" not in st.doc:
            st.status = "blocking"
        else:
            st.status = "failed"
            st.note = (st.doc or {}).get("error") if isinstance(st.doc, dict) else None
            st.note = st.note or (st.stderr_tail.splitlines() or ["no output"])[-1]
        self.log(f"    -> {st.status} (exit {st.exit_code}, {st.seconds} s)")
        return st


def gguf_converter() -> tuple[list[str], str]:
    """export_adapter.py --gguf arguments when llama.cpp's converter is at hand (make llama-cpp)."""
    from finetune_kit import export_gguf

    for cand in (ROOT / ".cache" / "llama-cpp", None):
        try:
            found = export_gguf.find_llama_cpp(str(cand) if cand else None)
            return ["--gguf", "--llama-cpp", str(found.root)], ""
        except UsageError:
            continue
    return [], "no adapter.gguf: " + export_gguf.setup_line()


def pipeline(demo: Demo) -> dict[str, Any]:
    out = demo.out
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    # 0. the raw export
    t = time.time()
    rows, truth = make_sample_data.generate(seed=7)
    csv_path = data / "tickets.csv"
    csv_path.write_text(make_sample_data.to_csv(rows), encoding="utf-8")
    (data / "tickets.truth.json").write_text(json.dumps(truth, indent=2), encoding="utf-8")
    gen = {"seconds": round(time.time() - t, 1), "rows": truth["rows"], "truth": truth}
    demo.log(f"[0] sample data: {truth['rows']} tickets -> {csv_path}")

    splits = out / "splits"
    train, val, test = splits / "train.jsonl", splits / "validation.jsonl", splits / "test.jsonl"
    redacted = out / "train.redacted.jsonl"
    adapter, evald, export_dir = out / "adapter", out / "eval", out / "export"

    demo.run(Stage("should_finetune", "should_finetune", "Should we fine-tune?",
                   ["--failure-mode", "format", "--examples", str(truth["rows"]), "--monthly-requests", "200000",
                    "--requirements-change", "rarely", "--privacy", "none"]))
    demo.run(Stage("prepare_data", "prepare_data", "Prepare: convert, dedup, split",
                   [str(csv_path), "--output-dir", str(splits), "--prompt-column", "message",
                    "--completion-column", "routing", "--system", make_sample_data.SYSTEM_PROMPT,
                    "--stratify", "category", "--split", "0.7,0.1,0.2", "--seed", "42"]), needs=[csv_path])
    demo.run(Stage("validate_jsonl", "validate_jsonl", "Validate the splits",
                   [str(train), str(val), str(test), "--tokenizer", BASE]), needs=[train, val, test])
    demo.run(Stage("scan_pii", "scan_pii", "Scan for PII and redact the training split",
                   [str(train), "--nlp", "patterns", "--entities", PII_ENTITIES, "--phone-regions", "US,GB",
                    "--redact", str(redacted), "--mode", "pseudonym"]), needs=[train])
    train_file = redacted if redacted.exists() else train
    demo.run(Stage("estimate_costs", "estimate_costs", "Estimate costs (same data on a managed API)",
                   ["--provider", "openai", "--model", "gpt-4.1-mini", "--train", str(train_file),
                    "--base-prompt-tokens", "1200", "--ft-prompt-tokens", "90", "--output-tokens", "15",
                    "--requests-per-month", "200000", "--params-b", "0.135"]), needs=[train_file])
    tr = dict(TRAIN)
    if demo.quick:
        tr.update(max_steps=2, eval_steps=2, logging_steps=1)
    demo.run(Stage("train_lora", "train_lora", f"Train a LoRA adapter ({BASE}, CPU)",
                   ["--base-model", BASE, "--train", str(train_file), "--validation", str(val),
                    "--output-dir", str(adapter), "--max-seq-length", str(tr["max_seq_length"]),
                    "--batch-size", str(tr["batch_size"]), "--grad-accum", "1", "--lr", tr["lr"],
                    "--r", str(tr["r"]), "--alpha", str(tr["alpha"]), "--max-steps", str(tr["max_steps"]),
                    "--eval-steps", str(tr["eval_steps"]), "--logging-steps", str(tr["logging_steps"]),
                    "--save-steps", "1000", "--seed", "42"]), needs=[train_file, val])
    have_adapter = [adapter / "adapter_config.json"]
    test_for_eval = test
    if demo.quick and test.exists():
        test_for_eval = out / "test.quick.jsonl"
        test_for_eval.write_text("".join(test.read_text(encoding="utf-8").splitlines(True)[:8]), encoding="utf-8")
    demo.run(Stage("evaluate", "evaluate", "Evaluate base vs fine-tuned on the test split",
                   ["--base-model", BASE, "--adapter", str(adapter), "--test", str(test_for_eval),
                    "--metrics", "exact_match,json_valid,json_match,token_f1,latency_ms,output_tokens",
                    "--max-new-tokens", "24", "--batch-size", "16", "--output-dir", str(evald)]),
             needs=have_adapter + [test_for_eval])
    demo.run(Stage("diagnose_training", "diagnose_training", "Diagnose the training run",
                   [str(adapter), "--plot", str(out / "loss_curve.png")]), needs=have_adapter)
    gguf_args, gguf_note = gguf_converter()
    demo.run(Stage("export_adapter", "export_adapter", "Export for Ollama / vLLM / OpenClaw (+ verified merge)",
                   [str(adapter), "--output-dir", str(export_dir), "--name", "ticket-router", "--merge", *gguf_args],
                   note=gguf_note), needs=have_adapter)
    # the full demo serves the Modelfile's own base (Q4_1); a --quick adapter is barely trained, so its long
    # rambling answers are compared on an F32 GGUF of the same weights (exactness of the conversion only)
    serve = Stage("serve_gguf", "bench/serve_gguf", "Serve adapter.gguf with llama.cpp, compare with evaluate",
                  ["--demo-dir", str(out), "--export-dir", str(export_dir), "--bases", "f32" if demo.quick else "q4_1",
                   "--work-dir", str(out / "serve")] + gguf_args[1:])
    if importlib.util.find_spec("llama_cpp") is None:
        demo.stages.append(serve)
        serve.status = "skipped"
        serve.note = ("llama-cpp-python is not installed (pip install 'llama-cpp-python==0.3.36' builds llama.cpp; "
                      "`make serve-bench` does it)")
    else:
        demo.run(serve, needs=[export_dir / "adapter.gguf", evald / "predictions.jsonl"])
    total = round(time.time() - t0, 1)
    return {"generate": gen, "total_seconds": total}


# ----------------------------------------------------------------------------- report

def _get(d: Any, *path, default=None):
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return default
    return d


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def summarize(st: Stage, demo: Demo, truth: dict) -> list[str]:
    """Key results of one stage as Markdown lines (read from its --json document)."""
    d = st.doc if isinstance(st.doc, dict) else {}
    L: list[str] = []
    if st.key == "should_finetune":
        L.append(f"Recommendation: **{d.get('recommendation')}**.")
        L += [f"- {r}" for r in d.get("reasons", [])[:4]]
    elif st.key == "prepare_data":
        c = d.get("counts", {})
        L.append(f"{c.get('input_rows')} rows read, {c.get('converted')} converted; removed "
                 f"{c.get('exact_duplicates')} exact duplicates (planted {len(truth['exact_duplicates'])}) and "
                 f"{c.get('near_duplicates')} near duplicates (planted {len(truth['near_duplicates'])}); "
                 f"kept {c.get('kept')}: train {c.get('train')}, validation {c.get('validation')}, test {c.get('test')}.")
        if (c.get("near_duplicates") or 0) < len(truth["near_duplicates"]):
            L.append("Near duplicates are found by Jaccard similarity of word 3-shingles (default threshold "
                     f"{_get(d, 'dedup', 'threshold')}); planted pairs below it stay (see splits/removed.jsonl for "
                     "what was removed and why).")
        lk = d.get("leakage", {})
        L.append(f"Leakage between splits: exact {lk.get('exact')}, near-duplicate {lk.get('near_dup')}.")
        if d.get("warnings"):
            L.append("Warnings: " + "; ".join(map(str, d["warnings"])))
    elif st.key == "validate_jsonl":
        L.append(f"Valid: **{d.get('valid')}**.")
        L.append("")
        L.append("| file | examples | errors | warnings | tokens | trainable | tokens/example p50 / max |")
        L.append("|---|---:|---:|---:|---:|---:|---|")
        for f in d.get("files", []):
            s = f.get("stats", {})
            tpe = s.get("tokens_per_example") or {}
            L.append(f"| {Path(f.get('file', '')).name} | {f.get('examples')} | {len(f.get('errors', []))} | "
                     f"{len(f.get('warnings', []))} | {s.get('total_tokens')} | {s.get('trainable_tokens')} | "
                     f"{tpe.get('p50')} / {tpe.get('max')} |")
        codes = sorted({w.get("code") for f in d.get("files", []) for w in f.get("warnings", [])})
        if codes:
            L.append(f"\nWarning codes: {', '.join(map(str, codes))}.")
    elif st.key == "scan_pii":
        summ = d.get("summary", {})
        found = ", ".join(f"{k} {v.get('count')} in {v.get('lines')} lines" for k, v in summ.items()) or "nothing"
        L.append(f"Found: {found} (mode {_get(d, 'nlp', 'mode')}; previews are masked, no raw values in reports).")
        planted = planted_in_split(demo.out / "splits" / "train.jsonl", truth)
        if planted:
            L.append(f"Planted in the training split: {planted['email']} tickets with an e-mail address, "
                     f"{planted['phone']} with a phone number.")
        red = d.get("redaction") or {}
        if red:
            L.append(f"Redacted copy: `{Path(str(red.get('output'))).name}` ({red.get('replacements')} replacements "
                     f"in {red.get('lines_changed')} lines, mode {red.get('mode')}); training uses it.")
        L.append("Only pattern entities were scanned: the tickets contain no real names, and the small spaCy "
                 "model flags order numbers and invoice ids as PERSON/LOCATION (try `--nlp auto`).")
    elif st.key == "estimate_costs":
        L.append(f"Training {_get(d, 'training', 'billed_tokens')} billed tokens on openai/gpt-4.1-mini: "
                 f"${_fmt(d.get('training_cost'), 2)}. Per request: base ${_fmt(d.get('base_cost_per_request'), 6)} "
                 f"(1,200-token few-shot prompt) vs fine-tuned ${_fmt(d.get('ft_cost_per_request'), 6)} (90 tokens); "
                 f"monthly savings at 200,000 requests ${_fmt(d.get('monthly_savings'), 2)}; break-even "
                 f"{d.get('break_even_requests')} requests.")
        for w in (d.get("warnings") or [])[:3]:
            L.append(f"- WARNING: {w}")
    elif st.key == "train_lora":
        d = d.get("manifest", d)
        L.append(f"{d.get('steps')} steps ({_fmt(d.get('epochs'), 2)} epochs), {d.get('tokens_trained')} tokens, "
                 f"loss {_fmt(d.get('first_loss'))} -> {_fmt(d.get('final_loss'))}; trainable parameters "
                 f"{d.get('trainable_params')} of {d.get('total_params')}; peak memory "
                 f"{_get(d, 'peak_memory', 'gib')} GiB; device {_get(d, 'device', 'kind')}.")
        log = demo.out / "adapter" / "training_log.jsonl"
        if log.is_file():
            evals = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            ev = [(e["step"], e["eval_loss"]) for e in evals if e.get("eval_loss") is not None]
            if ev:
                L.append("Validation loss: " + ", ".join(f"step {s}: {v:.3f}" for s, v in ev) + ".")
    elif st.key == "evaluate":
        L.append(f"Verdict: **{d.get('verdict')}** (A = base {BASE}, B = base + adapter; "
                 f"n = {_get(d, 'n') or _get(d, 'examples') or '?'} test tickets).")
        L.append("")
        L.append("| metric | base | fine-tuned | change | 95% CI | p |")
        L.append("|---|---:|---:|---:|---|---:|")
        for m, v in (d.get("metrics") or {}).items():
            if not isinstance(v, dict):
                continue
            ci = v.get("ci95") or [None, None]
            p = v.get("p_value")
            ps = "<0.0001" if isinstance(p, (int, float)) and p < 1e-4 else _fmt(p, 4)
            L.append(f"| {m} | {_fmt(v.get('a'))} | {_fmt(v.get('b'))} | {_fmt(v.get('diff'))} | "
                     f"[{_fmt(ci[0])}, {_fmt(ci[1])}] | {ps} |")
        L.append("\nFull report: `eval/report.md`; every prediction: `eval/predictions.jsonl`.")
    elif st.key == "diagnose_training":
        for f in d.get("findings", []):
            L.append(f"- **{f.get('code')}** ({f.get('severity')}, step {f.get('step')}): {f.get('message')}")
        L.append(f"Best step: {d.get('best_step')}.")
        if (demo.out / "loss_curve.png").is_file():
            L.append("\n![loss curve](loss_curve.png)")
    elif st.key == "export_adapter":
        L.append(f"Ollama: {'ready' if _get(d, 'ollama', 'ready') else 'see warnings'} - "
                 f"`{_get(d, 'ollama', 'create_command')}` (template {_get(d, 'chat_template', 'family')}).")
        L.append(f"vLLM: `{_get(d, 'vllm', 'command')}`.")
        L.append(f"OpenClaw: `{_get(d, 'openclaw', 'apply_command')}` (model `{_get(d, 'openclaw', 'model_ref')}`).")
        m = d.get("merge") or {}
        if m:
            L.append(f"Merged ({m.get('dtype')}): max |logit diff| vs unmerged {_fmt(_get(m, 'merge_check', 'max_abs_diff'), 6)} "
                     f"(tolerance {_fmt(_get(m, 'merge_check', 'tolerance'), 6)}), saved files "
                     f"{_fmt(_get(m, 'saved_check', 'max_abs_diff'), 6)}, top-1 agreement after rounding "
                     f"{_fmt(_get(m, 'precision_vs_unmerged', 'top1_agreement'), 3)}.")
        g = d.get("gguf") or {}
        if g.get("file"):
            tc = g.get("tensor_check") or {}
            L.append(f"GGUF: `export/{g['file']}` ({g.get('outtype')}, {_fmt((g.get('size_bytes') or 0) / 1e6, 1)} MB) "
                     f"converted by llama.cpp's convert_lora_to_gguf.py; {tc.get('tensors_checked')} LoRA updates equal "
                     f"the adapter's (max rel. error {_fmt(tc.get('max_rel_error'), 6)}). The Modelfile says "
                     f"`ADAPTER {_get(d, 'ollama', 'adapter')}` and FROM the base GGUF.")
        elif st.note:
            L.append(st.note)
        gc = _get(d, "chat_template", "gguf_check") or {}
        if gc.get("checked"):
            L.append(f"Modelfile TEMPLATE + SYSTEM vs the base GGUF's own chat template (llama.cpp's prompt): "
                     f"{'identical' if gc.get('jinja_matches') else 'DIFFERENT'} on {gc['checked']} conversations; "
                     f"stop list covers {', '.join(gc.get('eog_tokens') or []) or '-'}: "
                     f"{'yes' if gc.get('stop_covers_eog') else 'NO'}.")
        for w in d.get("warnings", []):
            L.append(f"- {w.get('code')}: {w.get('message')}")
        L.append("Details: `export/README.md`.")
    elif st.key == "serve_gguf":
        runs = d.get("runs") or []
        for r in runs:
            L.append(f"Served by llama.cpp (llama-cpp-python {d.get('llama_cpp_python')}): base `{r['base']}` GGUF + "
                     f"adapter.gguf ({r['adapter_outtype']}) on the {r['n']} held-out tickets, greedy. Served answer == "
                     f"transformers answer (evaluate.py, same adapter) on **{r['agreement']:.1%}**; exact match served "
                     f"**{r['em_served']:.3f}** vs evaluate.py {r['em_transformers']:.3f} ({r['em_diff_points']:+.1f} "
                     f"points); {r['tokens_per_s']} generated tokens/s.")
        c = d.get("control_base_only") or {}
        if c:
            L.append(f"Control: the same base GGUF without the adapter scores {_fmt(c.get('em_served_base'))} "
                     f"(evaluate.py's base {_fmt(c.get('em_transformers_base'))}).")
        L.append(f"Pass (>= 95 % same answers, EM within 3 points): **{'yes' if d.get('passed') else 'NO'}**. "
                 "Details: `serve/` and bench/serve_gguf.py.")
    return L


def planted_in_split(split: Path, truth: dict) -> dict | None:
    if not split.is_file():
        return None
    ids = set()
    for line in split.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(json.loads(line).get("metadata", {}).get("ticket_id"))
        except (ValueError, AttributeError):
            continue
    row_id = {i: f"T{10000 + i}" for i in range(truth["rows"])}
    return {k: sum(1 for i in truth["pii"][k] if row_id[i] in ids) for k in ("email", "phone")}


def report(demo: Demo, meta: dict) -> str:
    truth = meta["generate"]["truth"]
    L = ["# Demo: routing support tickets to strict JSON with a LoRA fine-tune", "",
         f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `demo/run_demo.py`"
         + (" (--quick: a smoke run, not the real demo)" if demo.quick else "") + ".", "",
         f"Task: {truth['rows']} synthetic tickets (demo/make_sample_data.py, seed {truth['seed']}): the answer is "
         '`{"category": billing|technical|account|shipping, "priority": high|normal}`; planted: '
         f"{len(truth['pii']['email'])} tickets with e-mail addresses, {len(truth['pii']['phone'])} with phone "
         f"numbers, {len(truth['exact_duplicates'])} exact and {len(truth['near_duplicates'])} near duplicates. "
         f"Model: SmolLM2-135M-Instruct (`{BASE}`), CPU.", "",
         "## Stages", "",
         "| # | stage | status | exit | seconds |", "|---:|---|---|---:|---:|",
         f"| 0 | generate sample data | ok | 0 | {meta['generate']['seconds']} |"]
    for i, st in enumerate(demo.stages, 1):
        L.append(f"| {i} | {st.title} (`{st.script}.py`) | {st.status} | {_fmt(st.exit_code)} | {_fmt(st.seconds, 1)} |")
    L += ["", f"Total: {meta['total_seconds']:.0f} s ({meta['total_seconds'] / 60:.1f} min) on "
          f"{os.cpu_count()} CPU cores, excluding the environment install.", ""]
    for i, st in enumerate(demo.stages, 1):
        L += [f"## {i}. {st.title}", "", f"`{st.command()}`", ""]
        if st.status in ("not available yet", "skipped"):
            L += [f"**{st.status}**: {st.note}", ""]
            continue
        L.append(f"Status: **{st.status}** (exit {st.exit_code}, {st.seconds} s).")
        if st.status == "failed":
            L += ["", f"Error: {st.note}", "", "```", st.stderr_tail[-800:], "```", ""]
            continue
        try:
            L += [""] + summarize(st, demo, truth) + [""]
        except Exception as exc:  # noqa: BLE001 - the report must not die on an unexpected JSON shape
            L += ["", f"(could not summarise the JSON document: {type(exc).__name__}: {exc}; see stages/)", ""]
    L += ["## Files", "", "- `data/tickets.csv`, `data/tickets.truth.json`: the raw export and what was planted",
          "- `splits/`: prepare_data outputs (train/validation/test/removed + manifest.json)",
          "- `train.redacted.jsonl`: the training split after PII redaction",
          "- `adapter/`: the LoRA adapter, training_log.jsonl, run_manifest.json",
          "- `eval/`: report.md, predictions.jsonl", "- `loss_curve.png`: diagnose_training --plot",
          "- `export/`: Modelfile, adapter.gguf (with a converter), vllm_serve.sh, openclaw.patch.json5, merged/, README.md",
          "- `stages/NN_<stage>.json`: every stage's full --json output", ""]
    return "\n".join(L)


def build_parser():
    p = cli.make_parser(
        "run_demo",
        "Run the whole fine-tuning path (should_finetune -> prepare_data -> validate_jsonl -> scan_pii ->\n"
        "estimate_costs -> train_lora -> evaluate -> diagnose_training -> export_adapter) on a bundled\n"
        "synthetic ticket-routing task with SmolLM2-135M on CPU, and write OUTPUT_DIR/REPORT.md.\n"
        "Exit 0 when every available stage succeeded, 1 when one failed or found a blocking problem.",
        ["python3 demo/run_demo.py --output-dir demo-output",
         "python3 demo/run_demo.py --output-dir demo-output --force --json"])
    p.add_argument("--output-dir", "-o", default="demo-output", metavar="DIR",
                   help="where everything goes (default demo-output)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 training steps, 8 test tickets "
                   "(checks the plumbing; the result is not meaningful)")
    return p


def handle(args) -> cli.Result:
    out = Path(args.output_dir).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not args.force:
            raise UsageError(f"{out} already exists; pass --force to replace it")
        if out == ROOT or out in ROOT.parents or not out.is_dir():
            raise UsageError(f"refusing to replace {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    demo = Demo(out, quick=args.quick)
    meta = pipeline(demo)
    text = report(demo, meta)
    (out / "REPORT.md").write_text(text, encoding="utf-8")
    bad = [s for s in demo.stages if s.status in ("failed", "blocking")]
    doc = {"output_dir": str(out), "report": str(out / "REPORT.md"), "total_seconds": meta["total_seconds"],
           "stages": [{"stage": s.key, "status": s.status, "exit_code": s.exit_code, "seconds": s.seconds,
                       "note": s.note or None} for s in demo.stages]}
    ev = next((s.doc for s in demo.stages if s.key == "evaluate" and isinstance(s.doc, dict)), None)
    if ev:
        doc["evaluation"] = {"verdict": ev.get("verdict"), "metrics": ev.get("metrics")}
    lines = [f"{s.key:18} {s.status:18} {_fmt(s.seconds, 1):>7} s" for s in demo.stages]
    lines.append(f"total {meta['total_seconds']:.0f} s; report: {out / 'REPORT.md'}")
    return cli.Result(doc, "\n".join(lines), exit_code=1 if bad else 0,
                      summary={"failed": [s.key for s in bad], "seconds": meta["total_seconds"]})


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
