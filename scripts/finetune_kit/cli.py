"""The CLI contract shared by every script (see ../shared conventions, SKILL.md).

- ``make_parser`` adds the common flags (--json, --debug, --audit-log, optional --force)
  and puts copy-paste examples at the end of ``--help``.
- ``run`` calls the script's handler, prints either the human summary or exactly one
  JSON document, maps errors to exit codes (0 ok, 1 blocking problems, 2 could not
  run) with a single stderr line (no traceback unless --debug), and appends one audit
  record when the audit log is enabled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import BlockingProblem, UsageError


@dataclass
class Result:
    """What a script handler returns."""

    data: dict[str, Any]                  # the --json document
    text: str = ""                        # the human summary (stdout)
    exit_code: int = 0                    # 0 nothing blocking, 1 blocking problems
    inputs: list[str | os.PathLike] = field(default_factory=list)
    outputs: list[str | os.PathLike] = field(default_factory=list)
    summary: dict[str, Any] | None = None  # short result summary for the audit log


class _Parser(argparse.ArgumentParser):
    json_requested = False  # set by run() from argv: usage errors then also print the JSON error document

    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + 2 lines)
        line = " ".join(f"{message} (see {self.prog} --help)".split())
        if self.json_requested:
            sys.stdout.write(json.dumps({"error": line, "exit_code": 2}) + "\n")
            sys.stdout.flush()
        self.exit(2, f"error: {line}\n")


def _wants_json(argv: Sequence[str]) -> bool:
    """--json (or an unambiguous abbreviation argparse would accept) among the options."""
    for a in argv:
        if a == "--":
            break
        if len(a) >= 4 and "--json".startswith(a):
            return True
    return False


def make_parser(script: str, description: str, examples: Sequence[str], *,
                writes_outputs: bool = True) -> argparse.ArgumentParser:
    prog = f"{script}.py"
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    p = _Parser(prog=prog, description=description, epilog=epilog,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("common options")
    g.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    g.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    g.add_argument("--audit-log", metavar="PATH", nargs="?", const="default", default=None,
                   help="append a record of this run to the audit log (default location, or PATH; "
                        "also enabled by FT_AUDIT_LOG, see compliance.md)")
    if writes_outputs:
        g.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return p


def examples_for(script: str, *args: str) -> list[str]:
    """Copy-paste examples with this skill's real path (SKILL.md writes it as {baseDir})."""
    from .bootstrap import SCRIPTS_DIR

    path = shlex.quote(str(SCRIPTS_DIR / f"{script}.py"))
    return [f"python3 {path} {a}".rstrip() for a in args]


# ---------------------------------------------------------------- argparse value types

def nonneg_int(text: str) -> int:
    """argparse ``type=``: a whole number >= 0 (a bad value is a one-line usage error, exit 2)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return n


def fraction(text: str) -> float:
    """argparse ``type=``: a number in (0, 1] (e.g. a similarity threshold)."""
    f = _finite(text)
    if not 0 < f <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]: {text}")
    return f


def _finite(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(f):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return f


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           integer: bool = False) -> Callable[[str], float | int]:
    """argparse ``type=`` factory: a finite number (a whole one with ``integer``) within [lo, hi].

    ``lo_open``/``hi_open`` exclude the bound. NaN, Infinity and out-of-range values are a one-line
    usage error at parse time (exit 2), before any work or model loading.
    """
    def parse(text: str):
        if integer:
            try:
                v: float | int = int(text.strip().replace("_", ""))
            except ValueError:
                raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        else:
            v = _finite(text)
        low = lo is not None and (v < lo or (lo_open and v == lo))
        high = hi is not None and (v > hi or (hi_open and v == hi))
        if (low or high) and lo is not None and hi is not None:
            ex = [f"{b:g}" for b, o in ((lo, lo_open), (hi, hi_open)) if o]
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g}"
                                             + (f" (not {' or '.join(ex)})" if ex else "") + f", got {text}")
        if low:
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {text}")
        if high:
            raise argparse.ArgumentTypeError(f"must be {'<' if hi_open else '<='} {hi:g}, got {text}")
        return v
    parse.__name__ = "whole number" if integer else "number"  # argparse names the type in its message
    return parse


positive_int = number(1, integer=True)
nonneg_float = number(0)
positive_float = number(0, lo_open=True)
unit_float = number(0, 1)  # a share or probability in [0, 1]
seed_int = number(0, 2**32 - 1, integer=True)  # what numpy/torch accept as a seed


def run(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], Result],
        argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if isinstance(parser, _Parser):
        parser.json_requested = _wants_json(argv)
    args = parser.parse_args(argv)
    _quiet_libraries()
    script = parser.prog.removesuffix(".py")
    started = time.time()
    result: Result | None = None
    code = 2
    err: str | None = None
    try:
        result = handler(args)
        code = result.exit_code
        _emit(args, result)
    except UsageError as exc:
        err = str(exc)
        code = 2
    except BlockingProblem as exc:
        err = str(exc)
        code = 1
    except KeyboardInterrupt:
        err = "interrupted"
        code = 130
    except BrokenPipeError:
        code = 0
    except ImportError as exc:   # a missing package is "could not run" (2), also with --debug
        err, code = _import_error(exc, script, getattr(args, "debug", False)), 2
    except Exception as exc:  # noqa: BLE001 - the contract: never a traceback without --debug
        if getattr(args, "debug", False):
            raise
        err = f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
        code = 2
    if err is not None:
        line = " ".join(str(err).split())
        print(f"error: {line}", file=sys.stderr)
        if getattr(args, "json", False):
            doc = {"error": line, "exit_code": code}
            if _NOTES and code == 2:  # notes kept back so that stderr has one line; the JSON keeps them
                doc["notes"] = list(_NOTES)
            print(json.dumps(doc))
    if _NOTES and code != 2:
        for n in _NOTES:
            print(n, file=sys.stderr)
    _NOTES.clear()
    _audit(args, script, argv, result, code, err, time.time() - started)
    return code


def _import_error(exc: ImportError, script: str, debug: bool) -> str:
    from .bootstrap import missing_line, setup_command

    name = getattr(exc, "name", None) or ""
    if isinstance(exc, ModuleNotFoundError) and name and not name.startswith("finetune_kit"):
        return missing_line(name, script=script)
    if debug:   # a broken or too old package: the traceback helps, the exit code stays 2
        import traceback

        traceback.print_exc()
    return (f"{script}: a package failed to import ({type(exc).__name__}: {exc}); "
            f"repair the environment with: {setup_command()}")


def _emit(args: argparse.Namespace, result: Result) -> None:
    if getattr(args, "json", False):
        try:  # strict JSON: a bare NaN/Infinity token is not JSON and breaks every parser downstream
            text = json.dumps(result.data, ensure_ascii=False, default=str, allow_nan=False)
        except ValueError:
            raise UsageError(f"the result holds a non-finite number at {_nonfinite_path(result.data)} (NaN or "
                             f"Infinity), which JSON cannot carry; check the numbers given as input") from None
        sys.stdout.write(text + "\n")
    elif result.text:
        sys.stdout.write(result.text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _nonfinite_path(obj: Any, path: str = "$") -> str:
    if isinstance(obj, float) and not math.isfinite(obj):
        return path
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        sub = f"{path}.{k}" if isinstance(k, str) else f"{path}[{k}]"
        found = _nonfinite_path(v, sub)
        if found:
            return found
    return "" if path != "$" else "an unknown place"


_NOTES: list[str] = []


def _quiet_libraries() -> None:
    """Keep library chatter off a non-terminal stderr, so that a run that cannot run has exactly one
    stderr line: Hugging Face progress bars ("Loading weights ...", read when transformers is imported)
    and bitsandbytes' note about an optional CPU kernel package."""
    import logging

    if not sys.stderr.isatty() or os.environ.get("FT_NO_PROGRESS") == "1":
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def note(message: str) -> None:
    """An informational stderr line (e.g. 'sending data to URL'). On a terminal it shows at once;
    otherwise it is printed after the result, so that a run that cannot run (exit 2) still has exactly
    one stderr line (the notes then go into the JSON error document)."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)
    else:
        _NOTES.append(message)


def _audit(args, script, argv, result, code, err, seconds) -> None:
    from . import audit

    path = audit.resolve_log_path(getattr(args, "audit_log", None))
    if path is None:
        return
    try:
        audit.append_run(path, script=script, argv=argv,
                         inputs=result.inputs if result else [],
                         outputs=result.outputs if result else [],
                         exit_code=code,
                         summary=(result.summary if result and result.summary is not None
                                  else {"error": err} if err else {}),
                         seconds=seconds)
    except OSError as exc:
        print(f"warning: could not write audit log {path}: {exc}", file=sys.stderr)


# ---------------------------------------------------------------- output helpers

def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", show: bool = True, **kw):
    """A tqdm progress bar on stderr, shown only when stderr is a terminal (and tqdm is installed);
    ``show=False`` (e.g. a non-main DDP rank) gives the same object without a bar."""
    show = show and sys.stderr.isatty() and os.environ.get("FT_NO_PROGRESS") != "1"
    try:
        from tqdm.auto import tqdm
    except ImportError:   # optional: no bar, same iteration
        show = False
    if not show:
        return NoBar(iterable, total)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, **kw)


class NoBar:
    """What progress() returns when no bar is shown: iterates, and ignores tqdm's calls."""

    def __init__(self, iterable=None, total=None):
        self.iterable, self.total, self.n = iterable, total, 0

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def __len__(self):
        return len(self.iterable) if self.total is None else self.total

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        self.n += n

    def __getattr__(self, name):   # set_postfix, set_description, close, refresh, write ...
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: None


def use_color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


_COLORS = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def color(text: str, name: str) -> str:
    return f"\033[{_COLORS[name]}m{text}\033[0m" if use_color() else text


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table (Markdown-compatible pipes) for human summaries."""
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    align = align or ("l" + "r" * (len(headers) - 1))

    def fmt(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if align[i] == "r" else c.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                         for w, a in zip(widths, align)) + "|"
    return "\n".join([fmt(headers), sep] + [fmt(r) for r in rows])


def human_int(n: float | int | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def path_str(p: str | os.PathLike) -> str:
    return str(Path(p))
