"""The one client for OpenAI-compatible ``/chat/completions`` endpoints (urllib, no SDK).

Used by augment_data (``augment.OpenAIGenerator``: paraphrases, answers) and evaluate
(``evaluate.Judge``: LLM-as-judge). Works with api.openai.com and local servers (vLLM,
Ollama, llama.cpp server, ...).

Errors: a rejected key (401/403), a wrong URL or model (404) and a host that cannot be reached
on first contact raise ``UsageError`` (exit 2: every later request would fail the same way);
408/409/429/5xx answers, timeouts and dropped connections are retried with exponential backoff;
what still fails raises :class:`EndpointError` (the caller counts it and goes on). The API key
is only ever sent in the ``Authorization`` header, never put in a message.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from . import chat
from .errors import UsageError

RETRY_STATUS = (408, 409, 429)


class EndpointError(Exception):
    """A request that failed after its retries, or got an answer that cannot be used."""


def completions_url(base_url: str | None, flag: str = "--base-url") -> str:
    """``base_url`` (``.../v1``, or the full ``.../chat/completions``) -> the completions URL."""
    if not re.match(r"^https?://", base_url or ""):
        raise UsageError(f"{flag} must start with http:// or https:// (e.g. https://api.openai.com/v1), "
                         f"got {base_url!r}")
    url = base_url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def api_key_from_env(name: str | None) -> str | None:
    """The API key in environment variable ``name`` (default OPENAI_API_KEY); None when unset/empty."""
    return os.environ.get(name or "OPENAI_API_KEY") or None


@dataclass
class Reply:
    text: str                    # the first choice's message text ("" when it has none)
    finish_reason: str | None    # "stop", "length" (hit max_tokens), "tool_calls", ...
    doc: dict[str, Any]          # the whole response document


class ChatClient:
    """POSTs chat-completions requests to one endpoint for one model.

    ``flags`` names the CLI flags quoted in the errors: ``url`` (e.g. ``--base-url``), ``model``
    and ``key`` (the flag naming the key's environment variable)."""

    def __init__(self, base_url: str | None, model: str, *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 2, flags: dict[str, str] | None = None):
        self.flags = {"url": "--base-url", "model": "--model", "key": "--api-key-env", **(flags or {})}
        self.url = completions_url(base_url, self.flags["url"])
        self.model = model
        self._key = api_key
        self.timeout = timeout
        self.retries = max(0, retries)
        self.requests = 0   # HTTP requests sent, retries included
        self.answered = 0   # requests that got a usable answer

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send one request (``model`` filled in when missing); the response document."""
        body = {"model": self.model, **body}
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(1 + self.retries):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** attempt))
            self.requests += 1
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    doc = json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise UsageError(f"the endpoint {self.url} rejected the API key (HTTP {exc.code}); set "
                                     f"OPENAI_API_KEY or name the variable with {self.flags['key']}") from None
                if exc.code == 404:
                    raise UsageError(f"{self.url} answered 404: check {self.flags['url']} (it should end in /v1) "
                                     f"and {self.flags['model']} {self.model!r}") from None
                last = f"HTTP {exc.code}"
                if exc.code not in RETRY_STATUS and exc.code < 500:
                    raise EndpointError(last) from None
                continue
            except urllib.error.URLError as exc:
                if not self.answered and not isinstance(exc.reason, (TimeoutError, ConnectionResetError)):
                    raise UsageError(f"cannot reach {self.url}: {exc.reason}") from None
                last = f"cannot reach the endpoint: {exc.reason}"
                continue
            except (TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            except (ValueError, UnicodeDecodeError) as exc:
                raise EndpointError(f"unexpected response: {type(exc).__name__}") from None
            if not isinstance(doc, dict):
                raise EndpointError("unexpected response: not a JSON object")
            self.answered += 1
            return doc
        raise EndpointError(last or "no answer")

    def complete(self, messages: list[dict[str, Any]], **params: Any) -> Reply:
        """One chat completion: ``params`` go into the request body (temperature, max_tokens, ...)."""
        doc = self.create({"messages": messages, **params})
        try:
            choice = doc["choices"][0]
            content = (choice.get("message") or {}).get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise EndpointError("unexpected response: no choices[0].message") from None
        text = chat.content_text(content) if isinstance(content, (str, list)) else ""
        return Reply(text, choice.get("finish_reason"), doc)
