"""Compare model A (baseline) with model B (candidate) on the same test set, with paired tests.

Used by ``scripts/evaluate.py``; evaluation.md documents the flags, metrics, JSON keys and
the verdict rule.

Who is A and who is B
- ``--base-model M --adapter X``: A = M, B = M + adapter X (base vs fine-tuned).
- ``--base-model M --model-b Y``: A = M, B = Y (a second model, or an adapter dir applied to M).
- ``--base-model M --adapter V1 --model-b V2``: A = M + V1, B = M + V2 (old vs new adapter:
  the gate before rolling out V2).
- ``--predictions-a FA --predictions-b FB``: score existing outputs (API-hosted models).
A is always the baseline, B the candidate; every difference is B - A.

Each test line is a chat example; the reference is its LAST assistant message and the
prompt is every message before it (rendered with the model's chat template and
``add_generation_prompt``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import chat, jsonl, metrics as M, stats
from .errors import UsageError, require
from .openai_compat import ChatClient, EndpointError, api_key_from_env
from .outputs import check_dir_output, load_json_input, owned_dir

VERDICTS = ("improved", "no_significant_change", "regressed")
MIN_RELIABLE_N = 30


# ---------------------------------------------------------------- test data

@dataclass
class TestItem:
    index: int
    line: int
    prompt_messages: list[dict]
    reference: str
    reference_tool_calls: Optional[list[dict]]
    tools: Optional[list[dict]] = None


def _dump_message(m: chat.Message) -> dict:
    return m.model_dump(mode="json", exclude_none=True)


def load_test_set(path: str | os.PathLike) -> list[TestItem]:
    """Read a chat JSONL test set (prompt-completion and preference lines are converted)."""
    from pydantic import ValidationError

    items: list[TestItem] = []
    for rl in jsonl.iter_lines(path):
        if rl.error == "blank_line":
            continue
        if rl.error:
            raise UsageError(f"{path}:{rl.line}: {rl.error.replace('_', ' ')} ({rl.detail}); "
                             f"check it with validate_jsonl.py")
        fmt = chat.detect_format(rl.obj)
        if fmt is None:
            raise UsageError(f"{path}:{rl.line}: not a chat line (expected {{\"messages\": [...]}}); "
                             f"check it with validate_jsonl.py")
        try:
            ex = chat.as_chat(chat.parse_example(rl.obj, fmt))
        except (ValidationError, ValueError) as exc:
            first = str(exc).splitlines()
            detail = " ".join(first[:3])[:200]
            raise UsageError(f"{path}:{rl.line}: invalid {fmt} line ({detail}); "
                             f"check it with validate_jsonl.py") from exc
        idx = ex.assistant_indices()
        if not idx:
            raise UsageError(f"{path}:{rl.line}: no assistant message to use as the reference answer")
        last = idx[-1]
        ref_msg = ex.messages[last]
        ref_calls = None
        if ref_msg.tool_calls:
            ref_calls = [{"name": tc.function.name, "arguments": M._decode_args(tc.function.arguments)}
                         for tc in ref_msg.tool_calls]
        tools = [t.model_dump(mode="json", exclude_none=True) for t in ex.tools] if ex.tools else None
        items.append(TestItem(len(items), rl.line, [_dump_message(m) for m in ex.messages[:last]],
                              ref_msg.text(), ref_calls, tools))
    if not items:
        raise UsageError(f"{path}: no examples (empty file)")
    return items


@dataclass
class Output:
    """One model's output for one example."""
    text: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    latency_ms: Optional[float] = None
    output_tokens: Optional[int] = None


def load_predictions(path: str | os.PathLike, n: int) -> list[Output]:
    """JSONL, one object per test example in test order: ``prediction`` and/or ``tool_calls``.

    Optional ``latency_ms`` and ``output_tokens`` (or OpenAI ``usage.completion_tokens``).
    """
    outs: list[Output] = []
    for ln, obj in jsonl.read_jsonl_objects(path):
        if not isinstance(obj, dict):
            raise UsageError(f"{path}:{ln}: expected a JSON object with 'prediction' and/or 'tool_calls'")
        if "prediction" not in obj and "tool_calls" not in obj:
            raise UsageError(f"{path}:{ln}: needs a 'prediction' (text) and/or 'tool_calls' key")
        text = obj.get("prediction")
        if text is not None and not isinstance(text, str):
            raise UsageError(f"{path}:{ln}: 'prediction' must be a string")
        calls: list[dict] = []
        if obj.get("tool_calls") is not None:
            got = M.normalize_tool_calls(obj["tool_calls"])
            if got is None:
                raise UsageError(f"{path}:{ln}: 'tool_calls' must be an OpenAI tool_calls list or "
                                 f"[{{\"name\", \"arguments\"}}]")
            calls = got
        elif text:
            calls = M.parse_tool_calls(text)
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        toks = obj.get("output_tokens", usage.get("completion_tokens"))
        lat = obj.get("latency_ms")
        for key, v in (("latency_ms", lat), ("output_tokens", toks)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v < 0):
                raise UsageError(f"{path}:{ln}: '{key}' must be a finite number >= 0, got {v!r}")
        outs.append(Output(text or "", calls, None if lat is None else float(lat),
                           None if toks is None else int(toks)))
    if len(outs) != n:
        raise UsageError(f"{path} has {len(outs)} predictions but the test set has {n} examples; "
                         f"give one line per test example, in the same order")
    return outs


# ---------------------------------------------------------------- models

@dataclass
class Side:
    label: str
    kind: str          # "base" | "adapter" | "model" | "predictions"
    spec: str          # model spec, adapter dir, or predictions file

    def to_json(self) -> dict:
        return {"label": self.label, "kind": self.kind, "spec": self.spec}


def is_adapter_dir(path: str | os.PathLike | None) -> bool:
    return bool(path) and (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: str | os.PathLike) -> str | None:
    try:
        cfg = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}/adapter_config.json: {exc}") from exc
    return cfg.get("base_model_name_or_path")


def plan_sides(base_model: str | None, adapter: str | None, model_b: str | None,
               label_a: str | None = None, label_b: str | None = None) -> tuple[str, Side, Side]:
    """Work out (base spec, A, B) from the flags; see the module docstring."""
    if adapter and not is_adapter_dir(adapter):
        raise UsageError(f"--adapter {adapter}: no adapter_config.json there (expected a PEFT adapter dir)")
    if not adapter and not model_b:
        raise UsageError("give --adapter DIR (base vs fine-tuned) and/or --model-b MODEL_OR_ADAPTER, "
                         "or --predictions-a/--predictions-b")
    if not base_model:
        src = adapter or (model_b if is_adapter_dir(model_b) else None)
        base_model = adapter_base(src) if src else None
        if not base_model:
            raise UsageError("--base-model is required (could not read base_model_name_or_path "
                             "from the adapter's adapter_config.json)")
    if model_b:
        a = Side(label_a or ("adapter A" if adapter else "base"), "adapter" if adapter else "base",
                 adapter or base_model)
        if is_adapter_dir(model_b):
            b = Side(label_b or ("adapter B" if adapter else "fine-tuned"), "adapter", model_b)
        else:
            b = Side(label_b or "model B", "model", model_b)
    else:
        a = Side(label_a or "base", "base", base_model)
        b = Side(label_b or "fine-tuned", "adapter", adapter)  # type: ignore[arg-type]
    return base_model, a, b


def render_prompt(tok, item: TestItem) -> str:
    if not getattr(tok, "chat_template", None):
        raise UsageError("the model's tokenizer has no chat template: use an instruct/chat model (or an "
                         "adapter saved with its tokenizer), or score outputs with --predictions-a/-b")
    from . import templating

    # the same message conversion as training; tool calls inline where the template drops them
    info = templating.inspect_template(tok)
    msgs = templating.template_messages(item.prompt_messages, inline_tool_calls=not info.renders_tool_calls)
    kw: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if info.supports_tools and item.tools:
        kw["tools"] = item.tools  # OpenAI shape {"type": "function", "function": {...}}, as HF templates expect
    try:
        text = tok.apply_chat_template(msgs, **kw)
    except Exception as exc:  # noqa: BLE001 - jinja errors of third-party templates
        raise UsageError(f"the chat template of the model failed on test example {item.index} "
                         f"(line {item.line}): {exc}") from exc
    return text if isinstance(text, str) else text[0]


class Generator:
    """Loads the base once; adapters share it (peft multi-adapter); a full model B loads apart."""

    def __init__(self, base: str, a: Side, b: Side, *, device: str | None = None, dtype: str = "auto"):
        from . import models

        torch = require("torch", "to generate with local models")
        require("transformers", "to generate with local models")
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
                      "float16": torch.float16}[dtype]
        self.base_ref = models.resolve(base)
        self.sides = {"a": a, "b": b}
        self._models: dict[str, Any] = {}
        self._toks: dict[str, Any] = {}
        base_tok = models.load_tokenizer(self.base_ref)
        shared = None
        adapters = {k: s for k, s in self.sides.items() if s.kind == "adapter"}
        if any(s.kind in ("base", "adapter") for s in self.sides.values()):
            shared = models.load_causal_lm(self.base_ref, dtype=self.dtype, device=self.device)
            if adapters:
                peft = require("peft", "to load LoRA adapters")
                first = True
                for key, s in adapters.items():
                    try:
                        if first:
                            shared = peft.PeftModel.from_pretrained(shared, s.spec, adapter_name=key)
                            first = False
                        else:
                            shared.load_adapter(s.spec, adapter_name=key)
                    except (ValueError, OSError, RuntimeError, KeyError) as exc:
                        raise UsageError(f"cannot load adapter {s.spec} on {base}: {exc}") from exc
            shared.eval()
        for key, s in self.sides.items():
            if s.kind == "model":
                m = models.load_causal_lm(s.spec, dtype=self.dtype, device=self.device)
                m.eval()
                self._models[key] = m
                self._toks[key] = models.load_tokenizer(s.spec)
            else:
                self._models[key] = shared
                tdir = Path(s.spec) if s.kind == "adapter" else None
                # an adapter saved with its tokenizer (train_lora.py does) is prompted with it
                self._toks[key] = (models.load_tokenizer(str(tdir))
                                   if tdir is not None and (tdir / "tokenizer_config.json").is_file()
                                   else base_tok)
        for t in self._toks.values():
            t.padding_side = "left"
            if t.pad_token_id is None:
                t.pad_token = t.eos_token

    @contextlib.contextmanager
    def _activate(self, key: str):
        s, model = self.sides[key], self._models[key]
        if s.kind == "adapter":
            model.set_adapter(key)
            yield model
        elif s.kind == "base" and hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                yield model
        else:
            yield model

    def generate(self, key: str, items: Sequence[TestItem], *, max_new_tokens: int, batch_size: int,
                 temperature: float = 0.0, seed: int = 0, desc: str = "") -> list[Output]:
        from . import cli

        torch = self.torch
        tok = self._toks[key]
        prompts = [render_prompt(tok, it) for it in items]
        enc_lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(items)), key=lambda i: -enc_lens[i])  # longest first: OOM shows early
        eos = set()
        for src in (tok.eos_token_id, getattr(self._models[key].generation_config, "eos_token_id", None)):
            if isinstance(src, int):
                eos.add(src)
            elif isinstance(src, (list, tuple)):
                eos.update(int(x) for x in src)
        results: list[Optional[Output]] = [None] * len(items)
        gen_kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id}
        if eos:
            gen_kw["eos_token_id"] = sorted(eos)
        if temperature > 0:
            gen_kw.update(do_sample=True, temperature=temperature)
            torch.manual_seed(seed)
        else:
            gen_kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        bar = cli.progress(total=len(items), desc=desc or f"generating {key.upper()}", unit="ex")
        with self._activate(key) as model, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(self.device)
                if self.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = model.generate(**enc, **gen_kw)
                if self.device.startswith("cuda"):
                    torch.cuda.synchronize()
                ms = (time.perf_counter() - t0) * 1000.0 / len(idx)
                new = out[:, enc["input_ids"].shape[1]:].tolist()
                for row, i in zip(new, idx):
                    cut = next((j for j, t in enumerate(row) if t in eos), len(row))
                    text = tok.decode(row[:cut], skip_special_tokens=True).strip()
                    results[i] = Output(text, M.parse_tool_calls(text), ms, cut)
                bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]


# ---------------------------------------------------------------- LLM-as-judge (optional, network)

JUDGE_SYSTEM = ("You grade answers. Given a conversation, a reference answer and a candidate answer, "
                "reply with exactly one word: PASS if the candidate is as correct and complete as the "
                "reference (wording may differ), FAIL otherwise.")


def judge_request(model: str, item: TestItem, candidate: str, candidate_calls: list[dict]) -> dict:
    """The chat-completions request body for one judgement (pure; tested without network)."""
    convo = "\n".join(f"[{m['role']}] {chat.content_text(m.get('content'))}" for m in item.prompt_messages)
    ref = item.reference or ""
    if item.reference_tool_calls:
        ref += "\n[tool calls] " + json.dumps(item.reference_tool_calls, ensure_ascii=False)
    cand = candidate or ""
    if candidate_calls:
        cand += "\n[tool calls] " + json.dumps(candidate_calls, ensure_ascii=False)
    user = f"Conversation:\n{convo}\n\nReference answer:\n{ref}\n\nCandidate answer:\n{cand}\n\nPASS or FAIL?"
    return {"model": model, "temperature": 0, "max_tokens": 5,
            "messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]}


def parse_judge_reply(body: dict) -> float | None:
    """1.0 for PASS, 0.0 for FAIL, None when the reply says neither."""
    try:
        text = body["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        return None
    m = re.search(r"\b(PASS|FAIL)\b", text.upper())
    return None if not m else (1.0 if m.group(1) == "PASS" else 0.0)


class Judge:
    """An OpenAI-compatible chat-completions endpoint used as a PASS/FAIL grader
    (``openai_compat.ChatClient``: retries, key/URL errors exit 2)."""

    def __init__(self, url: str, model: str, key_env: str = "OPENAI_API_KEY", timeout: float = 60.0):
        if not model:
            raise UsageError("--judge-model is required with --judge-url")
        self.key = api_key_from_env(key_env)
        self.client = ChatClient(url, model, api_key=self.key, timeout=timeout,
                                 flags={"url": "--judge-url", "model": "--judge-model", "key": "--judge-key-env"})
        self.url = self.client.url
        self.model = model
        self.errors = 0

    def __call__(self, item: TestItem, candidate: str, calls: list[dict]) -> float | None:
        try:
            return parse_judge_reply(self.client.create(judge_request(self.model, item, candidate, calls)))
        except EndpointError:
            self.errors += 1
            return None


# ---------------------------------------------------------------- scoring and comparison

def default_metrics(items: Sequence[TestItem], schema: bool, generated: bool,
                    outs: Sequence[Sequence[Output]] = ()) -> list[str]:
    if any(it.reference_tool_calls for it in items):
        names = ["tool_call", "tool_name", "token_f1"]
    elif schema or sum(M.is_json_container(it.reference) for it in items) >= 0.8 * len(items):
        names = ["json_valid", "json_match", "token_f1"]
    else:
        names = ["exact_match", "token_f1", "rouge_l"]
    if generated:
        names += ["latency_ms", "output_tokens"]
    else:
        for extra in ("latency_ms", "output_tokens"):
            if outs and all(getattr(o, extra) is not None for side in outs for o in side):
                names.append(extra)
    return names


def parse_metric_list(spec: str | None) -> list[str] | None:
    if not spec:
        return None
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in M.METRICS]
    if bad:
        raise UsageError(f"unknown metric(s) {', '.join(bad)}; choose from {', '.join(M.METRICS)}")
    if not names:
        raise UsageError("--metrics is empty")
    return list(dict.fromkeys(names))


def score_side(items: Sequence[TestItem], outs: Sequence[Output], names: Sequence[str],
               validator: Optional[Callable[[Any], bool]], judge: Optional[Callable] = None,
               desc: str = "") -> dict[str, list[float | None]]:
    from . import cli

    scores: dict[str, list[float | None]] = {n: [] for n in names}
    it_ = zip(items, outs)
    if judge is not None and "judge" in names:
        it_ = cli.progress(it_, total=len(items), desc=desc or "judging", unit="ex")
    for item, out in it_:
        extra = {"latency_ms": out.latency_ms, "output_tokens": out.output_tokens}
        if judge is not None and "judge" in names:
            extra["judge"] = judge(item, out.text, out.tool_calls)
        for n in names:
            scores[n].append(M.score_example(n, prediction=out.text, reference=item.reference,
                                             pred_calls=out.tool_calls, ref_calls=item.reference_tool_calls,
                                             schema_validator=validator, extra=extra))
    return scores


def compare_scores(names: Sequence[str], sa: dict, sb: dict, *, n_boot: int, seed: int) -> dict[str, dict]:
    out = {}
    for n in names:
        inf = M.info(n)
        row = stats.compare(sa[n], sb[n], binary=inf.binary, n_boot=n_boot, seed=seed)
        row["higher_is_better"] = inf.higher_is_better
        row["significant"] = significance(row)
        out[n] = row
    return out


def significance(row: dict) -> str | None:
    """'better' / 'worse' for B vs A when the 95% CI excludes 0 (and p < 0.05 when a p exists)."""
    lo, hi = row.get("ci95") or (None, None)
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return None
    p = row.get("p_value")
    if p is not None and p >= 0.05:
        return None
    if lo > 0:
        up = True
    elif hi < 0:
        up = False
    else:
        return None
    return "better" if up == row.get("higher_is_better", True) else "worse"


def decide(primary: str, rows: dict[str, dict], general: dict | None) -> tuple[str, str]:
    """The verdict rule (evaluation.md): primary metric + forgetting check on --general."""
    row = rows[primary]
    gen_reg = (general or {}).get("regressions") or []
    sig = row.get("significant")
    if sig == "worse":
        return "regressed", f"{primary} is significantly worse for B"
    if gen_reg:
        return "regressed", f"general set regressed on {', '.join(gen_reg)} (forgetting)"
    if sig == "better":
        return "improved", f"{primary} is significantly better for B and the general set did not regress"
    if row.get("n", 0) == 0:
        return "no_significant_change", f"{primary} could not be scored on any example"
    return "no_significant_change", f"the 95% CI of the {primary} difference includes 0"


# ---------------------------------------------------------------- report

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_DIGITS = re.compile(r"\d[\d ()./-]{6,}\d")


def preview(text: str | None, n: int = 160) -> str:
    """A short one-line preview with e-mail addresses and long digit runs masked."""
    t = " ".join((text or "").split())
    t = _EMAIL.sub(lambda m: m.group(0)[0] + "***@***", t)
    t = _DIGITS.sub(lambda m: m.group(0)[:2] + "***", t)
    t = t.replace("|", "\\|")
    return t if len(t) <= n else t[: n - 1] + "…"


def fmt_value(name: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if name == "latency_ms":
        return f"{v:,.0f} ms"
    if name == "output_tokens":
        return f"{v:,.1f}"
    return f"{100 * v:.1f}%"


def fmt_diff(name: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if name == "latency_ms":
        return f"{v:+,.0f} ms"
    if name == "output_tokens":
        return f"{v:+,.1f}"
    return f"{100 * v:+.1f} pts"


def fmt_ci(name: str, ci) -> str:
    lo, hi = ci
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return "-"
    if name in ("latency_ms", "output_tokens"):
        return f"[{lo:+,.1f}, {hi:+,.1f}]"
    return f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_p_eq(p: float | None) -> str:
    t = fmt_p(p)
    return "p " + (t if t.startswith("<") else "= " + t)


def metrics_table(rows: dict[str, dict], label_a: str, label_b: str) -> str:
    from . import cli

    body = []
    for name, r in rows.items():
        flag = {"better": " ▲", "worse": " ▼"}.get(r.get("significant") or "", "")
        body.append((name, fmt_value(name, r["a"]), fmt_value(name, r["b"]),
                     fmt_diff(name, r["diff"]) + flag, fmt_ci(name, r["ci95"]), fmt_p(r["p_value"]), r["n"]))
    return cli.table(["metric", label_a, label_b, "change", "95% CI", "p", "n"], body, "lrrrrrr")


def example_rows(items, outs_a, outs_b, scores_a, scores_b, metric, k=3):
    """Example indices where B beats A (wins) and where A beats B (losses) on ``metric``."""
    wins, losses = [], []
    for i, (x, y) in enumerate(zip(scores_a[metric], scores_b[metric])):
        if x is None or y is None or x == y:
            continue
        (wins if (y > x) == M.info(metric).higher_is_better else losses).append((abs(y - x), i))
    wins.sort(key=lambda t: (-t[0], t[1]))
    losses.sort(key=lambda t: (-t[0], t[1]))
    return [i for _, i in wins[:k]], [i for _, i in losses[:k]]


def _out_text(o: Output) -> str:
    if o.tool_calls and not o.text:
        return json.dumps(o.tool_calls, ensure_ascii=False)
    return o.text


def render_report(doc: dict, items, outs_a, outs_b, scores_a, scores_b, *, show_examples: bool = True) -> str:
    la, lb = doc["a"]["label"], doc["b"]["label"]
    p = doc["primary_metric"]
    r = doc["metrics"][p]
    lines = [f"# Evaluation: {la} (A) vs {lb} (B)", "",
             "A is the baseline, B the candidate; every change is B − A.", ""]
    head = {"improved": "IMPROVED", "regressed": "REGRESSED",
            "no_significant_change": "NO SIGNIFICANT CHANGE"}[doc["verdict"]]
    lines += [f"**Verdict: {head}** — {doc['verdict_reason']}. Primary metric `{p}`: "
              f"{fmt_value(p, r['a'])} → {fmt_value(p, r['b'])} ({fmt_diff(p, r['diff'])}, "
              f"95% CI {fmt_ci(p, r['ci95'])}, {fmt_p_eq(r['p_value'])}, n = {r['n']}).", ""]
    for w in doc.get("warnings", []):
        lines.append(f"> warning: {w}")
    if doc.get("warnings"):
        lines.append("")
    lines += [metrics_table(doc["metrics"], la, lb), "",
              "change = B − A (points for rates); 95% CI = paired bootstrap "
              f"({doc['bootstrap']} resamples, seed {doc['seed']}); p = exact McNemar for 0/1 metrics, "
              "Wilcoxon signed-rank otherwise; ▲/▼ = significantly better/worse for B.", ""]
    g = doc.get("general")
    if g:
        lines += ["## General held-out set (forgetting check)", "",
                  f"{g['file']}: n = {g['n']}. "
                  + ("**Regression:** " + ", ".join(g["regressions"]) if g["regressions"]
                     else "No significant regression."), "",
                  metrics_table(g["metrics"], la, lb), ""]
    lines += ["## Setup", "",
              f"- test set: `{doc['test']['file']}` ({doc['test']['n']} examples, sha256 "
              f"{doc['test']['sha256'][:12]}…)",
              f"- A: {doc['a']['kind']} `{doc['a']['spec']}`",
              f"- B: {doc['b']['kind']} `{doc['b']['spec']}`"]
    if doc.get("generation"):
        gen = doc["generation"]
        lines.append(f"- generation: {'greedy' if not gen['temperature'] else 'temperature ' + str(gen['temperature'])}, "
                     f"max_new_tokens {gen['max_new_tokens']}, batch size {gen['batch_size']}, "
                     f"device {gen['device']}")
    lines += ["", "## Verdict rule", "",
              "Primary metric = the first of the metrics. B **improved** when the 95% CI of B − A on the "
              "primary metric lies above 0 (and, for 0/1 metrics, McNemar p < 0.05) and no quality metric "
              "of the general set is significantly worse; **regressed** when the primary metric is "
              "significantly worse or any general-set quality metric is; otherwise "
              "**no significant change**.", ""]
    if show_examples:
        wins, losses = example_rows(items, outs_a, outs_b, scores_a, scores_b, p)
        for title, idxs in ((f"Examples where B wins on {p}", wins), (f"Examples where A wins on {p}", losses)):
            lines += [f"## {title}", ""]
            if not idxs:
                lines += ["(none)", ""]
                continue
            lines += ["| # | prompt (last turn) | reference | A | B |", "|---|---|---|---|---|"]
            for i in idxs:
                it = items[i]
                last = chat.content_text(it.prompt_messages[-1].get("content")) if it.prompt_messages else ""
                ref = it.reference or json.dumps(it.reference_tool_calls or [], ensure_ascii=False)
                lines.append(f"| {i} | {preview(last, 80)} | {preview(ref, 80)} | "
                             f"{preview(_out_text(outs_a[i]), 80)} | {preview(_out_text(outs_b[i]), 80)} |")
            lines.append("")
        lines.append("Previews are truncated; e-mail addresses and long digit runs are masked. "
                     "Full outputs are in predictions.jsonl.")
    return "\n".join(lines).rstrip() + "\n"


def prediction_rows(items, outs_a, outs_b, scores_a, scores_b, names) -> list[dict]:
    rows = []
    for i, it in enumerate(items):
        rows.append({"index": it.index, "line": it.line, "prompt_messages": it.prompt_messages,
                     "tools": it.tools,
                     "reference": it.reference, "reference_tool_calls": it.reference_tool_calls,
                     "prediction_a": outs_a[i].text, "prediction_b": outs_b[i].text,
                     "tool_calls_a": outs_a[i].tool_calls, "tool_calls_b": outs_b[i].tool_calls,
                     "scores": {n: {"a": scores_a[n][i], "b": scores_b[n][i]} for n in names}})
    return rows


# ---------------------------------------------------------------- orchestration

@dataclass
class Options:
    test: str
    base_model: Optional[str] = None
    adapter: Optional[str] = None
    model_b: Optional[str] = None
    predictions_a: Optional[str] = None
    predictions_b: Optional[str] = None
    general: Optional[str] = None
    general_predictions_a: Optional[str] = None
    general_predictions_b: Optional[str] = None
    metrics: Optional[str] = None
    general_metrics: Optional[str] = None
    json_schema: Optional[str] = None
    max_new_tokens: int = 256
    batch_size: int = 8
    temperature: float = 0.0
    bootstrap: int = 10000
    seed: int = 0
    device: Optional[str] = None
    dtype: str = "auto"
    label_a: Optional[str] = None
    label_b: Optional[str] = None
    judge_url: Optional[str] = None
    judge_model: Optional[str] = None
    judge_key_env: str = "OPENAI_API_KEY"
    output_dir: Optional[str] = None
    force: bool = False
    examples: bool = True


def _check_options(o: Options) -> str:
    pred_mode = bool(o.predictions_a or o.predictions_b)
    model_mode = bool(o.base_model or o.adapter or o.model_b)
    if pred_mode and model_mode:
        raise UsageError("use either --predictions-a/--predictions-b or --base-model/--adapter/--model-b, not both")
    if pred_mode and not (o.predictions_a and o.predictions_b):
        raise UsageError("--predictions-a and --predictions-b go together (A = baseline, B = candidate)")
    if not pred_mode and not model_mode:
        raise UsageError("nothing to compare: give --base-model with --adapter/--model-b, "
                         "or --predictions-a and --predictions-b")
    if pred_mode and o.general and not (o.general_predictions_a and o.general_predictions_b):
        raise UsageError("--general with prediction files needs --general-predictions-a and --general-predictions-b")
    if (o.general_predictions_a or o.general_predictions_b) and not o.general:
        raise UsageError("--general-predictions-a/-b need --general FILE (the references)")
    if o.max_new_tokens < 1 or o.batch_size < 1:
        raise UsageError("--max-new-tokens and --batch-size must be >= 1")
    if o.bootstrap < 100:
        raise UsageError("--bootstrap must be >= 100 (10000 is the default)")
    if o.temperature < 0:
        raise UsageError("--temperature must be >= 0 (0 = greedy)")
    if o.judge_model and not o.judge_url:
        raise UsageError("--judge-model needs --judge-url")
    return "predictions" if pred_mode else "generate"


def _load_schema(path: str | None):
    if not path:
        return None, None
    p = jsonl.check_readable(path)
    schema = load_json_input(p, "--json-schema")
    if not isinstance(schema, (dict, bool)):
        raise UsageError(f"--json-schema {path}: a JSON Schema must be an object")
    require("jsonschema", "for --json-schema")
    import jsonschema

    try:
        return M.load_schema_validator(schema), str(p)
    except jsonschema.SchemaError as exc:
        raise UsageError(f"--json-schema {path} is not a valid JSON Schema: {exc.message}") from exc


OUTPUT_FILES = ("report.md", "predictions.jsonl", "general_predictions.jsonl", "results.json")


def run(o: Options) -> tuple[dict, str, list[str], list[str]]:
    """Evaluate; returns (json doc, report markdown, input paths, output paths)."""
    mode = _check_options(o)
    validator, schema_path = _load_schema(o.json_schema)
    items = load_test_set(o.test)
    gitems = load_test_set(o.general) if o.general else None
    names = parse_metric_list(o.metrics)
    gnames = parse_metric_list(o.general_metrics)
    inputs = [o.test] + [p for p in (o.general, o.json_schema, o.predictions_a, o.predictions_b,
                                     o.general_predictions_a, o.general_predictions_b) if p]
    # local model/adapter folders are inputs too: the output may not hold or sit inside them
    model_dirs = [p for p in (o.adapter, o.model_b, o.base_model) if p and os.path.exists(p)]
    if o.output_dir:  # fail before spending minutes on generation
        check_dir_output(o.output_dir, force=o.force, inputs=inputs + model_dirs, manifest="results.json",
                         names=OUTPUT_FILES, tool="evaluate.py")
    judge = Judge(o.judge_url, o.judge_model or "", o.judge_key_env) if o.judge_url else None
    if judge is None and names and "judge" in names:
        raise UsageError("metric 'judge' needs --judge-url and --judge-model")
    gen_info = None
    warnings: list[str] = []
    if mode == "predictions":
        a = Side(o.label_a or "baseline", "predictions", str(o.predictions_a))
        b = Side(o.label_b or "candidate", "predictions", str(o.predictions_b))
        outs_a = load_predictions(o.predictions_a, len(items))
        outs_b = load_predictions(o.predictions_b, len(items))
        gouts = None
        if gitems is not None:
            gouts = (load_predictions(o.general_predictions_a, len(gitems)),
                     load_predictions(o.general_predictions_b, len(gitems)))
    else:
        base, a, b = plan_sides(o.base_model, o.adapter, o.model_b, o.label_a, o.label_b)
        gen = Generator(base, a, b, device=o.device, dtype=o.dtype)
        kw = dict(max_new_tokens=o.max_new_tokens, batch_size=o.batch_size, temperature=o.temperature,
                  seed=o.seed)
        outs_a = gen.generate("a", items, desc="generating A (test)", **kw)
        outs_b = gen.generate("b", items, desc="generating B (test)", **kw)
        gouts = None
        if gitems is not None:
            gouts = (gen.generate("a", gitems, desc="generating A (general)", **kw),
                     gen.generate("b", gitems, desc="generating B (general)", **kw))
        gen_info = {"max_new_tokens": o.max_new_tokens, "batch_size": o.batch_size,
                    "temperature": o.temperature, "device": gen.device, "base_model": base}
        truncated = sum(1 for side in (outs_a, outs_b) for x in side if x.output_tokens == o.max_new_tokens)
        if truncated:
            warnings.append(f"{truncated} outputs stopped at --max-new-tokens {o.max_new_tokens}; "
                            f"raise it if answers are cut off")

    if judge is not None:  # said once the inputs are known good, right before anything is sent
        from . import cli

        cli.note(f"note: sending prompts, references and outputs to the judge at {judge.url}")
    generated = mode == "generate"
    names = names or default_metrics(items, validator is not None, generated, (outs_a, outs_b))
    if judge is not None and "judge" not in names:
        names.append("judge")
    for n in ("latency_ms", "output_tokens"):
        if n in names and not generated and any(getattr(x, n) is None for x in outs_a + outs_b):
            raise UsageError(f"metric {n} needs '{n}' on every line of both prediction files")
    sa = score_side(items, outs_a, names, validator, judge, "judging A")
    sb = score_side(items, outs_b, names, validator, judge, "judging B")
    rows = compare_scores(names, sa, sb, n_boot=o.bootstrap, seed=o.seed)
    if len(items) < MIN_RELIABLE_N:
        warnings.append(f"only {len(items)} test examples: differences below ~"
                        f"{max(5, round(100 / math.sqrt(len(items))))} points cannot be detected; "
                        f"use 100-500 examples (evaluation.md)")

    general = None
    g_pred_rows = None
    if gitems is not None and gouts is not None:
        gn = gnames or [n for n in default_metrics(gitems, False, generated, gouts)]
        gsa = score_side(gitems, gouts[0], gn, None)
        gsb = score_side(gitems, gouts[1], gn, None)
        grows = compare_scores(gn, gsa, gsb, n_boot=o.bootstrap, seed=o.seed)
        regressions = [n for n, r in grows.items() if M.info(n).quality and r["significant"] == "worse"]
        general = {"file": str(o.general), "n": len(gitems), "metrics": grows, "regressions": regressions,
                   "regressed": bool(regressions)}
        g_pred_rows = prediction_rows(gitems, gouts[0], gouts[1], gsa, gsb, gn)

    primary = names[0]
    verdict, reason = decide(primary, rows, general)
    doc: dict[str, Any] = {
        "metrics": rows, "primary_metric": primary, "verdict": verdict, "verdict_reason": reason,
        "regressions": [n for n, r in rows.items() if M.info(n).quality and r["significant"] == "worse"],
        "general": general, "n": len(items), "mode": mode,
        "a": a.to_json(), "b": b.to_json(),
        "test": {"file": str(o.test), "n": len(items), "sha256": jsonl.sha256_file(o.test)},
        "generation": gen_info, "json_schema": schema_path, "bootstrap": o.bootstrap, "seed": o.seed,
        "warnings": warnings, "output_dir": None, "files": {},
    }
    if judge is not None:
        doc["judge"] = {"url": judge.url, "model": judge.model, "failed_requests": judge.errors}
    report = render_report(doc, items, outs_a, outs_b, sa, sb, show_examples=o.examples)
    outputs: list[str] = []
    if o.output_dir:
        out = Path(o.output_dir)
        doc["output_dir"] = str(out)
        doc["files"] = {"report": str(out / "report.md"), "predictions": str(out / "predictions.jsonl"),
                        "results": str(out / "results.json")}
        if g_pred_rows is not None:
            doc["files"]["general_predictions"] = str(out / "general_predictions.jsonl")
        with owned_dir(out, force=o.force, inputs=inputs + model_dirs, manifest="results.json",
                               tool="evaluate.py") as tmp:
            jsonl.write_text(tmp / "report.md", report)
            jsonl.write_jsonl(tmp / "predictions.jsonl", prediction_rows(items, outs_a, outs_b, sa, sb, names))
            if g_pred_rows is not None:
                jsonl.write_jsonl(tmp / "general_predictions.jsonl", g_pred_rows)
            jsonl.write_json(tmp / "results.json", doc)
        outputs = list(doc["files"].values())
    return doc, report, [str(p) for p in inputs], outputs


def summary_text(doc: dict) -> str:
    from . import cli

    p = doc["primary_metric"]
    r = doc["metrics"][p]
    verdict = doc["verdict"].replace("_", " ")
    col = {"improved": "green", "regressed": "red"}.get(doc["verdict"], "yellow")
    lines = [metrics_table(doc["metrics"], f"A: {doc['a']['label']}", f"B: {doc['b']['label']}"), "",
             cli.color(f"verdict: {verdict}", col) + f" — {doc['verdict_reason']} "
             f"({p} {fmt_diff(p, r['diff'])}, 95% CI {fmt_ci(p, r['ci95'])}, {fmt_p_eq(r['p_value'])})"]
    g = doc.get("general")
    if g:
        lines.append(f"general set ({g['n']} examples): "
                     + ("regressed on " + ", ".join(g["regressions"]) if g["regressions"] else "no significant regression"))
    for w in doc.get("warnings", []):
        lines.append(cli.color(f"warning: {w}", "yellow"))
    if doc.get("output_dir"):
        lines.append(f"report: {doc['files']['report']}")
        lines.append(f"predictions: {doc['files']['predictions']}")
    return "\n".join(lines)
