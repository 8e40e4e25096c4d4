"""Run a script's ``main(argv)`` in-process (fast: imports are shared) and check the CLI contract.

Used by the bad-input tests (test_output_safety.py, test_fuzz.py). A run that blocks (e.g. reading a FIFO)
is stopped by SIGALRM and reported as a hang instead of freezing the suite.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import signal
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
ALL_SCRIPTS = ("validate_jsonl", "prepare_data", "scan_pii", "audit_log", "should_finetune", "estimate_costs",
               "train_lora", "evaluate", "diagnose_training", "export_adapter", "collect_failures",
               "augment_data")
_MODULES: dict = {}


class Hang(BaseException):
    """Raised by the alarm: BaseException so that cli.run's catch-all cannot swallow it."""


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def doc(self):
        return json.loads(self.out)

    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def module(name: str):
    if name not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        _MODULES[name] = m
    return _MODULES[name]


def call(name: str, *argv, timeout: int = 60) -> Run:
    """``scripts/<name>.py argv`` in-process: (exit code, stdout, stderr)."""
    main = module(name).main
    out, err = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise Hang(f"{name} {' '.join(map(str, argv))} did not finish within {timeout} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse usage errors and --help exit through SystemExit
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return Run(code, out.getvalue(), err.getvalue())


def _strict(text: str):
    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=bad)


def check_contract(r: Run, *, json_mode: bool, allowed: set[int], what: str) -> None:
    """No traceback; an allowed exit code; exit 2 = one 'error:' line; --json = one strict JSON document."""
    ctx = f"{what}: exit {r.code}\nstdout: {r.out[:600]}\nstderr: {r.err[-1500:]}"
    assert "Traceback" not in r.err, ctx
    assert r.code in allowed, ctx
    if r.code == 2:
        lines = r.err_lines()
        assert len(lines) == 1 and lines[0].startswith("error: "), ctx
        assert "unexpected" not in lines[0] and "rerun with --debug" not in lines[0], ctx
    if json_mode:
        try:
            doc = _strict(r.out)
        except ValueError as exc:
            raise AssertionError(f"stdout is not one strict JSON document ({exc})\n{ctx}") from None
        if r.code == 2:
            assert doc.get("exit_code") == 2 and doc.get("error"), ctx


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every regular file under root (FIFOs and sockets are skipped, never opened)."""
    out = {}
    for p in _walk(root):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def temp_leftovers(root: Path) -> list[str]:
    return [str(p) for p in _walk(root, dirs=True) if p.name.startswith(".") and p.name.endswith((".tmp", ".old"))]


def _walk(root: Path, dirs: bool = False) -> list[Path]:
    import os

    found = []
    for d, dnames, fnames in os.walk(root):  # never follows symlinks (loops are part of the fuzz inputs)
        found += [Path(d) / f for f in fnames] + ([Path(d) / x for x in dnames] if dirs else [])
    return sorted(found)
