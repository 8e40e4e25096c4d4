#!/usr/bin/env python3
"""Scan training JSONL for PII and secrets with presidio; optionally write a redacted copy."""

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
        "scan_pii",
        "Find PII and secrets in every message text and tool-call argument of training JSONL files\n"
        "(presidio + this skill's secret/address/home-path recognizers). Reports locations and masked\n"
        "previews, never raw values (unless --show-values). --redact writes new redacted files (inputs are\n"
        "never modified): every occurrence of a detected value is redacted, in every message and every\n"
        "file given together, with one pseudonym. Each text's language is detected; names/places are\n"
        "searched only with a NER pipeline for that language. Nothing is downloaded: --nlp auto uses an\n"
        "installed spaCy pipeline, else pattern-only mode with a warning. Exit 1 with --fail-on when found.",
        cli.examples_for("scan_pii", "data/train.jsonl --fail-on any",
                         "data/train.jsonl data/valid.jsonl --redact data/redacted/ --mode pseudonym "
                         "--pattern ORDER_ID='ORD-\\d{5}' --deny-list customers.txt",
                         "data/train.jsonl --nlp patterns --entities default,-LOCATION,-PERSON "
                         "--phone-regions US,GB --json"))
    p.add_argument("file", nargs="*", help="JSONL file(s) (chat, prompt-completion or preference lines); several "
                                           "files (train/validation/test) are scanned and redacted as one dataset")
    g = p.add_argument_group("detection")
    g.add_argument("--nlp", default="auto", metavar="auto|patterns|MODEL[,MODEL]",
                   help="auto (default): best installed spaCy English pipeline, else pattern-only; "
                        "patterns: no NER (no PERSON/LOCATION); or installed spaCy pipelines of any language "
                        "(package names or directories, comma-separated, e.g. en_core_web_lg,zh_core_web_sm; "
                        "xx_* pipelines serve every language); hf:MODEL[@LANG]: a Hugging Face "
                        "token-classification model (directory or cached repo id) via presidio's transformers "
                        "engine, for LANG (default: every language)")
    g.add_argument("--entities", default="default", metavar="LIST",
                   help="comma list of entity types; keywords: default, secrets, all; -NAME drops one "
                        "(default,-LOCATION). default = e-mail, phone, card, US SSN, IBAN, IP, street address, date of birth, "
                        "home-path user name, secrets, PERSON, LOCATION (see --list-entities)")
    g.add_argument("--pattern", action="append", default=[], metavar="NAME=REGEX",
                   help="your own entity (repeatable), e.g. ORDER_ID='ORD-\\d{5}'; a named group (?P<v>...) "
                        "limits the span")
    g.add_argument("--deny-list", metavar="FILE",
                   help="values always redacted wherever they occur (case-insensitive, whole words): one per "
                        "line, PERSON by default, `TYPE<TAB>value` to set the type (e.g. a CRM export of names)")
    g.add_argument("--allow-list", metavar="FILE",
                   help="values never reported or redacted (product names, staff aliases): one per line")
    g.add_argument("--threshold", type=cli.unit_float, default=0.4, help="minimum score 0-1 (default 0.4)")
    g.add_argument("--language", default="en", help="language code of the text (default en)")
    g.add_argument("--phone-regions", default="default", metavar="LIST",
                   help="regions for phone numbers, e.g. US,GB (default presidio's US,GB,DE,FR,IL,IN,CA,BR; "
                        "'all' = every region, slow). Fewer regions = faster")
    g.add_argument("--batch-size", type=cli.positive_int, default=256, help="texts per NLP batch (default 256)")
    g.add_argument("--list-entities", action="store_true", help="list detectable entity types and exit")
    r = p.add_argument_group("report")
    r.add_argument("--fail-on", metavar="any|secrets|LIST",
                   help="exit 1 when any finding (any), any secret type (secrets) or one of these entity types "
                        "is found")
    r.add_argument("--show-values", action="store_true",
                   help="include raw values in the report (DANGEROUS: the output then contains the PII)")
    r.add_argument("--limit", type=cli.nonneg_int, default=1000, help="findings listed in --json (default 1000; counts are always complete)")
    d = p.add_argument_group("redaction")
    d.add_argument("--redact", metavar="OUT",
                   help="write a redacted copy to OUT (atomic; never the input); with several input files OUT is "
                        "a directory that receives one redacted file per input, under the same name")
    d.add_argument("--mode", choices=["replace", "mask", "hash", "pseudonym"], default=None,
                   help="replace: <EMAIL_ADDRESS>; mask: ****@****.***; hash: <EMAIL_ADDRESS:3f9a1c2b7d4e> "
                        "(salted HMAC); pseudonym (default): <PERSON_1>, one per value across all files of the call")
    d.add_argument("--salt", help="secret salt for --mode hash (or env FT_PII_SALT); >= 16 characters")
    return p


def _list_entities(args) -> cli.Result:
    from finetune_kit import pii

    if not bootstrap.has_module("presidio_analyzer"):   # light path: what would be scanned, and how to get it
        hint = bootstrap.missing_line("presidio_analyzer", script="scan_pii")
        print(f"warning: nothing is detectable yet; {hint}", file=sys.stderr)
        data = [{"entity": e, "source": None, "default": True, "detectable": False, "description": ""}
                for e in pii.DEFAULT_ENTITIES]
        return cli.Result({"entities": data, "nlp": None, "setup": bootstrap.setup_command(["pii"])},
                          cli.table(["entity", "default", "detected now"],
                                    [(d["entity"], "default", "needs the pii extra") for d in data], "lll"))
    from finetune_kit import pii_recognizers

    pii.import_presidio_lean()
    eng = pii.build_engine(args.nlp, language=args.language, entities="all", threshold=args.threshold,
                           regions=pii.phone_regions(args.phone_regions), debug=args.debug)
    extra = {r.entity: r for r in pii_recognizers.EXTRA_RECOGNIZERS if r.name != "CardNumberRecognizer"}
    rows, data = [], []
    for e in sorted(set(eng.entities) | set(eng.undetectable)):
        src = "skill" if e in extra else "presidio"
        desc = extra[e].description if e in extra else ""
        detect = e in eng.entities
        rows.append((e, src, "default" if e in pii.DEFAULT_ENTITIES else "", "yes" if detect else "needs spaCy"))
        data.append({"entity": e, "source": src, "default": e in pii.DEFAULT_ENTITIES, "detectable": detect,
                     "description": desc})
    return cli.Result({"entities": data, "nlp": eng.choice.to_dict()},
                      cli.table(["entity", "source", "default", "detected now"], rows, "llll"))


def handle(args) -> cli.Result:
    from finetune_kit import pii

    if args.list_entities:
        return _list_entities(args)
    if not args.file:
        raise UsageError("give a JSONL file to scan (or --list-entities)")
    lists = pii.load_user_lists(args.allow_list, args.deny_list)
    patterns = pii.parse_patterns(args.pattern)
    if args.mode and not args.redact:
        raise UsageError("--mode only applies with --redact OUT")
    if args.limit < 0 or args.batch_size < 1:
        raise UsageError("--limit must be >= 0 and --batch-size >= 1")
    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    mode = args.mode or "pseudonym"
    salt, salt_source = None, None
    if args.redact and mode == "hash":
        if args.salt:
            salt, salt_source = args.salt, "--salt"
        elif os.environ.get("FT_PII_SALT"):
            salt, salt_source = os.environ["FT_PII_SALT"], "FT_PII_SALT"
    elif args.salt:
        raise UsageError("--salt only applies to --redact with --mode hash")
    from finetune_kit import jsonl

    empty = [f for f in args.file if jsonl.check_readable(f).stat().st_size == 0]
    if empty and len(empty) == len(args.file):
        raise UsageError(f"{empty[0]} is empty: nothing to scan")
    for f in empty:  # e.g. an empty validation split next to train.jsonl
        print(f"note: {f} is empty: skipped (nothing to scan or redact)", file=sys.stderr)
    args.file = [f for f in args.file if f not in empty]
    if args.redact:
        if len(args.file) == 1:
            jsonl.check_output(args.redact, force=args.force, inputs=args.file)
        pii.Redactor(mode, salt)  # validate mode/salt before the (slow) engine load

    if "trf" not in args.nlp and "hf:" not in args.nlp:  # transformer pipelines need torch
        pii.import_presidio_lean()
    engine = pii.build_engine(args.nlp, language=args.language, entities=args.entities,
                              threshold=args.threshold, regions=pii.phone_regions(args.phone_regions),
                              debug=args.debug, custom_patterns=patterns)
    if engine.choice.warning and engine.choice.requested == "auto":  # explicit --nlp patterns: JSON only
        cli.note("WARNING: " + engine.choice.warning)
    fail_on = None
    if args.fail_on:
        fail_on = []
        for x in (x.strip().upper() for x in args.fail_on.split(",") if x.strip()):
            fail_on += [e for e in pii.SECRET_ENTITIES if e in engine.entities] if x == "SECRETS" else [x]
        bad = [e for e in fail_on if e != "ANY" and e not in engine.entities]
        if bad:
            raise UsageError(f"--fail-on {','.join(bad)}: not among the scanned entities "
                             f"({','.join(engine.entities)})")
    if args.show_values:
        print("WARNING: --show-values: this report contains raw PII/secret values; do not store or share it",
              file=sys.stderr)
    opts = pii.ScanOptions(fail_on=fail_on, show_values=args.show_values, limit=args.limit,
                           redact_out=args.redact, mode=mode, salt=salt, force=args.force,
                           salt_source=salt_source, lists=lists)
    doc = pii.scan_files(args.file, pii.Scanner(engine, batch_size=args.batch_size), opts)
    if engine.choice.mode != "patterns" or engine.ner:
        for ln in pii.language_lines(doc["languages"])[1:]:
            print("WARNING: " + ln.lstrip(), file=sys.stderr)
    summary = {"total_findings": doc["total_findings"],
               "by_entity": {e: v["count"] for e, v in doc["summary"].items()},
               "nlp": doc["nlp"]["mode"], "failed": doc["failed"],
               "redaction_mode": mode if args.redact else None}
    return cli.Result(doc, pii.format_report(doc), exit_code=1 if doc["failed"] else 0,
                      inputs=list(args.file), outputs=[f["output"] for f in doc["files"] if f["output"]],
                      summary=summary)


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
