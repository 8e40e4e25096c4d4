"""Tamper-evident, append-only audit log (JSONL, hash-chained).

Each record holds ``prev`` (the sha256 of the previous record's line, or 64 zeros for the
first) and ``hash`` (sha256 of the record's canonical JSON without ``hash``). Editing,
deleting, inserting or reordering any record breaks the chain at that point, which
``verify`` reports. Records never contain data content: only time, user, host, script,
arguments (secret-looking values masked), sha256 and size of input/output files, the exit
code and a short result summary.

Enabling (first match wins):
1. ``--audit-log`` (default location) or ``--audit-log PATH`` on any script;
2. environment ``FT_AUDIT_LOG=PATH`` (``1``/``true`` = default location, ``0``/``off`` = disabled);
3. ``audit_log`` in ``$FT_HOME/config.json`` (``true`` or a path).
Default location: ``$FT_HOME/audit.jsonl`` with ``FT_HOME`` defaulting to ``~/.fine-tuning``.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Iterable, Sequence

GENESIS = "0" * 64
# "token" but not --tokenizer/--max-tokens, "auth" but not --author: their values are not secrets
_SECRET_FLAG = re.compile(r"(key|token(?!izer|s\b)|secret|password|passwd|salt|auth(?!or))", re.I)
_SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[baprs]-[A-Za-z0-9-]{10,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|://[^/\s:@]+:[^@\s/]+@)")


def ft_home() -> Path:
    return Path(os.environ.get("FT_HOME") or Path.home() / ".fine-tuning")


def default_log_path() -> Path:
    return ft_home() / "audit.jsonl"


def resolve_log_path(flag: str | None) -> Path | None:
    """Where to log this run, or None when the audit log is not enabled."""
    if flag:
        return default_log_path() if flag == "default" else Path(flag)
    env = os.environ.get("FT_AUDIT_LOG", "").strip()
    if env:
        if env.lower() in ("0", "false", "off", "no"):
            return None
        return default_log_path() if env.lower() in ("1", "true", "on", "yes") else Path(env)
    cfg = ft_home() / "config.json"
    if cfg.is_file():
        try:
            val = json.loads(cfg.read_text(encoding="utf-8")).get("audit_log")
        except (OSError, ValueError, AttributeError):
            return None
        if val is True:
            return default_log_path()
        if isinstance(val, str) and val:
            return Path(val).expanduser()
    return None


def mask_argv(argv: Sequence[str]) -> list[str]:
    """Mask values of secret-named flags (--api-key X, --salt=X) and secret-looking values."""
    out: list[str] = []
    mask_next = False
    for a in argv:
        if mask_next:
            out.append("***")
            mask_next = False
            continue
        if a.startswith("--") and "=" in a:
            k, _ = a.split("=", 1)
            if _SECRET_FLAG.search(k):
                out.append(f"{k}=***")
                continue
        elif a.startswith("--") and _SECRET_FLAG.search(a) and a != "--audit-log":
            mask_next = True
        out.append(_SECRET_VALUE.sub("***", a))
    return out


def _file_entry(p: str | os.PathLike) -> dict[str, Any]:
    from .jsonl import sha256_file

    path = Path(p)
    entry: dict[str, Any] = {"path": str(path)}
    if path.is_file():
        entry["sha256"] = sha256_file(path)
        entry["bytes"] = path.stat().st_size
    elif path.is_dir():
        h = hashlib.sha256()
        total = 0
        for f in sorted(x for x in path.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(sha256_file(f).encode())
            total += f.stat().st_size
        entry["sha256"] = h.hexdigest()
        entry["bytes"] = total
        entry["kind"] = "directory"
    else:
        entry["missing"] = True
    return entry


def _canonical(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def record_hash(rec: dict[str, Any]) -> str:
    body = {k: v for k, v in rec.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _last_hash(path: Path) -> str:
    if not path.exists() or path.stat().st_size == 0:
        return GENESIS
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pos = fh.tell()
        buf = b""
        while pos > 0:
            step = min(4096, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            lines = [x for x in buf.split(b"\n") if x.strip()]
            if len(lines) >= 2 or (pos == 0 and lines):
                try:
                    return json.loads(lines[-1])["hash"]
                except (ValueError, KeyError, TypeError):
                    return hashlib.sha256(lines[-1]).hexdigest()
    return GENESIS


def append(path: str | os.PathLike, record: dict[str, Any]) -> dict[str, Any]:
    """Append one record, chained to the last one. Uses an exclusive lock where available."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+b") as fh:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        rec = dict(record)
        rec["prev"] = _last_hash(p)
        rec["hash"] = record_hash(rec)
        fh.seek(0, os.SEEK_END)
        fh.write(_canonical(rec) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return rec


def append_run(path, *, script: str, argv: Sequence[str], inputs: Iterable, outputs: Iterable,
               exit_code: int, summary: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    rec = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "user": user,
        "host": socket.gethostname(),
        "script": script,
        "args": mask_argv(list(argv)),
        "inputs": [_file_entry(p) for p in inputs],
        "outputs": [_file_entry(p) for p in outputs],
        "exit_code": exit_code,
        "seconds": round(seconds, 3),
        "summary": summary or {},
    }
    return append(path, rec)


def read(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record; ValueError (with the line) when one is not a JSON object."""
    out = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if raw.strip():
                try:
                    rec = json.loads(raw)
                except RecursionError:
                    raise ValueError(f"line {n} is nested too deeply") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"line {n} is not a JSON object")
                out.append(rec)
    return out


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Walk the chain. Returns {"ok", "records", "first_broken": {"record", "line", "reason"} | None}."""
    prev = GENESIS
    n = 0
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            n += 1
            try:
                rec = json.loads(raw)
            except (ValueError, RecursionError):
                return _broken(n, line_no, "record is not valid JSON (edited or truncated)")
            if not isinstance(rec, dict) or "hash" not in rec or "prev" not in rec:
                return _broken(n, line_no, "record lacks its hash fields")
            if rec["prev"] != prev:
                return _broken(n, line_no, "chain broken: 'prev' does not match the previous record "
                                           "(a record was deleted, inserted or reordered before this one)")
            if record_hash(rec) != rec["hash"]:
                return _broken(n, line_no, "record content does not match its hash (edited)")
            prev = rec["hash"]
    return {"ok": True, "records": n, "first_broken": None, "last_hash": prev}


def _broken(n: int, line: int, reason: str) -> dict[str, Any]:
    return {"ok": False, "records": n, "first_broken": {"record": n, "line": line, "reason": reason}}
