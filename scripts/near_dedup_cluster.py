#!/usr/bin/env python3
"""Near-duplicate removal past one machine: datatrove's MinHash pipeline -> a removed list for prepare_data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli, jsonl  # noqa: E402
from finetune_kit.errors import UsageError  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "near_dedup_cluster",
        "Find near-duplicate rows of a folder of JSONL files with datatrove's MinHash pipeline (same\n"
        "word 3-shingles of the conversation and LSH bands as prepare_data) on a local process pool,\n"
        "a Slurm cluster or a Ray cluster, and write a removed list (one JSON line per row to drop,\n"
        "with the row it duplicates) that prepare_data.py --near-dup-removed consumes.\n"
        "Needs the cluster extra: python3 scripts/setup.py --with cluster (or pip install\n"
        "'openclaw-fine-tuning[cluster]'). See data-prep.md.\n"
        "Exit codes: 0 ok (or submitted), 2 could not run.",
        cli.examples_for("near_dedup_cluster",
                         "exports/ --work dedup-work/ --output removed.jsonl --tasks 4 --workers 2",
                         "exports/ --work /shared/dedup/ --output removed.jsonl --executor slurm --tasks 256 "
                         "--partition cpu --time 04:00:00",
                         "exports/ --work /shared/dedup/ --output removed.jsonl --collect"))
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder of JSONL files (chat, prompt-completion, "
                                                           "Alpaca or ShareGPT rows)")
    p.add_argument("--work", required=True, metavar="DIR",
                   help="datatrove's working folder (signatures, buckets, clusters, logs); shared storage on a cluster")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="the removed list (JSONL) to write")
    p.add_argument("--glob", default="*.jsonl", metavar="PATTERN", help="files to read in INPUT_DIR (default *.jsonl)")
    p.add_argument("--near-dup-threshold", type=cli.fraction, default=0.85, metavar="J",
                   help="Jaccard threshold the LSH bands are tuned for (default 0.85, as prepare_data)")
    p.add_argument("--executor", choices=("local", "slurm", "ray"), default="local",
                   help="local process pool (default), Slurm job arrays, or the connected Ray cluster")
    p.add_argument("--tasks", type=cli.nonneg_int, default=1, metavar="N",
                   help="shards of the input for the hashing and filtering stages (default 1)")
    p.add_argument("--workers", type=cli.nonneg_int, default=1, metavar="N",
                   help="tasks running at once (local/ray; default 1)")
    p.add_argument("--collect", action="store_true",
                   help="only collect the removed list from a finished run in --work (after slurm/ray)")
    g = p.add_argument_group("Slurm (--executor slurm)")
    g.add_argument("--partition", metavar="NAME", help="Slurm partition")
    g.add_argument("--time", metavar="HH:MM:SS", help="time limit per task")
    g.add_argument("--cpus-per-task", type=cli.nonneg_int, default=1, metavar="N", help="CPUs per task (default 1)")
    g.add_argument("--mem-per-cpu-gb", type=float, default=2, metavar="GB", help="memory per CPU (default 2)")
    g.add_argument("--venv", metavar="PATH", help="virtualenv to activate on the nodes")
    return p


def handle(args) -> cli.Result:
    from finetune_kit import datatrove_dedup as dt

    out = jsonl.check_output(args.output, force=args.force)
    if not args.collect:
        if args.tasks < 1 or args.workers < 1:
            raise UsageError("--tasks and --workers must be at least 1")
        extra = {}
        if args.executor == "slurm":
            if not (args.partition and args.time):
                raise UsageError("--executor slurm needs --partition and --time")
            extra = {"partition": args.partition, "time": args.time, "cpus_per_task": args.cpus_per_task,
                     "mem_per_cpu_gb": args.mem_per_cpu_gb, "venv_path": args.venv}
        elif args.executor == "ray":
            extra = {"cpus_per_task": args.cpus_per_task, "mem_per_cpu_gb": args.mem_per_cpu_gb}
        removed = dt.run(args.input_dir, args.work, executor=args.executor, tasks=args.tasks, workers=args.workers,
                         threshold=args.near_dup_threshold, glob=args.glob, **extra)
        if removed is None:
            data = {"executor": args.executor, "submitted": True, "work": args.work, "output": None}
            return cli.Result(data, f"submitted the 4 datatrove stages ({args.executor}); when they finish run:\n"
                                    f"  python3 {Path(__file__).resolve()} {args.input_dir} --work {args.work} "
                                    f"--output {args.output} --collect")
    else:
        if not (Path(args.work) / "removed").is_dir():
            raise UsageError(f"--collect: {args.work} has no finished run (no removed/ folder)")
        removed = dt.collect_removed(args.work)
    jsonl.write_jsonl(out, removed, force=args.force)
    data = {"executor": args.executor, "submitted": False, "work": args.work, "output": str(out),
            "removed": len(removed), "clusters": len({d["cluster"] for d in removed})}
    text = (f"{len(removed):,} near-duplicate rows in {data['clusters']:,} clusters -> {out}\n"
            f"next: python3 {Path(__file__).resolve().parent / 'prepare_data.py'} <inputs> "
            f"--near-dup-removed {out} --output-dir data/")
    return cli.Result(data, text, inputs=[], outputs=[out], summary={"removed": len(removed)})


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
