"""The GGUF route: a trained LoRA adapter as a llama.cpp LoRA GGUF, for Ollama and llama.cpp.

llama.cpp (which Ollama runs underneath) loads LoRA adapters in GGUF form for every architecture
it supports (``llama_adapter_lora_init``), so ``ADAPTER ./adapter.gguf`` in a Modelfile works for
Qwen, Mistral, Phi, SmolLM ... where Ollama's own safetensors import covers llama and gemma2 only
(ollama docs/modelfile.md, "GGUF adapter").

- The converter is llama.cpp's ``convert_lora_to_gguf.py``. The skill does not vendor llama.cpp: it
  is found at run time (``find_llama_cpp``) in ``--llama-cpp PATH`` (a llama.cpp checkout, an
  unpacked ``llama-cpp-python`` source distribution, or its ``.tar.gz``), ``$LLAMA_CPP_DIR``, an
  earlier unpack under ``$FT_CACHE_DIR/llama.cpp``, or ``~/.cache/llama-cpp`` (where the setup line
  downloads the sdist). Nothing found: exit 2 with that setup line.
- The adapter is staged in a temp dir first: a clean ``adapter_config.json`` (no local paths in the
  GGUF metadata) and, for rsLoRA or ``alpha_pattern`` adapters, lora_B pre-scaled so that llama.cpp's
  fixed scale ``alpha / rank`` (src/llama-adapter.h) reproduces PEFT's scaling exactly.
- ``verify_adapter_gguf`` re-reads the written GGUF and checks every update ``scale * B @ A`` against
  the PEFT adapter's (up to the rotary row order llama.cpp uses for q/k of llama-type models).
- ``check_gguf_template`` renders the base GGUF's own ``tokenizer.chat_template`` (what llama.cpp
  builds with its default ``--jinja``) and compares it with the Modelfile's TEMPLATE + SYSTEM, and
  checks that the GGUF's end-of-generation tokens are among the Modelfile's stop strings. With
  ``llama-cpp-python`` installed it also compares llama.cpp's built-in template
  (``llama_chat_apply_template``, used without ``--jinja``).
- ``convert_merged`` turns a merged HF folder into one GGUF (``convert_hf_to_gguf.py``; k-quants
  through ``llama_model_quantize`` of an installed ``llama-cpp-python``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BlockingProblem, UsageError, require

SDIST = "llama-cpp-python==0.3.36"
SDIST_NAME = "llama_cpp_python-0.3.36"
USER_DIR = Path("~/.cache/llama-cpp")
CONVERTER = "convert_lora_to_gguf.py"
HF_CONVERTER = "convert_hf_to_gguf.py"
ADAPTER_OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# convert_hf_to_gguf.py writes these directly; the rest need llama.cpp's quantizer (llama-cpp-python)
MERGED_DIRECT = ("f32", "f16", "bf16", "q8_0")
MERGED_QUANTIZED = {"q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
MERGED_TYPES = MERGED_DIRECT + tuple(MERGED_QUANTIZED)
# relative error of scale*B@A allowed after storing A and B in the GGUF type
_TOL = {"f32": 1e-5, "f16": 5e-3, "bf16": 3e-2, "q8_0": 5e-2}


def setup_line() -> str:
    return (f"llama.cpp's converter ({CONVERTER}) not found; get it (77 MB source archive, nothing is built): "
            f"pip download --no-deps --no-binary :all: {SDIST} -d {USER_DIR} "
            f"(found there automatically), or pass --llama-cpp with a llama.cpp checkout")


# ----------------------------------------------------------------------------- finding llama.cpp

@dataclass
class LlamaCpp:
    root: Path          # the llama.cpp directory holding convert_lora_to_gguf.py
    origin: str         # how it was found

    def to_dict(self) -> dict[str, str]:
        return {"root": str(self.root), "origin": self.origin, "converter": str(self.root / CONVERTER)}


def _cache_dir() -> Path:
    from . import models

    return models.cache_root() / "llama.cpp"


def _root_in(p: Path) -> Path | None:
    """The llama.cpp dir inside ``p``: itself, an sdist's vendor/llama.cpp, or one level down."""
    for c in (p, p / "vendor" / "llama.cpp"):
        if (c / CONVERTER).is_file():
            return c
    if p.is_dir():
        for sub in sorted(p.iterdir(), reverse=True):       # newest version name first
            for c in (sub, sub / "vendor" / "llama.cpp"):
                if (c / CONVERTER).is_file():
                    return c
        for tgz in sorted(p.glob("llama_cpp_python-*.tar.gz"), reverse=True):
            return _unpack(tgz)
    return None


def _unpack(tgz: Path) -> Path:
    """Extract the converter parts of a llama-cpp-python sdist into the cache (once)."""
    name = tgz.name[: -len(".tar.gz")] if tgz.name.endswith(".tar.gz") else tgz.stem
    dest = _cache_dir() / name
    root = dest / "vendor" / "llama.cpp"
    if (root / CONVERTER).is_file():
        return root
    keep = re.compile(r"^[^/]+/vendor/llama\.cpp/(convert_[a-z_]+\.py|conversion/.*|gguf-py/gguf/.*|LICENSE)$")
    try:
        with tarfile.open(tgz) as tf:
            members = [m for m in tf.getmembers() if keep.match(m.name) and (m.isfile() or m.isdir())]
            if not any(m.name.endswith("/" + CONVERTER) for m in members):
                raise UsageError(f"{tgz} holds no vendor/llama.cpp/{CONVERTER}: not a llama-cpp-python sdist")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
            try:
                tf.extractall(tmp, members=members, filter="data")
                top = tmp / members[0].name.split("/")[0]
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(top, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot unpack {tgz}: {exc}") from exc
    return root


def find_llama_cpp(explicit: str | None = None) -> LlamaCpp:
    """Locate llama.cpp's converter scripts (see the module docstring for the search order)."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise UsageError(f"--llama-cpp {p}: not found")
        root = _unpack(p) if p.is_file() and p.name.endswith((".tar.gz", ".tgz")) else _root_in(p)
        if root is None:
            raise UsageError(f"--llama-cpp {p}: no {CONVERTER} there (give a llama.cpp checkout, a "
                             f"llama-cpp-python source folder, or its .tar.gz)")
        return LlamaCpp(root.resolve(), "--llama-cpp")
    env = os.environ.get("LLAMA_CPP_DIR")
    if env:
        root = _root_in(Path(env).expanduser())
        if root is None:
            raise UsageError(f"LLAMA_CPP_DIR={env}: no {CONVERTER} there")
        return LlamaCpp(root.resolve(), "LLAMA_CPP_DIR")
    for where, origin in ((_cache_dir(), "cache"), (USER_DIR.expanduser(), str(USER_DIR))):
        if where.is_dir():
            root = _root_in(where)
            if root is not None:
                return LlamaCpp(root.resolve(), origin)
    raise UsageError(setup_line())


# ----------------------------------------------------------------------------- staging the adapter

def _pattern_value(patterns: dict[str, Any], module: str):
    """PEFT's rank/alpha pattern lookup: the key matches the module name or its dotted suffix."""
    for key, val in patterns.items():
        if re.match(rf"(.*\.)?{key}$", module):
            return val
    return None


def _load_adapter_tensors(path: Path) -> dict[str, Any]:
    torch = require("torch", "to convert the adapter to GGUF")
    st = path / "adapter_model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        return load_file(str(st), device="cpu")
    return torch.load(str(path / "adapter_model.bin"), map_location="cpu", weights_only=True)


def lora_pairs(tensors: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{module name: (A, B)} from PEFT tensor names (``...q_proj.lora_A.weight``)."""
    pairs: dict[str, list] = {}
    for k, t in tensors.items():
        m = re.match(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", k)
        if m:
            pairs.setdefault(m.group(1), [None, None])["AB".index(m.group(2))] = t
    return {k: (a, b) for k, (a, b) in pairs.items() if a is not None and b is not None}


def peft_scale(config: dict[str, Any], module: str, rank: int) -> float:
    """The factor PEFT multiplies B @ A by for ``module`` (alpha/r, or alpha/sqrt(r) with rsLoRA)."""
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module)
    alpha = float(alpha if alpha is not None else (config.get("lora_alpha") or config.get("r") or 8))
    return alpha / (rank ** 0.5) if config.get("use_rslora") else alpha / rank


def unsupported(adapter) -> list[str]:
    """Why this adapter cannot be a llama.cpp LoRA GGUF (empty when it can)."""
    why = []
    if adapter.use_dora:
        why.append("DoRA magnitude vectors")
    if adapter.modules_to_save:
        why.append(f"fully trained modules ({', '.join(adapter.modules_to_save)}, modules_to_save)")
    if adapter.config.get("lora_bias"):
        why.append("LoRA biases (lora_bias)")
    return why


def stage_adapter(adapter, base, tmp: Path) -> dict[str, Any]:
    """Copy the adapter into ``tmp`` the way the converter should see it; returns what changed."""
    cfg = dict(adapter.config)
    # the converter writes general.base_model.* from this; keep local paths out of the GGUF
    cfg["base_model_name_or_path"] = base.hub_id or (Path(base.spec).name if base.spec else "base")
    folded = bool(cfg.get("use_rslora") or cfg.get("alpha_pattern"))
    if folded:
        torch = require("torch", "to convert the adapter to GGUF")
        from safetensors.torch import save_file

        tensors = _load_adapter_tensors(adapter.path)
        alpha = float(cfg.get("lora_alpha") or adapter.r)
        for mod, (a, b) in lora_pairs(tensors).items():
            r = int(a.shape[0])
            factor = peft_scale(cfg, mod, r) * r / alpha        # llama.cpp applies alpha / r
            key = next(k for k, t in tensors.items() if t is b)
            tensors[key] = (b.to(torch.float32) * factor).contiguous()
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "adapter_model.safetensors"))
        cfg.update(use_rslora=False, alpha_pattern={}, lora_alpha=alpha)
    else:
        for f in ("adapter_model.safetensors", "adapter_model.bin"):
            if (adapter.path / f).is_file():
                shutil.copy2(adapter.path / f, tmp / f)
                break
    (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return {"scale_folded_into_lora_b": folded}


# ----------------------------------------------------------------------------- conversion

class GGUFConversionFailed(BlockingProblem):
    pass


def _run_converter(cmd: list[str], what: str, timeout: int = 3600) -> None:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise GGUFConversionFailed(f"{what} timed out after {timeout} s") from exc
    if cp.returncode != 0:
        lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
        errs = [ln for ln in lines if "ERROR" in ln or "Error" in ln] or lines[-1:] or ["no output"]
        if any("No module named" in ln for ln in lines):
            mod = next(ln for ln in lines if "No module named" in ln)
            raise UsageError(f"{what} needs a Python package that is missing: {mod.strip()} "
                             f"(pip install 'openclaw-fine-tuning[train]' sentencepiece)")
        raise GGUFConversionFailed(f"{what} failed (exit {cp.returncode}): {errs[-1].strip()[:300]}")


def base_config_dir(base) -> tuple[list[str], str]:
    """Converter arguments naming the base's config (only config.json is read)."""
    from . import models

    if base.hf_dir is not None and (Path(base.hf_dir) / "config.json").is_file():
        return ["--base", str(base.hf_dir)], str(base.hf_dir)
    if base.gguf is not None:
        d = models.ensure_hf_dir(models.resolve(str(base.gguf)))
        if d is not None:
            base.hf_dir = d
            return ["--base", str(d)], str(d)
    if base.hub_id:
        return ["--base-model-id", base.hub_id], base.hub_id
    raise UsageError("cannot convert to GGUF: the base model's config.json is not available; pass --base-model")


def convert_adapter(llama: LlamaCpp, adapter, base, out_file: Path, *, outtype: str = "f16") -> dict[str, Any]:
    """Write ``out_file`` (a llama.cpp LoRA GGUF) from the PEFT adapter; verified by ``verify_adapter_gguf``."""
    if outtype not in ADAPTER_OUTTYPES:
        raise UsageError(f"--gguf-outtype must be one of {', '.join(ADAPTER_OUTTYPES)}")
    why = unsupported(adapter)
    if why:
        raise UsageError("a llama.cpp LoRA GGUF cannot hold " + " and ".join(why)
                         + "; use --merge --gguf to get one merged GGUF instead")
    base_args, base_src = base_config_dir(base)
    with tempfile.TemporaryDirectory(prefix="ft-gguf-") as td:
        staged = Path(td) / "adapter"
        staged.mkdir()
        info = stage_adapter(adapter, base, staged)
        _run_converter([sys.executable, str(llama.root / CONVERTER), *base_args, "--outfile", str(out_file),
                        "--outtype", outtype, str(staged)], f"{CONVERTER}")
    if not out_file.is_file():
        raise GGUFConversionFailed(f"{CONVERTER} exited 0 but wrote no {out_file.name}")
    check = verify_adapter_gguf(out_file, adapter, outtype=outtype, heads=config_heads(base_src))
    if not check["passed"]:
        raise GGUFConversionFailed(f"adapter.gguf does not reproduce the adapter: {check['problem']}")
    return {"file": out_file.name, "outtype": outtype, "size_bytes": out_file.stat().st_size,
            "base_config": base_src, "llama_cpp": llama.to_dict(), **info, "tensor_check": check}


# ----------------------------------------------------------------------------- reading GGUF

def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # noqa: BLE001 - older gguf versions: fall back to the raw parts
        v = f.parts[f.data[0]]
        return bytes(v).decode("utf-8", "replace") if getattr(v, "dtype", None) is not None and v.dtype.kind == "u" \
            and v.dtype.itemsize == 1 else v[0]


def _tensor_array(t):
    """A GGUF tensor as a float32 numpy array in (rows, cols) = (ne1, ne0) order."""
    import numpy as np
    from gguf.quants import dequantize

    a = dequantize(t.data, t.tensor_type)
    return np.asarray(a, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])


def _rope_permute(w, n_head: int):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def verify_adapter_gguf(path: Path, adapter, *, outtype: str = "f32", heads: list[int] | None = None) -> dict[str, Any]:
    """Check each ``alpha/rank * B @ A`` in the GGUF against PEFT's ``scale * B @ A``."""
    import numpy as np

    gguf = require("gguf", "to read GGUF files")
    r = gguf.GGUFReader(str(path))
    res: dict[str, Any] = {"passed": False, "problem": None, "general_type": _field(r, "general.type"),
                           "adapter_type": _field(r, "adapter.type"), "architecture": _field(r, "general.architecture"),
                           "lora_alpha": _field(r, "adapter.lora.alpha")}
    if res["general_type"] != "adapter" or res["adapter_type"] != "lora":
        res["problem"] = f"general.type={res['general_type']}, adapter.type={res['adapter_type']} (want adapter/lora)"
        return res
    arch = res["architecture"]
    tensors = {t.name: t for t in r.tensors}
    pairs = lora_pairs(_load_adapter_tensors(adapter.path))
    names = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in names:
        res["problem"] = f"unknown GGUF architecture {arch!r}"
        return res
    n_blocks = 1 + max((int(m.group(1)) for k in pairs for m in [re.search(r"\.layers\.(\d+)\.", k)] if m), default=0)
    nmap = gguf.get_tensor_name_map(names[arch], n_blocks)
    cfg_heads = heads or _COMMON_HEADS
    alpha = float(res["lora_alpha"] or 0)
    worst, permuted, n = 0.0, 0, 0
    for mod, (a, b) in sorted(pairs.items()):
        hf = mod.replace("base_model.model.", "")
        gname = nmap.get_name(hf + ".weight", try_suffixes=(".weight",))
        if gname is None or f"{gname}.lora_a" not in tensors or f"{gname}.lora_b" not in tensors:
            res["problem"] = f"{hf}: no {gname or '?'}.lora_a/.lora_b in the GGUF"
            return res
        ga, gb = _tensor_array(tensors[f"{gname}.lora_a"]), _tensor_array(tensors[f"{gname}.lora_b"])
        rank = ga.shape[0]
        want = peft_scale(adapter.config, hf, int(a.shape[0])) * (b.float().numpy() @ a.float().numpy())
        got = (alpha / rank if alpha else 1.0) * (gb @ ga)
        if got.shape != want.shape:
            res["problem"] = f"{gname}: shape {got.shape} != adapter's {want.shape}"
            return res
        norm = float(np.linalg.norm(want)) or 1.0
        errs = [float(np.linalg.norm(got - want)) / norm]
        for h in cfg_heads:
            if want.shape[0] % (2 * h) == 0:
                errs.append(float(np.linalg.norm(got - _rope_permute(want, h))) / norm)
        best = min(errs)
        permuted += int(errs.index(best) > 0)
        worst = max(worst, best)
        n += 1
    res.update(tensors_checked=n, rope_permuted=permuted, max_rel_error=worst, tolerance=_TOL.get(outtype, 5e-2))
    res["passed"] = n > 0 and worst <= res["tolerance"]
    if not res["passed"]:
        res["problem"] = (f"largest relative error {worst:.3g} > {res['tolerance']:.3g}" if n
                          else "no LoRA tensors found in the adapter")
    return res


_COMMON_HEADS = [1, 2, 3, 4, 5, 6, 8, 9, 12, 14, 15, 16, 20, 24, 28, 32, 40, 48, 64]


def config_heads(base_src: str) -> list[int] | None:
    """Attention head counts (q and kv) from the base's config.json, for llama.cpp's q/k row order."""
    p = Path(base_src) / "config.json"
    try:
        c = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    heads = sorted({int(h) for h in (c.get("num_attention_heads"), c.get("num_key_value_heads")) if h})
    return heads or None


# ----------------------------------------------------------------------------- chat template vs GGUF

def gguf_chat_info(path: Path) -> dict[str, Any]:
    gguf = require("gguf", "to read GGUF files")
    r = gguf.GGUFReader(str(path))
    tokens = _field(r, "tokenizer.ggml.tokens") or []

    def tok(key):
        i = _field(r, key)
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    return {"template": _field(r, "tokenizer.chat_template"), "bos": tok("tokenizer.ggml.bos_token_id"),
            "eos": tok("tokenizer.ggml.eos_token_id"), "eot": tok("tokenizer.ggml.eot_token_id"),
            "add_bos": bool(_field(r, "tokenizer.ggml.add_bos_token")), "architecture": _field(r, "general.architecture")}


def render_jinja(template: str, messages: list[dict[str, str]], *, bos: str | None, eos: str | None) -> str:
    """Render a chat template the way llama.cpp's --jinja and transformers do (trim/lstrip blocks)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token=bos or "", eos_token=eos or "")


def llama_cpp_builtin(template: str, messages: list[dict[str, str]]) -> str | None:
    """llama.cpp's built-in (non-Jinja) rendering via llama-cpp-python; None when not installed."""
    try:
        import ctypes

        import llama_cpp
    except Exception:  # noqa: BLE001 - optional: a missing or broken build just skips this check
        return None
    arr = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(role=m["role"].encode(), content=m["content"].encode()) for m in messages])
    size = 4096 + 4 * sum(len(m["content"]) for m in messages)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(template.encode(), arr, len(messages), True, buf, size)
    return buf.raw[:n].decode("utf-8", "replace") if 0 <= n <= size else None


def check_gguf_template(path: Path, tmpl: dict[str, Any]) -> dict[str, Any]:
    """Does the Modelfile's TEMPLATE + SYSTEM + stop list give the prompt llama.cpp builds from the GGUF?"""
    from .export import A, S, U, simulate_go_template

    try:
        info = gguf_chat_info(path)
    except UsageError as exc:          # gguf not installed: the check is skipped, not the export
        return {"gguf": str(path), "checked": 0, "jinja_matches": None, "reason": str(exc)}
    fam = tmpl.get("family")
    res: dict[str, Any] = {"gguf": str(path), "has_template": bool(info["template"]), "family": fam,
                           "eog_tokens": [t for t in (info["eos"], info["eot"]) if t], "checked": 0}
    stops = set(tmpl.get("stop") or [])
    res["stop_covers_eog"] = bool(res["eog_tokens"]) and all(t in stops for t in res["eog_tokens"])
    if not info["template"] or not fam:
        res["jinja_matches"] = None
        res["reason"] = "the GGUF has no chat template" if not info["template"] else "no Modelfile TEMPLATE written"
        return res
    convs = [
        [{"role": "user", "content": U}],
        [{"role": "system", "content": S}, {"role": "user", "content": U}],
        [{"role": "system", "content": S}, {"role": "user", "content": U}, {"role": "assistant", "content": A},
         {"role": "user", "content": U + "b"}],
    ]
    ok, builtin_ok, builtin_n, builtin_same = True, True, 0, 0
    for conv in convs:
        want = simulate_go_template(fam, conv, tmpl.get("default_system"))
        try:
            got = render_jinja(info["template"], conv, bos=info["bos"], eos=info["eos"])
        except Exception as exc:  # noqa: BLE001 - a template llama.cpp cannot render either
            res.update(jinja_matches=False, reason=f"the GGUF's chat template failed to render: {exc}")
            return res
        if info["add_bos"] and info["bos"] and got.startswith(info["bos"]):
            got = got[len(info["bos"]):]   # llama.cpp adds BOS when tokenizing (common/chat.cpp strips it)
        res["checked"] += 1
        if got != want and ok:
            ok = False
            res["mismatch"] = {"gguf_jinja": got, "modelfile": want}
        b = llama_cpp_builtin(info["template"], conv)
        if b is not None:
            builtin_n += 1
            builtin_same += b == want
            if b != want:
                builtin_ok = False
                res.setdefault("builtin_mismatch", {"llama_cpp_builtin": b, "modelfile": want})
    res["jinja_matches"] = ok
    res["builtin_matches"] = builtin_ok if builtin_n else None
    res["builtin_checked"], res["builtin_same"] = builtin_n, builtin_same
    return res


# ----------------------------------------------------------------------------- merged model

def convert_merged(llama: LlamaCpp, merged_dir: Path, out_file: Path, *, qtype: str) -> dict[str, Any]:
    """merged HF folder -> one GGUF (``qtype`` direct from the converter, or quantized from f16)."""
    if qtype not in MERGED_TYPES:
        raise UsageError(f"--gguf-quant must be one of {', '.join(MERGED_TYPES)}")
    if not (llama.root / HF_CONVERTER).is_file():
        raise UsageError(f"{llama.root} has no {HF_CONVERTER}")
    direct = qtype if qtype in MERGED_DIRECT else "f16"
    first = out_file if qtype in MERGED_DIRECT else out_file.with_name(out_file.stem + ".f16.tmp.gguf")
    _run_converter([sys.executable, str(llama.root / HF_CONVERTER), str(merged_dir), "--outfile", str(first),
                    "--outtype", direct], HF_CONVERTER)
    if qtype in MERGED_QUANTIZED:
        try:
            quantize(first, out_file, qtype)
        finally:
            first.unlink(missing_ok=True)
    return {"file": out_file.name, "type": qtype, "size_bytes": out_file.stat().st_size}


def quantize(src: Path, dst: Path, qtype: str) -> None:
    try:
        import llama_cpp
    except ImportError as exc:
        raise UsageError(f"--gguf-quant {qtype} needs llama.cpp's quantizer: pip install {SDIST} (builds "
                         f"from source with cmake and a C compiler), or use q8_0/f16") from exc
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = MERGED_QUANTIZED[qtype]
    params.nthread = max(1, (os.cpu_count() or 2))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.is_file():
        raise GGUFConversionFailed(f"llama_model_quantize to {qtype} failed (code {rc})")


# ----------------------------------------------------------------------------- export.py hooks

# Ollama's safetensors-import limits that a GGUF adapter does not have (llama.cpp converts and
# loads LoRA for every architecture it supports; rsLoRA/alpha_pattern scales are folded into B)
_LIFTED = {"ollama_unsupported_architecture", "ollama_rslora", "ollama_unsupported_modules",
           "unknown_architecture", "ollama_from_safetensors"}


def gguf_warnings(warnings: list, adapter, base, ollama_base: str | None, merge_requested: bool,
                  outtype: str, quant: str) -> list:
    """export.py's warnings as they apply when the adapter goes to Ollama as a GGUF."""
    from .export import Warn

    if outtype not in ADAPTER_OUTTYPES:
        raise UsageError(f"--gguf-outtype must be one of {', '.join(ADAPTER_OUTTYPES)} (got {outtype})")
    if quant not in MERGED_TYPES:
        raise UsageError(f"--gguf-quant must be one of {', '.join(MERGED_TYPES)} (got {quant})")
    why = unsupported(adapter)
    if why and not merge_requested:
        raise UsageError("a llama.cpp LoRA GGUF cannot hold " + " and ".join(why)
                         + "; rerun with --merge --gguf to get one merged GGUF instead")
    out = [w for w in warnings if w.code not in _LIFTED]
    if why:
        out.append(Warn("gguf_adapter_impossible", "ollama", "no adapter.gguf: a llama.cpp LoRA cannot hold "
                        + " and ".join(why), "use merged.gguf with Modelfile.merged (written by --merge --gguf)"))
    if not ollama_base and base.gguf is None:
        out.append(Warn("gguf_base_needed", "ollama",
                        "adapter.gguf needs a GGUF of exactly the base weights as FROM, and none is known",
                        "convert the base once: python LLAMA_CPP/convert_hf_to_gguf.py BASE_DIR --outfile "
                        "base.f16.gguf --outtype f16, then rerun with --ollama-base base.f16.gguf"))
    return out


def write_adapter_gguf(llama: LlamaCpp, adapter, base, tmp: Path, *, outtype: str) -> dict[str, Any]:
    """adapter.gguf in the export temp dir (or the reason it cannot exist)."""
    why = unsupported(adapter)
    if why:
        return {"file": None, "reason": "a llama.cpp LoRA cannot hold " + " and ".join(why),
                "llama_cpp": llama.to_dict()}
    res = convert_adapter(llama, adapter, base, tmp / "adapter.gguf", outtype=outtype)
    res["pair_with"] = pairing_note(base)
    return res


def pairing_note(base) -> str:
    if base.gguf is not None:
        return (f"{base.gguf.name} (the GGUF the adapter was trained on, dequantized); any other GGUF of the "
                "same model must be these weights and this tokenizer")
    return "a GGUF converted from exactly the base weights the adapter was trained on (same tokenizer)"


def write_merged_gguf(llama: LlamaCpp, merged_dir: Path, tmp: Path, *, qtype: str, tmpl: dict[str, Any],
                      name: str) -> dict[str, Any]:
    """merged.gguf + Modelfile.merged (FROM ./merged.gguf, same TEMPLATE/stop lines, no ADAPTER)."""
    from .export import GO_TEMPLATES

    res = convert_merged(llama, merged_dir, tmp / "merged.gguf", qtype=qtype)
    lines = [f"# Ollama Modelfile for {name} as one merged GGUF ({qtype}), written by export_adapter.py",
             f"# create:  ollama create {name} -f Modelfile.merged", "", "FROM ./merged.gguf"]
    fam = tmpl.get("family")
    if fam:
        lines += ["", f'TEMPLATE """{GO_TEMPLATES[fam]}"""']
        if tmpl.get("default_system"):
            lines.append('SYSTEM """' + tmpl["default_system"].replace('"""', '\\"\\"\\"') + '"""')
        lines += [f'PARAMETER stop "{s}"' for s in tmpl["stop"]]
    (tmp / "Modelfile.merged").write_text("\n".join(lines) + "\n", encoding="utf-8")
    res["files"] = ["merged.gguf", "Modelfile.merged"]
    if fam:
        res["template_check"] = check_gguf_template(tmp / "merged.gguf", tmpl)
    return res


def template_warnings(check: dict[str, Any]) -> list:
    from .export import Warn

    w = []
    if check.get("jinja_matches") is False:
        w.append(Warn("chat_template_differs_from_gguf", "ollama",
                      "the Modelfile's TEMPLATE/SYSTEM build a different prompt than the FROM GGUF's own chat "
                      "template (what llama.cpp uses): " + str(check.get("reason") or "see chat_template.gguf_check"),
                      "make sure FROM is the GGUF of the trained base; otherwise serve with the training template"))
    if check.get("eog_tokens") and not check.get("stop_covers_eog"):
        w.append(Warn("stop_misses_gguf_eog", "ollama",
                      f"the Modelfile's stop list lacks the GGUF's end-of-generation token(s) "
                      f"{', '.join(check['eog_tokens'])}", "add PARAMETER stop lines for them"))
    return w


def readme_lines(doc: dict[str, Any]) -> list[str]:
    """The export README's GGUF part (adapter.gguf, the template check against the FROM GGUF)."""
    g = doc.get("gguf")
    gc = (doc.get("chat_template") or {}).get("gguf_check")
    L: list[str] = []
    if g and g.get("file"):
        tc = g["tensor_check"]
        L += ["### GGUF adapter (llama.cpp)", "",
              f"`{g['file']}` ({g['outtype']}, {g['size_bytes'] / 1e6:.1f} MB) is the adapter converted by llama.cpp's "
              f"`{CONVERTER}` (from `{g['llama_cpp']['root']}`). Re-read after writing: {tc['tensors_checked']} LoRA "
              f"updates (alpha/rank x B A) equal the PEFT adapter's to a relative error of {tc['max_rel_error']:.1e}"
              + (" (rsLoRA/alpha_pattern scale folded into B)" if g.get("scale_folded_into_lora_b") else "") + ".", "",
              f"Pair it with {g['pair_with']}. The Modelfile's `FROM` is that file; llama.cpp directly:", "",
              "```bash", f"llama-server -m {doc['ollama']['from']} --lora {doc['output_dir']}/{g['file']}", "```", ""]
    elif g and g.get("reason"):
        L += ["### GGUF adapter (llama.cpp)", "", f"Not written: {g['reason']}. Use `merged.gguf` instead.", ""]
    if gc and gc.get("checked"):
        L += [f"Template check against `{Path(gc['gguf']).name}`'s own chat template (the prompt llama.cpp builds "
              f"with --jinja): {'identical' if gc.get('jinja_matches') else '**different**'} on {gc['checked']} "
              f"conversations"
              + ("" if gc.get("builtin_matches") is None else
                 f"; llama.cpp's built-in template: {'identical' if gc['builtin_matches'] else 'different'}")
              + f". End-of-generation token(s) {', '.join(gc['eog_tokens']) or '-'} "
              + ("are" if gc.get("stop_covers_eog") else "are **not**") + " in the stop list.", ""]
    m = doc.get("merge") or {}
    if m.get("gguf"):
        L += [f"`merged.gguf` ({m['gguf']['type']}, {m['gguf']['size_bytes'] / 1e6:.0f} MB) is the merged model as one "
              f"file; `ollama create {doc['name']} -f Modelfile.merged` serves it without an adapter.", ""]
    return L
