"""The OpenAI-compatible teacher for ``cotrecipe teach --source openai:<base_url>``, through the official ``openai``
client: the ``teacher`` extra (``pip install 'cotrecipe[teacher]'``); without it, such a source is one error line
saying so.

Works with Ollama (``http://localhost:11434/v1``), vLLM, LM Studio and hosted APIs: one chat-completions request per
problem. The ``openai`` client builds and sends it (JSON body, ``Authorization`` header, a pooled connection, the
timeout) and types what went wrong (a status, a timeout, a broken connection). Its own retry loop is off
(``max_retries=0``) and ours kept, because the client's has no backoff setting (``--backoff``), does not retry a
malformed reply (it raises a JSON error), and treats every 4xx alike: here timeouts, HTTP 408/429/5xx, broken
connections and malformed JSON are retried with exponential backoff (``Retry-After`` honoured, capped); 401/403/404
stop the run (wrong key, URL or model); any other 4xx fails that row only. The reply is read from the raw body
(``with_raw_response``): the reasoning fields servers add (``reasoning_content``, ``reasoning``) are not part of the
typed ``ChatCompletion``.

The API key comes only from the variable named by ``--api-key-env`` (passed explicitly, so the client never falls
back to ``OPENAI_API_KEY`` for another variable), is sent only in the ``Authorization`` header (none at all without a
key: local servers need none) and never appears in a message, a repr, a log line or a file. The client's other
environment variables (``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``, ``OPENAI_CUSTOM_HEADERS``) apply as for any
``openai`` client.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recipe.errors import TeachError, TeacherServerError

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404})
EXTRA = "teacher"  # the pyproject extra that installs the openai client
_NO_KEY = "no-key"  # the client insists on a key; without one, the header it would make is omitted (openai.omit)


class RequestFailed(Exception):
    """One request failed for good (after retries, or a non-retryable 4xx); the row counts as failed."""


def import_openai() -> Any:
    """The ``openai`` module, or a :class:`TeachError` saying which extra installs it."""
    try:
        import openai  # lazy: an optional extra, needed only for openai: sources
    except ImportError as exc:
        raise TeachError(f"--source openai:<base_url> needs the openai client ({exc}): "
                         f"pip install 'cotrecipe[{EXTRA}]'") from None
    return openai


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
    _openai: Any = field(init=False, repr=False, default=None)
    _client: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._openai = import_openai()
        self._client = self._openai.OpenAI(base_url=self.base_url, api_key=self.api_key or _NO_KEY,
                                           timeout=self.timeout, max_retries=0)

    @classmethod
    def from_env(cls, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", **kwargs) -> OpenAIClient:
        """A client whose key is ``$api_key_env`` (no key when unset: local servers need none)."""
        return cls(base_url=base_url.rstrip("/"), model=model, api_key=os.environ.get(api_key_env) or None, **kwargs)

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
        openai = self._openai
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], temperature=self.temperature,
                max_tokens=self.max_tokens, stream=False,
                extra_headers=None if self.api_key else {"Authorization": openai.omit})
            body = raw.content
        except openai.APIStatusError as exc:
            status, retry_after = exc.status_code, exc.response.headers.get("Retry-After")
            if status in FATAL_STATUS:
                raise TeacherServerError(f"{self.base_url}/chat/completions answered HTTP {status} "
                                         f"(check the URL, --model {self.model!r} and the API key variable)") from None
            if status in RETRY_STATUS or status >= 500:
                raise _Retry(f"HTTP {status}", retry_after) from None
            raise RequestFailed(f"HTTP {status}") from None
        except openai.APIConnectionError as exc:  # also APITimeoutError; the cause says what broke
            reason = exc.__cause__ or exc
            raise _Retry(f"{type(reason).__name__}: {reason}", None) from None
        return parse_reply(body)

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
