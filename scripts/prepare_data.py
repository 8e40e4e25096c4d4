#!/usr/bin/env python3
"""Turn raw exports or OpenClaw agent sessions into clean, deduplicated, leak-free chat JSONL splits."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli  # noqa: E402
from finetune_kit import openclaw_sessions as oc  # noqa: E402
from finetune_kit import prepare as prep  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "prepare_data",
        "Convert chat/prompt-completion/Alpaca/ShareGPT/CSV/TSV exports or OpenClaw agent sessions to\n"
        "OpenAI chat JSONL; normalise, remove exact and near duplicates (MinHash), split into\n"
        "train/validation/test without leakage (groups and near-duplicate clusters stay in one split),\n"
        "report the data mix, write manifest.json and run the validator on the result.\n"
        "Writes OUTPUT_DIR/{train,validation,test,removed}.jsonl + manifest.json (see data-prep.md).\n"
        "Exit codes: 0 ok, 1 blocking (too few sessions, leakage, validator errors), 2 could not run.",
        cli.examples_for("prepare_data",
                         "raw.jsonl --output-dir data/",
                         "tickets.csv --prompt-column question --completion-column answer "
                         "--group-by customer_id --output-dir data/",
                         "--from openclaw --agent-id main --date-range 2026-01-01..2026-03-31 "
                         "--min-samples 50 --redact pseudonym --output-dir data/"))
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="input file(s) (.jsonl/.json/.csv/.tsv) or, with --from openclaw, " + oc.SOURCES_HELP +
                        " (default: $OPENCLAW_STATE_DIR or ~/.openclaw)")
    p.add_argument("--output-dir", "-o", required=True, metavar="DIR", help="where the splits are written")
    p.add_argument("--from", dest="fmt", default="auto", choices=prep.FORMATS, metavar="FORMAT",
                   help="input format: " + ", ".join(prep.FORMATS) + " (default auto: per file/row)")
    p.add_argument("--system", metavar="TEXT", help="add (or replace) the system prompt of every example")
    g = p.add_argument_group("CSV/TSV columns (default: first match of common names)")
    g.add_argument("--prompt-column", metavar="COL", help="prompt column (default: prompt/instruction/question/...)")
    g.add_argument("--completion-column", metavar="COL",
                   help="completion column (default: completion/response/answer/output/...)")
    g.add_argument("--system-column", metavar="COL", help="per-row system prompt column (default: system)")
    g.add_argument("--input-column", metavar="COL",
                   help="extra column appended to the prompt (default: 'input' when the prompt is 'instruction')")
    g = p.add_argument_group("dedup and split")
    g.add_argument("--split", default="0.8,0.1,0.1", metavar="T,V,T",
                   help="train,validation,test shares (default 0.8,0.1,0.1)")
    g.add_argument("--seed", type=cli.seed_int, default=42, help="seed of the split (default 42; same seed = same bytes)")
    g.add_argument("--group-by", metavar="FIELD",
                   help="keep rows sharing this field (top level, metadata, or a.b path) in one split")
    g.add_argument("--stratify", metavar="FIELD", help="split each value of FIELD in the same proportions")
    g.add_argument("--near-dup-threshold", type=cli.fraction, default=0.85, metavar="J",
                   help="near-duplicate Jaccard threshold on word 3-shingles (default 0.85)")
    g.add_argument("--no-near-dup", action="store_true", help="exact deduplication only")
    g.add_argument("--keep-near-dups", action="store_true",
                   help="keep near-duplicates but put each cluster in a single split (paraphrase/augmented data)")
    g.add_argument("--near-dup-removed", metavar="FILE",
                   help="remove the rows of this removed list (near_dedup_cluster.py, datatrove) as near "
                        "duplicates instead of searching for them here")
    g = p.add_argument_group("data mix")
    g.add_argument("--tag-field", metavar="FIELD",
                   help="field holding category tags (e.g. edge, refusal); counted in the mix report")
    g.add_argument("--target-mix", metavar="SPEC",
                   help="target shares, e.g. normal=0.3,edge=0.2,refusal=0.2,multi_turn=0.15,tool_calls=0.15 "
                        "(default: that agent mix when the data has multi-turn/tool-call examples, else the mix "
                        "is only reported)")
    g = p.add_argument_group("OpenClaw sessions (--from openclaw)")
    oc.add_filter_arguments(g)
    g.add_argument("--min-samples", type=cli.nonneg_int, metavar="N",
                   help="exit 1 when fewer than N sessions qualify (default 1 for OpenClaw)")
    g.add_argument("--keep-inbound-metadata", action="store_true",
                   help="keep the sender/channel metadata blocks OpenClaw prepends to user messages")
    g.add_argument("--tools", dest="tools_file", metavar="FILE",
                   help="JSON list of tool definitions to attach to examples that call tools")
    g.add_argument("--keep-unanswered-tool-calls", action="store_true",
                   help="keep assistant tool calls that never got a result (default: dropped, counted)")
    g.add_argument("--include-deleted", action="store_true",
                   help="also read *.jsonl.deleted.<timestamp> session archives (default: skipped, counted)")
    g = p.add_argument_group("tokens (as validate_jsonl.py; the validator runs with the same values)")
    g.add_argument("--max-tokens", type=cli.nonneg_int, metavar="N",
                   help="token budget per example: longer OpenClaw conversations are cut into windows at "
                        "user-turn boundaries (default: the --model's limit, else 2048 = train_lora.py's "
                        "--max-seq-length; 0 = no limit)")
    g.add_argument("--tokenizer", metavar="SPEC",
                   help="tokenizer for counting (tiktoken encoding, HF tokenizer dir/id/alias; default "
                        "from --model, else cl100k_base)")
    g.add_argument("--model", metavar="NAME", help="target model: picks the tokenizer and the per-example limit")
    g.add_argument("--min-examples", type=cli.nonneg_int, default=10, metavar="N",
                   help="fewer training examples than N is an error, as in validate_jsonl.py (default 10); "
                        "small validation/test files get a warning")
    p.add_argument("--coerce", action="store_true",
                   help="convert rows that need a fix the validator calls an error ('content': 42 -> '42', "
                        "{'conversation': [...]}, tool calls without arguments); default: removed with its code")
    g = p.add_argument_group("PII redaction before anything is split or written (same engine as scan_pii.py)")
    g.add_argument("--redact", metavar="MODE", choices=["replace", "mask", "hash", "pseudonym"],
                   help="redact PII/secrets in every row (splits AND removed.jsonl) with this mode: pseudonym "
                        "(<PERSON_1>, one per value across the whole run), replace, mask or hash (needs --salt "
                        "or FT_PII_SALT)")
    g.add_argument("--nlp", default="auto", metavar="auto|patterns|MODEL[,MODEL]",
                   help="NER for --redact, as scan_pii.py --nlp (default auto)")
    g.add_argument("--entities", default="default", metavar="LIST", help="as scan_pii.py --entities")
    g.add_argument("--pattern", action="append", default=[], metavar="NAME=REGEX", help="as scan_pii.py --pattern")
    g.add_argument("--deny-list", metavar="FILE", help="as scan_pii.py --deny-list")
    g.add_argument("--allow-list", metavar="FILE", help="as scan_pii.py --allow-list")
    g.add_argument("--salt", help="secret salt for --redact hash (or env FT_PII_SALT)")
    return p


def _redact_spec(args):
    from finetune_kit.errors import UsageError

    if not args.redact:
        if args.pattern or args.deny_list or args.allow_list or args.salt or args.nlp != "auto" \
                or args.entities != "default":
            raise UsageError("--nlp/--entities/--pattern/--deny-list/--allow-list/--salt only apply with --redact MODE")
        return None
    from finetune_kit import pii

    salt = args.salt or (os.environ.get("FT_PII_SALT") if args.redact == "hash" else None)
    spec = pii.RedactSpec(mode=args.redact, nlp=args.nlp, entities=args.entities,
                          patterns=pii.parse_patterns(args.pattern), allow_list=args.allow_list,
                          deny_list=args.deny_list, salt=salt)
    spec.check()
    return spec


def handle(args) -> cli.Result:
    opts = prep.Options(
        inputs=list(args.inputs), output_dir=args.output_dir, fmt=args.fmt, system=args.system,
        prompt_column=args.prompt_column, completion_column=args.completion_column,
        system_column=args.system_column, input_column=args.input_column,
        split=prep.parse_split(args.split), seed=args.seed, group_by=args.group_by, stratify=args.stratify,
        near_dup=not args.no_near_dup, near_dup_threshold=args.near_dup_threshold,
        keep_near_dups=args.keep_near_dups, tag_field=args.tag_field,
        target_mix=prep.parse_target_mix(args.target_mix), agent_id=args.agent_id, date_range=args.date_range,
        min_samples=args.min_samples, keep_inbound_metadata=args.keep_inbound_metadata,
        tools_file=args.tools_file, force=args.force, tokenizer=args.tokenizer, model=args.model,
        max_tokens=args.max_tokens, keep_unanswered_tool_calls=args.keep_unanswered_tool_calls,
        include_deleted=args.include_deleted, coerce=args.coerce, min_examples=args.min_examples,
        near_dup_removed=args.near_dup_removed, redact=_redact_spec(args))
    return prep.prepare(opts)


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
