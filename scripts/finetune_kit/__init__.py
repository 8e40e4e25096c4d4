"""finetune_kit: the library behind the `fine-tuning` skill's scripts.

Every script in ``scripts/`` is a thin entry point (argument parsing) that calls into a
module here. Shared pieces: ``chat`` (the one chat-format model and parser), ``jsonl``
(streaming reader, atomic writers), ``cli`` (the CLI contract: --json, exit codes,
one-line errors, audit), ``audit`` (tamper-evident log), ``tokens`` (offline-capable
tokenizers), ``models`` (base-model loading incl. GGUF).
"""

__version__ = "0.1.0"
