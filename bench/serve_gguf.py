#!/usr/bin/env python3
"""Serve the demo's adapter for real with llama.cpp and compare with the transformers answers.

Takes a finished `make demo` output (adapter/, eval/predictions.jsonl from evaluate.py), then:
  1. export_adapter.py --gguf: adapter.gguf + Modelfile (FROM the demo's base GGUF, ADAPTER ./adapter.gguf)
  2. loads base GGUF + adapter.gguf in llama-cpp-python (llama.cpp's own LoRA loader) and generates
     greedily on the same held-out tickets, from the prompt the Modelfile's TEMPLATE + SYSTEM build
     (what Ollama sends), tokenized by llama.cpp;
  3. compares each served answer with evaluate.py's transformers answer of the same adapter (greedy,
     same max_new_tokens), and the served exact match with evaluate.py's figure.
Bases: `q4_1` is the demo's own GGUF (SmolLM2-135M-Instruct.Q4_1, the weights the adapter was trained
on after dequantization); `f32` is the dequantized weights converted back with convert_hf_to_gguf.py
(exact float weights: separates llama.cpp's Q4_1 kernels from the LoRA conversion). `--no-adapter`
rows serve the base alone as a control (the adapter must matter).

Needs llama-cpp-python (pip install llama-cpp-python==0.3.36: builds llama.cpp from source, minutes)
and llama.cpp's converter scripts (export_adapter.py --llama-cpp / ~/.cache/llama-cpp).

  python3 bench/serve_gguf.py --demo-dir demo-output
  python3 bench/serve_gguf.py --demo-dir demo-output --limit 5 --bases q4_1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("FT_CACHE_DIR", str(ROOT / ".cache" / "fine-tuning"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from finetune_kit import export, export_gguf, metrics  # noqa: E402

AGREE_MIN, EM_POINTS = 0.95, 3.0


def load_demo(demo: Path, limit: int | None) -> tuple[list[dict], dict]:
    preds = demo / "eval" / "predictions.jsonl"
    if not preds.is_file() or not (demo / "adapter" / "adapter_config.json").is_file():
        raise SystemExit(f"{demo} is not a finished demo output (needs adapter/ and eval/predictions.jsonl): "
                         f"run `make demo` first")
    rows = [json.loads(x) for x in preds.read_text(encoding="utf-8").splitlines() if x.strip()]
    ev = next((json.loads(p.read_text()) for p in sorted((demo / "stages").glob("*_evaluate.json"))), {})
    return rows[:limit] if limit else rows, ev


def export_gguf_dir(demo: Path, work: Path, llama_cpp: str | None, outtype: str) -> dict:
    out = work / f"export-{outtype}"
    cmd = [sys.executable, str(ROOT / "scripts" / "export_adapter.py"), str(demo / "adapter"), "--output-dir",
           str(out), "--gguf", "--gguf-outtype", outtype, "--force", "--json"]
    if llama_cpp:
        cmd += ["--llama-cpp", llama_cpp]
    t = time.time()
    cp = subprocess.run(cmd, capture_output=True, text=True)
    if cp.returncode != 0:
        raise SystemExit(f"export_adapter.py --gguf failed (exit {cp.returncode}): {cp.stderr.strip()[-400:]}")
    doc = json.loads(cp.stdout)
    doc["_seconds"] = round(time.time() - t, 1)
    return doc


def f32_base(work: Path, hf_dir: str, llama: export_gguf.LlamaCpp) -> Path:
    out = work / "base.f32.gguf"
    if not out.is_file():
        export_gguf._run_converter([sys.executable, str(llama.root / export_gguf.HF_CONVERTER), hf_dir,
                                    "--outfile", str(out), "--outtype", "f32"], "convert_hf_to_gguf.py")
    return out


def serve(base_gguf: Path, adapter_gguf: Path | None, prompts: list[str], max_new: int, threads: int) -> dict:
    import llama_cpp

    kw: dict[str, Any] = {"model_path": str(base_gguf), "n_ctx": 1024, "n_threads": threads, "n_batch": 512,
                          "seed": 0, "verbose": False}
    if adapter_gguf is not None:
        kw["lora_path"] = str(adapter_gguf)
    t = time.time()
    llm = llama_cpp.Llama(**kw)
    load_s = time.time() - t
    outs, ids, n_tok = [], [], 0
    t = time.time()
    for p in prompts:
        toks = llm.tokenize(p.encode("utf-8"), add_bos=True, special=True)   # BOS only if the GGUF asks
        ids.append(toks)
        r = llm.create_completion(toks, max_tokens=max_new, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                  repeat_penalty=1.0, seed=0)
        outs.append(r["choices"][0]["text"])
        n_tok += r["usage"]["completion_tokens"]
        llm.reset()
    gen_s = time.time() - t
    del llm
    return {"outputs": outs, "token_ids": ids, "load_s": round(load_s, 2), "gen_s": round(gen_s, 2),
            "tokens_per_s": round(n_tok / gen_s, 1) if gen_s else None}


def compare(rows: list[dict], served: list[str], side: str = "prediction_b") -> dict:
    same = [s.strip() == (r.get(side) or "").strip() for r, s in zip(rows, served)]
    em_served = [metrics.exact_match(s, r["reference"]) for r, s in zip(rows, served)]
    em_tf = [metrics.exact_match(r.get(side), r["reference"]) for r in rows]
    n = len(rows)
    return {"n": n, "agreement": sum(same) / n, "em_served": sum(em_served) / n, "em_transformers": sum(em_tf) / n,
            "em_diff_points": 100 * (sum(em_served) - sum(em_tf)) / n,
            "disagreements": [{"index": r["index"], "transformers": r.get(side), "served": s}
                              for r, s, ok in zip(rows, served, same) if not ok][:10]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-dir", default=str(ROOT / "demo-output"))
    ap.add_argument("--export-dir", help="serve this existing export_adapter.py --gguf output instead of exporting")
    ap.add_argument("--work-dir", default=str(ROOT / "bench" / "out" / "serve_gguf"))
    ap.add_argument("--llama-cpp", help="llama.cpp converter location (see export_adapter.py --llama-cpp)")
    ap.add_argument("--bases", default="q4_1,f32", help="comma list of q4_1 (the demo's GGUF) and f32")
    ap.add_argument("--outtypes", default="f16", help="adapter.gguf types to try, comma list (f32,f16,q8_0)")
    ap.add_argument("--limit", type=int, help="first N held-out tickets only")
    ap.add_argument("--max-new-tokens", type=int, default=24, help="as the demo's evaluate stage (24)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-control", action="store_true", help="skip the base-without-adapter control")
    ap.add_argument("--results", help="write a Markdown summary here (e.g. bench/results/serve_gguf.md)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        import llama_cpp
    except ImportError:
        print(f"llama-cpp-python is not installed: pip install {export_gguf.SDIST} (builds from source)",
              file=sys.stderr)
        return 2
    demo, work = Path(a.demo_dir).absolute(), Path(a.work_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    rows, ev = load_demo(demo, a.limit)
    ev_max_new = ((ev.get("generation") or {}).get("max_new_tokens") if isinstance(ev, dict) else None)
    results: dict[str, Any] = {"demo_dir": str(demo), "tickets": len(rows), "llama_cpp_python": llama_cpp.__version__,
                               "max_new_tokens": a.max_new_tokens, "runs": []}
    if ev_max_new and ev_max_new != a.max_new_tokens:
        print(f"note: evaluate.py used max_new_tokens={ev_max_new}", file=sys.stderr)
    llama = export_gguf.find_llama_cpp(a.llama_cpp) if (a.llama_cpp or not a.export_dir or "f32" in a.bases) else None
    tok = None
    if a.export_dir:
        doc = json.loads((Path(a.export_dir) / "export_manifest.json").read_text(encoding="utf-8"))
        if not (doc.get("gguf") or {}).get("file"):
            raise SystemExit(f"{a.export_dir} has no adapter.gguf: export with --gguf")
        doc["_seconds"] = None
        a.outtypes = doc["gguf"]["outtype"]
    for outtype in a.outtypes.split(","):
        if not a.export_dir:
            doc = export_gguf_dir(demo, work, a.llama_cpp, outtype)
        g, ct = doc["gguf"], doc["chat_template"]
        results.setdefault("export", {})[outtype] = {
            "seconds": doc["_seconds"], "size_bytes": g["size_bytes"], "tensor_check": g["tensor_check"],
            "modelfile_adapter": doc["ollama"]["adapter"], "from": doc["ollama"]["from"],
            "template_check": ct.get("gguf_check")}
        if tok is None:
            from finetune_kit import models

            tok = models.load_tokenizer(str(demo / "adapter"))
            convs = [r["prompt_messages"] for r in rows]
            prompts = [export.simulate_go_template(ct["family"], c, ct.get("default_system")) for c in convs]
            hf = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
            results["prompt_equal_to_training_template"] = sum(p == h for p, h in zip(prompts, hf)) / len(rows)
            hf_ids = [tok(h, add_special_tokens=False)["input_ids"] for h in hf]
        bases = {"q4_1": Path(doc["ollama"]["from"])}
        if "f32" in a.bases.split(","):
            bases["f32"] = f32_base(work, doc["base_model"]["hf_dir"], llama)
        for bname in a.bases.split(","):
            s = serve(bases[bname], Path(doc["output_dir"]) / "adapter.gguf", prompts, a.max_new_tokens, a.threads)
            run = {"base": bname, "adapter_outtype": outtype, **compare(rows, s["outputs"]),
                   "prompt_tokens_equal_hf": sum(list(x) == list(y) for x, y in zip(s["token_ids"], hf_ids)) / len(rows),
                   "load_s": s["load_s"], "gen_s": s["gen_s"], "tokens_per_s": s["tokens_per_s"]}
            run["passed"] = run["agreement"] >= AGREE_MIN and abs(run["em_diff_points"]) <= EM_POINTS
            results["runs"].append(run)
            print(f"{bname} + adapter.gguf({outtype}): agreement {run['agreement']:.1%}, EM served "
                  f"{run['em_served']:.3f} vs transformers {run['em_transformers']:.3f}", file=sys.stderr)
    if not a.no_control:
        s = serve(Path(results["export"][a.outtypes.split(",")[0]]["from"]), None, prompts, a.max_new_tokens, a.threads)
        c = compare(rows, s["outputs"], side="prediction_a")
        results["control_base_only"] = {"em_served_base": c["em_served"], "em_transformers_base": c["em_transformers"],
                                        "agreement_with_transformers_base": c["agreement"],
                                        "agreement_with_adapter_answers": compare(rows, s["outputs"])["agreement"]}
    results["passed"] = all(r["passed"] for r in results["runs"])
    if a.results:
        Path(a.results).write_text(markdown(results, a), encoding="utf-8")
    if a.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(markdown(results, a))
    return 0 if results["passed"] else 1


def markdown(res: dict, a) -> str:
    L = ["# Serving the exported adapter with llama.cpp (bench/serve_gguf.py)", "",
         f"Command: `python3 bench/serve_gguf.py --demo-dir {a.demo_dir} --bases {a.bases} --outtypes {a.outtypes}"
         + (f" --limit {a.limit}" if a.limit else "") + "`", "",
         f"{res['tickets']} held-out tickets of the demo; llama-cpp-python {res['llama_cpp_python']}; greedy, "
         f"max {res['max_new_tokens']} new tokens. The served prompt is the Modelfile's TEMPLATE + SYSTEM rendering "
         f"(what Ollama sends); it equals the training chat template's on "
         f"{res.get('prompt_equal_to_training_template', 0):.0%} of tickets.", "",
         "| base GGUF | adapter.gguf | served == transformers | EM served | EM evaluate.py | diff (points) | "
         "prompt tokens == HF | gen tok/s | pass |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["runs"]:
        L.append(f"| {r['base']} | {r['adapter_outtype']} | {r['agreement']:.1%} | {r['em_served']:.3f} | "
                 f"{r['em_transformers']:.3f} | {r['em_diff_points']:+.1f} | {r['prompt_tokens_equal_hf']:.0%} | "
                 f"{r['tokens_per_s']} | {'yes' if r['passed'] else 'NO'} |")
    c = res.get("control_base_only")
    if c:
        L += ["", f"Control, base GGUF without the adapter: EM {c['em_served_base']:.3f} (evaluate.py's base: "
              f"{c['em_transformers_base']:.3f}); its answers equal the adapter's on "
              f"{c['agreement_with_adapter_answers']:.1%} of tickets, so the served adapter is what changes them."]
    for k, e in (res.get("export") or {}).items():
        tc, gc = e["tensor_check"], e.get("template_check") or {}
        L += ["", f"Export ({k}): {e['seconds'] if e['seconds'] is not None else '-'} s, adapter.gguf {e['size_bytes'] / 1e6:.1f} MB, "
              f"{tc['tensors_checked']} LoRA updates max rel. error {tc['max_rel_error']:.1e}; template vs the GGUF's "
              f"own (3 conversations): jinja (llama.cpp's default) {'same' if gc.get('jinja_matches') else 'DIFFERENT'}, "
              f"llama.cpp built-in (--no-jinja) same on {gc.get('builtin_same', '-')}/{gc.get('builtin_checked', 0)}; stop covers "
              f"{', '.join(gc.get('eog_tokens') or [])}: {gc.get('stop_covers_eog')}."]
    bad = [(r, d) for r in res["runs"] for d in r["disagreements"]][:6]
    if bad:
        L += ["", "Disagreements (transformers | served):", ""]
        L += [f"- {r['base']} + {r['adapter_outtype']}, ticket #{d['index']}: `{d['transformers']}` | `{d['served']}`"
              for r, d in bad]
    L += ["", "Generation speed (gen tok/s) is one process on 2 cores shared with other jobs: compare rows of one "
          "run only, and not as a benchmark of llama.cpp."]
    L += ["", f"Pass: served == transformers on >= {AGREE_MIN:.0%} of tickets and |EM diff| <= {EM_POINTS:g} points: "
          f"**{'yes' if res['passed'] else 'NO'}**."]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
