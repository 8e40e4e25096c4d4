#!/usr/bin/env python3
"""Decide whether to fine-tune, prompt, add retrieval (RAG) or collect data first."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli, decide  # noqa: E402
P = bootstrap.lazy_module("finetune_kit.providers")
from finetune_kit.errors import UsageError  # noqa: E402

DECISION_FLAGS = ("failure_mode", "examples", "monthly_requests", "requirements_change", "privacy", "budget")


def build_parser():
    p = cli.make_parser(
        "should_finetune",
        "Answer 'should I fine-tune?' from a few facts about the problem. Output: recommendation\n"
        "(fine_tune | prompt | rag | collect_data), reasons (each says why it and not the neighbouring\n"
        "answer), next steps whose commands carry your answers, and - when fine-tuning is recommended or\n"
        "--show-providers is given - providers from the dated data file (retired ones never, retiring ones\n"
        "with their dates, filtered by --privacy). Warns when the data file is more than 90 days old.\n"
        "Run without flags in a terminal to be asked the questions.",
        cli.examples_for("should_finetune",
                         "--failure-mode format --examples 300 --monthly-requests 50000",
                         "--failure-mode cost --examples 2000 --monthly-requests 400000 --privacy strict --json",
                         ""),
        writes_outputs=False)
    g = p.add_argument_group("the problem")
    g.add_argument("--failure-mode", choices=decide.FAILURE_MODES,
                   help="what goes wrong today: " + "; ".join(f"{k} = {v}" for k, v in decide.FAILURE_HELP.items()))
    g.add_argument("--examples", type=int, metavar="N", help="good, reviewed examples you have (input -> ideal output)")
    g.add_argument("--monthly-requests", type=float, metavar="N", help="requests per month in production")
    g.add_argument("--requirements-change", choices=["rarely", "often"],
                   help="how often the expected behaviour changes")
    g.add_argument("--privacy", choices=["none", "strict", "on_prem"],
                   help="none = managed APIs allowed; strict = self-hosted (rented/own GPUs) only; "
                        "on_prem = your own hardware only (default none)")
    g.add_argument("--budget", type=float, metavar="USD", help="monthly budget in USD: suggestions whose cheapest GPU running 24/7 costs more are "
                        "flagged (price the full case with estimate_costs.py)")
    g.add_argument("--show-providers", action="store_true",
                   help="list providers even when the answer is not fine_tune (default: only for fine_tune)")
    g = p.add_argument_group("data")
    g.add_argument("--as-of", metavar="YYYY-MM-DD", help="judge retirements on this date (default today)")
    g.add_argument("--data", metavar="FILE", help="another providers data file with the same schema")
    return p


# ---------------------------------------------------------------------- interactive questions

def _ask(question: str, parse, default=None, tries: int = 3):
    for _ in range(tries):
        print(question, end=" ", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if line == "":
            raise UsageError("no answer (end of input); pass the flags instead, see --help")
        text = line.strip()
        if not text:
            return default
        try:
            return parse(text)
        except ValueError as exc:
            print(f"  {exc}", file=sys.stderr)
    raise UsageError(f"no valid answer to: {question}")


def _choice(options):
    def parse(text):
        t = text.strip().lower().replace("-", "_")
        hits = [o for o in options if o == t] or [o for o in options if o.startswith(t)]
        if len(hits) != 1:
            raise ValueError(f"answer one of: {', '.join(options)}")
        return hits[0]
    return parse


def _number(kind):
    def parse(text):
        v = kind(text.replace(",", "").replace("_", ""))
        if v < 0:
            raise ValueError("must be >= 0")
        return v
    return parse


def interview(args) -> None:
    print("A few questions (Enter = skip / default).", file=sys.stderr)
    for k, v in decide.FAILURE_HELP.items():
        print(f"  {k:9} {v}", file=sys.stderr)
    args.failure_mode = _ask(f"What goes wrong today? [{'/'.join(decide.FAILURE_MODES)}]",
                             _choice(decide.FAILURE_MODES))
    args.examples = _ask("How many good, reviewed examples do you have? (number, Enter = unknown)", _number(int))
    args.monthly_requests = _ask("Requests per month in production? (number, Enter = unknown)", _number(float))
    args.requirements_change = _ask("Does the expected behaviour change often? [rarely/often]",
                                    _choice(("rarely", "often")))
    args.privacy = _ask("Privacy: may data go to a managed API? [none/strict/on_prem] (Enter = none)",
                        _choice(("none", "strict", "on_prem")), "none")
    args.budget = _ask("Monthly budget in USD? (Enter = none)", _number(float))


def handle(args) -> cli.Result:
    if all(getattr(args, k) is None for k in DECISION_FLAGS):
        if sys.stdin.isatty():
            interview(args)
        else:
            raise UsageError("no answers given and stdin is not a terminal: pass --failure-mode "
                             f"{{{','.join(decide.FAILURE_MODES)}}} and any of --examples N, --monthly-requests N, "
                             "--requirements-change rarely|often, --privacy none|strict|on_prem, --budget USD")
    for k in ("examples", "monthly_requests", "budget"):
        v = getattr(args, k)
        if v is not None and v < 0:
            raise UsageError(f"--{k.replace('_', '-')} must be >= 0, got {v:g}")
    on = P.parse_date(args.as_of)
    d = P.load(args.data)
    a = decide.Answers(failure_mode=args.failure_mode, examples=args.examples,
                       monthly_requests=args.monthly_requests, requirements_change=args.requirements_change,
                       privacy=args.privacy or "none", budget=args.budget)
    doc = decide.decide(a, d, on, show_providers=args.show_providers)
    return cli.Result(doc, decide.format_report(doc),
                      summary={"recommendation": doc["recommendation"], **{k: v for k, v in doc["answers"].items()}})


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
