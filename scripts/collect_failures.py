#!/usr/bin/env python3
"""Turn an agent's failures (negative feedback, tool errors, evaluation misses) into training rows."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli, failures, jsonl  # noqa: E402
from finetune_kit import openclaw_sessions as oc  # noqa: E402
from finetune_kit.errors import UsageError  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "collect_failures",
        "Select failure cases from OpenClaw session transcripts and/or evaluate.py's predictions.jsonl\n"
        "(--criteria negative_feedback,tool_error,eval_miss,eval_regression) and write each as the\n"
        "conversation up to the failing answer, with metadata.provenance (source, session/line,\n"
        "criterion, evidence) and the failing answer in metadata.failing_answer (never trained).\n"
        "Cases with a correction (--corrections, or --use-reference for evaluation cases) go to --output\n"
        "as training rows; the others go to the review file, whose rows have no answer and cannot be\n"
        "trained on. Exit 1 if a correction is invalid or repeats the failure (see loop.md).",
        cli.examples_for("collect_failures",
                         "--sessions ~/.openclaw --agent-id main --date-range 2026-11-01.. -o failures.jsonl",
                         "--cases failures.needs_review.jsonl --corrections corrections.jsonl -o corrected.jsonl",
                         "--predictions eval-v1/predictions.jsonl --criteria eval_miss --metric tool_call "
                         "-o misses.jsonl --json"))
    g = p.add_argument_group("inputs (at least one)")
    g.add_argument("--sessions", nargs="?", const="", metavar="PATH", help=oc.SOURCES_HELP + " (no value: $OPENCLAW_STATE_DIR or ~/.openclaw)")
    oc.add_filter_arguments(g, "2026-11-01..2026-11-30")
    g.add_argument("--predictions", metavar="FILE", help="predictions.jsonl written by evaluate.py --output-dir")
    g.add_argument("--cases", metavar="FILE",
                   help="a review file from an earlier run (to apply --corrections without the transcripts)")
    c = p.add_argument_group("selection")
    c.add_argument("--criteria", metavar="LIST",
                   help="comma list of " + ", ".join(failures.CRITERIA) +
                        " (default: every criterion that applies to the inputs given)")
    c.add_argument("--feedback-pattern", action="append", default=[], metavar="REGEX",
                   help="extra negative-feedback marker (case-insensitive regex on the start of a user turn); "
                        "repeatable")
    c.add_argument("--metric", default="auto", metavar="NAME",
                   help="evaluation metric for eval_miss/eval_regression (default auto: evaluate.py's primary "
                        "metric from results.json beside the predictions, else the first score)")
    c.add_argument("--side", choices=["a", "b"], default="b", help="eval_miss: whose answers (default b)")
    c.add_argument("--threshold", type=float, default=0.5,
                   help="a score below this is a miss (default 0.5; 0/1 metrics: 0 is a miss)")
    o = p.add_argument_group("rows and corrections")
    o.add_argument("--system", metavar="TEXT",
                   help="system prompt to put first in session cases (transcripts do not store it)")
    o.add_argument("--tools", dest="tools_file", metavar="FILE",
                   help="JSON list of tool definitions attached to rows that call tools")
    o.add_argument("--corrections", metavar="FILE",
                   help='JSONL of corrected answers keyed by case id: {"id", "content"} or {"id", "tool_calls"} '
                        'or {"id", "messages": [...]} or {"id", "drop": true}')
    o.add_argument("--use-reference", action="store_true",
                   help="evaluation cases: use the test set's reference answer as the correction (those rows "
                        "then come from the test set: evaluate the next model on another held-out set)")
    o.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="training rows (cases with a correction)")
    o.add_argument("--review", metavar="FILE",
                   help="cases still needing a correction (default: OUTPUT's name + .needs_review.jsonl)")
    return p


def _criteria(args) -> list[str]:
    has_sessions = args.sessions is not None
    has_preds = args.predictions is not None
    if not (has_sessions or has_preds or args.cases):
        raise UsageError("no input: give --sessions [PATH], --predictions FILE and/or --cases FILE")
    if (args.agent_id or args.date_range) and not has_sessions:
        raise UsageError("--agent-id/--date-range select OpenClaw sessions; use them with --sessions")
    if args.criteria:
        crits = [c.strip() for c in args.criteria.split(",") if c.strip()]
        bad = [c for c in crits if c not in failures.CRITERIA]
        if bad or not crits:
            raise UsageError(f"unknown criterion {', '.join(bad) or repr(args.criteria)}; "
                             f"use {', '.join(failures.CRITERIA)}")
        if any(c in failures.SESSION_CRITERIA for c in crits) and not (has_sessions or args.cases):
            raise UsageError("negative_feedback/tool_error read session transcripts: add --sessions PATH")
        if any(c in failures.EVAL_CRITERIA for c in crits) and not (has_preds or args.cases):
            raise UsageError("eval_miss/eval_regression read evaluate.py output: add --predictions FILE")
        return list(dict.fromkeys(crits))
    crits = []
    if has_sessions:
        crits += list(failures.SESSION_CRITERIA)
    if has_preds:
        crits += list(failures.EVAL_CRITERIA)
    return crits


def _review_path(args) -> str:
    if args.review:
        return args.review
    out = Path(args.output)
    stem = out.name[:-6] if out.name.endswith(".jsonl") else out.name
    return str(out.with_name(f"{stem}.needs_review.jsonl"))


def handle(args) -> cli.Result:
    crits = _criteria(args)
    if not 0 <= args.threshold <= 1e9:
        raise UsageError("--threshold must be a non-negative number")
    review_path = _review_path(args)
    inputs = [x for x in (args.predictions, args.cases, args.corrections, args.tools_file) if x]
    if args.sessions:
        inputs.append(args.sessions)
    if os.path.abspath(review_path) == os.path.abspath(args.output):
        raise UsageError("--review and --output must be different files")
    for out in (args.output, review_path):
        jsonl.check_output(out, force=args.force, inputs=[i for i in inputs if os.path.isfile(i)])
    tools = None
    if args.tools_file:
        from finetune_kit import prepare

        tools = prepare.load_tools_file(args.tools_file)
    corrections = failures.load_corrections(args.corrections) if args.corrections else None
    markers = failures.compile_markers(args.feedback_pattern)

    cases: list[failures.Case] = []
    data: dict = {"criteria_selected": crits}
    if args.sessions is not None:
        sess_crits = [c for c in crits if c in failures.SESSION_CRITERIA]
        found, scan = failures.cases_from_sessions(
            args.sessions or None, criteria=sess_crits, agent_id=args.agent_id, date_range=args.date_range,
            markers=markers, system=args.system, tools=tools,
            progress=lambda it: cli.progress(it, desc="sessions", unit="session"))
        cases += found
        data["sessions"] = {"path": args.sessions or "default", "read": scan.sessions,
                            "with_cases": scan.sessions_with_cases, "filtered_out": dict(scan.filtered_out),
                            "skipped_cases": dict(scan.skipped), "explicit_feedback": dict(scan.explicit_feedback),
                            "unreadable_entries": scan.unreadable_entries,
                            "agent_id": args.agent_id, "date_range": args.date_range}
    if args.predictions:
        ev_crits = [c for c in crits if c in failures.EVAL_CRITERIA]
        found, ps = failures.cases_from_predictions(
            args.predictions, criteria=ev_crits, metric=args.metric, side=args.side,
            threshold=args.threshold, tools=tools)
        cases += found
        data["predictions"] = {"path": args.predictions, "rows": ps.rows, "metric": ps.metric,
                               "metric_source": ps.metric_source, "side": ps.side, "threshold": ps.threshold,
                               "not_scored": ps.not_scored}
    if args.cases:
        found = failures.cases_from_review_file(args.cases, crits if args.criteria else None)
        cases += found
        data["cases_file"] = {"path": args.cases, "rows": len(found)}
    # the same case found twice (e.g. --cases plus --sessions): keep the first
    seen: set[str] = set()
    unique = []
    for c in cases:
        if c.id not in seen:
            seen.add(c.id)
            unique.append(c)
    cases = unique

    crep = failures.apply_corrections(cases, corrections, use_reference=args.use_reference,
                                      corrections_path=args.corrections)
    train_rows = [c.training_row() for c in cases if c.status == "corrected"]
    review_rows = [c.review_row() for c in cases if c.status == "needs_review"]
    jsonl.write_jsonl(review_path, review_rows, force=args.force)
    jsonl.write_jsonl(args.output, train_rows, force=args.force)

    validation = None
    if train_rows:
        from finetune_kit import validate

        vdoc = validate.validate_files([args.output], tokenizer="none", min_examples=1, show_progress=False)
        vf = vdoc["files"][0]
        validation = {"valid": vdoc["valid"], "errors": vf["error_count"], "warnings": vf["warning_count"],
                      "first_errors": vf["errors"][:5]}

    per: dict[str, Counter] = {c: Counter() for c in crits}
    for c in cases:
        for crit in c.criteria:
            per.setdefault(crit, Counter())
            per[crit]["cases"] += 1
            per[crit][c.status] += 1
    per_crit = {k: {"cases": v["cases"], "corrected": v["corrected"], "needs_review": v["needs_review"],
                    "dropped": v["dropped"]} for k, v in per.items()}
    warnings = []
    if any(c.status == "corrected" and c.extra.get("from_eval_set") for c in cases):
        warnings.append("some training rows come from the evaluation set: evaluate the next model on a "
                        "different held-out set, or the A/B gate is contaminated (loop.md)")
    if crep.unused_ids:
        warnings.append(f"{len(crep.unused_ids)} correction id(s) match no case")
    data.update({
        "criteria": per_crit,
        "cases": len(cases),
        "corrected": sum(c.status == "corrected" for c in cases),
        "needs_review": len(review_rows),
        "dropped": sum(c.status == "dropped" for c in cases),
        "corrections": {"file": args.corrections, "rows": crep.rows, "applied": crep.applied,
                        "from_reference": crep.from_reference, "dropped": crep.dropped,
                        "unused_ids": crep.unused_ids[:50], "problems": crep.problems},
        "outputs": {"training": args.output, "review": review_path},
        "training_rows": len(train_rows), "review_rows": len(review_rows),
        "validation": validation,
        "case_list": [{"id": c.id, "criteria": c.criteria, "status": c.status,
                       "source": os.path.basename(str(c.provenance.get("source", ""))),
                       **({"session_id": c.provenance["session_id"]} if "session_id" in c.provenance else {}),
                       **({"line": c.provenance["line"]} if c.provenance.get("line") else {})}
                      for c in cases[:200]],
        "warnings": warnings,
    })
    exit_code = 1 if crep.problems or (validation and not validation["valid"]) else 0

    rows = [(k, v["cases"], v["corrected"], v["needs_review"], v["dropped"]) for k, v in per_crit.items()]
    lines = [cli.table(["criterion", "cases", "corrected", "needs review", "dropped"], rows)]
    if "sessions" in data:
        s = data["sessions"]
        lines.append(f"sessions read: {s['read']} ({s['with_cases']} with failures)"
                     + (f"; {s['unreadable_entries']} unreadable transcript lines skipped"
                        if s["unreadable_entries"] else ""))
    if "predictions" in data:
        pr = data["predictions"]
        lines.append(f"predictions: {pr['rows']} rows, metric {pr['metric']} ({pr['metric_source']}), "
                     f"side {pr['side']}, miss below {pr['threshold']}")
    lines.append(f"wrote {len(train_rows)} training rows to {args.output} and {len(review_rows)} cases to review "
                 f"to {review_path}")
    for prob in crep.problems[:10]:
        lines.append(cli.color(f"correction {prob['id']} (line {prob.get('line', '-')}): [{prob['code']}] "
                               f"{prob['message']}", "red"))
    if validation and not validation["valid"]:
        lines.append(cli.color(f"the training rows are INVALID ({validation['errors']} errors): "
                               f"run validate_jsonl.py {args.output}", "red"))
    for w in warnings:
        lines.append(cli.color(f"warning: {w}", "yellow"))
    if review_rows:
        lines.append(f"next: write corrections for the {len(review_rows)} cases in {review_path} "
                     f"(JSONL keyed by metadata.id) and rerun with --cases {review_path} --corrections FILE")
    return cli.Result(data, "\n".join(lines), exit_code=exit_code, inputs=inputs,
                      outputs=[args.output, review_path],
                      summary={"cases": len(cases), "criteria": per_crit, "training_rows": len(train_rows),
                               "review_rows": len(review_rows), "correction_problems": len(crep.problems)})


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
