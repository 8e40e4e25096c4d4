"""Peak GPU memory estimate for LoRA / QLoRA training, from a model config alone.

The estimate targets what ``torch.cuda.max_memory_allocated()`` reports for *this skill's*
training path (TRL ``SFTTrainer`` + PEFT LoRA, AdamW, HF gradient checkpointing per decoder
layer). CUDA's own context (~0.5 GiB) and allocator fragmentation are not in it; the fit
verdict adds a margin for them (:data:`CONTEXT_GIB`, :data:`FRAGMENTATION`).

Terms (bytes; ``a`` = activation bytes: 2 for bf16/fp16, 4 for fp32; ``T`` = batch x seq tokens):

- **weights**: every parameter at the load dtype, or for QLoRA the linear layers of the
  decoder in NF4 with double quantization (4 bits + uint8 absmax per 64 weights + fp32
  second-level absmax per 256 blocks = 4.127 bits/param) while embeddings, ``lm_head`` and
  norms stay bf16 (TRL does not call ``prepare_model_for_kbit_training``, which would upcast
  them to fp32).
- **LoRA states**: ``r * (in + out)`` per adapted module; PEFT keeps adapters in fp32 for a
  bf16 base (param + grad + AdamW's two moments = 16 B/param); for QLoRA TRL casts adapters to
  bf16 (8 B/param).
- **activations** per decoder layer and token, for the HF Llama/Qwen/Mistral block with SDPA
  or flash attention (no ``seq^2`` score matrix): RMSNorm keeps an fp32 copy of its input
  (2 x 4h); inputs kept for the LoRA ``A`` matrices (normed input ``a*h`` twice, attention
  output ``a*h``, MLP product ``a*I``); q, k, v and the attention output (``a*(2h + 2kv)``);
  SwiGLU keeps gate, SiLU(gate) and up (``3*a*I``); LoRA dropout > 0 adds a dropped copy of
  the input plus a bool mask per adapted module. With gradient checkpointing only each
  layer's input (``a*h``) is kept, plus one layer recomputed during backward.
- **logits**: TRL's SFTTrainer computes the loss with a fused, tiled LM head (TRL >= 1.x:
  ``add_fused_lm_head``) - tiles of 4096 tokens x 32768 vocab in the compute dtype plus an
  fp32 gradient of the final hidden states - instead of ``T x vocab`` fp32 logits. The
  classic materialised figure (``T * vocab * (a + 12)``: bf16 logits, fp32 log-softmax,
  fp32 gradients) is reported as ``logits_materialized`` for other trainers.
- **transient**: QLoRA dequantises one linear layer at a time to bf16 (the largest, twice).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GIB = 1024 ** 3
CONTEXT_GIB = 0.5          # CUDA context + cuBLAS workspaces, outside the allocator
FRAGMENTATION = 0.08       # allocator caching/fragmentation on top of the allocated peak
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)   # 4.127 bits per quantized weight
FUSED_TOKEN_TILE = 4096    # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
FUSED_VOCAB_TILE = 32768   # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE

# Planning targets for --gpu (memory as torch reports it; peak dense bf16 TFLOPS from the facts file).
GPUS: dict[str, dict[str, Any]] = {
    "a100-80gb": {"name": "NVIDIA A100 80GB", "memory_gib": 80.0, "bf16": True, "tflops_bf16": 312},
    "a100-40gb": {"name": "NVIDIA A100 40GB", "memory_gib": 40.0, "bf16": True, "tflops_bf16": 312},
    "rtx4090": {"name": "NVIDIA GeForce RTX 4090", "memory_gib": 24.0, "bf16": True, "tflops_bf16": 165},
    "h100": {"name": "NVIDIA H100 80GB", "memory_gib": 79.6, "bf16": True, "tflops_bf16": 989},
}

# Architecture shapes (from the models' public config.json) for planning without a download.
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                     "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False},
    "llama-3.2-3b": {"model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192,
                     "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
                     "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": True},
    "llama-3.2-1b": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
                     "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                     "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True},
    "qwen2.5-7b": {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
                   "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                   "head_dim": 128, "vocab_size": 152064, "tie_word_embeddings": False},
    "mistral-7b": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "head_dim": 128, "vocab_size": 32768, "tie_word_embeddings": False},
    "llama-3.3-70b": {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
                      "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                      "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False},
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                     "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                     "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True},
}

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
ALL_LINEAR = ATTN + MLP


@dataclass
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    model_type: str = "llama"

    @classmethod
    def from_config(cls, cfg: Any) -> "Shape":
        get = (cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d))
        if get("text_config") is not None:  # multimodal wrappers
            tc = get("text_config")
            return cls.from_config(tc if isinstance(tc, dict) else tc)
        h = int(get("hidden_size") or get("n_embd") or 0)
        heads = int(get("num_attention_heads") or get("n_head") or 0)
        if not h or not heads:
            raise ValueError("config has no hidden_size/num_attention_heads: not a decoder-only transformer "
                             "this estimator knows")
        head_dim = int(get("head_dim") or h // heads)
        return cls(hidden=h, intermediate=int(get("intermediate_size") or 4 * h),
                   layers=int(get("num_hidden_layers") or get("n_layer")),
                   heads=heads, kv_heads=int(get("num_key_value_heads") or heads), head_dim=head_dim,
                   vocab=int(get("vocab_size")), tied=bool(get("tie_word_embeddings", False)),
                   model_type=str(get("model_type") or "llama"))

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    def params(self) -> dict[str, int]:
        lin = sum(i * o for i, o in self.linear_shapes().values()) * self.layers
        emb = self.vocab * self.hidden
        head = 0 if self.tied else emb
        norms = (2 * self.layers + 1) * self.hidden
        return {"linear": lin, "embeddings": emb, "lm_head": head, "norms": norms,
                "total": lin + emb + head + norms}


def resolve_targets(target_modules: str | list[str] | None) -> tuple[list[str], list[str]]:
    """(known module names to adapt, unknown names) for a PEFT target_modules value."""
    if target_modules in (None, "all-linear", "all_linear", ["all-linear"]):
        return list(ALL_LINEAR), []
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    names = [t.split(".")[-1] for t in target_modules]
    known = [n for n in ALL_LINEAR if n in names]
    unknown = [n for n in names if n not in ALL_LINEAR]
    return known, unknown


@dataclass
class Estimate:
    weights: float
    lora_states: float
    activations: float
    logits: float
    transient: float
    total: float
    lora_params: int
    base_params: int
    logits_materialized: float
    bytes_per_lora_param: int
    weight_bits: float

    def gib(self) -> dict[str, float]:
        d = asdict(self)
        return {k: round(v / GIB, 2) for k, v in d.items()
                if k in ("weights", "lora_states", "activations", "logits", "transient", "total",
                         "logits_materialized")}


def estimate(shape: Shape, *, method: str = "lora", r: int = 16, target_modules=None,
             batch_size: int = 1, seq_len: int = 2048, gradient_checkpointing: bool = True,
             dtype: str = "bf16", lora_dropout: float = 0.0, fused_lm_head: bool = True,
             shards: int = 1) -> Estimate:
    """Peak allocated memory (bytes) for one training step on one device; see the module docstring.

    ``shards`` > 1: FSDP full sharding over that many GPUs - weights, LoRA parameters, gradients and
    optimizer states are split; each GPU gathers one decoder layer's full weights at a time plus one
    prefetched (2 layers); activations are per GPU as before.
    """
    a = 4 if dtype == "fp32" else 2
    p = shape.params()
    h, I, L = shape.hidden, shape.intermediate, shape.layers
    kv = shape.kv_heads * shape.head_dim
    q = shape.heads * shape.head_dim
    T = batch_size * seq_len
    targets, _unknown = resolve_targets(target_modules)
    lin = shape.linear_shapes()

    # weights
    other = p["embeddings"] + p["lm_head"] + p["norms"]
    if method == "qlora":
        weight_bits = NF4_BITS
        weights = p["linear"] * NF4_BITS / 8 + other * a
    else:
        weight_bits = a * 8
        weights = p["total"] * a

    # LoRA params + grads + AdamW moments
    lora_params = sum(r * (lin[t][0] + lin[t][1]) for t in targets) * L
    per = 8 if method == "qlora" else 16
    lora_states = lora_params * per

    # activations per token per layer
    layer = 2 * 4 * h                      # two RMSNorms keep an fp32 copy of their input
    layer += a * h * 2                     # normed inputs of attention and MLP (LoRA A inputs)
    layer += a * (q + 2 * kv) + a * q * 2  # q, k, v; SDPA output + its contiguous reshape for o_proj
    layer += a * I * 4                     # gate, SiLU(gate), up, and their product (down's input)
    layer += a * r * len(targets)          # x @ A for each adapter
    if lora_dropout > 0:
        layer += sum((a + 1) * lin[t][0] for t in targets)
    if gradient_checkpointing:
        activations = T * (L * a * h + layer + 3 * a * h)
    else:
        activations = T * (L * layer + 2 * a * h)

    # loss head
    n = T
    logits_materialized = n * shape.vocab * (a + 12)
    if fused_lm_head:
        tile = min(n, FUSED_TOKEN_TILE) * min(shape.vocab, FUSED_VOCAB_TILE) * a
        logits = 2 * tile + n * h * (4 + a)  # forward and backward tiles; fp32 grad of hidden + its cast
    else:
        logits = logits_materialized

    transient = 0.0
    if method == "qlora":
        transient = 2 * max(i * o for i, o in lin.values()) * 2
    if shards > 1:
        layer_weights = p["linear"] / L * (NF4_BITS / 8 if method == "qlora" else a)
        weights = weights / shards + 2 * layer_weights
        lora_states = lora_states / shards

    total = weights + lora_states + activations + logits + transient
    return Estimate(weights=weights, lora_states=lora_states, activations=activations, logits=logits,
                    transient=transient, total=total, lora_params=lora_params, base_params=p["total"],
                    logits_materialized=logits_materialized, bytes_per_lora_param=per,
                    weight_bits=round(weight_bits, 3))


def fits(total_bytes: float, device_gib: float) -> dict[str, Any]:
    need = total_bytes / GIB * (1 + FRAGMENTATION) + CONTEXT_GIB
    verdict = "fits" if need <= 0.92 * device_gib else ("tight" if need <= device_gib else "does_not_fit")
    return {"need_gib": round(need, 2), "device_gib": round(device_gib, 2), "verdict": verdict,
            "headroom_gib": round(device_gib - need, 2)}


def suggestions(shape: Shape, params: dict[str, Any], device_gib: float,
                seq_hint: int | None = None) -> list[dict[str, Any]]:
    """Changes that would make the run fit, cheapest in quality first, each with its new estimate."""
    out = []

    def add(what: str, change: dict[str, Any]):
        p2 = {**params, **change}
        e = estimate(shape, **p2)
        f = fits(e.total, device_gib)
        out.append({"change": what, "set": change, "estimate_gib": round(e.total / GIB, 2),
                    "verdict": f["verdict"]})

    if not params.get("gradient_checkpointing"):
        add("enable gradient checkpointing (recompute: ~6N instead of ~4N FLOPs per token, far less "
            "activation memory)",
            {"gradient_checkpointing": True})
    if params.get("lora_dropout", 0) > 0:
        add("set lora dropout to 0 (no dropped input copies to keep)", {"lora_dropout": 0.0})
    if params.get("batch_size", 1) > 1:
        b = max(1, params["batch_size"] // 2)
        add(f"halve the batch to {b} and double --grad-accum (same effective batch)", {"batch_size": b})
    if params.get("method") != "qlora":
        add("use QLoRA (--method qlora: 4-bit base weights, CUDA only)", {"method": "qlora"})
    seq = params.get("seq_len", 2048)
    shorter = seq_hint if seq_hint and seq_hint < seq else seq // 2
    if shorter >= 128 and shorter < seq:
        add(f"shorter sequences: --max-seq-length {shorter}", {"seq_len": shorter})
    if params.get("batch_size", 1) > 1 or params.get("method") != "qlora":
        add("QLoRA + batch 1 + gradient checkpointing",
            {"method": "qlora", "batch_size": 1, "gradient_checkpointing": True})
    rank = {"fits": 0, "tight": 1, "does_not_fit": 2}
    return sorted(out, key=lambda s: rank[s["verdict"]])  # stable: cheapest change first within a verdict


def estimate_report(shape: Shape, params: dict[str, Any], device: dict[str, Any],
                    seq_hint: int | None = None) -> dict[str, Any]:
    """The preflight's memory section: breakdown, verdict against ``device``, what to change."""
    e = estimate(shape, **params)
    rep: dict[str, Any] = {"estimate_gib": e.gib(), "lora_params": e.lora_params, "base_params": e.base_params,
                           "weight_bits_per_param": e.weight_bits, "inputs": params, "device": device,
                           "note": "estimate of torch's peak allocated memory for TRL SFTTrainer + PEFT; "
                                   f"the verdict adds {CONTEXT_GIB} GiB CUDA context and "
                                   f"{int(FRAGMENTATION * 100)}% fragmentation"}
    if device.get("memory_gib"):
        rep["fit"] = fits(e.total, device["memory_gib"])
        if rep["fit"]["verdict"] != "fits":
            rep["suggestions"] = suggestions(shape, params, device["memory_gib"], seq_hint)
    return rep


def detect_device() -> dict[str, Any]:
    """The training device: the first CUDA GPU, Apple MPS, or the CPU with system RAM."""
    try:
        import torch
    except ImportError:  # pragma: no cover - train extra missing
        torch = None
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {"kind": "cuda", "name": props.name, "memory_gib": round(props.total_memory / GIB, 2),
                "bf16": bool(torch.cuda.is_bf16_supported()), "source": "detected"}
    if torch is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return {"kind": "mps", "name": "Apple MPS", "memory_gib": round(_ram_gib(), 2), "bf16": False,
                "source": "detected (unified memory)"}
    return {"kind": "cpu", "name": "CPU", "memory_gib": round(_ram_gib(), 2), "bf16": False,
            "source": "detected (system RAM)"}


def named_gpu(name: str) -> dict[str, Any]:
    g = GPUS[name]
    return {"kind": "cuda", "name": g["name"], "memory_gib": g["memory_gib"], "bf16": g["bf16"],
            "source": f"--gpu {name} (planning)"}


def _ram_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return 0.0


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of estimates (used by training.md and bench/train.py)."""
    from .cli import table as _table

    head = ["model", "method", "r", "batch x seq", "ckpt", "weights", "LoRA+Adam", "activations",
            "loss head", "total GiB"] + [f"{g}" for g in GPUS]
    out = []
    for r in rows:
        shape = Shape.from_config(KNOWN_SHAPES[r["model"]]) if isinstance(r["model"], str) else r["model"]
        params = {k: v for k, v in r.items() if k != "model"}
        e = estimate(shape, **params)
        g = e.gib()
        verdicts = [fits(e.total, GPUS[k]["memory_gib"])["verdict"].replace("does_not_fit", "no")
                    for k in GPUS]
        out.append([r["model"], params.get("method", "lora"), params.get("r", 16),
                    f"{params.get('batch_size', 1)} x {params.get('seq_len', 2048)}",
                    "on" if params.get("gradient_checkpointing", True) else "off",
                    g["weights"], g["lora_states"], g["activations"], g["logits"], g["total"], *verdicts])
    return _table(head, out, "lllllrrrrr" + "l" * len(GPUS))
