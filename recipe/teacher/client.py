"""A minimal OpenAI-compatible chat client (stdlib ``urllib``) for ``cotrecipe teach --source openai:<base_url>``.

Works with Ollama (``http://localhost:11434/v1``), vLLM, LM Studio and hosted APIs: one POST to
``{base_url}/chat/completions`` per problem. Timeouts, HTTP 408/429/5xx, broken connections and malformed JSON are
retried with exponential backoff (``Retry-After`` honoured, capped); 401/403/404 stop the run (wrong key, URL or
model); any other 4xx fails that row only. The API key comes from an environment variable, is sent only in the
``Authorization`` header and never appears in a message, a repr, a log line or a file.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from recipe.errors import TeacherServerError  # noqa: F401  (defined there, raised here)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404})


class RequestFailed(Exception):
    """One request failed for good (after retries, or a non-retryable 4xx); the row counts as failed."""


@dataclass
class OpenAIClient:
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    temperature: float = 0.0
    max_tokens: int = 2048
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    @classmethod
    def from_env(cls, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", **kwargs) -> OpenAIClient:
        """A client whose key is ``$api_key_env`` (no key when unset: local servers need none)."""
        return cls(base_url=base_url.rstrip("/"), model=model, api_key=os.environ.get(api_key_env) or None, **kwargs)

    def _request(self, prompt: str) -> urllib.request.Request:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature, "max_tokens": self.max_tokens, "stream": False}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
                                      headers=headers, method="POST")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass
        base = min(self.max_backoff, self.backoff * 2 ** attempt)
        return base * (0.5 + random.random() / 2)

    def _once(self, prompt: str) -> str:
        """One attempt; raises ``_Retry`` for transient problems, RequestFailed/TeacherServerError otherwise."""
        try:
            with urllib.request.urlopen(self._request(prompt), timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            status, retry_after = exc.code, exc.headers.get("Retry-After") if exc.headers else None
            exc.close()
            if status in FATAL_STATUS:
                raise TeacherServerError(f"{self.base_url}/chat/completions answered HTTP {status} "
                                         f"(check the URL, --model {self.model!r} and the API key variable)") from None
            if status in RETRY_STATUS or status >= 500:
                raise _Retry(f"HTTP {status}", retry_after) from None
            raise RequestFailed(f"HTTP {status}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
                OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retry(f"{type(reason).__name__}: {reason}", None) from None
        return parse_reply(raw)

    def complete(self, prompt: str) -> str:
        """The reply text for ``prompt`` (a reasoning field or ``<think>`` part becomes a ``Thinking…`` block)."""
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._once(prompt)
            except _Retry as exc:
                last = str(exc)
                if attempt < self.retries:
                    self.sleep(self._delay(attempt, exc.retry_after))
        raise RequestFailed(f"gave up after {self.retries + 1} attempts ({last})")


class _Retry(Exception):
    def __init__(self, message: str, retry_after: str | None):
        super().__init__(message)
        self.retry_after = retry_after


def parse_reply(raw: bytes) -> str:
    """The assistant text of a chat-completions reply; malformed JSON or shape is a retryable error.

    >>> parse_reply(b'{"choices": [{"message": {"content": "Step 1: x", "reasoning_content": "hmm"}}]}')
    'Thinking…\\nhmm\\n\\nStep 1: x'
    """
    try:
        data = json.loads(raw)
        message = data["choices"][0]["message"]
        content = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise _Retry(f"malformed reply: {raw[:80]!r}", None) from None
    if not isinstance(content, str) or not isinstance(reasoning, str):
        raise _Retry("malformed reply: content is not text", None)
    if reasoning.strip():
        return f"Thinking…\n{reasoning.strip()}\n\n{content.strip()}"
    if "<think>" in content and "</think>" in content:
        head, _, rest = content.partition("</think>")
        return f"Thinking…\n{head.replace('<think>', '').strip()}\n\n{rest.strip()}"
    return content
