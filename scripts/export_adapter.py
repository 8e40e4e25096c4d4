#!/usr/bin/env python3
"""Export a LoRA adapter for Ollama, vLLM and OpenClaw, optionally as verified merged weights."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_kit import bootstrap  # noqa: E402  (stdlib only)

bootstrap.ensure(__file__)  # re-runs with <skill>/.venv when that is where the packages are
from finetune_kit import cli  # noqa: E402
from finetune_kit.errors import UsageError  # noqa: E402


def build_parser():
    p = cli.make_parser(
        "export_adapter",
        "Turn the adapter directory written by train_lora.py into something you can serve:\n"
        "  - Modelfile          Ollama: FROM the base, ADAPTER ./adapter, TEMPLATE + stop tokens derived\n"
        "                       from the tokenizer's chat template (ChatML, Llama-3, Gemma)\n"
        "  - vllm_serve.sh      vllm serve BASE --enable-lora --lora-modules NAME=PATH --max-lora-rank R\n"
        "  - openclaw.patch.json5  registers the Ollama model in ~/.openclaw/openclaw.json\n"
        "  - merged/ (--merge)  base+adapter merged (bf16), verified against the unmerged adapter by logits\n"
        "  - adapter.gguf (--gguf)  the adapter as a llama.cpp LoRA GGUF, checked tensor by tensor; the\n"
        "                       Modelfile then says ADAPTER ./adapter.gguf, which Ollama/llama.cpp load for\n"
        "                       every architecture llama.cpp supports. With --merge also merged.gguf +\n"
        "                       Modelfile.merged. Needs llama.cpp's converter scripts (no build): --llama-cpp\n"
        "                       or `pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d\n"
        "                       ~/.cache/llama-cpp` once\n"
        "  - README.md, export_manifest.json, adapter/ (a copy of the adapter, tens of MB)\n"
        "Warns where Ollama or vLLM cannot load the adapter (architecture, rsLoRA, DoRA, modules_to_save)\n"
        "and says what to do instead. Exit 1 when the merge verification fails (nothing is written).",
        cli.examples_for("export_adapter", "out/adapter --output-dir out/export",
                         "out/adapter --output-dir out/export --gguf",
                         "out/adapter --output-dir out/export --merge --json",
                         "out/adapter --output-dir out/export --ollama-base llama3.2:1b --name ticket-router"))
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="adapter directory (adapter_config.json + "
                   "adapter_model.safetensors), e.g. the --output-dir of train_lora.py")
    p.add_argument("--output-dir", "-o", required=True, metavar="DIR", help="export directory to create")
    p.add_argument("--name", help="model name for Ollama/vLLM/OpenClaw (default: the adapter folder name)")
    p.add_argument("--base-model", metavar="SPEC", help="base model (hub id, local HF dir, .gguf, or "
                   "smollm2-135m); default: base_model_name_or_path in adapter_config.json")
    p.add_argument("--ollama-base", metavar="NAME", help="what the Modelfile's FROM says: an Ollama tag "
                   "(e.g. llama3.2:1b) or a .gguf of exactly the same weights (default: the base's GGUF or dir)")
    p.add_argument("--merge", nargs="?", const="", default=None, metavar="DIR",
                   help="also write merged weights, verified by logits (default DIR: OUTPUT_DIR/merged)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"],
                   help="dtype of the merged weights (default: bf16)")
    p.add_argument("--tolerance", type=cli.positive_float, default=1e-3, metavar="ATOL",
                   help="merge check: max |logit diff| allowed between merged and unmerged models, at least "
                        "ATOL and at least 1e-4 x the largest logit (default: 1e-3)")
    p.add_argument("--ollama-host", default="http://127.0.0.1:11434", metavar="URL",
                   help="Ollama URL for the OpenClaw config (native API, no /v1)")
    p.add_argument("--gguf", action="store_true",
                   help="also write the adapter as a llama.cpp LoRA GGUF (adapter.gguf) and point the "
                        "Modelfile's ADAPTER at it; with --merge also merged.gguf")
    p.add_argument("--llama-cpp", metavar="PATH",
                   help="where llama.cpp's convert_lora_to_gguf.py is: a llama.cpp checkout, a llama-cpp-python "
                        "source folder or its .tar.gz (default: $LLAMA_CPP_DIR, the cache, ~/.cache/llama-cpp)")
    p.add_argument("--gguf-outtype", default="f16", choices=["f32", "f16", "bf16", "q8_0"],
                   help="tensor type of adapter.gguf (default: f16)")
    p.add_argument("--gguf-quant", default="q8_0",
                   choices=["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k_m", "q5_k_m", "q6_k"],
                   help="type of merged.gguf with --merge --gguf (default: q8_0; the 4-6 bit types need an "
                        "installed llama-cpp-python for llama.cpp's quantizer)")
    p.add_argument("--no-copy-adapter", action="store_true",
                   help="reference the adapter in place instead of copying it into OUTPUT_DIR/adapter")
    return p


def handle(args) -> cli.Result:
    from finetune_kit import export

    if args.tolerance is None or not (args.tolerance > 0):
        raise UsageError("--tolerance must be a positive number")
    if args.llama_cpp and not args.gguf:
        raise UsageError("--llama-cpp only matters with --gguf; add --gguf")
    doc = export.export(args.adapter_dir, args.output_dir, name=args.name, base_model=args.base_model,
                        ollama_base=args.ollama_base, merge=args.merge or None,
                        merge_requested=args.merge is not None, dtype=args.dtype, atol=args.tolerance,
                        ollama_host=args.ollama_host, force=args.force, copy_adapter=not args.no_copy_adapter,
                        gguf=args.gguf, llama_cpp=args.llama_cpp,
                        gguf_outtype=args.gguf_outtype, gguf_quant=args.gguf_quant)
    lines = [f"Exported {doc['name']} to {doc['output_dir']}"]
    ct = doc["chat_template"]
    lines.append(f"  Ollama : {'ready' if doc['ollama']['ready'] else 'NOT importable as adapter (see warnings)'}"
                 f" - {doc['ollama']['create_command']}  [template: {ct.get('family') or 'none'}]")
    g = doc.get("gguf")
    if g and g.get("file"):
        tc = g["tensor_check"]
        lines.append(f"  GGUF   : {g['file']} ({g['outtype']}, {g['size_bytes'] / 1e6:.1f} MB), {tc['tensors_checked']} "
                     f"LoRA updates match the adapter (max rel. error {tc['max_rel_error']:.1e}); FROM must be "
                     f"{g['pair_with']}")
    gc = ct.get("gguf_check")
    if gc and gc.get("checked"):
        lines.append(f"  template: Modelfile vs the FROM GGUF's own chat template: "
                     f"{'same prompt' if gc.get('jinja_matches') else 'DIFFERENT'} on {gc['checked']} conversations; "
                     f"stop covers {', '.join(gc['eog_tokens']) or '-'}: {'yes' if gc.get('stop_covers_eog') else 'NO'}")
    lines.append(f"  vLLM   : {'ready' if doc['vllm']['ready'] else 'adapter rejected (see warnings)'}"
                 f" - {doc['vllm']['command']}")
    lines.append(f"  OpenClaw: {doc['openclaw']['apply_command']}  (model {doc['openclaw']['model_ref']})")
    m = doc.get("merge")
    if m:
        lines.append(f"  merged : {m['output']} ({m['dtype']}), max |logit diff| vs unmerged "
                     f"{m['merge_check']['max_abs_diff']:.2e} <= {m['merge_check']['tolerance']:.2e}, "
                     f"saved files {m['saved_check']['max_abs_diff']:.2e}; top-1 agreement after "
                     f"{m['dtype']} {m['precision_vs_unmerged']['top1_agreement']:.1%}")
        if m.get("gguf"):
            lines.append(f"  merged GGUF: {m['gguf']['file']} ({m['gguf']['type']}, {m['gguf']['size_bytes'] / 1e6:.0f} MB)"
                         f" - ollama create {doc['name']} -f Modelfile.merged")
    if doc["warnings"]:
        lines.append(cli.color(f"{len(doc['warnings'])} warning(s):", "yellow"))
        for w in doc["warnings"]:
            lines.append(f"  - [{w['code']}] {w['message']}" + (f" -> {w['hint']}" if w["hint"] else ""))
    lines.append(f"See {doc['output_dir']}/README.md")
    outputs = [os.path.join(doc["output_dir"], f) for f in doc["files"] if not f.startswith("merged")]
    return cli.Result(doc, "\n".join(lines), inputs=[os.path.join(doc["adapter_dir"], "adapter_config.json")],
                      outputs=outputs,
                      summary={"name": doc["name"], "ollama_ready": doc["ollama"]["ready"],
                               "vllm_ready": doc["vllm"]["ready"], "warnings": len(doc["warnings"]),
                               "merged": bool(m), "gguf": bool(g and g.get("file"))})


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
