"""finetune_kit.openai_compat: the chat-completions client shared by augment_data and evaluate's judge."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from finetune_kit import evaluate as ev
from finetune_kit import openai_compat as oa
from finetune_kit.errors import UsageError


class _Handler(BaseHTTPRequestHandler):
    """Answers by the model name: ok, flaky (500 once, then ok), bad (400), parts (content parts), judge."""

    seen: list[dict] = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        model = body["model"]
        if self.headers.get("Authorization") != "Bearer k-1":
            return self._send(401, {"error": "bad key"})
        if model == "missing":
            return self._send(404, {"error": "no such model"})
        if model == "bad":
            return self._send(400, {"error": "bad request"})
        if model == "flaky" and sum(s["body"]["model"] == "flaky" for s in type(self).seen) == 1:
            return self._send(503, {"error": "busy"})
        content = [{"type": "text", "text": "PA"}, {"type": "text", "text": "SS"}] if model == "parts" else "PASS"
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": content},
                                      "finish_reason": "length" if body.get("max_tokens") == 1 else "stop"}]})

    def _send(self, code: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def url(monkeypatch):
    monkeypatch.setattr(oa.time, "sleep", lambda s: None)  # no backoff waits in tests
    _Handler.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1/"
    srv.shutdown()


def test_urls_and_keys(monkeypatch):
    assert oa.completions_url("https://api.openai.com/v1/") == "https://api.openai.com/v1/chat/completions"
    assert oa.completions_url("http://h:8000/v1/chat/completions") == "http://h:8000/v1/chat/completions"
    with pytest.raises(UsageError, match="--judge-url must start with http"):
        oa.completions_url("ftp://x", "--judge-url")
    monkeypatch.setenv("FT_TEST_KEY", "")
    assert oa.api_key_from_env("FT_TEST_KEY") is None
    monkeypatch.setenv("FT_TEST_KEY", "abc")
    assert oa.api_key_from_env("FT_TEST_KEY") == "abc"


def test_replies_retries_and_errors(url):
    c = oa.ChatClient(url, "ok", api_key="k-1")
    r = c.complete([{"role": "user", "content": "hi"}], temperature=0)
    assert (r.text, r.finish_reason) == ("PASS", "stop") and c.requests == 1
    s = _Handler.seen[-1]
    assert s["path"] == "/v1/chat/completions" and s["auth"] == "Bearer k-1"
    assert s["body"] == {"model": "ok", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    assert c.complete([], max_tokens=1).finish_reason == "length"
    assert oa.ChatClient(url, "parts", api_key="k-1").complete([]).text == "PASS"
    flaky = oa.ChatClient(url, "flaky", api_key="k-1")
    assert flaky.complete([]).text == "PASS" and flaky.requests == 2          # 503 retried
    bad = oa.ChatClient(url, "bad", api_key="k-1")
    with pytest.raises(oa.EndpointError, match="HTTP 400"):
        bad.complete([])
    assert bad.requests == 1                                                  # 400 is not retried
    with pytest.raises(UsageError, match="rejected the API key .*--api-key-env"):
        oa.ChatClient(url, "ok", api_key="wrong").complete([])
    with pytest.raises(UsageError, match="answered 404: check --base-url .* and --model 'missing'"):
        oa.ChatClient(url, "missing", api_key="k-1").complete([])
    with pytest.raises(UsageError, match="cannot reach"):
        oa.ChatClient("http://127.0.0.1:9/v1", "ok", timeout=5).complete([])


def test_evaluate_judge_uses_the_shared_client(url, monkeypatch):
    monkeypatch.setenv("FT_TEST_JUDGE_KEY", "k-1")
    item = ev.TestItem(0, 1, [{"role": "user", "content": "2+2?"}], "4", None)
    j = ev.Judge(url, "ok", key_env="FT_TEST_JUDGE_KEY")
    assert j(item, "four", []) == 1.0 and j.errors == 0
    assert _Handler.seen[-1]["body"] == ev.judge_request("ok", item, "four", [])
    bad = ev.Judge(url, "bad", key_env="FT_TEST_JUDGE_KEY")
    assert bad(item, "four", []) is None and bad.errors == 1
    with pytest.raises(UsageError, match="--judge-key-env"):
        ev.Judge(url, "ok", key_env="FT_TEST_NO_SUCH_KEY")(item, "four", [])
