#!/usr/bin/env python3
"""Compare a fine-tuned model (B) with its base or a previous adapter (A) on one test set, with paired tests."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli  # noqa: E402
from finetune_kit import metrics as M  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "evaluate",
        "Score model A (baseline) and model B (candidate) on the same chat JSONL test set and say whether\n"
        "B is significantly better: every metric gets A, B, B - A with a paired bootstrap 95% CI, and an\n"
        "exact McNemar p for 0/1 metrics (Wilcoxon signed-rank otherwise). The reference of each test line\n"
        "is its LAST assistant message; the prompt is every message before it.\n"
        "  --base-model M --adapter X          A = M, B = M + adapter X\n"
        "  --base-model M --model-b Y          A = M, B = Y (model, or adapter dir applied to M)\n"
        "  --base-model M --adapter V1 --model-b V2   A = M + V1, B = M + V2 (gate before rollout)\n"
        "  --predictions-a FA --predictions-b FB      score existing outputs (e.g. API models)\n"
        "  --predictions-a FA --base-model M --adapter X   A from an earlier baseline run, B generated\n"
        "  --base-model M  (or --predictions-a FA alone)   baseline only: score A, write predictions.jsonl\n"
        "                                                  that a later run reuses as --predictions-a\n"
        "  --base-model M --few-shot-cv K [--shots N]      small data (10-49 examples): A = zero-shot,\n"
        "                                                  B = N-shot with examples from the other folds\n"
        "Exit 0: improved or no significant change; 1: B regressed (primary metric or --general set);\n"
        "2: could not run. Metrics: " + ", ".join(M.METRICS) + ".",
        cli.examples_for(
            "evaluate",
            "--base-model smollm2-135m --adapter out/adapter --test data/test.jsonl --output-dir eval/ --json",
            "--base-model Qwen/Qwen2.5-1.5B-Instruct --test data/test.jsonl --output-dir eval/base",
            "--base-model smollm2-135m --test small.jsonl --few-shot-cv 5 --shots 3 --json",
            "--test test.jsonl --predictions-a base.jsonl --predictions-b tuned.jsonl --metrics exact_match,token_f1"))
    m = p.add_argument_group("models (generate outputs)")
    m.add_argument("--base-model", metavar="MODEL",
                   help="hub id, local HF dir, .gguf file or alias smollm2-135m (default: the adapter's "
                        "base_model_name_or_path)")
    m.add_argument("--adapter", metavar="DIR", help="PEFT adapter dir on the base: B (or A when --model-b is given)")
    m.add_argument("--model-b", metavar="MODEL_OR_DIR",
                   help="the candidate B: another model, or an adapter dir applied to the base")
    m.add_argument("--few-shot-cv", type=int, metavar="K",
                   help="small data: k-fold evaluation of --base-model zero-shot (A) vs few-shot (B) prompts; "
                        "each fold is prompted with --shots examples from the other folds (evaluation.md)")
    m.add_argument("--shots", type=int, default=3, metavar="N",
                   help="demonstrations per prompt with --few-shot-cv (default 3)")
    m.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="generation limit (default 256)")
    m.add_argument("--batch-size", type=int, default=8, metavar="N", help="generation batch, left-padded (default 8)")
    m.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy decoding (default); > 0 samples with --seed")
    m.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available)")
    m.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="model dtype (auto: bf16 on CUDA when supported, else fp32)")
    pr = p.add_argument_group("prediction files (score existing outputs instead)")
    pr.add_argument("--predictions-a", metavar="FILE",
                    help="JSONL, one object per test line in order: 'prediction' and/or 'tool_calls' "
                         "(optional 'latency_ms', 'output_tokens')")
    pr.add_argument("--predictions-b", metavar="FILE", help="same for the candidate B")
    pr.add_argument("--general-predictions-a", metavar="FILE", help="A's predictions for --general")
    pr.add_argument("--general-predictions-b", metavar="FILE", help="B's predictions for --general")
    d = p.add_argument_group("data and metrics")
    d.add_argument("--test", required=True, metavar="FILE", help="chat JSONL test set (never training data)")
    d.add_argument("--general", metavar="FILE",
                   help="general held-out chat JSONL for the forgetting check (regression if B is "
                        "significantly worse there)")
    d.add_argument("--metrics", metavar="LIST",
                   help="comma list; the first is the primary metric (default by data: tool_call,... when "
                        "references have tool calls; json_match,json_valid,... when references are JSON; "
                        "json_valid,... when only --json-schema is given; "
                        "else exact_match,token_f1,rouge_l; plus latency_ms,output_tokens when generating)")
    d.add_argument("--general-metrics", metavar="LIST", help="metrics for --general (default by its data)")
    d.add_argument("--json-schema", metavar="FILE", help="JSON Schema that json_valid outputs must satisfy")
    d.add_argument("--bootstrap", type=int, default=10000, metavar="N", help="bootstrap resamples (default 10000)")
    d.add_argument("--seed", type=int, default=0, help="seed for the bootstrap and for sampling (default 0)")
    j = p.add_argument_group("LLM-as-judge (optional; sends data to the endpoint)")
    j.add_argument("--judge-url", metavar="URL",
                   help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1 (adds metric 'judge')")
    j.add_argument("--judge-model", metavar="NAME", help="judge model name")
    j.add_argument("--judge-key-env", metavar="VAR", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (default OPENAI_API_KEY)")
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", metavar="DIR",
                   help="write report.md, predictions.jsonl, results.json (atomic; --force to replace)")
    o.add_argument("--label-a", metavar="NAME", help="column name for A in reports (default: base / adapter A)")
    o.add_argument("--label-b", metavar="NAME", help="column name for B (default: fine-tuned / adapter B)")
    o.add_argument("--no-examples", action="store_true", help="leave example wins/losses out of report.md")
    return p


def handle(args) -> cli.Result:
    from finetune_kit import evaluate as ev

    opts = ev.Options(
        test=args.test, base_model=args.base_model, adapter=args.adapter, model_b=args.model_b,
        predictions_a=args.predictions_a, predictions_b=args.predictions_b, general=args.general,
        general_predictions_a=args.general_predictions_a, general_predictions_b=args.general_predictions_b,
        metrics=args.metrics, general_metrics=args.general_metrics, json_schema=args.json_schema,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, temperature=args.temperature,
        bootstrap=args.bootstrap, seed=args.seed, device=args.device, dtype=args.dtype,
        label_a=args.label_a, label_b=args.label_b, judge_url=args.judge_url, judge_model=args.judge_model,
        judge_key_env=args.judge_key_env, output_dir=args.output_dir, force=args.force,
        examples=not args.no_examples, few_shot_cv=args.few_shot_cv, shots=args.shots)
    doc, _report, inputs, outputs = ev.run(opts)
    summary = {"verdict": doc["verdict"], "primary_metric": doc["primary_metric"], "n": doc["n"],
               "diff": doc["metrics"][doc["primary_metric"]].get("diff")}
    return cli.Result(doc, ev.summary_text(doc), exit_code=1 if doc["verdict"] == "regressed" else 0,
                      inputs=inputs, outputs=outputs, summary=summary)


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
