#!/usr/bin/env python3
"""Show or verify the skill's tamper-evident audit log (see compliance.md)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import audit, cli  # noqa: E402
from finetune_kit.errors import UsageError  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "audit_log",
        "Show or verify the append-only, hash-chained audit log that every script writes to when\n"
        "auditing is enabled (--audit-log, FT_AUDIT_LOG, or audit_log in $FT_HOME/config.json).\n"
        f"Default location: {audit.default_log_path()}",
        cli.examples_for("audit_log", "verify", "show --last 5",
                         "verify --log /srv/ft/audit.jsonl --json"),
        writes_outputs=False)
    p.add_argument("action", choices=["show", "verify", "path"],
                   help="show: list records; verify: check the hash chain (exit 1 if broken); "
                        "path: print the log location in use")
    p.add_argument("--log", metavar="PATH", help="log file (default: the configured/default location)")
    p.add_argument("--last", type=int, metavar="N", help="show: only the last N records")
    return p


def handle(args) -> cli.Result:
    path = args.log or audit.resolve_log_path(None) or audit.default_log_path()
    if args.action == "path":
        enabled = audit.resolve_log_path(None) is not None
        return cli.Result({"path": str(path), "enabled_by_default": enabled},
                          f"{path} ({'enabled' if enabled else 'not enabled; pass --audit-log or set FT_AUDIT_LOG=1'})")
    if not os.path.isfile(path):
        raise UsageError(f"no audit log at {path}; enable it with --audit-log or FT_AUDIT_LOG=1")
    if args.action == "verify":
        r = audit.verify(path)
        if r["ok"]:
            text = (f"OK: {r['records']} records, chain intact ({path})\n"
                    f"last_hash {r['last_hash']} (keep it elsewhere: a deleted tail only shows against it)")
        else:
            b = r["first_broken"]
            text = f"BROKEN at record {b['record']} (line {b['line']}): {b['reason']} ({path})"
        return cli.Result({"path": str(path), **r}, text, exit_code=0 if r["ok"] else 1,
                          inputs=[path], summary={"ok": r["ok"], "records": r["records"]})
    try:
        recs = audit.read(path)
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSONL ({exc}); run `audit_log.py verify`") from exc
    if args.last:
        recs = recs[-args.last:]
    rows = [(r.get("time", ""), r.get("user", ""), r.get("script", ""), r.get("exit_code", ""),
             " ".join(r.get("args", []))[:60]) for r in recs]
    text = cli.table(["time", "user", "script", "exit", "args"], rows, "llllr"[:4] + "l")
    return cli.Result({"path": str(path), "records": recs}, text)


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
