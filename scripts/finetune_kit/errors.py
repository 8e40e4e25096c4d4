"""Exceptions that map onto the CLI contract's exit codes."""

from __future__ import annotations

import importlib


class UsageError(Exception):
    """Could not run (bad arguments, unreadable input, missing dependency): exit 2, one line."""

    exit_code = 2


class BlockingProblem(Exception):
    """Ran, and found something blocking that stops the work (e.g. training diverged): exit 1."""

    exit_code = 1


# import name -> (pip package, extra of this project that provides it)
_EXTRAS = {
    "presidio_analyzer": ("presidio-analyzer", "pii"),
    "presidio_anonymizer": ("presidio-anonymizer", "pii"),
    "spacy": ("spacy", "pii-ner"),
    "torch": ("torch", "train"),
    "transformers": ("transformers", "train"),
    "peft": ("peft", "train"),
    "trl": ("trl", "train"),
    "datasets": ("datasets", "train"),
    "accelerate": ("accelerate", "train"),
    "gguf": ("gguf", "train"),
    "bitsandbytes": ("bitsandbytes", "train"),
    "scipy": ("scipy", "eval"),
    "matplotlib": ("matplotlib", "core"),
    "tiktoken": ("tiktoken", "core"),
    "datasketch": ("datasketch", "core"),
    "zstandard": ("zstandard", "core"),
    "yaml": ("pyyaml", "core"),
    "datatrove": ("datatrove", "cluster"),
    "orjson": ("orjson", "cluster"),
}


def require(module: str, why: str = ""):
    """Import an optional dependency or raise a UsageError saying exactly what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg, extra = _EXTRAS.get(module.split(".")[0], (module.split(".")[0], None))
        how = f"pip install {pkg}"
        if extra and extra != "core":
            how = f"pip install 'openclaw-fine-tuning[{extra}]' (or: {how})"
        reason = f" {why}" if why else ""
        raise UsageError(f"missing dependency '{pkg}'{reason}: {how}  [{exc}]") from exc
