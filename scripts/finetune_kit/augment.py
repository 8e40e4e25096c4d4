"""Data augmentation by paraphrasing user turns (augment_data.py; see loop.md).

For every source chat row, ``factor`` new rows are attempted. A new row is the source row
with its user turns reworded by a generator (a local Hugging Face model or an
OpenAI-compatible endpoint); optionally the final assistant text answer is regenerated
for the reworded conversation. Everything else is copied unchanged: system prompts, tool
messages, assistant ``tool_calls`` (their ``arguments`` are never touched), the ``tools``
list, ``weight`` fields.

Each candidate passes these filters, in order; the first that fails is its rejection
reason (counted in the report):

- ``generation_error``: the generator failed (endpoint error, ...).
- ``empty``: nothing left after cleaning (quotes and "Here is a paraphrase:" preambles
  are stripped first).
- ``truncated``: generation stopped at ``max_new_tokens`` (likely cut mid-sentence).
- ``template_tokens``: chat-template/special tokens in the text (``<|im_end|>``,
  ``[INST]``, the tokenizer's special tokens, ...).
- ``identical``: same as the source turn after case/space/punctuation normalisation.
- ``length_ratio``: ``(len(new)+10)/(len(src)+10)`` outside ``[min_ratio, max_ratio]``.
- ``changed_literals``: a number, URL, e-mail, path, `code` span, "quoted string" or name
  (a capitalised word inside a sentence) of the source is missing from the paraphrase
  (they must be copied verbatim).
- ``lost_request``: the source asks or instructs (a question, or starts with a request word
  such as "Convert", "Can you", "Please") and the paraphrase does neither - typical of small
  models that answer instead of paraphrasing.
- ``unrelated``: fewer than ``min_overlap`` of the source's content words kept.
- ``duplicate``: the new row's user text equals (normalised) that of a source row or an
  earlier new row.
- ``near_duplicate``: Jaccard of word 3-shingles >= ``near_dup_threshold`` against the same
  (``dedup.NearDupIndex``, as in prepare_data).
- ``not_equivalent``: with ``verify``, the generator itself was asked whether the source and
  the paraphrase ask for the same thing and did not answer YES (worth it with a strong model
  or an endpoint; a tiny model's verdict is noise).
- ``answer_empty`` / ``answer_truncated`` / ``answer_template_tokens``: the same checks on
  a regenerated answer.
- ``invalid``: the row fails the chat-format checks (``chat.check_record``).

Survivors get ``metadata.synthetic = true``, ``metadata.augmented_from = <source line>``,
``metadata.group`` (shared with the source row so a split keeps a source and its variants
together) and ``metadata.augment = {method, generator, variant, regenerated_answer}``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

from . import chat, jsonl
from .errors import UsageError
from .openai_compat import ChatClient, EndpointError

# ---------------------------------------------------------------- rejection reasons

REASONS = ("generation_error", "empty", "truncated", "template_tokens", "identical", "length_ratio",
           "changed_literals", "lost_request", "unrelated", "duplicate", "near_duplicate", "not_equivalent",
           "answer_empty", "answer_truncated", "answer_template_tokens", "invalid")

REASON_HINTS = {
    "generation_error": "check the endpoint/model; rerun",
    "empty": "the generator returned nothing usable",
    "truncated": "raise --max-new-tokens",
    "template_tokens": "the model leaked chat-template tokens; use an instruct model with its own template",
    "identical": "the generator copied the source; raise --temperature or use a stronger model",
    "length_ratio": "adjust --min-ratio/--max-ratio if long rewrites are wanted",
    "changed_literals": "numbers, paths, URLs, code and quotes must be kept verbatim",
    "lost_request": "the model answered instead of paraphrasing; use a stronger model",
    "unrelated": "the paraphrase drifted from the source; lower --min-overlap only if that is wrong",
    "not_equivalent": "the verifier said the meaning changed (--verify)",
    "answer_empty": "regenerated answer was empty",
    "answer_truncated": "raise --max-new-tokens for regenerated answers",
    "answer_template_tokens": "regenerated answer leaked chat-template tokens",
    "duplicate": "same user text as an existing row",
    "near_duplicate": "nearly the same user text as an existing row (--near-dup-threshold)",
    "invalid": "the new row failed the chat-format checks",
}

PARAPHRASE_SYSTEM = (
    "You rewrite messages. Rewrite the user's message with different wording but exactly the same "
    "meaning, intent and language. Keep every name, number, file path, URL, code snippet and quoted "
    "text exactly as written. Do not answer the message and do not add anything. Reply with only the "
    "rewritten message.")
# one worked example: small instruct models follow a demonstration better than an instruction
PARAPHRASE_SHOT = ("Can you tell me how to cook rice?", "How should I cook rice?")


VERIFY_SYSTEM = "You compare two messages. Answer with one word: YES or NO."


def verify_messages(src: str, para: str) -> list[dict[str, str]]:
    """The chat messages sent to a generator to check that ``para`` means the same as ``src``."""
    return [{"role": "system", "content": VERIFY_SYSTEM},
            {"role": "user", "content": f"Message A:\n{src}\n\nMessage B:\n{para}\n\nDo A and B ask for "
                                        f"exactly the same thing, with the same names, numbers and constraints? "
                                        f"Answer YES or NO."}]


def verdict_is_yes(gen: "Generation") -> bool:
    return bool(gen.text) and re.match(r"^\W*yes\b", gen.text.strip(), re.I) is not None


def paraphrase_messages(text: str) -> list[dict[str, str]]:
    """The chat messages sent to a generator to paraphrase ``text``."""
    return [{"role": "system", "content": PARAPHRASE_SYSTEM},
            {"role": "user", "content": f"Rewrite this message:\n\n{PARAPHRASE_SHOT[0]}"},
            {"role": "assistant", "content": PARAPHRASE_SHOT[1]},
            {"role": "user", "content": f"Rewrite this message:\n\n{text}"}]


# ---------------------------------------------------------------- generator interface


@dataclass
class Generation:
    text: str | None          # None when generation failed
    truncated: bool = False   # stopped because of the token limit
    error: str | None = None


class Generator(Protocol):
    """What augmentation needs from a model. Tests inject a fake one."""

    name: str
    special_tokens: Sequence[str]

    def paraphrase(self, texts: Sequence[str], n: int) -> list[list[Generation]]:
        """``n`` paraphrase candidates for each text."""

    def answer(self, messages: list[dict[str, Any]], tools: list[dict] | None) -> Generation:
        """A new assistant text answer for ``messages`` (which end with a user/tool turn)."""

    def verify(self, pairs: Sequence[tuple[str, str]]) -> list[Generation]:
        """For each (source, paraphrase): the model's YES/NO on "same request?" (``--verify``)."""


# ---------------------------------------------------------------- cleaning and filters

GENERIC_TEMPLATE_TOKENS = re.compile(
    r"<\|[A-Za-z0-9_ .:-]{1,40}\|>|\[/?INST\]|<</?SYS>>|</?s>|<(?:start|end)_of_turn>|<\|?endoftext\|?>"
    r"|^(?:system|user|assistant)\n", re.M)

_PREAMBLE = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)|rewritten|rephrased|paraphrased|"
    r"the (?:rewritten|rephrased|paraphrased)|this can be (?:rewritten|rephrased|paraphrased)|"
    r"[^\n]{0,40}\b(?:rewording|rephrasing|paraphrase|rewrite|rewritten|rephrased|version)\b)"
    r"[^\n]{0,100}?:\s*", re.I)
_QUOTES = [('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("`", "`")]


def clean_generation(text: str) -> str:
    """Strip preambles ("Here is the rewritten message:"), labels and wrapping quotes."""
    t = (text or "").strip()
    for _ in range(3):
        m = _PREAMBLE.match(t)
        if not m:
            break
        t = t[m.end():].strip()
    # "Rewritten: ..." / "Paraphrase: ..." labels on their own
    t = re.sub(r"^(?:rewritten message|paraphrase|rewrite|message)\s*:\s*", "", t, flags=re.I).strip()
    for a, b in _QUOTES:
        if len(t) >= 2 and t.startswith(a) and t.endswith(b) and t.count(a) + (0 if a == b else t.count(b)) == 2:
            t = t[1:-1].strip()
            break
    return t


def _norm(s: str) -> str:
    s = unicodedata.normalize("NFKC", s or "").casefold()
    s = re.sub(r"[^\w\s]", "", s)
    return re.sub(r"\s+", " ", s).strip()


_LITERALS = [
    re.compile(r"```.*?```", re.S),                       # fenced code
    re.compile(r"`[^`\n]+`"),                             # inline code
    re.compile(r"https?://[^\s)\]}>\"']+"),               # URLs
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),          # e-mails
    re.compile(r"\"[^\"\n]{1,200}\""),                    # double-quoted strings
    re.compile(r"(?<![\w/])(?:~|\.{1,2})?/[\w.@~-]+(?:/[\w.@~-]+)*"),  # paths
    re.compile(r"\b[\w-]+\.(?:py|js|ts|json|jsonl|yaml|yml|toml|md|txt|csv|sh|sql|html|css|go|rs|java|c|h|cpp)\b"),
    re.compile(r"(?<![\w.])\d+(?:[.,:/-]\d+)*(?![\w])"),  # numbers, dates, times, versions
    # names: capitalised words that do not start a sentence ("the capital of France")
    re.compile(r"(?<=[\w,;)] )(?!I\b)[A-Z][\w-]+"),
]


def literals(text: str) -> list[str]:
    """Substrings that a paraphrase must keep verbatim (numbers, URLs, code, paths, quotes)."""
    found: list[str] = []
    rest = text or ""
    for rx in _LITERALS:
        for m in rx.finditer(rest):
            v = m.group(0).rstrip(".,;:!?")
            if v and v not in found:
                found.append(v)
        rest = rx.sub(" ", rest)  # a number inside a URL is not checked twice
    return found


_STOP = set("""a an and are as at be been but by can could did do does doing for from had has have how i if in
into is it its me my no not of on or our please so than that the their them then there these this those to
too us was we were what when where which who whom why will with would you your yours about just also any
some another more one many much tell give show list name provide explain describe want need like know let
find get make way kindly help""".split())  # request words that paraphrases swap freely
_WORD = re.compile(r"[^\W\d_]+")


def content_words(text: str) -> set[str]:
    out = set()
    for w in _WORD.findall(unicodedata.normalize("NFKC", text or "").casefold()):
        if len(w) < 3 or w in _STOP:
            continue
        for suf in ("'s", "’s", "ies", "es", "s"):
            if w.endswith(suf) and len(w) - len(suf) >= 3:
                w = w[: -len(suf)] + ("y" if suf == "ies" else "")
                break
        out.add(w)
    return out


_REQUEST_WORDS = """please kindly tell give list show explain describe find name provide share help can could would
will what which who whom whose how why where when is are do does did should shall may might identify calculate
compute convert check summarize summarise write create get translate recommend suggest define compare rewrite
fix debug run open delete remove add update send draft generate make build set install search look count
estimate plan book schedule cancel order remind read review analyze analyse classify extract format sort""".split()
_REQUEST_START = re.compile(r"^\W*(?:" + "|".join(_REQUEST_WORDS) +
                            r"|let me know|i(?:'d| would) like|i want|i need|i wonder)\b", re.I)


def _is_question(text: str) -> bool:
    return text.rstrip().endswith(("?", "？"))


def _is_request(text: str) -> bool:
    """A question, or a sentence that starts like a request/instruction ("Convert ...", "Can you ...")."""
    return _is_question(text) or "?" in text or bool(_REQUEST_START.match(text))


@dataclass
class FilterConfig:
    min_ratio: float = 0.5
    max_ratio: float = 2.0
    min_overlap: float = 0.6


def check_paraphrase(src: str, gen: Generation, special_tokens: Iterable[str] = (),
                     cfg: FilterConfig | None = None) -> tuple[str | None, str]:
    """(rejection reason or None, cleaned text) for one paraphrase candidate of ``src``."""
    cfg = cfg or FilterConfig()
    if gen.text is None:
        return "generation_error", ""
    text = clean_generation(gen.text)
    problem = _generation_problem(gen, text, special_tokens)
    if problem:
        return problem, text
    if _norm(text) == _norm(src):
        return "identical", text
    ratio = (len(text) + 10) / (len(src) + 10)
    if not cfg.min_ratio <= ratio <= cfg.max_ratio:
        return "length_ratio", text
    for lit in literals(src):
        if lit not in text:
            return "changed_literals", text
    if _is_request(src) and not _is_request(text):
        return "lost_request", text
    src_words = content_words(src)
    if src_words:
        kept = len(src_words & content_words(text)) / len(src_words)
        if kept < cfg.min_overlap:
            return "unrelated", text
    return None, text


def has_template_tokens(text: str, special_tokens: Iterable[str] = ()) -> bool:
    if GENERIC_TEMPLATE_TOKENS.search(text or ""):
        return True
    return any(t and len(t) > 2 and t in text for t in special_tokens)


def _generation_problem(gen: Generation, text: str, special_tokens: Iterable[str], prefix: str = "") -> str | None:
    """The checks every generated text gets: ``empty``, ``truncated``, ``template_tokens`` (+ prefix)."""
    if not text:
        return prefix + "empty"
    if gen.truncated:
        return prefix + "truncated"
    if has_template_tokens(text, special_tokens):
        return prefix + "template_tokens"
    return None


def check_answer(gen: Generation, special_tokens: Iterable[str] = ()) -> tuple[str | None, str]:
    if gen.text is None:
        return "generation_error", ""
    text = gen.text.strip()
    return _generation_problem(gen, text, special_tokens, "answer_"), text


# ---------------------------------------------------------------- de-duplication


class Deduper:
    """Exact (normalised text) and near-duplicate detection of the text augmentation changes.

    Near duplicates use prepare_data's definition through the shared ``dedup.NearDupIndex``
    (Jaccard of word 3-shingles, datasketch MinHash LSH, candidates verified exactly), so "near
    duplicate" means the same here as in prepare_data. ``threshold`` 1 = exact duplicates only.
    """

    def __init__(self, threshold: float = 0.9):
        from .dedup import NearDupIndex

        self.threshold = threshold
        self.exact: dict[str, str] = {}
        self.near = NearDupIndex(threshold) if threshold < 1 else None

    def check(self, text: str) -> tuple[str | None, str | None]:
        """("duplicate"|"near_duplicate"|None, key of the earlier row) without adding ``text``."""
        norm = _norm(text)
        if norm in self.exact:
            return "duplicate", self.exact[norm]
        key = self.near.check(text) if self.near is not None else None
        return ("near_duplicate", key) if key is not None else (None, None)

    def add(self, text: str, key: str) -> None:
        self.exact.setdefault(_norm(text), key)
        if self.near is not None:
            self.near.add(key, text)


# ---------------------------------------------------------------- augmentation core


@dataclass
class AugmentConfig:
    factor: int = 2
    turns: str = "all"                 # "all" user turns or only the "last"
    regenerate_answers: bool = False
    verify: bool = False               # ask the generator whether each paraphrase keeps the meaning
    retries: int = 1                   # extra generation rounds for rejected variants
    near_dup_threshold: float = 0.9
    filters: FilterConfig = field(default_factory=FilterConfig)
    max_chars: int = 4000              # user turns longer than this are not paraphrased


@dataclass
class Source:
    line: int
    obj: dict[str, Any]
    example: chat.ChatExample


@dataclass
class AugmentReport:
    sources: int = 0
    requested: int = 0
    attempted: int = 0
    survived: int = 0
    rejected: Counter = field(default_factory=Counter)
    skipped_sources: Counter = field(default_factory=Counter)
    answers_regenerated: int = 0
    answers_kept_tool_calls: int = 0
    per_source: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "requested": self.requested,
            "attempted": self.attempted,
            "survived": self.survived,
            "survival_rate": round(self.survived / self.requested, 4) if self.requested else None,
            "rejected": {r: self.rejected[r] for r in REASONS if self.rejected.get(r)},
            "rejected_total": sum(self.rejected.values()),
            "skipped_sources": dict(self.skipped_sources),
            "answers_regenerated": self.answers_regenerated,
            "answers_kept_tool_calls": self.answers_kept_tool_calls,
            "seconds": round(self.seconds, 2),
        }


def load_sources(path: str | os.PathLike) -> list[Source]:
    """Read and check the source file: every non-blank line must be a valid chat row."""
    out: list[Source] = []
    for line, obj in jsonl.read_jsonl_objects(path):
        fmt = chat.detect_format(obj)
        if fmt != "chat":
            raise UsageError(f"{path}:{line}: not a chat line (format: {fmt or 'unknown'}); "
                             f"augment_data.py needs chat JSONL - convert it with prepare_data.py first")
        ex, findings = chat.check_record(obj, "chat", line)
        errors = [f for f in findings if f.severity == "error"]
        if ex is None or errors:
            first = errors[0].one_line() if errors else "could not parse"
            raise UsageError(f"{path}: invalid chat line ({first}); run validate_jsonl.py on it first")
        out.append(Source(line, obj, chat.as_chat(ex)))
    return out


def _user_indices(ex: chat.ChatExample, turns: str, max_chars: int) -> list[int]:
    idx = [i for i, m in enumerate(ex.messages) if m.role == "user" and m.text().strip()
           and len(m.text()) <= max_chars]
    return idx[-1:] if turns == "last" and idx else idx


def _user_key(obj: dict[str, Any]) -> str:
    """The text compared for duplicates: all user turns (the part augmentation changes)."""
    return "\n".join(chat.content_text(m.get("content")) for m in obj.get("messages", [])
                     if m.get("role") == "user")


def _group_of(src: Source) -> str:
    meta = src.obj.get("metadata") or {}
    if isinstance(meta, dict) and meta.get("group") not in (None, ""):
        return str(meta["group"])
    h = hashlib.sha256(json.dumps(chat.for_upload(src.obj), sort_keys=True, ensure_ascii=False)
                       .encode()).hexdigest()[:12]
    return f"aug-{h}"


def _api_message(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("role", "content", "tool_calls", "tool_call_id", "name")
    return {k: m[k] for k in keep if k in m and m[k] is not None}


def _final_answer_index(obj: dict[str, Any]) -> int | None:
    msgs = obj["messages"]
    if msgs and msgs[-1].get("role") == "assistant":
        return len(msgs) - 1
    return None


def augment(sources: Sequence[Source], generator: Generator, cfg: AugmentConfig, *,
            source_label: str = "", progress=None) -> tuple[list[tuple[Source, list[dict]]], AugmentReport]:
    """Augment ``sources``; returns [(source, [new rows])] and the report."""
    started = time.time()
    rep = AugmentReport(sources=len(sources))
    dedup = Deduper(cfg.near_dup_threshold)
    for s in sources:  # index every source row first: new rows must differ from all of them
        dedup.add(_user_key(s.obj), f"source:{s.line}")
    results: list[tuple[Source, list[dict]]] = []
    it = progress(sources) if progress else sources
    special = list(getattr(generator, "special_tokens", ()) or ())
    for src in it:
        new_rows: list[dict] = []
        results.append((src, new_rows))
        uidx = _user_indices(src.example, cfg.turns, cfg.max_chars)
        if not uidx:
            rep.skipped_sources["no_user_text"] += 1
            continue
        rep.requested += cfg.factor
        base = src.example.to_json()
        texts = [src.example.messages[i].text() for i in uidx]
        group = _group_of(src)
        need = cfg.factor
        variant = 0
        for _round in range(1 + max(0, cfg.retries)):
            if need <= 0:
                break
            cands = generator.paraphrase(texts, need)
            for k in range(need):
                rep.attempted += 1
                row = copy.deepcopy(base)
                reason = None
                for j, i in enumerate(uidx):
                    gen = cands[j][k] if j < len(cands) and k < len(cands[j]) else Generation(None, error="missing")
                    reason, text = check_paraphrase(texts[j], gen, special, cfg.filters)
                    if reason:
                        break
                    row["messages"][i]["content"] = text
                if reason is None:  # cheap before costly: dedup, then verification and regeneration
                    reason, _ = dedup.check(_user_key(row))
                if reason is None and cfg.verify:
                    pairs = [(texts[j], row["messages"][i]["content"]) for j, i in enumerate(uidx)]
                    if not all(verdict_is_yes(v) for v in generator.verify(pairs)):
                        reason = "not_equivalent"
                regenerated = False
                if reason is None and cfg.regenerate_answers:
                    reason, regenerated = _regenerate(row, generator, special, rep)
                if reason is None:
                    meta = dict(base.get("metadata") or {})
                    if "id" in meta:
                        meta["id"] = f"{meta['id']}~aug{variant + 1}"
                    meta.update({"synthetic": True, "augmented_from": src.line, "group": group,
                                 "augment": {"method": "paraphrase", "generator": generator.name,
                                             "variant": variant + 1, "turns": cfg.turns,
                                             "regenerated_answer": regenerated}})
                    if source_label:
                        meta["augment"]["source_file"] = source_label
                    row["metadata"] = meta
                    ex, findings = chat.check_record(row, "chat", None)
                    if ex is None or any(f.severity == "error" for f in findings):
                        reason = "invalid"
                if reason:
                    rep.rejected[reason] += 1
                    continue
                variant += 1
                dedup.add(_user_key(row), f"new:{src.line}:{variant}")
                if regenerated:
                    rep.answers_regenerated += 1
                new_rows.append(row)
            need = cfg.factor - len(new_rows)
        rep.survived += len(new_rows)
    rep.seconds = time.time() - started
    return results, rep


def _regenerate(row: dict, generator: Generator, special: Sequence[str],
                rep: AugmentReport) -> tuple[str | None, bool]:
    """Regenerate the final assistant text answer in place. Tool calls are never regenerated."""
    i = _final_answer_index(row)
    if i is None:
        return None, False
    final = row["messages"][i]
    if final.get("tool_calls"):
        rep.answers_kept_tool_calls += 1
        return None, False
    gen = generator.answer([_api_message(m) for m in row["messages"][:i]], row.get("tools"))
    reason, text = check_answer(gen, special)
    if reason:
        return reason, False
    final["content"] = text
    return None, True


def assemble(results: Sequence[tuple[Source, list[dict]]], *, include_source: bool = True) -> list[dict]:
    """Output rows: each source row (with its group) followed by its surviving variants."""
    rows: list[dict] = []
    for src, new in results:
        if include_source:
            obj = copy.deepcopy(src.obj)
            if new:
                meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
                meta = dict(meta)
                meta.setdefault("group", new[0]["metadata"]["group"])
                obj["metadata"] = meta
            rows.append(obj)
        rows.extend(new)
    return rows


# ---------------------------------------------------------------- generators


class HFGenerator:
    """Paraphrases with a local causal LM (models.resolve spec: alias, HF dir, .gguf, hub id)."""

    def __init__(self, spec: str, *, max_new_tokens: int = 128, temperature: float = 0.8,
                 top_p: float = 0.95, seed: int = 0, batch_size: int = 16, device: str | None = None):
        from . import models
        from .errors import require

        self.torch = require("torch", "to run a local model")
        device = device or ("cuda" if self.torch.cuda.is_available() else "cpu")
        self.tok = models.load_tokenizer(spec)
        try:
            self.model = models.load_causal_lm(spec, device=device)
        except (RuntimeError, AssertionError) as exc:
            raise UsageError(f"cannot load {spec} on {device}: {exc}") from exc
        self.model.eval()
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "left"
        if not getattr(self.tok, "chat_template", None):
            raise UsageError(f"model '{spec}' has no chat template; use an instruct/chat model")
        self.name = f"hf:{spec}"
        self.special_tokens = [t for t in self.tok.all_special_tokens if t]
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.batch_size = max(1, batch_size)
        self._calls = 0
        stop = {self.tok.eos_token_id}
        im_end = self.tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in self.tok.get_vocab() else None
        if isinstance(im_end, int):
            stop.add(im_end)
        gc = getattr(self.model, "generation_config", None)
        if gc is not None and gc.eos_token_id is not None:
            stop |= set(gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id])
        self.stop_ids = sorted(i for i in stop if isinstance(i, int))

    def _generate(self, conversations: list[list[dict]], n: int, *, temperature: float | None = None,
                  greedy: bool = False, max_new_tokens: int | None = None) -> list[list[Generation]]:
        torch = self.torch
        out: list[list[Generation]] = []
        for b in range(0, len(conversations), self.batch_size):
            batch = conversations[b:b + self.batch_size]
            prompts = [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                       for c in batch]
            enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            self._calls += 1
            torch.manual_seed(self.seed + self._calls)
            limit = max_new_tokens or self.max_new_tokens
            sampling = {} if greedy else {"temperature": temperature or self.temperature, "top_p": self.top_p}
            with torch.no_grad():
                gen = self.model.generate(**enc, **sampling, do_sample=not greedy, max_new_tokens=limit,
                                          num_return_sequences=n, pad_token_id=self.tok.pad_token_id,
                                          eos_token_id=self.stop_ids)
            width = enc["input_ids"].shape[1]
            for j in range(len(batch)):
                row = []
                for k in range(n):
                    ids = gen[j * n + k, width:].tolist()
                    stop_at = next((p for p, t in enumerate(ids) if t in self.stop_ids), None)
                    truncated = stop_at is None and len(ids) >= limit
                    ids = ids if stop_at is None else ids[:stop_at]
                    row.append(Generation(self.tok.decode(ids, skip_special_tokens=False), truncated))
                out.append(row)
        return out

    def paraphrase(self, texts: Sequence[str], n: int) -> list[list[Generation]]:
        return self._generate([paraphrase_messages(t) for t in texts], n)

    def answer(self, messages: list[dict[str, Any]], tools: list[dict] | None) -> Generation:
        conv = [{"role": m["role"], "content": chat.content_text(m.get("content"))} for m in messages]
        return self._generate([conv], 1, temperature=0.7)[0][0]

    def verify(self, pairs: Sequence[tuple[str, str]]) -> list[Generation]:
        return [row[0] for row in self._generate([verify_messages(a, b) for a, b in pairs], 1, greedy=True,
                                                 max_new_tokens=3)]


class OpenAIGenerator:
    """Paraphrases through any OpenAI-compatible ``/chat/completions`` endpoint (network), with
    the shared ``openai_compat.ChatClient``."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None, max_new_tokens: int = 256,
                 temperature: float = 0.8, top_p: float = 0.95, seed: int | None = None,
                 timeout: float = 60.0, http_retries: int = 2):
        self.client = ChatClient(base_url, model, api_key=api_key, timeout=timeout, retries=http_retries)
        self.url = self.client.url
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.name = f"openai:{model}"
        self.special_tokens: list[str] = []

    @property
    def requests(self) -> int:
        return self.client.requests

    def _post(self, messages: list[dict], *, temperature: float, tools=None,
              max_tokens: int | None = None) -> Generation:
        params: dict[str, Any] = {"temperature": temperature, "top_p": self.top_p,
                                  "max_tokens": max_tokens or self.max_new_tokens, "n": 1}
        if self.seed is not None:
            params["seed"] = self.seed + self.client.requests
        if tools:
            params["tools"] = tools
            params["tool_choice"] = "none"
        try:
            reply = self.client.complete(messages, **params)
        except EndpointError as exc:
            return Generation(None, error=str(exc))
        return Generation(reply.text, truncated=reply.finish_reason == "length")

    def paraphrase(self, texts: Sequence[str], n: int) -> list[list[Generation]]:
        return [[self._post(paraphrase_messages(t), temperature=self.temperature) for _ in range(n)]
                for t in texts]

    def answer(self, messages: list[dict[str, Any]], tools: list[dict] | None) -> Generation:
        return self._post(messages, temperature=0.7, tools=tools)

    def verify(self, pairs: Sequence[tuple[str, str]]) -> list[Generation]:
        return [self._post(verify_messages(a, b), temperature=0.0, max_tokens=3) for a, b in pairs]


def describe_reasons(rejected: dict[str, int]) -> list[tuple[str, int, str]]:
    return [(r, n, REASON_HINTS.get(r, "")) for r, n in rejected.items()]
