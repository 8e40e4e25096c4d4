#!/usr/bin/env python3
"""Stretch a small chat dataset by paraphrasing its user turns (see loop.md)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli, jsonl  # noqa: E402
augment = bootstrap.lazy_module("finetune_kit.augment")
openai_compat = bootstrap.lazy_module("finetune_kit.openai_compat")
from finetune_kit.errors import UsageError  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "augment_data",
        "Write FACTOR paraphrased variants of every chat row: user turns are reworded by a local model\n"
        "(alias smollm2-135m, a HF directory, a .gguf file or a hub id) or by an OpenAI-compatible\n"
        "endpoint (--base-url; network is used only then). System prompts, tool messages, tool-call\n"
        "arguments and tools lists are copied unchanged. Degenerate paraphrases (empty, identical, bad\n"
        "length ratio, chat-template tokens, changed numbers/paths/code, answered instead of\n"
        "paraphrased) and duplicates of the source or of each other (exact + MinHash) are rejected with\n"
        "a reason. New rows carry metadata.synthetic=true, metadata.augmented_from=<source line> and the\n"
        "source's metadata.group; the output is checked with the validator. Exit 1 if it is invalid.",
        cli.examples_for("augment_data",
                         "corrected.jsonl --output corrected.aug.jsonl --factor 3 --model smollm2-135m",
                         "train.jsonl -o train.aug.jsonl --factor 2 --base-url http://localhost:8000/v1 "
                         "--model Qwen/Qwen2.5-7B-Instruct --regenerate-answers",
                         "train.jsonl -o new_only.jsonl --factor 2 --model ./my-instruct-model --only-new --json"))
    p.add_argument("input", help="chat JSONL to augment (validated; never modified)")
    p.add_argument("-o", "--output", required=True, help="augmented chat JSONL to write")
    p.add_argument("--factor", type=int, default=2, metavar="N",
                   help="paraphrased variants attempted per source row (default 2)")
    p.add_argument("--model", required=True,
                   help="local model spec (smollm2-135m, HF dir, .gguf, hub id) or, with --base-url, "
                        "the endpoint's model name")
    g = p.add_argument_group("OpenAI-compatible endpoint (network)")
    g.add_argument("--base-url", metavar="URL",
                   help="e.g. https://api.openai.com/v1 or http://localhost:8000/v1 (vLLM, Ollama, ...)")
    g.add_argument("--api-key-env", metavar="NAME", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (default OPENAI_API_KEY; "
                        "none sent when unset)")
    g.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per-request timeout (default 60)")
    g2 = p.add_argument_group("generation")
    g2.add_argument("--regenerate-answers", action="store_true",
                    help="also regenerate the final assistant text answer for the reworded conversation "
                         "(answers that are tool calls are kept)")
    g2.add_argument("--verify", action="store_true",
                    help="ask the model whether each paraphrase asks for the same thing (one short extra "
                         "request per variant; useful with a strong model or an endpoint)")
    g2.add_argument("--turns", choices=["all", "last"], default="all",
                    help="paraphrase all user turns of a row or only the last (default all)")
    g2.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                    help="generation limit per paraphrase/answer (default 128); hitting it rejects the "
                         "candidate as truncated")
    g2.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    g2.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95)")
    g2.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g2.add_argument("--retries", type=int, default=1, metavar="N",
                    help="extra generation rounds for rows whose variants were rejected (default 1)")
    g2.add_argument("--batch-size", type=int, default=16, metavar="N", help="local model batch size (default 16)")
    g2.add_argument("--device", metavar="DEV", help="local model device: cuda, cuda:1, cpu (default: cuda if available)")
    g3 = p.add_argument_group("filters")
    g3.add_argument("--min-ratio", type=float, default=0.5, help="min (len(new)+10)/(len(src)+10), default 0.5")
    g3.add_argument("--max-ratio", type=float, default=2.0, help="max length ratio, default 2.0")
    g3.add_argument("--min-overlap", type=float, default=0.6,
                    help="min share of the source's content words kept (default 0.6)")
    g3.add_argument("--near-dup-threshold", type=cli.fraction, default=0.9,
                    help="MinHash Jaccard at or above which a new row is a near duplicate (default 0.9; "
                         "1 = exact only)")
    g4 = p.add_argument_group("output")
    g4.add_argument("--only-new", action="store_true", help="write only the new rows (default: source + new)")
    g4.add_argument("--limit", type=int, metavar="N", help="augment only the first N source rows")
    return p


def _check_args(args) -> None:
    if args.factor < 1 or args.factor > 20:
        raise UsageError(f"--factor must be between 1 and 20 (got {args.factor})")
    if args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be positive")
    if not 0 < args.min_ratio <= 1 <= args.max_ratio:
        raise UsageError("need 0 < --min-ratio <= 1 <= --max-ratio")
    if not 0 <= args.min_overlap <= 1:
        raise UsageError("--min-overlap must be between 0 and 1")
    if args.temperature <= 0:
        raise UsageError("--temperature must be > 0 (paraphrasing samples)")
    if args.retries < 0 or (args.limit is not None and args.limit < 1):
        raise UsageError("--retries must be >= 0 and --limit >= 1")


def handle(args) -> cli.Result:
    _check_args(args)
    sources = augment.load_sources(args.input)
    if args.limit:
        sources = sources[:args.limit]
    if not sources:
        raise UsageError(f"{args.input} has no rows to augment")
    jsonl.check_output(args.output, force=args.force, inputs=[args.input])
    if args.base_url:
        gen = augment.OpenAIGenerator(args.base_url, args.model,
                                      api_key=openai_compat.api_key_from_env(args.api_key_env),
                                      max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                      top_p=args.top_p, seed=args.seed, timeout=args.timeout)
        print(f"note: sending user turns to {gen.url} (model {args.model})", file=sys.stderr)
    else:
        gen = augment.HFGenerator(args.model, max_new_tokens=args.max_new_tokens,
                                  temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                  batch_size=args.batch_size, device=args.device)
    cfg = augment.AugmentConfig(
        factor=args.factor, turns=args.turns, regenerate_answers=args.regenerate_answers, verify=args.verify,
        retries=args.retries, near_dup_threshold=args.near_dup_threshold,
        filters=augment.FilterConfig(args.min_ratio, args.max_ratio, args.min_overlap))
    results, rep = augment.augment(
        sources, gen, cfg, source_label=os.path.basename(args.input),
        progress=lambda it: cli.progress(it, total=len(sources), desc="augment", unit="row"))
    rows = augment.assemble(results, include_source=not args.only_new)
    n = jsonl.write_jsonl(args.output, rows, force=args.force, inputs=[args.input])

    from finetune_kit import validate

    # the output is a part of a dataset (it is merged by prepare_data): no minimum size here
    vdoc = validate.validate_files([args.output], tokenizer="none", min_examples=1, show_progress=False)
    vfile = vdoc["files"][0]
    validation = {"valid": vdoc["valid"], "errors": vfile["error_count"], "warnings": vfile["warning_count"],
                  "first_errors": vfile["errors"][:5]}
    r = rep.to_dict()
    data = {"input": args.input, "output": args.output, "generator": gen.name, "factor": args.factor,
            **r, "rows_written": n, "source_rows_written": 0 if args.only_new else len(sources),
            "new_rows_written": rep.survived, "validation": validation}
    if args.base_url:
        data["requests"] = getattr(gen, "requests", None)

    lines = [f"{rep.survived} of {rep.requested} requested variants survived "
             f"({rep.attempted} generated) from {len(sources)} source rows with {gen.name}"]
    if r["rejected"]:
        lines.append(cli.table(["rejected because", "rows", "hint"], augment.describe_reasons(r["rejected"]),
                               "lrl"))
    if rep.answers_regenerated or rep.answers_kept_tool_calls:
        lines.append(f"answers regenerated: {rep.answers_regenerated}; tool-call answers kept: "
                     f"{rep.answers_kept_tool_calls}")
    status = "valid" if validation["valid"] else cli.color(
        f"INVALID ({validation['errors']} errors; run validate_jsonl.py {args.output})", "red")
    lines.append(f"wrote {n} rows to {args.output} ({status})")
    if rep.survived == 0:
        lines.append(cli.color("warning: no variant survived; try a stronger --model or --base-url", "yellow"))
    return cli.Result(data, "\n".join(lines), exit_code=0 if validation["valid"] else 1,
                      inputs=[args.input], outputs=[args.output],
                      summary={"requested": rep.requested, "survived": rep.survived,
                               "rejected": r["rejected"], "valid": validation["valid"]})


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
