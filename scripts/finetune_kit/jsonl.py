"""Streaming JSONL reading and safe (atomic, no-clobber) writing.

Reading never loads a whole file: ``iter_lines`` yields one :class:`RawLine` per physical
line with the decode/parse outcome, so a validator can report *every* bad line with its
1-based number and keep memory flat.

Writing follows the CLI contract: outputs go to a temp file in the target directory and
are renamed into place; an existing output is refused unless ``force`` is set; an output
may never be one of the inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import outputs
from .errors import UsageError


@dataclass
class RawLine:
    line: int                 # 1-based line number
    raw: bytes                # the bytes of the line without the trailing newline
    text: str | None = None   # decoded text (None when not valid UTF-8)
    obj: Any = None           # parsed JSON value (None when blank or invalid)
    error: str | None = None  # "invalid_utf8" | "invalid_json" | "blank_line" | None
    detail: str = ""          # human detail for the error

    @property
    def ok(self) -> bool:
        return self.error is None


def check_readable(path: str | os.PathLike) -> Path:
    """A readable regular file (FIFOs, devices and directories are refused; see outputs.py)."""
    return outputs.check_input_file(path)


def iter_lines(path: str | os.PathLike) -> Iterator[RawLine]:
    """Yield every line of a JSONL file with its parse outcome (streaming)."""
    p = check_readable(path)
    with open(p, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield parse_raw(n, raw)


def parse_raw(n: int, raw: bytes) -> RawLine:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawLine(n, raw, None, None, "invalid_utf8", f"byte offset {exc.start}: {exc.reason}")
    if not text.strip():
        return RawLine(n, raw, text, None, "blank_line", "blank line")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return RawLine(n, raw, text, None, "invalid_json", f"{exc.msg} at column {exc.colno}")
    except RecursionError:
        return RawLine(n, raw, text, None, "invalid_json", "JSON nested too deeply")
    return RawLine(n, raw, text, obj)


def read_jsonl_objects(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line, obj) for parseable lines; raise UsageError on the first unparseable one.

    For tools that need well-formed input (use ``iter_lines`` to report all problems).
    """
    for rl in iter_lines(path):
        if rl.error == "blank_line":
            continue
        if rl.error:
            raise UsageError(f"{path}:{rl.line}: {rl.error.replace('_', ' ')} ({rl.detail}); "
                             f"run validate_jsonl.py on it first")
        yield rl.line, rl.obj


def dumps_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def check_output(path: str | os.PathLike, *, force: bool = False,
                 inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse to write over, into or around an input, or over an existing output without --force."""
    return outputs.check_file_output(path, force=force, inputs=inputs)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, force: bool = False,
                inputs: Iterable[str | os.PathLike] = (), encoding: str | None = "utf-8"):
    """Open a temp file beside ``path``; rename it into place only if the block succeeds."""
    p = check_output(path, force=force, inputs=inputs)
    fd, tmp = outputs.make_temp_file(p)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~outputs.umask())  # mkstemp makes 0600; outputs get normal file modes
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path, text: str, **kw) -> Path:
    with atomic_open(path, "w", **kw) as fh:
        fh.write(text)
    return Path(path)


def write_json(path, obj: Any, **kw) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", **kw)


def write_jsonl(path, rows: Iterable[Any], **kw) -> int:
    n = 0
    with atomic_open(path, "w", **kw) as fh:
        for row in rows:
            fh.write(dumps_line(row))
            n += 1
    return n


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, force: bool = False, inputs: Iterable = ()):
    """Build a directory in a temp sibling and move it into place when the block succeeds.

    With ``force`` an existing directory is replaced as a whole, only after the new one is complete:
    for caches only. A script's output directory uses :func:`outputs.owned_dir`, whose --force
    replaces only the files the script wrote there.
    """
    p = Path(path)
    outputs.check_disjoint(p, inputs, "output directory")
    if p.exists() and not p.is_dir():
        raise UsageError(f"output {p} exists and is not a directory")
    if p.exists() and any(p.iterdir()) and not force:
        raise UsageError(f"output directory {p} already exists and is not empty; pass --force to replace it")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
    os.chmod(tmp, 0o777 & ~outputs.umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if p.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".old", dir=p.parent))
            os.replace(p, old / "d")
            os.replace(tmp, p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
