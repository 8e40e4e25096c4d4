"""Compare model A (baseline) with model B (candidate) on the same test set, with paired tests.

Used by ``scripts/evaluate.py``; evaluation.md documents the flags, metrics, JSON keys and
the verdict rule.

Who is A and who is B
- ``--base-model M --adapter X``: A = M, B = M + adapter X (base vs fine-tuned).
- ``--base-model M --model-b Y``: A = M, B = Y (a second model, or an adapter dir applied to M).
- ``--base-model M --adapter V1 --model-b V2``: A = M + V1, B = M + V2 (old vs new adapter:
  the gate before rolling out V2).
- ``--predictions-a FA --predictions-b FB``: score existing outputs (API-hosted models).
- ``--predictions-a FA --base-model M --adapter X``: A from a file (an earlier baseline run), B generated.
- ``--base-model M`` alone, or ``--predictions-a FA`` alone: **baseline only** — score A with a CI and
  write predictions a later run reuses as ``--predictions-a`` (measure the prompt-only baseline first).
- ``--base-model M --few-shot-cv K``: **small data** — A = M zero-shot, B = M with few-shot examples
  taken from the other K-1 folds, so every example is tested once and never shown as its own example.
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

    def __init__(self, base: str, a: Side | None, b: Side | None, *, device: str | None = None,
                 dtype: str = "auto"):
        from . import models

        torch = require("torch", "to generate with local models")
        require("transformers", "to generate with local models")
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
                      "float16": torch.float16}[dtype]
        self.base_ref = models.resolve(base)
        self.sides = {k: s for k, s in (("a", a), ("b", b)) if s is not None and s.kind != "predictions"}
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
    elif sum(M.is_json_container(it.reference) for it in items) >= 0.8 * len(items):
        names = ["json_match", "json_valid", "token_f1"]  # the content, not only the format, is the task
    elif schema:
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
        return "improved", (f"{primary} is significantly better for B"
                            + (" and the general set did not regress" if general else
                               " (no --general set was given: forgetting was not checked)"))
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
    if doc.get("few_shot_cv"):
        cv = doc["few_shot_cv"]
        lines.append(f"- few-shot cross-validation: {cv['folds']} folds (sizes {cv['fold_sizes']}); B's prompts "
                     f"carry {cv['shots']} demonstrations from the other folds (at least {cv['shots_used_min']}), "
                     f"so no example is its own demonstration")
    if doc.get("min_detectable_diff") is not None:
        lines.append(f"- detectable change with n = {doc['n']}: about {100 * doc['min_detectable_diff']:.0f} points "
                     f"(two-sided 5%, 80% power, from the observed paired spread)")
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
    few_shot_cv: Optional[int] = None
    shots: int = 3


MODES = ("generate", "predictions", "mixed", "baseline", "few_shot_cv")


def _check_options(o: Options) -> str:
    """The evaluation mode the flags ask for (``MODES``), or a UsageError saying what is wrong."""
    compare_models = bool(o.adapter or o.model_b)
    if o.predictions_b and not o.predictions_a:
        raise UsageError("--predictions-b needs --predictions-a (A = baseline, B = candidate)")
    if o.predictions_a and o.predictions_b and (o.base_model or compare_models):
        raise UsageError("use either --predictions-a/--predictions-b or --base-model/--adapter/--model-b, not both")
    if o.few_shot_cv is not None:
        if o.predictions_a or compare_models or not o.base_model:
            raise UsageError("--few-shot-cv K takes --base-model alone (A = zero-shot, B = few-shot prompts)")
        if o.few_shot_cv < 2:
            raise UsageError("--few-shot-cv must be >= 2 folds")
        if o.shots < 1:
            raise UsageError("--shots must be >= 1")
    if o.predictions_a and o.base_model and not compare_models:
        raise UsageError("--predictions-a with --base-model needs --adapter or --model-b (the B to generate)")
    if not (o.predictions_a or o.base_model or compare_models):
        raise UsageError("nothing to evaluate: give --base-model (baseline only, or with --adapter/--model-b), "
                         "or --predictions-a [and --predictions-b]")
    if o.general and (o.few_shot_cv is not None or not (o.predictions_b or compare_models)):
        raise UsageError("--general is a forgetting check of B against A: it needs a candidate B")
    if o.general and o.predictions_a and not (o.general_predictions_a and (o.general_predictions_b or compare_models)):
        raise UsageError("--general with prediction files needs --general-predictions-a (and -b unless B is generated)")
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
    if o.few_shot_cv is not None:
        return "few_shot_cv"
    if o.predictions_a and o.predictions_b:
        return "predictions"
    if o.predictions_a:
        return "mixed" if compare_models else "baseline"
    return "generate" if compare_models else "baseline"


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


# ---------------------------------------------------------------- small data: few-shot cross-validation

def _demo_turns(item: TestItem) -> list[dict] | None:
    """An example shown in the prompt: its non-system turns plus the reference answer (text only)."""
    turns = [m for m in item.prompt_messages if m.get("role") != "system"]
    if item.reference_tool_calls or not item.reference or any(m.get("role") not in ("user", "assistant")
                                                              or m.get("tool_calls") for m in turns):
        return None
    return turns + [{"role": "assistant", "content": item.reference}]


def _spread(order: list[int], pool: list[int], items: Sequence[TestItem], shots: int) -> list[int]:
    """``shots`` demonstrations from ``pool`` (in the seeded order), covering as many different reference
    answers as possible first - for a classifier, one example per label before any label repeats."""
    picked: list[int] = []
    seen: set[str] = set()
    for i in pool:
        if len(picked) == shots:
            break
        if items[i].reference not in seen:
            picked.append(i)
            seen.add(items[i].reference)
    for i in pool:
        if len(picked) == shots:
            break
        if i not in picked:
            picked.append(i)
    return sorted(picked, key=order.index)


def few_shot_folds(items: Sequence[TestItem], k: int, shots: int, seed: int) -> tuple[list[TestItem], dict]:
    """B's prompts for k-fold few-shot evaluation, in test order, and what was done.

    Examples are shuffled (seeded) into k folds; every example of a fold is prompted with the same
    ``shots`` demonstrations drawn from the OTHER folds, so no example is ever its own demonstration
    and every example is tested exactly once (all n count toward the paired test). Demonstrations cover
    different reference answers first (one per label for a classifier). ``demonstrations`` in the
    returned info lists, per fold, the 1-based line numbers of the test file shown as examples.
    """
    import random

    n = len(items)
    if k > n:
        raise UsageError(f"--few-shot-cv {k}: more folds than the {n} test examples")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    fold_of = {i: pos % k for pos, i in enumerate(order)}
    demos = {i: _demo_turns(items[i]) for i in range(n)}
    per_fold = {f: _spread(order, [i for i in order if fold_of[i] != f and demos[i] is not None], items, shots)
                for f in range(k)}
    used = min(len(v) for v in per_fold.values())
    if used == 0:
        raise UsageError("--few-shot-cv: no example can be shown as a demonstration (every one has tool calls "
                         "or tool turns); use --predictions-a/-b with prompts you built")
    out: list[TestItem] = []
    for it in items:
        shown = [t for i in per_fold[fold_of[it.index]] for t in demos[i]]
        system = [m for m in it.prompt_messages if m.get("role") == "system"]
        rest = [m for m in it.prompt_messages if m.get("role") != "system"]
        out.append(TestItem(it.index, it.line, system + shown + rest, it.reference, it.reference_tool_calls,
                            it.tools))
    info = {"folds": k, "shots": shots, "shots_used_min": used,
            "fold_sizes": [sum(1 for i in range(n) if fold_of[i] == f) for f in range(k)],
            "demonstrations": {str(f): [items[i].line for i in v] for f, v in per_fold.items()}}
    return out, info


# ---------------------------------------------------------------- orchestration

@dataclass
class Outputs:
    """What one run produced before scoring: sides, per-example outputs, generation details."""
    a: Side
    b: Optional[Side]
    outs_a: list[Output]
    outs_b: Optional[list[Output]]
    gouts: Optional[tuple[list[Output], list[Output]]] = None
    generation: Optional[dict] = None
    cv: Optional[dict] = None
    warnings: list[str] = field(default_factory=list)


def _generation_kw(o: Options) -> dict:
    return dict(max_new_tokens=o.max_new_tokens, batch_size=o.batch_size, temperature=o.temperature, seed=o.seed)


def _generate(o: Options, mode: str, items, gitems) -> Outputs:
    """Generate the sides that are models (A from a file in ``mixed`` mode)."""
    kw = _generation_kw(o)
    if mode == "baseline":
        base, a, b = o.base_model, Side(o.label_a or "base", "base", str(o.base_model)), None
    elif mode == "few_shot_cv":
        base = str(o.base_model)
        a = Side(o.label_a or "zero-shot", "base", base)
        b = Side(o.label_b or f"{o.shots}-shot", "base", base)
    else:
        base, a, b = plan_sides(o.base_model, o.adapter, o.model_b, o.label_a, o.label_b)
        if mode == "mixed":
            a = Side(o.label_a or "baseline", "predictions", str(o.predictions_a))
    gen = Generator(base, a, b, device=o.device, dtype=o.dtype)
    res = Outputs(a, b, [], None, generation={**{k: v for k, v in kw.items() if k != "seed"},
                                              "device": gen.device, "base_model": base})
    if mode == "mixed":
        res.outs_a = load_predictions(o.predictions_a, len(items))
    else:
        res.outs_a = gen.generate("a", items, desc="generating A (test)", **kw)
    if mode == "few_shot_cv":
        b_items, res.cv = few_shot_folds(items, o.few_shot_cv, o.shots, o.seed)
        if res.cv["shots_used_min"] < o.shots:
            res.warnings.append(f"only {res.cv['shots_used_min']} demonstration(s) available for some folds "
                                f"(asked for {o.shots})")
        res.outs_b = gen.generate("b", b_items, desc="generating B (few-shot)", **kw)
    elif b is not None:
        res.outs_b = gen.generate("b", items, desc="generating B (test)", **kw)
    if gitems is not None:
        ga = (load_predictions(o.general_predictions_a, len(gitems)) if mode == "mixed"
              else gen.generate("a", gitems, desc="generating A (general)", **kw))
        res.gouts = (ga, gen.generate("b", gitems, desc="generating B (general)", **kw))
    cut = {k: sum(1 for x in side if x.output_tokens == o.max_new_tokens)
           for k, side in (("A", res.outs_a), ("B", res.outs_b or []))}
    if any(cut.values()):
        which = ", ".join(f"{n} of {k}'s ({(res.a if k == 'A' else res.b).label})" for k, n in cut.items() if n)
        res.warnings.append(f"{which} outputs stopped at --max-new-tokens {o.max_new_tokens}: raise it if those "
                            f"answers are cut off; if the reference answers are short (labels), a model that "
                            f"rambles past them is wrong anyway - keep the limit small to save time")
    return res


def _read_predictions(o: Options, mode: str, items, gitems) -> Outputs:
    a = Side(o.label_a or "baseline", "predictions", str(o.predictions_a))
    if mode == "baseline":
        return Outputs(a, None, load_predictions(o.predictions_a, len(items)), None)
    b = Side(o.label_b or "candidate", "predictions", str(o.predictions_b))
    gouts = None
    if gitems is not None:
        gouts = (load_predictions(o.general_predictions_a, len(gitems)),
                 load_predictions(o.general_predictions_b, len(gitems)))
    return Outputs(a, b, load_predictions(o.predictions_a, len(items)),
                   load_predictions(o.predictions_b, len(items)), gouts)


def _small_n_warning(n: int, mdd: float | None) -> str:
    return (f"only {n} test examples: differences below ~{round(100 * (mdd or 0))} points cannot be detected "
            f"reliably (80% power); use 100-500 examples, or --few-shot-cv on a small set (evaluation.md)")


def _general_check(o: Options, gitems, gouts, gnames, generated: bool) -> tuple[dict, list[dict]]:
    gn = gnames or default_metrics(gitems, False, generated, gouts)
    gsa = score_side(gitems, gouts[0], gn, None)
    gsb = score_side(gitems, gouts[1], gn, None)
    grows = compare_scores(gn, gsa, gsb, n_boot=o.bootstrap, seed=o.seed)
    regressions = [n for n, r in grows.items() if M.info(n).quality and r["significant"] == "worse"]
    general = {"file": str(o.general), "n": len(gitems), "metrics": grows, "regressions": regressions,
               "regressed": bool(regressions)}
    return general, prediction_rows(gitems, gouts[0], gouts[1], gsa, gsb, gn)


def _metric_names(o: Options, names, items, validator, generated: bool, outs: list[list[Output]], judge) -> list[str]:
    names = names or default_metrics(items, validator is not None, generated, outs)
    if judge is not None and "judge" not in names:
        names.append("judge")
    for n in ("latency_ms", "output_tokens"):
        if n in names and not generated and any(getattr(x, n) is None for side in outs for x in side):
            raise UsageError(f"metric {n} needs '{n}' on every line of {'the prediction file' if len(outs) == 1 else 'both prediction files'}")
    return names


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
    guard = inputs + [p for p in (o.adapter, o.model_b, o.base_model) if p and os.path.exists(p)]
    if o.output_dir:  # fail before spending minutes on generation
        check_dir_output(o.output_dir, force=o.force, inputs=guard, manifest="results.json",
                         names=OUTPUT_FILES, tool="evaluate.py")
    judge = Judge(o.judge_url, o.judge_model or "", o.judge_key_env) if o.judge_url else None
    if judge is None and names and "judge" in names:
        raise UsageError("metric 'judge' needs --judge-url and --judge-model")
    generated = mode not in ("predictions",) and not (mode == "baseline" and o.predictions_a)
    res = (_generate(o, mode, items, gitems) if generated else _read_predictions(o, mode, items, gitems))
    if judge is not None:  # said once the inputs are known good, right before anything is sent
        from . import cli

        cli.note(f"note: sending prompts, references and outputs to the judge at {judge.url}")
    sides = [res.outs_a] + ([res.outs_b] if res.outs_b is not None else [])
    names = _metric_names(o, names, items, validator, generated, sides, judge)
    sa = score_side(items, res.outs_a, names, validator, judge, "judging A")
    if res.outs_b is None:
        return _baseline_result(o, mode, items, res, names, sa, schema_path, inputs, guard, judge)
    sb = score_side(items, res.outs_b, names, validator, judge, "judging B")
    rows = compare_scores(names, sa, sb, n_boot=o.bootstrap, seed=o.seed)
    primary = names[0]
    mdd = stats.min_detectable_diff(sa[primary], sb[primary])
    if len(items) < MIN_RELIABLE_N:
        res.warnings.append(_small_n_warning(len(items), mdd))
    general, g_pred_rows = (_general_check(o, gitems, res.gouts, gnames, generated)
                            if gitems is not None and res.gouts is not None else (None, None))
    verdict, reason = decide(primary, rows, general)
    doc: dict[str, Any] = {
        "metrics": rows, "primary_metric": primary, "verdict": verdict, "verdict_reason": reason,
        "regressions": [n for n, r in rows.items() if M.info(n).quality and r["significant"] == "worse"],
        "general": general, "n": len(items), "mode": mode, "min_detectable_diff": mdd,
        "a": res.a.to_json(), "b": res.b.to_json(),
        "test": {"file": str(o.test), "n": len(items), "sha256": jsonl.sha256_file(o.test)},
        "generation": res.generation, "few_shot_cv": res.cv, "json_schema": schema_path,
        "bootstrap": o.bootstrap, "seed": o.seed, "warnings": res.warnings, "output_dir": None, "files": {},
    }
    if judge is not None:
        doc["judge"] = {"url": judge.url, "model": judge.model, "failed_requests": judge.errors}
    report = render_report(doc, items, res.outs_a, res.outs_b, sa, sb, show_examples=o.examples)
    files = {"predictions.jsonl": prediction_rows(items, res.outs_a, res.outs_b, sa, sb, names)}
    if g_pred_rows is not None:
        files["general_predictions.jsonl"] = g_pred_rows
    outputs = _write_outputs(o, doc, report, files, guard)
    return doc, report, [str(p) for p in inputs], outputs


def _baseline_result(o: Options, mode, items, res: Outputs, names, sa, schema_path, inputs, guard, judge):
    """Baseline only: A's scores with CIs, and predictions a later run reuses as --predictions-a."""
    rows = {}
    for n in names:
        r = stats.mean_ci(sa[n], n_boot=o.bootstrap, seed=o.seed)
        r["higher_is_better"] = M.info(n).higher_is_better
        rows[n] = r
    primary = names[0]
    mdd = stats.min_detectable_diff(sa[primary])
    reuse = (f"--predictions-a {Path(o.output_dir) / 'predictions.jsonl'}" if o.output_dir
             else "--predictions-a FILE (write it with --output-dir)")
    doc: dict[str, Any] = {
        "metrics": rows, "primary_metric": primary, "verdict": "baseline_only",
        "verdict_reason": f"scored A alone on {len(items)} examples; compare a candidate later with {reuse}",
        "regressions": [], "general": None, "n": len(items), "mode": mode, "min_detectable_diff": mdd,
        "a": res.a.to_json(), "b": None,
        "test": {"file": str(o.test), "n": len(items), "sha256": jsonl.sha256_file(o.test)},
        "generation": res.generation, "few_shot_cv": None, "json_schema": schema_path,
        "bootstrap": o.bootstrap, "seed": o.seed, "warnings": res.warnings, "output_dir": None, "files": {},
    }
    if judge is not None:
        doc["judge"] = {"url": judge.url, "model": judge.model, "failed_requests": judge.errors}
    pred_rows = [{"index": it.index, "line": it.line, "prediction": out.text, "tool_calls": out.tool_calls,
                  "latency_ms": out.latency_ms, "output_tokens": out.output_tokens, "reference": it.reference,
                  "scores": {n: sa[n][i] for n in names}} for i, (it, out) in enumerate(zip(items, res.outs_a))]
    report = render_baseline_report(doc)
    outputs = _write_outputs(o, doc, report, {"predictions.jsonl": pred_rows}, guard)
    return doc, report, [str(p) for p in inputs], outputs


def _write_outputs(o: Options, doc: dict, report: str, jsonl_files: dict[str, list[dict]], guard) -> list[str]:
    """report.md, the prediction files and results.json; ``guard``: every input, model folders included."""
    if not o.output_dir:
        return []
    out = Path(o.output_dir)
    doc["output_dir"] = str(out)
    keys = {"predictions.jsonl": "predictions", "general_predictions.jsonl": "general_predictions"}
    doc["files"] = {"report": str(out / "report.md"), **{keys[n]: str(out / n) for n in jsonl_files},
                    "results": str(out / "results.json")}
    with owned_dir(out, force=o.force, inputs=guard, manifest="results.json", tool="evaluate.py") as tmp:
        jsonl.write_text(tmp / "report.md", report)
        for name, rows in jsonl_files.items():
            jsonl.write_jsonl(tmp / name, rows)
        jsonl.write_json(tmp / "results.json", doc)
    return list(doc["files"].values())


def fmt_range(name: str, ci) -> str:
    """A CI of one model's mean (not of a difference: no signs)."""
    lo, hi = ci
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return "-"
    return f"[{fmt_value(name, lo)}, {fmt_value(name, hi)}]"


def render_baseline_report(doc: dict) -> str:
    la, p = doc["a"]["label"], doc["primary_metric"]
    lines = [f"# Baseline: {la}", "", f"Scored A alone on `{doc['test']['file']}` ({doc['n']} examples). "
             f"{doc['verdict_reason']}.", ""]
    for w in doc.get("warnings", []):
        lines.append(f"> warning: {w}")
    lines += ["| metric | A | 95% CI | n |", "|---|---:|---|---:|"]
    for n, r in doc["metrics"].items():
        lines.append(f"| {n}{' (primary)' if n == p else ''} | {fmt_value(n, r['a'])} | {fmt_range(n, r['ci95'])} "
                     f"| {r['n']} |")
    mdd = doc.get("min_detectable_diff")
    if mdd is not None:
        lines += ["", f"With {doc['n']} examples a later A-vs-B comparison can detect a change of about "
                  f"{100 * mdd:.0f} points on a 0/1 metric (two-sided 5%, 80% power, worst-case spread)."]
    return "\n".join(lines).rstrip() + "\n"


def summary_text(doc: dict) -> str:
    from . import cli

    p = doc["primary_metric"]
    r = doc["metrics"][p]
    if doc["b"] is None:
        lines = [f"baseline {doc['a']['label']} on {doc['n']} examples: {p} {fmt_value(p, r['a'])} "
                 f"(95% CI {fmt_range(p, r['ci95'])})"]
        lines += [f"  {n}: {fmt_value(n, x['a'])}" for n, x in doc["metrics"].items() if n != p]
        if doc.get("min_detectable_diff") is not None:
            lines.append(f"a later comparison on these {doc['n']} examples can detect ~"
                         f"{100 * doc['min_detectable_diff']:.0f} points or more")
        lines += [cli.color(f"warning: {w}", "yellow") for w in doc.get("warnings", [])]
        if doc.get("output_dir"):
            lines.append(f"predictions (reuse with --predictions-a): {doc['files']['predictions']}")
        return "\n".join(lines)
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
