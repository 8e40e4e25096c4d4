"""Where a script may read and write: the one place that decides it (CLI contract, "Files and safety").

Rules every script follows through these functions:

- An input must be a regular file (or a directory where a directory is expected). A FIFO, device or
  socket would block forever or be consumed by reading it, so it is refused (exit 2).
- An output location may never *equal*, *contain* or *be inside* any input, symlinks resolved. So
  ``--force`` can never delete or overwrite anything the script reads.
- An existing output is replaced only with ``--force``. For an output *directory*, ``--force`` replaces
  only the files this script wrote there, as listed in its manifest (key ``owned_files``, written by
  :func:`owned_dir`); the user's other files in that directory are kept, and a new file whose name
  clashes with one of them is refused.
- A write that cannot happen (read-only directory, a directory where a file is expected) is a one-line
  usage error, never an unexpected exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import UsageError

OWNED_KEY = "owned_files"


# ------------------------------------------------------------------------------------ inputs

def check_input_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """A readable regular file, or a UsageError naming what is wrong (never blocks on a FIFO)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise UsageError(f"{what} {p} is a broken symbolic link") from None
        raise UsageError(f"{what} not found: {p}") from None
    except OSError as exc:  # symlink loop, name too long, permission on a parent ...
        raise UsageError(f"cannot open {what} {p}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"expected a file but got a directory: {p}")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {p} is not a regular file ({_kind(st.st_mode)}); reading it could block "
                         f"or consume it - save the data to a file first")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{what} is not readable: {p} (check its permissions)")
    return p


def read_text_input(path: str | os.PathLike, what: str = "input file") -> str:
    """The text of a small UTF-8 input file (config, schema, template), or a one-line UsageError."""
    p = check_input_file(path, what)
    try:
        return p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {p} is not UTF-8 text (byte offset {exc.start}); is it a binary file?") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {p}: {exc.strerror or exc}") from None


def load_json_input(path: str | os.PathLike, what: str = "input file"):
    """Parse a JSON input file; bad, binary or absurdly nested JSON is a one-line UsageError."""
    text = read_text_input(path, what)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"{what} {path} is nested too deeply to be a real JSON document") from None


def _kind(mode: int) -> str:
    return ("a FIFO/named pipe" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")


# ------------------------------------------------------------------------ inputs vs outputs

def _forms(p: str | os.PathLike) -> set[Path]:
    """The lexical absolute path and the symlink-resolved path of ``p``."""
    a = Path(os.path.abspath(os.path.expanduser(os.fspath(p))))
    forms = {a}
    with contextlib.suppress(OSError, RuntimeError):
        forms.add(a.resolve())
    return forms


def _inside(a: Path, b: Path) -> bool:
    """a is b or lies below b."""
    return a == b or b in a.parents


def check_disjoint(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                   what: str = "output") -> None:
    """Refuse an output that equals, contains or lies inside one of the inputs (symlinks resolved)."""
    outs = _forms(output)
    for i in inputs:
        if i is None or os.fspath(i) == "":
            continue
        ins = _forms(i)
        for o in outs:
            for n in ins:
                if o == n:
                    raise UsageError(f"{what} {output} is one of the inputs ({i}); inputs are never modified - "
                                     f"choose another path")
                if _inside(n, o):
                    raise UsageError(f"{what} {output} contains the input {i}; inputs are never modified, "
                                     f"so the output may not be a folder holding them - choose another path")
                if _inside(o, n):
                    raise UsageError(f"{what} {output} is inside the input {i}; inputs are never modified - "
                                     f"choose a path outside it")
        with contextlib.suppress(OSError):
            if os.path.exists(output) and os.path.exists(i) and os.path.samefile(output, i):
                raise UsageError(f"{what} {output} is one of the inputs ({i}, same file); choose another path")


# ------------------------------------------------------------------------------ file outputs

def check_file_output(path: str | os.PathLike, *, force: bool = False,
                      inputs: Iterable[str | os.PathLike | None] = (), what: str = "output") -> Path:
    """Check a single output file before any work: not an input, no clobber without --force, writable."""
    p = Path(path).expanduser()
    check_disjoint(p, inputs, what)
    if p.is_dir():
        raise UsageError(f"{what} {p} is a directory; give a file name (e.g. {p / 'out'}{p.suffix or ''})")
    if os.path.lexists(p) and not force:
        raise UsageError(f"{what} {p} already exists; pass --force to overwrite it")
    if p.exists() and not p.is_file():
        raise UsageError(f"{what} {p} exists and is not a regular file; choose another path")
    _check_parent_writable(p)
    return p


def _check_parent_writable(p: Path) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    anc = parent
    while not anc.exists() and anc != anc.parent:  # the first existing ancestor must be a writable dir
        if os.path.lexists(anc):
            break
        anc = anc.parent
    if os.path.lexists(anc) and not anc.is_dir():
        raise UsageError(f"cannot write {p}: {anc} is not a directory")
    if anc.exists() and not os.access(anc, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {p}: directory {anc} is not writable (read-only or permission "
                         f"denied); choose another location")


def make_temp_file(target: Path) -> tuple[int, str]:
    """mkstemp beside ``target``, with a one-line error when the directory is not writable."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc} in {target.parent}; "
                         f"choose a writable location") from None


# ------------------------------------------------------------------------- directory outputs

def owned_files(out: str | os.PathLike, manifest: str) -> set[str]:
    """Relative paths under ``out`` that an earlier run of the same script wrote (from its manifest).

    Empty when there is no readable manifest of ours. Entries that are absolute or climb out of
    ``out`` are ignored, so a crafted manifest cannot make --force delete anything else.
    """
    m = Path(out) / manifest
    try:
        if not m.is_file():
            return set()
        doc = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return set()
    if not isinstance(doc, dict):
        return set()
    names: list = []
    if isinstance(doc.get(OWNED_KEY), list):
        names = doc[OWNED_KEY]
    elif isinstance(doc.get("files"), dict):  # manifests written before owned_files existed
        names = [Path(v).name if isinstance(v, str) else k for k, v in doc["files"].items()]
    elif isinstance(doc.get("files"), list):
        names = doc["files"]
    else:
        return set()
    owned = {manifest}
    for n in names:
        if isinstance(n, str) and n and not os.path.isabs(n) and ".." not in Path(n).parts:
            owned.add(Path(n).as_posix())
    return owned


def _clashes(out: Path, names: Iterable[str], owned: set[str]) -> list[str]:
    bad = []
    for n in names:
        target = out / n
        parts = Path(n).parts
        for k in range(1, len(parts)):  # a parent folder of a file we write is a user's file
            anc = out.joinpath(*parts[:k])
            if os.path.lexists(anc) and not anc.is_dir():
                bad.append("/".join(parts[:k]))
        if os.path.lexists(target) and (n not in owned or target.is_dir()):
            bad.append(n)
    return sorted(set(bad))


def _clash_error(out: Path, bad: list[str], tool: str, manifest: str) -> UsageError:
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return UsageError(f"--force replaces only files {tool} wrote (listed in {out / manifest}); {out} holds "
                      f"{shown} that it did not write - move them away or choose another output directory")


def check_dir_output(out: str | os.PathLike, *, force: bool = False,
                     inputs: Iterable[str | os.PathLike | None] = (), manifest: str = "manifest.json",
                     names: Iterable[str] = (), tool: str = "this script", what: str = "output directory") -> Path:
    """Fail fast, before any work, when ``out`` cannot receive this script's files."""
    p = Path(out).expanduser()
    check_disjoint(p, inputs, what)
    if os.path.lexists(p) and not p.is_dir():
        raise UsageError(f"{what} {p} exists and is not a directory")
    if p.is_dir() and any(p.iterdir()):
        if not force:
            raise UsageError(f"{what} {p} already exists and is not empty; pass --force to replace the files "
                             f"{tool} wrote there (other files are kept)")
        bad = _clashes(p, list(names) + [manifest], owned_files(p, manifest))
        if bad:
            raise _clash_error(p, bad, tool, manifest)
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write into {p}: the directory is not writable; choose another location")
    else:
        _check_parent_writable(p / "x")
    return p


@contextlib.contextmanager
def owned_dir(out: str | os.PathLike, *, force: bool = False, inputs: Iterable[str | os.PathLike | None] = (),
              manifest: str = "manifest.json", tool: str = "this script") -> Iterator[Path]:
    """Build a script's output directory in a temp folder and publish it when the block succeeds.

    A new ``out`` appears at once (one rename). An existing one (with ``force``) gets each new file by
    an atomic rename; files listed as owned by the previous manifest but not written now are removed;
    everything else in ``out`` is left alone. The manifest (written last) records ``owned_files``.
    Nothing is changed when the block raises.
    """
    p = check_dir_output(out, force=force, inputs=inputs, manifest=manifest, tool=tool)
    existing = p.is_dir()
    try:
        if existing:
            tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p))
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
    except OSError as exc:
        raise UsageError(f"cannot write {p}: {exc.strerror or exc}; choose a writable location") from None
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700
        yield tmp
        new = sorted(f.relative_to(tmp).as_posix() for f in tmp.rglob("*") if f.is_file() or f.is_symlink())
        _record_owned(tmp / manifest, new if manifest in new else new + [manifest], tool)
        if not existing:
            os.replace(tmp, p)
            return
        owned = owned_files(p, manifest)
        bad = _clashes(p, new, owned)
        if bad:
            raise _clash_error(p, bad, tool, manifest)
        for n in [n for n in new if n != manifest] + [manifest]:
            if not (tmp / n).exists():
                continue
            (p / n).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / n, p / n)
        for n in sorted(owned - set(new) - {manifest}):
            _remove_owned(p, n)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _record_owned(manifest_path: Path, names: list[str], tool: str) -> None:
    if not manifest_path.exists():  # the script keeps no manifest of its own there: write a minimal one
        manifest_path.write_text(json.dumps({"tool": tool, OWNED_KEY: sorted(names)}, indent=2) + "\n",
                                 encoding="utf-8")
        return
    try:
        doc = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return
    if not isinstance(doc, dict):
        return
    doc[OWNED_KEY] = sorted(names)
    manifest_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def _remove_owned(root: Path, name: str) -> None:
    f = root / name
    if f.is_symlink() or f.is_file():
        with contextlib.suppress(OSError):
            f.unlink()
    d = f.parent
    while d != root and root in d.parents:  # drop folders the removal emptied
        try:
            d.rmdir()
        except OSError:
            break
        d = d.parent


def umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
