"""augment_data.py: paraphrase filters, tool-call safety, dedup, metadata, endpoints, real SmolLM2."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import run_json, run_script
from finetune_kit import augment, chat
from finetune_kit.augment import Generation

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "forecast",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
ROWS = [
    {"messages": [{"role": "system", "content": "You are a concise assistant."},
                  {"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "user", "content": "How many legs does a spider have?"},
                  {"role": "assistant", "content": "Eight."}], "metadata": {"group": "g-spider", "id": "x1"}},
    {"messages": [{"role": "user", "content": "What's the weather in Lisbon tomorrow?"},
                  {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
                      "name": "get_weather", "arguments": "{\"city\": \"Lisbon\"}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "{\"high_c\": 19}"},
                  {"role": "assistant", "content": "Up to 19 °C in Lisbon tomorrow."}], "tools": TOOLS},
]

PARA = {
    "What is the capital of France?": ["Which city is the capital of France?", "Tell me France's capital city."],
    "How many legs does a spider have?": ["How many legs do spiders have?", "What number of legs does a spider have?"],
    "What's the weather in Lisbon tomorrow?": ["How will the weather be in Lisbon tomorrow?",
                                               "Tell me tomorrow's forecast for Lisbon."],
}


def _write(p: Path, rows) -> Path:
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def _rows(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]


def _sources(rows=ROWS):
    out = []
    for i, o in enumerate(rows, start=1):
        ex, findings = chat.check_record(o, "chat", i)
        assert ex is not None, findings
        out.append(augment.Source(i, o, ex))
    return out


class FakeGenerator:
    """Injected instead of a model: returns scripted candidates per source text, in order."""

    name = "fake"
    special_tokens = ["<|im_end|>"]

    def __init__(self, script: dict[str, list[str | None]], answer: str = "A regenerated answer."):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[tuple[list[str], int]] = []
        self.answers: list[list[dict]] = []
        self.answer_text = answer

    def paraphrase(self, texts, n):
        self.calls.append((list(texts), n))
        out = []
        for t in texts:
            q = self.script.get(t, [])
            row = []
            for _ in range(n):
                v = q.pop(0) if q else t
                row.append(Generation(v) if v is not None else Generation(None, error="boom"))
            out.append(row)
        return out

    def answer(self, messages, tools):
        self.answers.append(messages)
        return Generation(self.answer_text)

    def verify(self, pairs):
        self.verified = getattr(self, "verified", []) + list(pairs)
        return [Generation("NO" if "origin" in p else "Yes.") for _, p in pairs]


# ---------------------------------------------------------------- filters (unit)


@pytest.mark.parametrize("src,gen,reason", [
    ("What is the capital of France?", "", "empty"),
    ("What is the capital of France?", "   \"\"  ", "empty"),
    ("What is the capital of France?", "what is the capital of france", "identical"),
    ("What is the capital of France?", "Here is the rewritten message: \"What is the capital of France?\"", "identical"),
    ("What is the capital of France?", "Which city is France's capital?<|im_end|>", "template_tokens"),
    ("What is the capital of France?", "[INST] Which city is France's capital? [/INST]", "template_tokens"),
    ("Hi there", "Hello! " + "I would like to greet you very warmly today. " * 5, "length_ratio"),
    ("Please write a detailed summary of the attached quarterly report for the board meeting.", "Summary?",
     "length_ratio"),
    ("Convert 5 miles to kilometers.", "Convert five miles to kilometers.", "changed_literals"),
    ("Open /etc/hosts and show it.", "Open the hosts file and display it.", "changed_literals"),
    ("Run `pip list` please.", "Please execute pip list.", "changed_literals"),
    ("What is the capital of France?", "What is the capital of Chile?", "changed_literals"),
    ("What is the capital of France?", "The capital of France is Paris.", "lost_request"),
    ("Convert 10 kilometers to miles.", "To convert 10 kilometers to miles, divide 10 by 1.609.", "lost_request"),
    ("Summarize the plot of Romeo and Juliet in one sentence.", "The plot of Romeo and Juliet in one sentence.",
     "lost_request"),
    ("How do I bake sourdough bread?", "Why do cats purr so loudly?", "unrelated"),
])
def test_degenerate_paraphrases_are_rejected_with_a_reason(src, gen, reason):
    got, _ = augment.check_paraphrase(src, Generation(gen), ["<|im_end|>"])
    assert got == reason


@pytest.mark.parametrize("src,gen,expected", [
    ("What is the capital of France?", "Which city is France's capital?", "Which city is France's capital?"),
    ("What is the capital of France?", "Sure! Here's a rewritten version:\n\n\"Which city is the capital of France?\"",
     "Which city is the capital of France?"),
    ("Convert 5 miles to kilometers.", "Please convert 5 miles into kilometers.",
     "Please convert 5 miles into kilometers."),
    ("What is the capital of France?", "Tell me the capital of France.", "Tell me the capital of France."),
    ("What does HTTP status 404 mean?", "A possible rewording:\n\nWhat is the meaning of HTTP status 404?",
     "What is the meaning of HTTP status 404?"),
    ("Summarize the plot of Romeo and Juliet in one sentence.",
     "Give a one-sentence summary of the plot of Romeo and Juliet.",
     "Give a one-sentence summary of the plot of Romeo and Juliet."),
])
def test_good_paraphrases_pass_cleaned(src, gen, expected):
    assert augment.check_paraphrase(src, Generation(gen)) == (None, expected)


def test_truncated_and_failed_generations():
    assert augment.check_paraphrase("Hi?", Generation("Hello there, how", truncated=True))[0] == "truncated"
    assert augment.check_paraphrase("Hi?", Generation(None, error="HTTP 500"))[0] == "generation_error"
    assert augment.check_answer(Generation("  ")) [0] == "answer_empty"
    assert augment.check_answer(Generation("ok <|eot_id|>"))[0] == "answer_template_tokens"


# ---------------------------------------------------------------- augmentation with an injected generator


def test_variants_keep_tool_structure_and_are_marked_synthetic():
    gen = FakeGenerator(PARA)
    results, rep = augment.augment(_sources(), gen, augment.AugmentConfig(factor=2), source_label="src.jsonl")
    assert rep.requested == 6 and rep.survived == 6 and rep.attempted == 6 and not rep.rejected
    rows = augment.assemble(results)
    assert len(rows) == 9
    for src, new in results:
        for k, row in enumerate(new, start=1):
            md = row["metadata"]
            assert md["synthetic"] is True and md["augmented_from"] == src.line
            assert md["augment"]["variant"] == k and md["augment"]["source_file"] == "src.jsonl"
            # everything but the user turns is byte-identical to the source
            for a, b in zip(row["messages"], src.obj["messages"]):
                if a["role"] == "user":
                    assert a["content"] != b["content"]
                else:
                    assert a == b
            assert row.get("tools") == src.obj.get("tools")
            ex, findings = chat.check_record(row, "chat", None)
            assert ex is not None and not [f for f in findings if f.severity == "error"]
    # a source row and its variants share a group (prepare_data --group-by group keeps them together)
    spider = [r for r in rows if "spider" in r["messages"][0]["content"]]
    assert {r["metadata"]["group"] for r in spider} == {"g-spider"}
    assert spider[1]["metadata"]["id"] == "x1~aug1"
    france = [r for r in rows if "France" in json.dumps(r)]
    assert len({r["metadata"]["group"] for r in france}) == 1 and "synthetic" not in france[0]["metadata"]


def test_tool_call_arguments_and_tool_messages_are_never_sent_to_the_generator():
    gen = FakeGenerator(PARA)
    augment.augment(_sources(), gen, augment.AugmentConfig(factor=1))
    sent = [t for texts, _ in gen.calls for t in texts]
    assert sent == [r["messages"][i]["content"] for r in ROWS for i, m in enumerate(r["messages"])
                    if m["role"] == "user"]
    assert not any("Lisbon\"}" in t or "high_c" in t for t in sent)


def test_duplicates_of_the_source_and_of_each_other_are_removed():
    long_q = ("Could you explain in simple terms how the garbage collector in CPython decides when to free "
              "objects that reference each other in a cycle?")
    rows = [ROWS[0], ROWS[1],
            {"messages": [{"role": "user", "content": "How many legs do spiders have?"},
                          {"role": "assistant", "content": "Spiders have eight legs."}]},
            {"messages": [{"role": "user", "content": long_q}, {"role": "assistant", "content": "It uses gc."}]}]
    script = {
        # the same paraphrase twice -> the second is an exact duplicate of the first
        "What is the capital of France?": ["Which city is the capital of France?"] * 2,
        # equal (up to case/punctuation) to ANOTHER source row's user text -> duplicate of a source row
        "How many legs does a spider have?": ["how many legs do spiders have", "What number of legs does a spider have?"],
        "How many legs do spiders have?": ["Spiders have how many legs?", "Tell me how many legs spiders have."],
        # one word changed in a long text: near duplicates of each other (Jaccard of word 3-shingles >= 0.9 fails,
        # so the threshold is lowered to what prepare_data uses)
        long_q: ["Could you describe in simple terms how the garbage collector in CPython decides when to free "
                 "objects that reference each other in a cycle?",
                 "Could you describe in simple terms how the garbage collector in CPython decides when to free "
                 "objects that reference each other in a loop?"],
    }
    gen = FakeGenerator(script)
    results, rep = augment.augment(_sources(rows), gen,
                                   augment.AugmentConfig(factor=2, retries=0, near_dup_threshold=0.7))
    assert rep.rejected["duplicate"] == 2, rep.rejected
    assert rep.rejected["near_duplicate"] >= 1, rep.rejected
    assert rep.survived + sum(rep.rejected.values()) == rep.attempted == 8
    texts = [r["messages"][0]["content"] for _, new in results for r in new]
    assert len(texts) == len(set(texts))
    assert "how many legs do spiders have" not in texts


def test_deduper_matches_prepare_data_notion_of_near_duplicates():
    d = augment.Deduper(0.85)
    base = " ".join(f"word{i}" for i in range(60))
    d.add(base, "a")
    assert d.check(base.upper() + " !")[0] == "duplicate"
    assert d.check(base.replace("word30", "other"))[0] == "near_duplicate"  # 3 of 58 shingles differ
    assert d.check(" ".join(f"term{i}" for i in range(60)))[0] is None


def test_retries_replace_rejected_variants_and_counts_add_up():
    script = {"How many legs does a spider have?": ["", "The answer is eight.", "How many legs do spiders have?",
                                                    "What number of legs does a spider have?"]}
    gen = FakeGenerator(script)
    results, rep = augment.augment(_sources(ROWS[1:2]), gen, augment.AugmentConfig(factor=2, retries=1))
    assert [n for _, n in gen.calls] == [2, 2]
    assert rep.survived == 2 and rep.rejected == {"empty": 1, "lost_request": 1}
    assert rep.to_dict()["survival_rate"] == 1.0 and rep.attempted == 4


def test_regenerate_answers_replaces_text_answers_but_keeps_tool_calls():
    gen = FakeGenerator(PARA, answer="Its capital is Paris.")
    cfg = augment.AugmentConfig(factor=1, regenerate_answers=True)
    results, rep = augment.augment(_sources(), gen, cfg)
    assert rep.answers_regenerated == 3 and rep.survived == 3
    new = {src.line: rows[0] for src, rows in results}
    assert new[1]["messages"][-1] == {"role": "assistant", "content": "Its capital is Paris."}
    assert new[1]["metadata"]["augment"]["regenerated_answer"] is True
    # the model saw the paraphrased question, not the original
    assert gen.answers[0][-1]["content"] == "Which city is the capital of France?"
    # row 3: the final text answer is regenerated after the (kept) tool call and result
    assert new[3]["messages"][1:3] == ROWS[2]["messages"][1:3]
    tool_row = [{"messages": [{"role": "user", "content": "Weather in Lisbon?"},
                              {"role": "assistant", "tool_calls": ROWS[2]["messages"][1]["tool_calls"]}],
                 "tools": TOOLS}]
    gen2 = FakeGenerator({"Weather in Lisbon?": ["What is the weather like in Lisbon?"]})
    results, rep = augment.augment(_sources(tool_row), gen2, cfg)
    assert rep.answers_kept_tool_calls == 1 and rep.answers_regenerated == 0 and not gen2.answers
    assert results[0][1][0]["messages"][1] == tool_row[0]["messages"][1]


def test_verify_rejects_paraphrases_the_model_judges_different():
    gen = FakeGenerator({"What is the capital of France?": ["What is the origin of France's capital?",
                                                            "Which city is the capital of France?"]})
    results, rep = augment.augment(_sources(ROWS[:1]), gen, augment.AugmentConfig(factor=2, retries=0, verify=True))
    assert rep.rejected == {"not_equivalent": 1} and rep.survived == 1
    assert gen.verified == [("What is the capital of France?", "What is the origin of France's capital?"),
                            ("What is the capital of France?", "Which city is the capital of France?")]
    assert augment.verdict_is_yes(Generation("**YES**")) and not augment.verdict_is_yes(Generation("Yesterday"))


def test_turns_last_paraphrases_only_the_last_user_turn():
    row = {"messages": [{"role": "user", "content": "Name a prime number."}, {"role": "assistant", "content": "7"},
                        {"role": "user", "content": "Name another prime number."}, {"role": "assistant", "content": "11"}]}
    gen = FakeGenerator({"Name another prime number.": ["Give me one more prime number."]})
    results, rep = augment.augment(_sources([row]), gen, augment.AugmentConfig(factor=1, turns="last"))
    assert gen.calls == [(["Name another prime number."], 1)]
    assert [m["content"] for m in results[0][1][0]["messages"]] == [
        "Name a prime number.", "7", "Give me one more prime number.", "11"]


# ---------------------------------------------------------------- an OpenAI-compatible endpoint (local fake server)


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.headers.get("Authorization") != "Bearer sk-test-123":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "bad key"}}')
            return
        last = body["messages"][-1]["content"]
        if body["messages"][0]["content"] == augment.VERIFY_SYSTEM:
            text = "YES"
        elif body["messages"][0]["content"] == augment.PARAPHRASE_SYSTEM:
            src = last.split("\n\n", 1)[1]
            n = sum(1 for s in type(self).seen if s["body"]["messages"][-1]["content"] == last)
            text = PARA.get(src, [src])[(n - 1) % 2]
        else:
            text = "Regenerated by the endpoint."
        doc = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint():
    _Handler.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", _Handler.seen
    srv.shutdown()


def test_openai_compatible_endpoint_end_to_end(tmp_path, endpoint):
    url, seen = endpoint
    src = _write(tmp_path / "src.jsonl", ROWS)
    out = tmp_path / "aug.jsonl"
    code, doc = run_json("augment_data", src, "-o", out, "--factor", "2", "--base-url", url, "--model", "my-model",
                         "--api-key-env", "MY_KEY", "--regenerate-answers", "--verify", env={"MY_KEY": "sk-test-123"})
    assert code == 0, doc
    assert doc["generator"] == "openai:my-model" and doc["survived"] == 6 and doc["rows_written"] == 9
    assert doc["validation"]["valid"] and doc["answers_regenerated"] == 6
    assert all(s["path"] == "/v1/chat/completions" and s["body"]["model"] == "my-model" for s in seen)
    # the regeneration request carries the tools and the real tool messages; the paraphrase requests never do
    assert sum(s["body"]["messages"][0]["content"] == augment.VERIFY_SYSTEM for s in seen) == 6
    regen = [s["body"] for s in seen
             if s["body"]["messages"][0]["content"] not in (augment.PARAPHRASE_SYSTEM, augment.VERIFY_SYSTEM)]
    assert any(b.get("tools") == TOOLS and any(m["role"] == "tool" for m in b["messages"]) for b in regen)
    rows = _rows(out)
    assert sum(1 for r in rows if r.get("metadata", {}).get("synthetic")) == 6
    assert all(r["messages"][-1]["content"] == "Regenerated by the endpoint." for r in rows
               if r.get("metadata", {}).get("synthetic"))
    assert "sk-test-123" not in json.dumps(doc) and "sk-test-123" not in out.read_text()


def test_endpoint_rejecting_the_key_is_exit_2(tmp_path, endpoint):
    url, _ = endpoint
    src = _write(tmp_path / "src.jsonl", ROWS[:1])
    cp = run_script("augment_data", src, "-o", tmp_path / "o.jsonl", "--base-url", url, "--model", "m",
                    env={"OPENAI_API_KEY": "wrong"})
    assert cp.returncode == 2 and "rejected the API key" in cp.stderr and "wrong" not in cp.stderr
    assert not (tmp_path / "o.jsonl").exists()
    cp = run_script("augment_data", src, "-o", tmp_path / "o.jsonl", "--base-url", "http://127.0.0.1:9/v1",
                    "--model", "m", "--timeout", "5")
    assert cp.returncode == 2 and "cannot reach" in cp.stderr


# ---------------------------------------------------------------- CLI contract


def test_bad_inputs_exit_2_with_one_line(tmp_path):
    garbage = tmp_path / "g.jsonl"
    garbage.write_bytes(b"\x89PNG\x00\xff\n{oops\n")
    cases = [
        [garbage, "-o", tmp_path / "o.jsonl", "--model", "smollm2-135m"],
        [_write(tmp_path / "pc.jsonl", [{"prompt": "a", "completion": "b"}]), "-o", tmp_path / "o.jsonl",
         "--model", "smollm2-135m"],
        [_write(tmp_path / "bad.jsonl", [{"messages": [{"role": "wizard", "content": "x"}]}]), "-o",
         tmp_path / "o.jsonl", "--model", "smollm2-135m"],
        [tmp_path / "missing.jsonl", "-o", tmp_path / "o.jsonl", "--model", "smollm2-135m"],
        [_write(tmp_path / "ok.jsonl", ROWS), "-o", tmp_path / "o.jsonl", "--model", "smollm2-135m", "--factor", "0"],
        [tmp_path / "ok.jsonl", "-o", tmp_path / "ok.jsonl", "--model", "smollm2-135m", "--force"],
        [tmp_path / "ok.jsonl", "-o", tmp_path / "o.jsonl", "--model", "no/such-model-here", "--base-url", "ftp://x"],
    ]
    for args in cases:
        cp = run_script("augment_data", *args)
        assert cp.returncode == 2, (args, cp.stderr)
        assert cp.stderr.count("\n") == 1 and "Traceback" not in cp.stderr, cp.stderr
    assert not (tmp_path / "o.jsonl").exists()


# ---------------------------------------------------------------- the real path: SmolLM2-135M locally


@pytest.mark.slow
def test_real_smollm2_paraphrasing(tmp_path, smollm2_dir):
    src = _write(tmp_path / "src.jsonl", ROWS)
    out = tmp_path / "aug.jsonl"
    t0 = time.time()
    # one OpenMP thread: on a shared 2-core test machine spinning OpenMP threads make generation
    # up to 10x slower (measured: 210 s vs 28 s under load); unloaded it takes ~10 s either way
    code, doc = run_json("augment_data", src, "-o", out, "--factor", "2", "--model", "smollm2-135m",
                         "--max-new-tokens", "24", "--retries", "0", "--seed", "0", env={"OMP_NUM_THREADS": "1"})
    took = time.time() - t0
    assert code == 0, doc
    print(f"augment_data with SmolLM2 (3 rows x 2): {took:.1f} s")
    assert doc["generator"] == "hf:smollm2-135m" and doc["requested"] == 6 and doc["attempted"] == 6
    assert doc["survived"] + doc["rejected_total"] == 6
    assert set(doc["rejected"]) <= set(augment.REASONS)
    assert doc["validation"]["valid"] and doc["rows_written"] == 3 + doc["survived"]
    rows = _rows(out)
    new = [r for r in rows if r.get("metadata", {}).get("synthetic")]
    assert len(new) == doc["survived"]
    for r in new:
        src_row = ROWS[r["metadata"]["augmented_from"] - 1]
        assert [m["role"] for m in r["messages"]] == [m["role"] for m in src_row["messages"]]
        assert [m for m in r["messages"] if m["role"] != "user"] == [m for m in src_row["messages"] if m["role"] != "user"]
        assert r["metadata"]["augment"]["generator"] == "hf:smollm2-135m"
    # the output is never clobbered
    cp = run_script("augment_data", src, "-o", out, "--model", "smollm2-135m")
    assert cp.returncode == 2 and "--force" in cp.stderr
