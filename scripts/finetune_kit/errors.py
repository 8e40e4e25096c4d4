"""Exceptions that map onto the CLI contract's exit codes."""

from __future__ import annotations

import importlib


class UsageError(Exception):
    """Could not run (bad arguments, unreadable input, missing dependency): exit 2, one line."""

    exit_code = 2


class BlockingProblem(Exception):
    """Ran, and found something blocking that stops the work (e.g. training diverged): exit 1."""

    exit_code = 1


def require(module: str, why: str = ""):
    """Import an optional dependency or raise a UsageError (exit 2) naming the setup command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        from .bootstrap import missing_line

        raise UsageError(missing_line(getattr(exc, "name", None) or module, why)) from exc
