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

Beyond the Llama block: Qwen3.5's Gated DeltaNet layers (their own projections, counted per layer kind) and
gated attention (``q_proj`` twice as wide), and MoE models (fused expert weights: counted in the weights in
the compute dtype - bitsandbytes quantizes ``nn.Linear`` only - not adapted by ``all-linear`` LoRA, with the
activations of the routed experts). Parameter and LoRA counts are checked against real transformers models
in the tests. ``shards`` gives the per-GPU figure under FSDP full sharding.
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
    # Current open bases (as of 2026-11-30; config.json fields from the model pages, see training.md section 5)
    "qwen3.5-9b": {"model_type": "qwen3_5_text", "hidden_size": 4096, "intermediate_size": 12288,
                   "num_hidden_layers": 32, "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 256,
                   "vocab_size": 248320, "tie_word_embeddings": False, "attn_output_gate": True,
                   "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 8,
                   "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
                   "linear_value_head_dim": 128, "_source": "https://huggingface.co/Qwen/Qwen3.5-9B"},
    "qwen3.5-27b": {"model_type": "qwen3_5_text", "hidden_size": 5120, "intermediate_size": 17408,
                    "num_hidden_layers": 64, "num_attention_heads": 24, "num_key_value_heads": 4, "head_dim": 256,
                    "vocab_size": 248320, "tie_word_embeddings": False, "attn_output_gate": True,
                    "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 16,
                    "linear_num_key_heads": 16, "linear_num_value_heads": 48, "linear_key_head_dim": 128,
                    "linear_value_head_dim": 128, "_source": "https://huggingface.co/Qwen/Qwen3.5-27B"},
    "gemma-4-31b": {"model_type": "gemma4_text", "hidden_size": 5376, "intermediate_size": 21504,
                    "num_hidden_layers": 60, "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 256,
                    "vocab_size": 262144, "tie_word_embeddings": True,
                    "_approximate": "its 10 global-attention layers (head_dim 512, 4 KV heads) are counted as "
                                    "sliding-window layers: 30.1B of 30.7B parameters",
                    "_source": "https://huggingface.co/google/gemma-4-31B-it"},
    "gpt-oss-20b": {"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
                    "num_hidden_layers": 24, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
                    "vocab_size": 201088, "tie_word_embeddings": False, "num_local_experts": 32,
                    "num_experts_per_tok": 4,
                    "_approximate": "experts in bf16 (the MXFP4 checkpoint dequantized for training; bitsandbytes "
                                    "does not quantize fused experts, so QLoRA shrinks attention only)",
                    "_source": "https://huggingface.co/openai/gpt-oss-20b"},
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
    attn_gate: bool = False          # Qwen3.5/Qwen3-Next gated attention: q_proj also produces the gate
    linear_attn_layers: int = 0      # Gated DeltaNet (linear attention) layers among ``layers``
    lin_qk_heads: int = 0
    lin_v_heads: int = 0
    lin_qk_dim: int = 0
    lin_v_dim: int = 0
    lin_conv_kernel: int = 4
    experts: int = 0                 # MoE: experts per layer (fused parameters, not nn.Linear)
    experts_active: int = 0          # experts per token
    expert_intermediate: int = 0

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
        layer_types = get("layer_types") or []
        experts = int(get("num_local_experts") or get("num_experts") or 0)
        inter = int(get("intermediate_size") or 4 * h)
        return cls(hidden=h, intermediate=inter,
                   layers=int(get("num_hidden_layers") or get("n_layer")),
                   heads=heads, kv_heads=int(get("num_key_value_heads") or heads), head_dim=head_dim,
                   vocab=int(get("vocab_size")), tied=bool(get("tie_word_embeddings", False)),
                   model_type=str(get("model_type") or "llama"),
                   attn_gate=bool(get("attn_output_gate",  # always on in transformers' Qwen3.5 / Qwen3-Next
                                      str(get("model_type") or "").startswith(("qwen3_5", "qwen3_next")))),
                   linear_attn_layers=sum(1 for t in layer_types if t == "linear_attention") if layer_types else
                   (int(get("num_hidden_layers")) - int(get("num_hidden_layers")) // int(get("full_attention_interval"))
                    if get("full_attention_interval") and get("linear_num_value_heads") else 0),
                   lin_qk_heads=int(get("linear_num_key_heads") or 0), lin_v_heads=int(get("linear_num_value_heads") or 0),
                   lin_qk_dim=int(get("linear_key_head_dim") or 0), lin_v_dim=int(get("linear_value_head_dim") or 0),
                   lin_conv_kernel=int(get("linear_conv_kernel_dim") or 4),
                   experts=experts,
                   experts_active=int(get("num_experts_per_tok") or get("experts_per_token") or 0) if experts else 0,
                   expert_intermediate=int(get("moe_intermediate_size") or inter) if experts else 0)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of the nn.Linear modules LoRA can adapt in a full-attention layer (MLP absent for MoE:
        its experts are fused parameters)."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        out = {"q_proj": (self.hidden, q * (2 if self.attn_gate else 1)), "k_proj": (self.hidden, kv),
               "v_proj": (self.hidden, kv), "o_proj": (q, self.hidden)}
        if not self.experts:
            out.update({"gate_proj": (self.hidden, self.intermediate), "up_proj": (self.hidden, self.intermediate),
                        "down_proj": (self.intermediate, self.hidden)})
        return out

    def linear_attn_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of a Gated DeltaNet layer's projections (Qwen3.5)."""
        if not self.linear_attn_layers:
            return {}
        k, v = self.lin_qk_heads * self.lin_qk_dim, self.lin_v_heads * self.lin_v_dim
        return {"in_proj_qkv": (self.hidden, 2 * k + v), "in_proj_z": (self.hidden, v),
                "in_proj_b": (self.hidden, self.lin_v_heads), "in_proj_a": (self.hidden, self.lin_v_heads),
                "out_proj": (v, self.hidden)}

    def module_groups(self) -> list[tuple[int, dict[str, tuple[int, int]]]]:
        """(number of layers, their adaptable linear modules) per layer kind."""
        full = self.linear_shapes()
        if not self.linear_attn_layers:
            return [(self.layers, full)]
        mlp = {k: v for k, v in full.items() if k in MLP}
        attn = {k: v for k, v in full.items() if k in ATTN}
        return [(self.layers - self.linear_attn_layers, {**attn, **mlp}),
                (self.linear_attn_layers, {**self.linear_attn_shapes(), **mlp})]

    def expert_params(self) -> int:
        """MoE expert weights (gate, up, down per expert, every layer) plus the router."""
        if not self.experts:
            return 0
        return self.layers * (self.experts * 3 * self.hidden * self.expert_intermediate + self.hidden * self.experts)

    def params(self) -> dict[str, int]:
        lin = sum(n * sum(i * o for i, o in mods.values()) for n, mods in self.module_groups())
        experts = self.expert_params()
        emb = self.vocab * self.hidden
        head = 0 if self.tied else emb
        norms = (2 * self.layers + 1) * self.hidden
        conv = self.linear_attn_layers * (2 * self.lin_qk_heads * self.lin_qk_dim + self.lin_v_heads * self.lin_v_dim) \
            * self.lin_conv_kernel  # DeltaNet's causal conv (biases, gpt-oss sinks and small norms are not counted)
        return {"linear": lin, "experts": experts, "embeddings": emb, "lm_head": head, "norms": norms + conv,
                "total": lin + experts + emb + head + norms + conv}


LINEAR_ATTN = ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj")


def resolve_targets(target_modules: str | list[str] | None) -> tuple[list[str], list[str]]:
    """(known module names to adapt, unknown names) for a PEFT target_modules value."""
    known_names = ALL_LINEAR + LINEAR_ATTN
    if target_modules in (None, "all-linear", "all_linear", ["all-linear"]):
        return list(known_names), []
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    names = [t.split(".")[-1] for t in target_modules]
    known = [n for n in known_names if n in names]
    unknown = [n for n in names if n not in known_names]
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
    groups = shape.module_groups()
    moe_i = shape.experts_active * shape.expert_intermediate if shape.experts else I

    # weights (bitsandbytes quantizes nn.Linear only: fused MoE experts stay in the compute dtype)
    other = p["embeddings"] + p["lm_head"] + p["norms"] + p["experts"]
    nf4_bytes = NF4_BITS / 8
    if method == "qlora":
        weight_bits = NF4_BITS
        weights = p["linear"] * nf4_bytes + other * a
    else:
        weight_bits = a * 8
        weights = p["total"] * a

    # LoRA params + grads + AdamW moments
    lora_params = sum(n * sum(r * (mods[t][0] + mods[t][1]) for t in targets if t in mods) for n, mods in groups)
    per = 8 if method == "qlora" else 16
    lora_states = lora_params * per

    # activations per token, for each kind of layer
    def layer_act(mods: dict[str, tuple[int, int]]) -> float:
        here = [t for t in targets if t in mods]
        x = 2 * 4 * h                      # two RMSNorms keep an fp32 copy of their input
        x += a * h * 2                     # normed inputs of attention and MLP (LoRA A inputs)
        if "in_proj_qkv" in mods:          # Gated DeltaNet: q, k, v, z projections; output + its gate
            x += a * (mods["in_proj_qkv"][1] + mods["in_proj_z"][1]) + a * mods["out_proj"][0] * 2
        else:                              # q (and its gate), k, v; SDPA output + its reshape for o_proj
            x += a * (q * (2 if shape.attn_gate else 1) + 2 * kv) + a * q * 2
        x += a * moe_i * 4                 # gate, SiLU(gate), up, their product (per routed expert for MoE)
        x += a * r * len(here)             # x @ A for each adapter
        if lora_dropout > 0:
            x += sum((a + 1) * mods[t][0] for t in here)
        return x

    acts = [(n, layer_act(mods)) for n, mods in groups]
    if gradient_checkpointing:
        activations = T * (L * a * h + max(x for _, x in acts) + 3 * a * h)
    else:
        activations = T * (sum(n * x for n, x in acts) + 2 * a * h)

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
        transient = 2 * max(i * o for _, mods in groups for i, o in mods.values()) * 2
    if shards > 1:
        layer_weights = (p["linear"] * (nf4_bytes if method == "qlora" else a) + p["experts"] * a) / L
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
        add("use QLoRA (--method qlora: 4-bit base weights)", {"method": "qlora"})
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
