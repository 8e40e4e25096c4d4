"""Export a trained LoRA adapter for serving: Ollama, vLLM, a merged model, and OpenClaw.

Everything here reads the adapter directory written by ``train_lora.py`` (or any PEFT LoRA
adapter: ``adapter_config.json`` + ``adapter_model.safetensors``) and never modifies it.

- Ollama: a ``Modelfile`` (``FROM`` the base, ``ADAPTER`` a copy of the adapter, ``TEMPLATE``
  and ``PARAMETER stop`` derived from the tokenizer's chat template for the ChatML, Llama-3 and
  Gemma families). Ollama converts safetensors adapters only for bases whose GGUF architecture
  is ``llama`` or ``gemma2`` (ollama ``convert.ConvertAdapter``), only for the attention/MLP
  projections, with scale alpha/r; rsLoRA, DoRA and ``modules_to_save`` are not representable.
  For those the way out is ``--merge`` followed by llama.cpp's ``convert_hf_to_gguf.py``.
- vLLM: ``vllm serve BASE --enable-lora --lora-modules NAME=PATH --max-lora-rank R`` with R the
  adapter's largest rank rounded up to a value vLLM accepts (``MaxLoRARanks`` in
  ``vllm/config/lora.py``); vLLM rejects ``modules_to_save`` and DoRA adapters.
- Merge: base + adapter merged with PEFT, saved in bf16 (default) with the tokenizer, and
  verified by comparing logits of the unmerged ``PeftModel`` with the merged model and with
  the files written to disk.
- OpenClaw: a config patch for ``~/.openclaw/openclaw.json`` that registers the Ollama model
  under the ``ollama`` provider (``models.providers.ollama.models``), checked against the
  schema of openclaw 2026.9 (model entries allow only id, name, api, baseUrl, reasoning, input,
  cost, contextWindow, contextTokens, maxTokens, ... -- no ``tags`` or ``adapters`` keys).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BlockingProblem, UsageError, require

# vllm/config/lora.py: MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# ollama convert/convert.go ConvertAdapter: `switch arch { case "llama": ... case "gemma2": ... }`
OLLAMA_ADAPTER_ARCHS = ("llama", "gemma2")
# tensor names ollama's llama/gemma2 adapter converters know how to rename
OLLAMA_ADAPTER_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# HF config model_type -> GGUF general.architecture (llama.cpp's convert_hf_to_gguf writes
# Mistral as "llama"; everything else keeps its own name, which Ollama's adapter import refuses)
_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "gemma2": "gemma2"}

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
OPENCLAW_CONFIG = "~/.openclaw/openclaw.json"


@dataclass
class Warn:
    code: str
    target: str          # ollama | vllm | merge | openclaw | all
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "target": self.target, "message": self.message, "hint": self.hint}


# ----------------------------------------------------------------------------- adapter

@dataclass
class AdapterInfo:
    path: Path
    config: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def r(self) -> int:
        return int(self.config.get("r") or 8)

    @property
    def max_rank(self) -> int:
        ranks = [self.r] + [int(v) for v in (self.config.get("rank_pattern") or {}).values()]
        return max(ranks)

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha") or self.r)

    @property
    def target_modules(self) -> list[str]:
        t = self.config.get("target_modules")
        if t is None:
            return []
        if isinstance(t, str):  # a regex or "all-linear"
            return [t]
        return sorted(str(x) for x in t)

    @property
    def use_rslora(self) -> bool:
        return bool(self.config.get("use_rslora"))

    @property
    def use_dora(self) -> bool:
        return bool(self.config.get("use_dora"))

    @property
    def modules_to_save(self) -> list[str]:
        return list(self.config.get("modules_to_save") or [])

    @property
    def base(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    def weight_files(self) -> list[Path]:
        return [self.path / f for f in ADAPTER_FILES if (self.path / f).is_file()]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.weight_files())


def _check_adapter_numbers(cfg: dict[str, Any], cfg_path: Path) -> None:
    """Ranks are whole numbers >= 1 and alpha a finite number > 0: a NaN, negative or non-number value
    would otherwise turn into a wrong command (or a crash) far from the cause."""
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    def bad(key: str, v: Any) -> UsageError:
        return UsageError(f"{cfg_path}: {key} must be a whole number >= 1, got {v!r}; the adapter config "
                          f"is damaged - use the one train_lora.py wrote")

    if cfg.get("r") is not None and not whole(cfg["r"]):
        raise bad("r", cfg["r"])
    rp = cfg.get("rank_pattern")
    if rp is not None:
        if not isinstance(rp, dict):
            raise UsageError(f"{cfg_path}: rank_pattern must be an object of module -> rank, got {rp!r}")
        for k, v in rp.items():
            if not whole(v):
                raise bad(f"rank_pattern[{k!r}]", v)
    a = cfg.get("lora_alpha")
    if a is not None and (isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0):
        raise UsageError(f"{cfg_path}: lora_alpha must be a finite number > 0, got {a!r}")
    t = cfg.get("target_modules")
    if t is not None and not isinstance(t, str) and not (isinstance(t, list) and all(isinstance(x, str) for x in t)):
        raise UsageError(f"{cfg_path}: target_modules must be a list of module names or a string, got {t!r}")
    b = cfg.get("base_model_name_or_path")
    if b is not None and not isinstance(b, str):
        raise UsageError(f"{cfg_path}: base_model_name_or_path must be a string, got {b!r}")


def _check_safetensors(f: Path) -> None:
    """A cheap look at a .safetensors header (8-byte length + JSON), so damaged weights are a clear
    exit 2 here instead of an obscure loader error after the base model was loaded."""
    if not f.is_file():
        return
    from .outputs import check_input_file

    check_input_file(f, "adapter weights")
    size = f.stat().st_size
    why = None
    try:
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n <= 1 or n > size - 8 or n > 100 << 20:
                why = "its header length is wrong"
            else:
                hdr = json.loads(fh.read(n).decode("utf-8"))
                if not isinstance(hdr, dict):
                    why = "its header is not a JSON object"
    except (ValueError, UnicodeDecodeError, RecursionError):
        why = "its header is not valid JSON"
    if why:
        raise UsageError(f"{f} is not a valid safetensors file ({why}); the adapter weights are damaged - "
                         f"copy them again from the training run")


def read_adapter(path: str | os.PathLike) -> AdapterInfo:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"adapter directory not found: {p}")
    if not p.is_dir():
        raise UsageError(f"{p} is not a directory; give the adapter directory written by train_lora.py")
    cfg_path = p / "adapter_config.json"
    if not cfg_path.is_file():
        raise UsageError(f"{p} has no adapter_config.json: not a PEFT adapter directory")
    from .outputs import load_json_input

    cfg = load_json_input(cfg_path, "adapter config")
    if not isinstance(cfg, dict):
        raise UsageError(f"{cfg_path} is not a JSON object")
    _check_adapter_numbers(cfg, cfg_path)
    peft_type = str(cfg.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        raise UsageError(f"{cfg_path}: peft_type {peft_type} is not LoRA; only LoRA adapters can be exported")
    if not any((p / f).is_file() for f in ADAPTER_FILES[1:]):
        raise UsageError(f"{p} has no adapter_model.safetensors (or .bin): the weights are missing")
    _check_safetensors(p / "adapter_model.safetensors")
    manifest: dict[str, Any] = {}
    mp = p / "run_manifest.json"
    if mp.is_file():
        try:
            m = json.loads(mp.read_text(encoding="utf-8"))
            manifest = m if isinstance(m, dict) else {}
        except (OSError, ValueError, RecursionError):
            manifest = {}
    return AdapterInfo(p.resolve(), cfg, manifest)


def manifest_base_spec(manifest: dict[str, Any]) -> str | None:
    """The base model the user gave to train_lora.py (e.g. ``smollm2-135m`` or a .gguf path)."""
    for key in ("base_model", "base_model_spec"):
        v = manifest.get(key)
        if isinstance(v, dict):   # train_lora.py: {"spec": "smollm2-135m", "kind": ..., "adapter_base": ...}
            v = v.get("spec")
        if isinstance(v, str) and v:
            return v
    for sect in ("config", "resolved_config", "args"):
        s = manifest.get(sect)
        if isinstance(s, dict):
            v = s.get("base_model")
            if isinstance(v, str) and v:
                return v
    return None


# ----------------------------------------------------------------------------- base model

@dataclass
class BaseInfo:
    spec: str | None               # what the base is called (hub id, dir, gguf, alias)
    hf_dir: Path | None            # a local HF directory holding config.json (+ weights)
    gguf: Path | None              # a GGUF file of the same weights, when known
    hub_id: str | None
    model_type: str | None
    architecture: str | None       # GGUF general.architecture (or the derived equivalent)
    context_length: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "hf_dir": str(self.hf_dir) if self.hf_dir else None,
                "gguf": str(self.gguf) if self.gguf else None, "hub_id": self.hub_id,
                "model_type": self.model_type, "architecture": self.architecture,
                "context_length": self.context_length}


def _gguf_arch(path: Path) -> tuple[str | None, int | None]:
    try:
        gguf = __import__("gguf")
        r = gguf.GGUFReader(str(path))
        f = r.fields.get("general.architecture")
        arch = bytes(f.parts[f.data[0]]).decode() if f else None
        ctx = None
        if arch:
            c = r.fields.get(f"{arch}.context_length")
            if c:
                ctx = int(c.parts[c.data[0]][0])
        return arch, ctx
    except Exception:  # noqa: BLE001 - best effort: unknown arch gives a warning, not a crash
        return None, None


def resolve_base(adapter: AdapterInfo, override: str | None) -> BaseInfo:
    from . import models

    spec = override or manifest_base_spec(adapter.manifest) or adapter.base
    if override:
        models.resolve(override)   # a --base-model that does not resolve is a usage error (exit 2)
    cand = [s for s in (override, manifest_base_spec(adapter.manifest), adapter.base) if s]
    hf_dir = gguf = hub_id = None
    for s in cand:
        try:
            ref = models.resolve(s)
        except UsageError:
            continue
        if ref.kind == "gguf" and gguf is None:
            gguf = Path(ref.path) / (ref.gguf_file or "")
            hf_dir = hf_dir or models.local_dir(ref)
        elif ref.kind == "dir" and hf_dir is None:
            hf_dir = Path(ref.path)
        elif ref.kind == "hub" and hub_id is None:
            hub_id = ref.path
    # an adapter trained on an alias points at the alias' dequantized cache: find the GGUF back
    if gguf is None and hf_dir is not None:
        for alias in models.ALIASES:
            try:
                ref = models.resolve(alias)
            except UsageError:
                continue
            d = models.local_dir(ref)
            if d is not None and d.resolve() == hf_dir.resolve():
                gguf = Path(ref.path) / (ref.gguf_file or "")
                spec = spec if override else alias
                break
    model_type = arch = None
    ctx = None
    if hf_dir is not None and (hf_dir / "config.json").is_file():
        try:
            c = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
            model_type = c.get("model_type")
            ctx = c.get("max_position_embeddings")
            ctx = ctx if isinstance(ctx, int) and not isinstance(ctx, bool) and ctx > 0 else None
        except (OSError, ValueError, RecursionError, AttributeError):
            pass
    elif hub_id:
        try:  # cached hub config only; HF_HUB_OFFLINE keeps this from reaching the network
            transformers = require("transformers")
            c = transformers.AutoConfig.from_pretrained(hub_id, local_files_only=True)
            model_type = getattr(c, "model_type", None)
            ctx = getattr(c, "max_position_embeddings", None)
        except Exception:  # noqa: BLE001
            pass
    if gguf is not None and gguf.is_file() and model_type is None:  # reading a GGUF header is slow-ish
        arch, gctx = _gguf_arch(gguf)
        ctx = ctx or gctx
    if arch is None and model_type:
        arch = _GGUF_ARCH.get(model_type, model_type)
    return BaseInfo(spec, hf_dir, gguf, hub_id, model_type, arch, int(ctx) if ctx else None)


# ----------------------------------------------------------------------------- chat template

U, A, S = "USER_TURN_X1", "ASSISTANT_TURN_X2", "SYSTEM_TURN_X3"

# Ollama TEMPLATEs (Go text/template over .Messages). Ollama puts the Modelfile's SYSTEM in
# front of the messages when a request has no system message, so the training template's
# default system prompt becomes a SYSTEM line.
GO_TEMPLATES = {
    "chatml": (
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
        "{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"),
    "llama3": (
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>\n"
        "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "gemma": (
        "{{- $system := \"\" }}\n"
        "{{- range .Messages }}\n"
        "{{- if eq .Role \"system\" }}{{ $system = .Content }}\n"
        "{{- else if eq .Role \"user\" }}<start_of_turn>user\n"
        "{{ if $system }}{{ $system }}\n\n{{ end }}{{ $system = \"\" }}{{ .Content }}<end_of_turn>\n"
        "{{ else if eq .Role \"assistant\" }}<start_of_turn>model\n"
        "{{ .Content }}<end_of_turn>\n"
        "{{ end }}\n"
        "{{- end }}<start_of_turn>model\n"),
}
STOP_TOKENS = {
    "chatml": ["<|im_end|>", "<|im_start|>"],
    "llama3": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
    "gemma": ["<end_of_turn>", "<start_of_turn>"],
}
_BOS = {"chatml": "", "llama3": "<|begin_of_text|>", "gemma": "<bos>"}


def simulate_go_template(family: str, messages: list[dict[str, str]], default_system: str | None) -> str:
    """What Ollama renders with GO_TEMPLATES[family] (same string, written in Python).

    Used to check that the family's template reproduces the tokenizer's own rendering; the Go
    templates themselves were checked against Go's text/template (bench/results/export_templates.md).
    """
    msgs = list(messages)
    if default_system and (not msgs or msgs[0]["role"] != "system"):
        msgs = [{"role": "system", "content": default_system}] + msgs
    out = []
    if family == "chatml":
        for m in msgs:
            out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
        out.append("<|im_start|>assistant\n")
    elif family == "llama3":
        for m in msgs:
            out.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>")
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    elif family == "gemma":
        system = ""
        for m in msgs:
            if m["role"] == "system":
                system = m["content"]
            elif m["role"] == "user":
                pre = f"{system}\n\n" if system else ""
                system = ""
                out.append(f"<start_of_turn>user\n{pre}{m['content']}<end_of_turn>\n")
            elif m["role"] == "assistant":
                out.append(f"<start_of_turn>model\n{m['content']}<end_of_turn>\n")
        out.append("<start_of_turn>model\n")
    else:
        raise ValueError(family)
    return "".join(out)


def _render(tok, messages, gen=True) -> str | None:
    try:
        r = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        return r if isinstance(r, str) else None
    except Exception:  # noqa: BLE001 - a template may raise on roles it does not support
        return None


def detect_template(tok) -> dict[str, Any]:
    """Recognise the chat-template family by rendering sentinel messages with the real template."""
    info: dict[str, Any] = {"family": None, "stop": [], "default_system": None, "system_supported": None,
                            "matches_tokenizer": False, "has_tools": False, "checked_conversations": 0}
    src = getattr(tok, "chat_template", None)
    if isinstance(src, dict):
        src = src.get("default") or next(iter(src.values()), None)
    if not src:
        info["reason"] = "the tokenizer has no chat template"
        return info
    info["has_tools"] = "tools" in src
    r = _render(tok, [{"role": "user", "content": U}, {"role": "assistant", "content": A}], gen=False)
    if r is None:
        info["reason"] = "the chat template failed to render a user/assistant exchange"
        return info
    if f"<|im_start|>user\n{U}<|im_end|>" in r and f"<|im_start|>assistant\n{A}<|im_end|>" in r:
        fam = "chatml"
    elif (f"<|start_header_id|>user<|end_header_id|>\n\n{U}<|eot_id|>" in r
          and f"<|start_header_id|>assistant<|end_header_id|>\n\n{A}<|eot_id|>" in r):
        fam = "llama3"
    elif f"<start_of_turn>user\n{U}<end_of_turn>" in r and f"<start_of_turn>model\n{A}<end_of_turn>" in r:
        fam = "gemma"
    else:
        info["reason"] = "the chat template is not ChatML, Llama-3 or Gemma"
        return info
    info["family"] = fam
    info["stop"] = list(STOP_TOKENS[fam])
    only_user = _render(tok, [{"role": "user", "content": U}]) or ""
    pat = {"chatml": r"<\|im_start\|>system\n(.*?)<\|im_end\|>",
           "llama3": r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
           "gemma": None}[fam]
    if pat:
        m = re.search(pat, only_user.split(U)[0], re.S)
        if m:
            info["default_system"] = m.group(1)
    with_sys = _render(tok, [{"role": "system", "content": S}, {"role": "user", "content": U}])
    info["system_supported"] = bool(with_sys and S in with_sys)
    # does the Ollama template reproduce the tokenizer's rendering exactly?
    convs = [
        [{"role": "user", "content": U}],
        [{"role": "system", "content": S}, {"role": "user", "content": U}],
        [{"role": "system", "content": S}, {"role": "user", "content": U},
         {"role": "assistant", "content": A}, {"role": "user", "content": U + "b"}],
        [{"role": "user", "content": U}, {"role": "assistant", "content": A},
         {"role": "user", "content": U + "b"}],
    ]
    ok, n = True, 0
    for conv in convs:
        want = _render(tok, conv)
        if want is None:
            continue
        n += 1
        if fam != "chatml":  # llama.cpp/Ollama add BOS themselves; the Go template must not
            for bos in (_BOS[fam], getattr(tok, "bos_token", None)):
                if bos and want.startswith(bos):
                    want = want[len(bos):]
                    break
        got = simulate_go_template(fam, conv, info["default_system"])
        if got != want:
            ok = False
            info.setdefault("mismatch", {"expected": want, "ollama": got})
            break
    info["matches_tokenizer"] = ok and n > 0
    info["checked_conversations"] = n
    return info


def load_template_tokenizer(adapter: AdapterInfo, base: BaseInfo):
    """The tokenizer the adapter was trained with: its own copy, else the base's."""
    transformers = require("transformers", "to read the chat template")
    srcs = []
    if (adapter.path / "tokenizer_config.json").is_file() or (adapter.path / "tokenizer.json").is_file():
        srcs.append(str(adapter.path))
    if base.hf_dir is not None:
        srcs.append(str(base.hf_dir))
    if base.hub_id:
        srcs.append(base.hub_id)
    for s in srcs:
        try:
            return transformers.AutoTokenizer.from_pretrained(s, local_files_only=True), s
        except Exception:  # noqa: BLE001
            continue
    return None, None


# ----------------------------------------------------------------------------- checks

def vllm_rank(r: int) -> int | None:
    """Smallest --max-lora-rank vLLM accepts that is >= r (None when r > 512)."""
    for v in VLLM_LORA_RANKS:
        if v >= r:
            return v
    return None


def compatibility_warnings(adapter: AdapterInfo, base: BaseInfo, tmpl: dict[str, Any],
                           ollama_from_override: bool) -> list[Warn]:
    w: list[Warn] = []
    merge_hint = ("use --merge, then convert the merged model with llama.cpp: "
                  "python convert_hf_to_gguf.py MERGED_DIR --outfile model.gguf --outtype q8_0, "
                  "and point the Modelfile's FROM at model.gguf without an ADAPTER line")
    arch = base.architecture
    if arch is None:
        w.append(Warn("unknown_architecture", "ollama",
                      "could not determine the base model's architecture; Ollama imports safetensors "
                      f"adapters only for {', '.join(OLLAMA_ADAPTER_ARCHS)} bases",
                      "pass --base-model with a local copy of the base, or " + merge_hint))
    elif arch not in OLLAMA_ADAPTER_ARCHS:
        w.append(Warn("ollama_unsupported_architecture", "ollama",
                      f"Ollama cannot import a LoRA adapter for a '{arch}' base (its adapter converter "
                      f"handles only {', '.join(OLLAMA_ADAPTER_ARCHS)})", "use --gguf (adapter.gguf), or " + merge_hint))
    if adapter.use_rslora:
        w.append(Warn("ollama_rslora", "ollama",
                      "the adapter uses rsLoRA (scale alpha/sqrt(r)); Ollama/llama.cpp apply alpha/r, so "
                      f"the adapter would act {math.sqrt(adapter.r):.1f}x weaker",
                      "use --gguf (the scale is folded into adapter.gguf), or " + merge_hint))
    if adapter.use_dora:
        w.append(Warn("ollama_dora", "ollama",
                      "the adapter uses DoRA (magnitude vectors), which Ollama's adapter import cannot "
                      "represent", merge_hint))
        w.append(Warn("vllm_dora", "vllm", "vLLM rejects DoRA adapters",
                      "serve the merged model instead: --merge, then `vllm serve MERGED_DIR`"))
    if adapter.modules_to_save:
        mods = ", ".join(adapter.modules_to_save)
        w.append(Warn("ollama_modules_to_save", "ollama",
                      f"the adapter carries fully trained modules ({mods}, modules_to_save) that an "
                      "Ollama ADAPTER cannot hold", merge_hint))
        w.append(Warn("vllm_modules_to_save", "vllm",
                      f"vLLM rejects adapters with modules_to_save ({mods})",
                      "serve the merged model instead: --merge, then `vllm serve MERGED_DIR`"))
    odd = [t for t in adapter.target_modules if t not in OLLAMA_ADAPTER_MODULES]
    if odd:
        w.append(Warn("ollama_unsupported_modules", "ollama",
                      f"target modules {', '.join(odd)} are outside the attention/MLP projections "
                      f"({', '.join(OLLAMA_ADAPTER_MODULES)}) that Ollama's adapter import renames",
                      merge_hint))
    if vllm_rank(adapter.max_rank) is None:
        w.append(Warn("vllm_rank_too_large", "vllm",
                      f"rank {adapter.max_rank} exceeds vLLM's largest --max-lora-rank (512)",
                      "serve the merged model instead"))
    if base.hub_id is None and base.hf_dir is None and base.gguf is None:
        w.append(Warn("base_not_found", "all",
                      f"the base model '{adapter.base}' in adapter_config.json is not available here",
                      "pass --base-model with a hub id, a local HF directory or a .gguf file"))
    if base.gguf is None and not ollama_from_override:
        if base.hf_dir is not None:
            w.append(Warn("ollama_from_safetensors", "ollama",
                          f"FROM points at the HF directory {base.hf_dir}; Ollama imports safetensors "
                          "bases only for architectures it can convert, and the path must exist where "
                          "`ollama create` runs",
                          "or pass --ollama-base with the Ollama tag (or .gguf) of exactly the same weights"))
        else:
            w.append(Warn("ollama_base_unknown", "ollama",
                          f"Ollama cannot pull the Hugging Face repo '{base.hub_id or adapter.base}' by id",
                          "download it (huggingface-cli download ID --local-dir base) and rerun with "
                          "--base-model base, or pass --ollama-base with the Ollama tag of the same weights"))
    if ollama_from_override:
        w.append(Warn("ollama_base_must_match", "ollama",
                      "--ollama-base must be exactly the weights the adapter was trained on (same "
                      "model, same revision); an adapter on different weights produces garbage",
                      "check with a few prompts after `ollama create`"))
    fam = tmpl.get("family")
    if fam is None:
        w.append(Warn("chat_template_unrecognised", "ollama",
                      f"no TEMPLATE written: {tmpl.get('reason', 'unknown chat template')}; Ollama will "
                      "use the template stored in the base GGUF, which may differ from the one used in "
                      "training", "write the TEMPLATE by hand (Go template over .Messages) to match the "
                      "training chat template"))
    elif not tmpl.get("matches_tokenizer"):
        w.append(Warn("chat_template_approximate", "ollama",
                      f"the {fam} TEMPLATE does not reproduce the tokenizer's chat template exactly "
                      "(extra features such as tools, dates or reasoning tags are not mapped)",
                      "compare `ollama show NAME --template` with the training template"))
    if tmpl.get("has_tools") and fam:
        w.append(Warn("chat_template_tools_not_mapped", "ollama",
                      "the chat template supports tools but the Ollama TEMPLATE written here does not "
                      "render tool definitions or tool calls", "for tool use, serve with vLLM or merge"))
    return w


# ----------------------------------------------------------------------------- writers

def sanitize_name(s: str) -> str:
    n = re.sub(r"[^a-z0-9._-]+", "-", s.lower()).strip("-._")
    return n[:60] or "fine-tuned"


def modelfile_text(*, from_: str, adapter_rel: str, tmpl: dict[str, Any], name: str,
                   adapter: AdapterInfo, base: BaseInfo) -> str:
    lines = [f"# Ollama Modelfile for {name}, written by export_adapter.py",
             f"# adapter: r={adapter.r} alpha={adapter.alpha:g} targets={','.join(adapter.target_modules)}",
             f"# base: {base.spec}", "# create:  ollama create " + name + " -f Modelfile", "",
             f"FROM {from_}", f"ADAPTER {adapter_rel}"]
    fam = tmpl.get("family")
    if fam:
        lines += ["", f"# chat template family: {fam} (derived from the tokenizer's chat template)",
                  f'TEMPLATE """{GO_TEMPLATES[fam]}"""']
        if tmpl.get("default_system"):
            ds = tmpl["default_system"].replace('"""', '\\"\\"\\"')
            lines += [f'SYSTEM """{ds}"""']
        for s in tmpl["stop"]:
            lines.append(f'PARAMETER stop "{s}"')
    return "\n".join(lines) + "\n"


def vllm_command(*, base_arg: str, name: str, adapter_path: str, rank: int | None,
                 max_model_len: int | None) -> str:
    parts = ["vllm serve", _q(base_arg), "--enable-lora", f"--lora-modules {_q(name + '=' + adapter_path)}"]
    if rank is not None:
        parts.append(f"--max-lora-rank {rank}")
    if max_model_len:
        parts.append(f"--max-model-len {max_model_len}")
    return " ".join(parts)


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def openclaw_patch(*, name: str, host: str, context: int | None, adapter_path: str,
                   base_spec: str | None, tags: list[str]) -> tuple[dict[str, Any], str]:
    """A config patch for openclaw.json (object form + JSON5 text with comments)."""
    entry: dict[str, Any] = {"id": name, "name": name, "reasoning": False, "input": ["text"],
                             "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}}
    if context:
        entry["contextWindow"] = int(context)
    patch = {"models": {"providers": {"ollama": {"baseUrl": host, "apiKey": "ollama-local", "api": "ollama",
                                                 "models": [entry]}}},
             "agents": {"defaults": {"models": {f"ollama/{name}": {"alias": name}}}}}
    body = json.dumps(patch, indent=2)
    head = "\n".join([
        f"// OpenClaw config patch for the fine-tuned model '{name}' (written by export_adapter.py).",
        f"// Apply:  openclaw config patch --file openclaw.patch.json5 --dry-run   (then without --dry-run)",
        f"// or merge it by hand into {OPENCLAW_CONFIG} ($OPENCLAW_CONFIG_PATH if set).",
        "// Arrays replace on patch: if you already list models under models.providers.ollama.models,",
        "// add this entry to your list instead of applying the patch as is.",
        f"// adapter: {adapter_path}  weight: 1.0 (applied by Ollama through the Modelfile's ADAPTER line;",
        "//   OpenClaw model entries have no adapter/weight/tags keys - the schema rejects unknown keys)",
        f"// base: {base_spec}",
        f"// tags: {', '.join(tags)}",
        f"// select it:  openclaw models set ollama/{name}   (or per agent: agents.entries.<id>.model)",
    ])
    return patch, head + "\n" + body + "\n"


# ----------------------------------------------------------------------------- merge

def max_abs_diff(a, b) -> float:
    """Largest absolute difference between two logit tensors (inf when shapes differ)."""
    if tuple(a.shape) != tuple(b.shape):
        return float("inf")
    d = (a.float() - b.float()).abs().max().item()
    return float("nan") if d != d else float(d)


def compare_logits(ref: list, other: list, *, atol: float, rtol: float) -> dict[str, Any]:
    """Compare lists of logit tensors; tolerance = max(atol, rtol * max|ref|)."""
    diffs = [max_abs_diff(r, o) for r, o in zip(ref, other)]
    if len(ref) != len(other) or not diffs:
        return {"max_abs_diff": float("inf"), "tolerance": atol, "passed": False, "top1_agreement": 0.0}
    scale = max(float(r.float().abs().max().item()) for r in ref)
    tol = max(atol, rtol * scale)
    agree = tot = 0
    for r, o in zip(ref, other):
        if tuple(r.shape) == tuple(o.shape):
            agree += int((r.argmax(-1) == o.argmax(-1)).sum().item())
        tot += int(r.shape[0]) if r.dim() > 1 else 1
    finite = all(math.isfinite(d) for d in diffs)
    worst = max(diffs) if finite else next(d for d in diffs if not math.isfinite(d))
    return {"max_abs_diff": worst, "tolerance": tol, "logit_scale": scale,
            "passed": bool(finite and worst <= tol),
            "top1_agreement": agree / tot if tot else 0.0}


def verification_inputs(tok, n: int = 3) -> list[list[int]]:
    """A few short chat-formatted inputs (an explicit system turn keeps default prompts out)."""
    convs = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Move the meeting to Tuesday."}],
        [{"role": "system", "content": "Answer with JSON."}, {"role": "user", "content": "My invoice is wrong."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2 + 2?"}],
    ]
    out = []
    for c in convs[:n]:
        text = _render(tok, c) if getattr(tok, "chat_template", None) else None
        plain = text is None
        if plain:
            text = "\n".join(m["content"] for m in c)
        ids = tok(text, add_special_tokens=plain)["input_ids"]
        out.append(list(ids)[:128])
    return out


def _logits(model, batch: list[list[int]]) -> list:
    torch = require("torch")
    dev = next(model.parameters()).device
    res = []
    with torch.no_grad():
        for ids in batch:
            x = torch.tensor([ids], device=dev)
            res.append(model(input_ids=x).logits[0].float().cpu())
    return res


def merge_adapter(adapter: AdapterInfo, base: BaseInfo, out_dir: Path, *, dtype: str, atol: float,
                  rtol: float, tok=None) -> dict[str, Any]:
    """Merge base + adapter into ``out_dir`` (an empty temp dir) and verify it by logits."""
    torch = require("torch", "to merge the adapter")
    transformers = require("transformers", "to merge the adapter")
    peft = require("peft", "to merge the adapter")

    if base.hf_dir is None and base.gguf is not None:   # dequantize the GGUF once (cached)
        from . import models

        base.hf_dir = models.ensure_hf_dir(models.resolve(str(base.gguf)))
    if base.hf_dir is None and base.hub_id is None:
        raise UsageError(f"cannot merge: base model '{adapter.base}' not found; pass --base-model")
    src = str(base.hf_dir) if base.hf_dir is not None else base.hub_id
    if base.hf_dir is None:
        from . import cli

        cli.note(f"note: loading '{src}' from the Hugging Face Hub cache (downloads it if missing)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if tok is None:
        tok, _ = load_template_tokenizer(adapter, base)
    if tok is None:
        raise UsageError(f"cannot merge: no tokenizer found in {adapter.path} or {src}")
    batch = verification_inputs(tok)
    quant = (adapter.manifest.get("plan") or {}).get("quantization")
    if quant:  # QLoRA: the adapter learned on the NF4 base; merge into those (dequantized) weights
        from .trainer import qlora_reference
        qlora_ref, model = qlora_reference(src, str(adapter.path), quant, lambda m: _logits(m, batch), device)
    else:
        qlora_ref = None
        model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
        model.to(device)
    pm = peft.PeftModel.from_pretrained(model, str(adapter.path))
    pm.eval()
    ref = qlora_ref if qlora_ref is not None else _logits(pm, batch)
    with pm.disable_adapter():
        base_logits = _logits(pm, batch)
    effect = max(max_abs_diff(a, b) for a, b in zip(ref, base_logits))
    merged = pm.merge_and_unload()
    merged.eval()
    merged_logits = _logits(merged, batch)
    check = compare_logits(ref, merged_logits, atol=atol, rtol=rtol)
    result: dict[str, Any] = {
        "dtype": dtype, "inputs": len(batch), "tokens": sum(len(b) for b in batch),
        "base_weights": "dequantized NF4 (QLoRA, as trained)" if quant else "as stored",
        "adapter_effect_max_abs": effect,
        "merge_check": check,
    }
    if not check["passed"]:
        result["passed"] = False
        return result
    tdtype = getattr(torch, dtype)
    # what the saved files should compute: the merged weights rounded to dtype, run in fp32
    # (parameters only: buffers such as rotary inv_freq are not saved and are rebuilt on load)
    with torch.no_grad():
        for prm in merged.parameters():
            prm.data = prm.data.to(tdtype).to(torch.float32)
    rounded = _logits(merged, batch)
    merged.to(tdtype)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    del merged, pm, model
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32).to(device)
    reloaded.eval()
    saved_logits = _logits(reloaded, batch)
    saved = compare_logits(rounded, saved_logits, atol=1e-4, rtol=1e-6)
    precision = compare_logits(ref, saved_logits, atol=float("inf"), rtol=0)
    result["saved_check"] = saved
    result["precision_vs_unmerged"] = {"max_abs_diff": precision["max_abs_diff"],
                                       "top1_agreement": precision["top1_agreement"]}
    result["passed"] = bool(saved["passed"])
    result["size_bytes"] = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return result


# ----------------------------------------------------------------------------- main entry

MANIFEST_NAME = "export_manifest.json"
MERGE_MANIFEST = "merge_manifest.json"   # lists the files of a --merge DIR outside the export folder


def export(adapter_dir: str, output_dir: str, *, name: str | None = None, base_model: str | None = None,
           ollama_base: str | None = None, merge: str | None = None, merge_requested: bool = False,
           dtype: str = "bf16", atol: float = 1e-3, rtol: float = 1e-4, ollama_host: str = DEFAULT_OLLAMA_HOST,
           force: bool = False, copy_adapter: bool = True, gguf: bool = False, llama_cpp: str | None = None,
           gguf_outtype: str = "f16", gguf_quant: str = "q8_0") -> dict[str, Any]:
    """Write the export directory; returns the --json document. Nothing is written on failure."""
    import contextlib

    from .outputs import check_dir_output, check_disjoint, owned_dir

    adapter = read_adapter(adapter_dir)
    out = Path(output_dir).expanduser().absolute()
    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of bf16, fp16, fp32 (got {dtype})")
    # outputs.py: never equal to, around or inside the adapter; --force replaces only our files
    check_dir_output(out, force=force, inputs=[adapter.path], manifest=MANIFEST_NAME, tool="export_adapter.py",
                     names=("Modelfile", "vllm_serve.sh", "openclaw.patch.json5", "README.md"))
    merge_dir: Path | None = None
    merge_rel: Path | None = None          # set when the merged model lives inside the export dir
    if merge_requested:
        merge_dir = Path(merge).expanduser().absolute() if merge else out / "merged"
        check_disjoint(merge_dir, [adapter.path], "--merge")
        if merge_dir == out:
            raise UsageError("--merge must not be the export directory itself; use a subfolder or another path")
        if out in merge_dir.parents:
            merge_rel = merge_dir.relative_to(out)
        else:
            check_dir_output(merge_dir, force=force, inputs=[adapter.path, out], manifest=MERGE_MANIFEST,
                             tool="export_adapter.py --merge", what="merge output")

    base = resolve_base(adapter, base_model)
    if not base.spec:
        raise UsageError(f"{adapter.path / 'adapter_config.json'} names no base model (base_model_name_or_path "
                         f"is empty) and no --base-model was given: pass --base-model MODEL")
    tok, tok_src = load_template_tokenizer(adapter, base)
    tmpl = detect_template(tok) if tok is not None else {"family": None, "stop": [],
                                                         "reason": "no tokenizer found for the adapter"}
    name = sanitize_name(name or adapter.path.name)
    warnings = compatibility_warnings(adapter, base, tmpl, ollama_base is not None)
    if tok is None:
        warnings.append(Warn("no_tokenizer", "all", f"no tokenizer found in {adapter.path} or the base",
                             "pass --base-model"))
    llama = None
    if gguf:   # the GGUF route (export_gguf.py): find llama.cpp's converter first (exit 2 when missing)
        from . import export_gguf

        llama = export_gguf.find_llama_cpp(llama_cpp)
        warnings = export_gguf.gguf_warnings(warnings, adapter, base, ollama_base, merge_requested,
                                             gguf_outtype, gguf_quant)
    if ollama_base:
        from_ = ollama_base
    elif base.gguf is not None:
        from_ = str(base.gguf)
    elif base.hf_dir is not None:
        from_ = str(base.hf_dir)
    else:
        from_ = base.hub_id or str(adapter.base)
    rank = vllm_rank(adapter.max_rank)
    codes = {w.code for w in warnings}
    ollama_blockers = {"ollama_unsupported_architecture", "ollama_rslora", "ollama_dora",
                       "ollama_modules_to_save", "ollama_unsupported_modules", "ollama_base_unknown",
                       "unknown_architecture", "base_not_found", "gguf_base_needed"}
    vllm_blockers = {"vllm_dora", "vllm_modules_to_save", "vllm_rank_too_large", "base_not_found"}
    tags = ["fine-tuned", "lora", f"r{adapter.r}"] + ([f"base:{base.spec}"] if base.spec else [])

    files: list[str] = []
    merge_result: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(owned_dir(out, force=force, inputs=[adapter.path], manifest=MANIFEST_NAME,
                                            tool="export_adapter.py"))
        _umask_dir(tmp)
        if copy_adapter:
            adapter_rel, adapter_abs = "./adapter", str(out / "adapter")
            (tmp / "adapter").mkdir()
            for f in sorted(adapter.path.iterdir()):
                if f.is_file() and (f.name in ADAPTER_FILES or f.name.startswith(("tokenizer", "special_tokens"))
                                    or f.name == "chat_template.jinja"):
                    shutil.copy2(f, tmp / "adapter" / f.name)
                    files.append(f"adapter/{f.name}")
        else:
            adapter_rel = adapter_abs = str(adapter.path)
        gguf_result: dict[str, Any] | None = None
        modelfile_adapter = adapter_rel
        if llama is not None:
            gguf_result = export_gguf.write_adapter_gguf(llama, adapter, base, tmp, outtype=gguf_outtype)
            if gguf_result.get("file"):
                modelfile_adapter = "./" + gguf_result["file"]
                files.append(gguf_result["file"])

        (tmp / "Modelfile").write_text(modelfile_text(from_=from_, adapter_rel=modelfile_adapter, tmpl=tmpl,
                                                      name=name, adapter=adapter, base=base), encoding="utf-8")
        vllm_base = str(base.hf_dir) if base.hf_dir is not None else (base.hub_id or str(adapter.base))
        cmd = vllm_command(base_arg=vllm_base, name=name, adapter_path=adapter_abs, rank=rank, max_model_len=None)
        (tmp / "vllm_serve.sh").write_text(
            "#!/usr/bin/env bash\n# Serve the base model with the LoRA adapter on vLLM "
            "(OpenAI-compatible API on :8000). Run with: bash vllm_serve.sh\n" + cmd + ' "$@"\n', encoding="utf-8")
        patch, patch_text = openclaw_patch(name=name, host=ollama_host, context=base.context_length,
                                           adapter_path=adapter_abs, base_spec=base.spec, tags=tags)
        (tmp / "openclaw.patch.json5").write_text(patch_text, encoding="utf-8")
        files += ["Modelfile", "vllm_serve.sh", "openclaw.patch.json5"]

        if merge_dir is not None:
            if merge_rel is not None:
                target = tmp / merge_rel
                target.mkdir(parents=True)
            else:
                target = stack.enter_context(owned_dir(merge_dir, force=force, inputs=[adapter.path],
                                                       manifest=MERGE_MANIFEST, tool="export_adapter.py --merge"))
                _umask_dir(target)
            merge_result = merge_adapter(adapter, base, target, dtype=DTYPES[dtype], atol=atol, rtol=rtol, tok=tok)
            merge_result["output"] = str(merge_dir)
            if not merge_result.get("passed"):
                raise MergeVerificationFailed(merge_result)   # unwinds both temp dirs: nothing written
            if merge_rel is not None:
                files += sorted(str(p.relative_to(tmp)) for p in target.rglob("*") if p.is_file())
            if llama is not None:
                merge_result["gguf"] = export_gguf.write_merged_gguf(llama, target, tmp, qtype=gguf_quant,
                                                                     tmpl=tmpl, name=name)
                files += merge_result["gguf"]["files"]

        doc = {
            "adapter_dir": str(adapter.path), "output_dir": str(out), "name": name,
            "files": sorted(files + ["README.md", "export_manifest.json"]),
            "base_model": base.to_dict(),
            "adapter": {"r": adapter.r, "max_rank": adapter.max_rank, "lora_alpha": adapter.alpha,
                        "target_modules": adapter.target_modules, "use_rslora": adapter.use_rslora,
                        "use_dora": adapter.use_dora, "modules_to_save": adapter.modules_to_save,
                        "size_bytes": adapter.size_bytes()},
            "chat_template": {k: v for k, v in tmpl.items() if k != "mismatch"} | {"tokenizer": tok_src},
            "ollama": {"modelfile": str(out / "Modelfile"), "from": from_, "adapter": modelfile_adapter,
                       "ready": not (codes & ollama_blockers),
                       "create_command": f"ollama create {name} -f {out / 'Modelfile'}",
                       "run_command": f"ollama run {name}"},
            "vllm": {"command": cmd, "script": str(out / "vllm_serve.sh"), "max_lora_rank": rank,
                     "ready": not (codes & vllm_blockers),
                     "merged_command": f"vllm serve {_q(str(merge_dir))}" if merge_dir is not None else None},
            "openclaw": {"patch_file": str(out / "openclaw.patch.json5"), "config_path": OPENCLAW_CONFIG,
                         "apply_command": f"openclaw config patch --file {out / 'openclaw.patch.json5'}",
                         "model_ref": f"ollama/{name}", "patch": patch, "tags": tags},
            "merge": merge_result,
            "gguf": gguf_result,
            "warnings": [w.to_dict() for w in warnings],
        }
        if from_.endswith(".gguf") and Path(from_).is_file() and tmpl.get("family"):
            # the prompt llama.cpp builds from the FROM GGUF's own chat template vs the Modelfile's
            from . import export_gguf

            doc["chat_template"]["gguf_check"] = gc = export_gguf.check_gguf_template(Path(from_), tmpl)
            doc["warnings"] += [w.to_dict() for w in export_gguf.template_warnings(gc)]
        (tmp / "README.md").write_text(readme_text(doc), encoding="utf-8")
        (tmp / MANIFEST_NAME).write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return doc


def _umask_dir(p: Path) -> None:
    """mkdtemp makes 0700 dirs; give the export the permissions a plain mkdir would have."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(p, 0o777 & ~mask)


class MergeVerificationFailed(BlockingProblem):
    def __init__(self, result: dict[str, Any]):
        c = result.get("saved_check") if result.get("merge_check", {}).get("passed") else result.get("merge_check")
        what = "saved merged model" if result.get("merge_check", {}).get("passed") else "merged model"
        super().__init__(f"merge verification failed: {what} logits differ from the unmerged PeftModel by "
                         f"{c['max_abs_diff']:.3g} (tolerance {c['tolerance']:.3g}); nothing was written")
        self.result = result


# ----------------------------------------------------------------------------- README

def _gguf_readme(doc: dict[str, Any]) -> list[str]:
    from .export_gguf import readme_lines

    return readme_lines(doc)


def readme_text(doc: dict[str, Any]) -> str:
    name = doc["name"]
    o, v, oc, m = doc["ollama"], doc["vllm"], doc["openclaw"], doc["merge"]
    ad = doc["adapter"]
    warns = doc["warnings"]
    L = [f"# Export of `{name}`", "",
         f"Adapter: `{doc['adapter_dir']}` (LoRA r={ad['r']}, alpha={ad['lora_alpha']:g}, "
         f"targets {', '.join(ad['target_modules']) or '-'}, {ad['size_bytes'] / 1e6:.1f} MB).  ",
         f"Base: `{doc['base_model']['spec']}` (architecture `{doc['base_model']['architecture']}`).", ""]
    if warns:
        L += ["## Warnings", ""]
        for w in warns:
            L.append(f"- **{w['code']}** ({w['target']}): {w['message']}." + (f" Fix: {w['hint']}." if w['hint'] else ""))
        L.append("")
    L += ["## Ollama", "",
          f"`Modelfile` uses the base as `FROM`, this folder's `{o['adapter'][2:] if o['adapter'].startswith('./') else o['adapter']}` as `ADAPTER`, and the chat template "
          "and stop tokens of the training tokenizer"
          + (f" ({doc['chat_template']['family']} family)." if doc['chat_template'].get('family') else " (none recognised: see warnings)."),
          "", "```bash", f"cd {doc['output_dir']}", f"ollama create {name} -f Modelfile",
          f"ollama run {name} \"your prompt\"", "```", "",
          "Status: " + ("ready." if o["ready"] else "**not importable as an adapter** - see the warnings above; "
                        "use the merged model (below) converted to GGUF."), "",
          "The `FROM` line must be exactly the weights the adapter was trained on. To give the base another "
          "way (an Ollama tag or a .gguf), rerun `export_adapter.py` with `--ollama-base`.", "",
          *_gguf_readme(doc),
          "## vLLM", "", "```bash", v["command"], "```", "",
          f"`--max-lora-rank {v['max_lora_rank']}` is the adapter's rank ({ad['max_rank']}) rounded up to a value "
          "vLLM accepts (1, 8, 16, 32, 64, 128, 256, 320, 512; its default is 16). Query it as model "
          f"`{name}` on the OpenAI-compatible API (`http://localhost:8000/v1`).", ""]
    if not v["ready"]:
        L += ["Status: **vLLM will reject this adapter** - see the warnings; serve the merged model instead "
              "(`vllm serve MERGED_DIR`).", ""]
    L += ["## Merged model", ""]
    if m:
        mc, sc = m["merge_check"], m.get("saved_check") or {}
        L += [f"Merged weights ({m['dtype']}) with the tokenizer: `{m['output']}`.", "",
              f"Verified on {m['inputs']} inputs ({m['tokens']} tokens): merged vs unmerged PeftModel max |logit diff| "
              f"{mc['max_abs_diff']:.2e} (tolerance {mc['tolerance']:.2e}); files on disk vs the merged weights "
              f"{sc.get('max_abs_diff', float('nan')):.2e}; after rounding to {m['dtype']}, top-1 token agreement with "
              f"the unmerged model {m['precision_vs_unmerged']['top1_agreement']:.1%}. The adapter itself moves "
              f"logits by up to {m['adapter_effect_max_abs']:.2f}.", "",
              "To run it in Ollama, convert it to GGUF with llama.cpp:", "", "```bash",
              f"python llama.cpp/convert_hf_to_gguf.py {m['output']} --outfile {name}.gguf --outtype q8_0",
              f"printf 'FROM ./{name}.gguf\\n' > Modelfile.merged   # add the TEMPLATE/PARAMETER lines from Modelfile",
              f"ollama create {name} -f Modelfile.merged", "```", ""]
    else:
        L += ["Not produced. Rerun with `--merge [DIR]` to write merged weights (bf16 by default) verified "
              "against the unmerged adapter. You need it when Ollama or vLLM cannot load the adapter, or to "
              "ship one self-contained model: convert the merged folder with llama.cpp "
              "(`python llama.cpp/convert_hf_to_gguf.py MERGED_DIR --outfile model.gguf --outtype q8_0`) and "
              "use `FROM ./model.gguf` without an `ADAPTER` line.", ""]
    L += ["## OpenClaw", "",
          f"`openclaw.patch.json5` registers the Ollama model as `{oc['model_ref']}` under the `ollama` "
          f"provider (native Ollama API, no `/v1`). It goes into `{oc['config_path']}` (or "
          "`$OPENCLAW_CONFIG_PATH`):", "", "```bash",
          "openclaw config patch --file openclaw.patch.json5 --dry-run   # validates against the schema",
          "openclaw config patch --file openclaw.patch.json5",
          f"openclaw models list --provider ollama", "```", "",
          "Arrays replace on patch: if `models.providers.ollama.models` already lists models, add the entry "
          "to that list instead. OpenClaw model entries have no adapter, weight or tag keys (its schema "
          "rejects unknown keys), so the adapter path and weight (1.0, applied by Ollama's `ADAPTER`) and the "
          "tags are recorded as comments in the patch and in `export_manifest.json`. A small task model is "
          f"best used by a dedicated agent (`agents.entries.<id>.model: \"{oc['model_ref']}\"`) rather than as "
          "the default model of a general agent.", "",
          "## Files", ""]
    L += [f"- `{f}`" for f in doc.get("files", [])]
    return "\n".join(L).rstrip() + "\n"
