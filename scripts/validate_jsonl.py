#!/usr/bin/env python3
"""Validate fine-tuning JSONL files (chat, prompt-completion, preference) before anything else."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli  # noqa: E402
from finetune_kit.errors import UsageError  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "validate_jsonl",
        "Check training-data JSONL files in one streaming pass: every problem with its line, message\n"
        "index, JSON path, code and a fix hint (errors block, warnings do not); exact duplicates,\n"
        "leakage between files, differing system prompts; token statistics with a real tokenizer\n"
        "(default cl100k_base, offline) and what --max-tokens would cut.\n"
        "Exit codes: 0 valid (warnings allowed), 1 errors found, 2 could not run.",
        cli.examples_for("validate_jsonl",
                         "train.jsonl",
                         "train.jsonl valid.jsonl test.jsonl --model gpt-4o-mini-2024-07-18 --json",
                         "train.jsonl --tokenizer smollm2-135m --max-tokens 1024 --max-errors 5"),
        writes_outputs=False)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="JSONL files; with several (train/validation/test) duplicates between them are "
                        "reported as leakage")
    p.add_argument("--format", dest="fmt", default="auto",
                   choices=["auto", "chat", "prompt-completion", "preference"],
                   help="line format (default auto: detected from the first example; mixed formats are "
                        "an error)")
    p.add_argument("--tokenizer", metavar="SPEC",
                   help="tiktoken encoding (cl100k_base, o200k_base), a NAME.tiktoken file, a Hugging Face "
                        "tokenizer dir / hub id / .gguf / alias (smollm2-135m), or 'none' to skip token "
                        "statistics (default: derived from --model, else cl100k_base)")
    p.add_argument("--model", metavar="NAME",
                   help="target model: an OpenAI model name (gpt-4o-mini-2024-07-18, gpt-4.1-...) picks its "
                        "encoding and known per-example limit; a Hugging Face model picks its tokenizer, "
                        "chat template and context length")
    p.add_argument("--max-tokens", type=cli.nonneg_int, metavar="N",
                   help="per-example token limit for the truncation report (default: the model's known "
                        "limit, if any)")
    p.add_argument("--max-errors", type=cli.nonneg_int, metavar="N",
                   help="print at most N errors and N warnings per file (default 20 in the text report, "
                        "all up to 10,000 with --json); counts always stay complete")
    p.add_argument("--min-examples", type=cli.nonneg_int, default=10, metavar="N",
                   help="fewer examples than this in a file is an error (default 10, OpenAI's minimum)")
    return p


def handle(args) -> cli.Result:
    from finetune_kit import validate

    if args.max_tokens == 0:
        raise UsageError("--max-tokens must be a positive number of tokens")
    doc = validate.validate_files(args.files, fmt=args.fmt, tokenizer=args.tokenizer, model=args.model,
                                  max_tokens=args.max_tokens,
                                  max_errors=args.max_errors if args.json else None,
                                  min_examples=args.min_examples)
    return cli.Result(doc, validate.format_report(doc, args.max_errors),
                      exit_code=0 if doc["valid"] else 1, inputs=list(args.files),
                      summary=validate.summary(doc))


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
