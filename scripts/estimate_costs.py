#!/usr/bin/env python3
"""Estimate fine-tuning cost, inference savings and break-even from the dated providers data file."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli  # noqa: E402
costs = bootstrap.lazy_module("finetune_kit.costs")
P = bootstrap.lazy_module("finetune_kit.providers")
from finetune_kit.errors import UsageError  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "estimate_costs",
        "Training cost (dataset tokens x epochs x price), per-request inference cost of the base model\n"
        "with its long prompt vs the fine-tuned model with a shorter one, monthly savings, break-even,\n"
        "and the self-hosted alternative (GPU hours incl. model load and evaluation + 24/7 serving).\n"
        "The baseline is today's model (--current-model NAME, e.g. gpt-4.1); the prompt-only switch to a\n"
        "smaller model (no fine-tune) is always priced next to it. Prices come from the dated data file\n"
        "(scripts/finetune_kit/data/providers.yaml, see costs.md); every one can be overridden ($ per 1M\n"
        "tokens). Warns when the data file is more than 90 days old. Exit 1 when the chosen offering is retired.",
        cli.examples_for(
            "estimate_costs",
            "--current-model gpt-4.1 --compare --train train.jsonl --params-b 8 "
            "--base-prompt-tokens 2500 --ft-prompt-tokens 400 --output-tokens 200 --requests-per-month 200000",
            "--current-model gpt-4.1 --provider google-vertex --model gemini-3.1-flash-lite --training-tokens 2000000 "
            "--examples 1000 --base-prompt-tokens 2500 --ft-prompt-tokens 400 --output-tokens 200 "
            "--cached-share 0.82 --requests-per-month 200000",
            "--gpu rtx4090 --power-price 0.30 --gpu-price 0.05 --params-b 8 --training-tokens 2000000 --json"),
        writes_outputs=False)
    g = p.add_argument_group("what to price")
    g.add_argument("--provider", metavar="ID", help="provider id or alias from the data file "
                   "(openai, google-vertex, aws-bedrock, together, fireworks)")
    g.add_argument("--model", metavar="ID", help="model id (or size tier) of that provider")
    g.add_argument("--method", choices=["sft", "dpo", "rft"], default="sft", help="training method (default sft)")
    g.add_argument("--params-b", type=cli.positive_float, metavar="N",
                   help="model size in billions: picks Together/Fireworks price tiers and sizes the "
                        "self-hosted estimate (default: the model's size, else 8)")
    g.add_argument("--current-model", metavar="NAME",
                   help="the model you run today (e.g. gpt-4.1, openai/gpt-4o, gpt-6-luna): its prices are the "
                        "baseline, and its smaller/newer alternatives are priced prompt-only (no fine-tune)")
    g.add_argument("--compare", action="store_true", help="also price the same workload across all providers")
    g.add_argument("--gpu", metavar="ID", help="one GPU type (rtx-4090/rtx4090, a100-80gb, a100-40gb, h100-sxm): "
                   "limits the self-hosted rows to it and is the GPU --gpu-price/--power-price price")
    g = p.add_argument_group("training data")
    g.add_argument("--train", nargs="+", metavar="FILE", help="training JSONL file(s): tokens counted with the "
                   "real tokenizer (the validator's counter)")
    g.add_argument("--training-tokens", type=cli.nonneg_int, metavar="N", help="dataset tokens per epoch, instead of --train")
    g.add_argument("--examples", type=cli.positive_int, metavar="N", help="number of examples (for --epochs auto) "
                   "when using --training-tokens")
    g.add_argument("--epochs", default="auto", metavar="N|auto",
                   help="epochs; auto = OpenAI's heuristic from the example count (default auto)")
    g.add_argument("--tokenizer", metavar="SPEC", help="tokenizer for --train (tiktoken name, .tiktoken file, "
                   "HF dir/id); default: the model's encoding from the data file, else cl100k_base")
    g = p.add_argument_group("inference workload")
    g.add_argument("--base-prompt-tokens", type=cli.nonneg_int, metavar="N",
                   help="prompt tokens per request with the base model today (instructions + few-shot)")
    g.add_argument("--ft-prompt-tokens", type=cli.nonneg_int, metavar="N",
                   help="prompt tokens per request with the fine-tuned model (default: same as base)")
    g.add_argument("--output-tokens", type=cli.nonneg_int, metavar="N", help="output tokens per request")
    g.add_argument("--cached-share", type=cli.unit_float, default=None, metavar="F",
                   help="share 0-1 of prompt tokens billed at the cached-input price (the data file's, or "
                        "--*-cached-price). Not given with a 1,024+ token prompt: a warning shows the figure at "
                        "a typical share, since OpenAI/Azure/Gemini cache repeated prefixes automatically")
    g.add_argument("--requests-per-month", type=cli.nonneg_float, metavar="N", help="requests per month")
    g.add_argument("--eval-tokens", type=cli.nonneg_int, metavar="N", help="held-out tokens per evaluation in the self-hosted "
                   "training time (default 10%% of the training tokens)")
    g.add_argument("--evals", type=cli.nonneg_int, default=10, metavar="N",
                   help="evaluations per training run in the self-hosted time (default 10)")
    g = p.add_argument_group("price overrides ($ per 1M tokens unless noted)")
    for flag, what in (("--train-price", "training price per 1M training tokens"),
                       ("--base-input-price", "base model input"), ("--base-output-price", "base model output"),
                       ("--ft-input-price", "fine-tuned model input"), ("--ft-output-price", "fine-tuned model output"),
                       ("--base-cached-price", "base model cached input"),
                       ("--ft-cached-price", "fine-tuned model cached input"),
                       ("--fixed-monthly-cost", "USD per month for dedicated/provisioned serving"),
                       ("--gpu-price", "USD per GPU-hour, amortised, for YOUR OWN --gpu (adds one own-hardware row; "
                                       "rental rows keep their own prices)"),
                       ("--power-price", "USD per kWh: adds power (board watts x hours) to your own --gpu's cost"),
                       ("--gpu-watts", "board power in watts of your --gpu (default: the data file's TDP)"),
                       ("--throughput", "measured LoRA training tokens/s (replaces the estimate)")):
        g.add_argument(flag, type=cli.positive_float if flag in ("--gpu-price", "--throughput", "--power-price", "--gpu-watts")
                     else cli.nonneg_float,
                       metavar="X", help=what)
    g = p.add_argument_group("data")
    g.add_argument("--as-of", metavar="YYYY-MM-DD", help="judge retirements on this date (default today)")
    g.add_argument("--data", metavar="FILE", help="another providers data file with the same schema "
                   "(default: the bundled one, or $FT_PROVIDERS_FILE)")
    return p


def _check(args) -> None:
    for name in ("training_tokens", "examples", "base_prompt_tokens", "ft_prompt_tokens", "output_tokens",
                 "requests_per_month", "train_price", "base_input_price", "base_output_price", "ft_input_price",
                 "ft_output_price", "base_cached_price", "ft_cached_price", "fixed_monthly_cost"):
        v = getattr(args, name)
        if v is not None and v < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {v:g}")
    for name in ("params_b", "gpu_price", "throughput", "power_price", "gpu_watts"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {v:g}")
    if args.examples is not None and args.examples < 1:
        raise UsageError("--examples must be >= 1")
    if args.eval_tokens is not None and args.eval_tokens < 0:
        raise UsageError(f"--eval-tokens must be >= 0, got {args.eval_tokens}")
    if args.evals < 0:
        raise UsageError(f"--evals must be >= 0, got {args.evals}")
    if (args.gpu_price is not None or args.power_price is not None or args.gpu_watts is not None) and not args.gpu:
        raise UsageError("--gpu-price/--power-price/--gpu-watts price ONE GPU of your own: add --gpu ID "
                         "(e.g. --gpu rtx4090)")
    if args.cached_share is not None and not 0 <= args.cached_share <= 1:
        raise UsageError(f"--cached-share must be between 0 and 1, got {args.cached_share:g}")
    if args.train and args.training_tokens is not None:
        raise UsageError("give either --train FILE or --training-tokens N, not both")
    if (args.base_prompt_tokens is None) != (args.output_tokens is None):
        raise UsageError("give both --base-prompt-tokens and --output-tokens for per-request costs")
    if args.ft_prompt_tokens is not None and args.base_prompt_tokens is None:
        raise UsageError("--ft-prompt-tokens needs --base-prompt-tokens and --output-tokens")
    if args.model and not args.provider:
        raise UsageError("--model needs --provider (e.g. --provider openai --model gpt-4.1-mini)")
    if not (args.provider or args.compare or args.gpu or args.current_model or args.train_price is not None
            or args.base_input_price is not None or args.ft_input_price is not None):
        raise UsageError("say what to price: --provider ID [--model ID], --compare, --current-model NAME, --gpu ID, "
                         "or your own prices (--train-price, --base-input-price, ...); providers are listed in "
                         "providers.md")


def handle(args) -> cli.Result:
    _check(args)
    on = P.parse_date(args.as_of)
    d = P.load(args.data)
    warnings: list[str] = []
    stale = P.stale_warning(d, on)
    if stale:
        warnings.append(stale)
    gpu = d.gpu_id(args.gpu) if args.gpu else None
    # model size: flag > model entry > default 8 (the throughput reference)
    params_b, params_source = (args.params_b, "flag") if args.params_b else (
        d.throughput_reference.params_b, "default")
    tokenizer_hint = None
    if args.provider and args.train and not args.tokenizer:
        prov = d.provider(args.provider)
        if prov.kind == "managed":
            tokenizer_hint = d.offering(prov, args.model, params_b=args.params_b).tokenizer

    examples = args.examples
    tokens = args.training_tokens
    counted = None
    tok_name = None
    max_tok = None
    if args.train:
        c = costs.count_training_files(args.train, tokenizer=args.tokenizer, fallback_tokenizer=tokenizer_hint)
        examples, tokens, counted = c["examples"], c["total_tokens"], list(args.train)
        tok_name, max_tok = c["tokenizer"], c["max_tokens_per_example"]
        warnings.extend(c["notes"])
        if not args.tokenizer and tokenizer_hint is None:
            warnings.append(f"counted with {tok_name}, which only approximates this model's tokenizer; pass "
                            f"--tokenizer <HF model dir or id> (e.g. the base model you will train) for exact counts")

    if args.epochs == "auto":
        if examples:
            epochs, src = costs.auto_epochs(examples), f"auto (OpenAI heuristic, n={examples})"
        else:
            epochs, src = 3, "default (3; pass --examples N for the OpenAI heuristic)"
    else:
        try:
            epochs = int(args.epochs)
        except ValueError:
            raise UsageError(f"--epochs must be a whole number or 'auto', got {args.epochs!r}") from None
        if epochs < 1:
            raise UsageError("--epochs must be >= 1")
        src = "flag"

    ft_prompt = args.ft_prompt_tokens
    if args.base_prompt_tokens is not None and ft_prompt is None:
        ft_prompt = args.base_prompt_tokens
        if args.provider or args.compare or args.ft_input_price is not None:
            warnings.append("--ft-prompt-tokens not given: the fine-tuned prompt is assumed as long as the base "
                            "prompt; fine-tuning usually saves money only by shortening the prompt")
    if args.base_prompt_tokens is None:
        warnings.append("no request size: pass --base-prompt-tokens, --ft-prompt-tokens and --output-tokens "
                        "(and --requests-per-month) for per-request costs, savings and break-even")

    w = costs.Workload(training_tokens=tokens, examples=examples, epochs=epochs, epochs_source=src,
                       method=args.method, base_prompt_tokens=args.base_prompt_tokens, ft_prompt_tokens=ft_prompt,
                       output_tokens=args.output_tokens, cached_share=args.cached_share or 0.0,
                       cached_share_given=args.cached_share is not None,
                       requests_per_month=args.requests_per_month, params_b=params_b, params_source=params_source,
                       max_tokens_per_example=max_tok, tokenizer=tok_name, counted_from=counted,
                       eval_tokens=args.eval_tokens, evals=args.evals)
    ov = costs.Overrides(train_price=args.train_price, base_input_price=args.base_input_price,
                         base_output_price=args.base_output_price, ft_input_price=args.ft_input_price,
                         ft_output_price=args.ft_output_price, base_cached_price=args.base_cached_price,
                         ft_cached_price=args.ft_cached_price, fixed_monthly_cost=args.fixed_monthly_cost,
                         gpu=gpu, gpu_price=args.gpu_price, power_price=args.power_price,
                         gpu_watts=args.gpu_watts, throughput=args.throughput, current_model=args.current_model)
    doc, code = costs.estimate(d, w, provider=args.provider, model=args.model, ov=ov, on=on, compare=args.compare)
    doc["warnings"] = doc["warnings"] + warnings   # lifecycle first: it matters most
    summary = {k: doc[k] for k in ("provider", "model", "training_cost", "monthly_savings",
                                   "break_even_months")}
    return cli.Result(doc, costs.format_report(doc), exit_code=code, inputs=list(args.train or []),
                      summary=summary)


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
