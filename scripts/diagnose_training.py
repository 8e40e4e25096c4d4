#!/usr/bin/env python3
"""Read a training log (loss curve) and report overfitting, divergence, zero loss, underfitting, too-high lr."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "diagnose_training",
        "Diagnose a fine-tuning run from its log: our training_log.jsonl, a Hugging Face trainer_state.json\n"
        "(log_history), an OpenAI-style results CSV (step, train_loss, valid_loss, ...), or a run/adapter/\n"
        "checkpoint directory holding one. Findings (stable codes): divergence, zero_loss, overfitting,\n"
        "lr_too_high, underfitting, healthy; each with the step, evidence and a concrete fix, plus best_step\n"
        "(the checkpoint to keep). Exit 0: healthy or warnings only; 1: a blocking finding (divergence, or a\n"
        "zero loss that means broken labels/data); 2: could not read the log.",
        cli.examples_for("diagnose_training",
                         "out/adapter --plot out/loss.png",
                         "runs/checkpoint-500/trainer_state.json --json",
                         "step_metrics.csv --plot curve.png --json"))
    p.add_argument("log", help="training_log.jsonl, trainer_state.json, results .csv, or a directory holding one")
    p.add_argument("--plot", metavar="FILE", help="write a PNG of the curves with best step and findings marked")
    return p


def handle(args) -> cli.Result:
    from finetune_kit import diagnose, jsonl

    src = diagnose.find_log(args.log)
    if args.plot:
        if not args.plot.lower().endswith(".png"):
            from finetune_kit.errors import UsageError

            raise UsageError(f"--plot {args.plot}: the file name must end in .png")
        jsonl.check_output(args.plot, force=args.force, inputs=[src])
    rows, fmt = diagnose.read_log(src)
    res = diagnose.analyse(rows)
    doc = {"findings": res["findings"], "best_step": res["best_step"], "best_step_reason": res["best_step_reason"],
           "summary": res["summary"], "log": str(src), "format": fmt, "plot": None}
    outputs = []
    doc["plot_skipped"] = None
    if args.plot and not bootstrap.has_module("matplotlib"):   # optional: the diagnosis stands without it
        doc["plot_skipped"] = bootstrap.missing_line("matplotlib", script="diagnose_training")
        print(f"warning: --plot skipped: {doc['plot_skipped']}", file=sys.stderr)
    elif args.plot:
        from finetune_kit import plots

        plots.plot_loss_curve(rows, args.plot, best_step=res["best_step"], findings=res["findings"])
        doc["plot"] = str(args.plot)
        outputs.append(args.plot)
    code = diagnose.exit_code(res["findings"])
    icon = {"error": cli.color("ERROR", "red"), "warning": cli.color("WARN", "yellow"),
            "info": cli.color("OK", "green")}
    lines = [f"{src} ({fmt}, {res['summary']['steps_logged']} logged steps)"]
    for f in res["findings"]:
        at = f" at step {f['step']}" if f["step"] is not None else ""
        lines.append(f"{icon[f['severity']]} {f['code']}{at}: {f['message']}")
        lines.append(f"     fix: {f['fix']}")
    best = "none" if res["best_step"] is None else res["best_step"]
    lines.append(f"best_step: {best} ({res['best_step_reason']})")
    if doc["plot"]:
        lines.append(f"plot: {doc['plot']}")
    summary = {"codes": [f["code"] for f in res["findings"]], "best_step": res["best_step"]}
    return cli.Result(doc, "\n".join(lines), exit_code=code, inputs=[src], outputs=outputs, summary=summary)


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
