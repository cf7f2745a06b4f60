"""Translate SDK exceptions (openai / anthropic share a shape) into our retry taxonomy."""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from .errors import LLMError, RetryableError
from .redact import redact

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
MAX_RETRY_AFTER_S = 120.0
#: More tokens than any request of ours can involve: a usage above it is a broken server.
MAX_PLAUSIBLE_TOKENS = 10_000_000

#: Wall-clock bound on one model call, all retries and backoff included (a hung server used to
#: cost 6 x 120 s per sample). Override with `LLMClient(call_deadline_s=...)` or the env var.
DEFAULT_CALL_DEADLINE_S = 600.0
CALL_DEADLINE_ENV = "STEPSMITH_CALL_DEADLINE_S"

T = TypeVar("T")


def call_deadline_s(explicit: float | None = None) -> float:
    """The per-call deadline: `explicit`, else `$STEPSMITH_CALL_DEADLINE_S`, else the default."""
    if explicit is not None:
        value: float = float(explicit)
    else:
        raw = os.environ.get(CALL_DEADLINE_ENV, "").strip()
        try:
            value = float(raw) if raw else DEFAULT_CALL_DEADLINE_S
        except ValueError:
            raise LLMError(f"{CALL_DEADLINE_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise LLMError(f"the model-call deadline must be positive seconds; found {value:g}")
    return value


async def within_deadline(call: Awaitable[T], seconds: float, label: str) -> T:
    """Await one SDK request for at most `seconds` in total.

    The SDKs' timeout is per read and restarts on every byte, so a server dripping one byte
    every few seconds (or a hung stream) could hold an attempt for ever; this bounds the whole
    attempt. Exceeding it is retryable: the next attempt may reach a healthy replica.
    """
    try:
        return await asyncio.wait_for(call, timeout=max(seconds, 0.001))
    except TimeoutError:
        raise RetryableError(
            f"{label}: request timed out: no complete response within {seconds:g} s (the "
            "server is hung or sending its answer too slowly; raise the request timeout if the "
            "model is just slow)"
        ) from None


def checked_usage(label: str, input_tokens: Any, output_tokens: Any, max_tokens: int) -> tuple[int, int]:
    """Token counts a server reported, or `RetryableError` if they are impossible.

    Budgets charge these numbers: a negative count would refund tokens (24 calls went out under
    a 10-call budget) and an absurd one would end a run. Impossible usage is a server error.
    """
    counts = []
    for name, value in (("input", input_tokens), ("output", output_tokens)):
        try:
            n = int(value or 0)
        except (TypeError, ValueError, OverflowError):
            raise RetryableError(
                f"{label}: the server reported {name} tokens {str(value)[:40]!r}, not a number"
            ) from None
        if n < 0 or n > MAX_PLAUSIBLE_TOKENS:
            raise RetryableError(
                f"{label}: the server reported {n} {name} tokens, which is impossible "
                f"(expected 0 to {MAX_PLAUSIBLE_TOKENS}); treating the response as a server error"
            )
        counts.append(n)
    limit = 4 * max(int(max_tokens or 0), 1) + 1024  # reasoning/tokenizer slack, generously
    if counts[1] > limit:
        raise RetryableError(
            f"{label}: the server reported {counts[1]} output tokens for a request capped at "
            f"{max_tokens}; treating the response as a server error"
        )
    return counts[0], counts[1]


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` / `Retry-After` (seconds or an HTTP date), else None."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(ms) / 1000.0))
        value = headers.get("retry-after")
    except AttributeError:
        return None
    if value is None:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return min(MAX_RETRY_AFTER_S, max(0.0, parsed.timestamp() - time.time()))


def translate(exc: BaseException, sdk: Any, label: str) -> LLMError:
    """Map an openai/anthropic SDK exception to RetryableError or a permanent LLMError."""
    if isinstance(exc, sdk.APITimeoutError):
        return RetryableError(f"{label}: request timed out ({type(exc).__name__})")
    if isinstance(exc, sdk.APIConnectionError):
        return RetryableError(f"{label}: connection failed: {redact(str(exc))}")
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        body = redact(_short(getattr(exc, "message", "") or str(exc)))
        retry_after = parse_retry_after(getattr(exc.response, "headers", None))
        msg = f"{label}: HTTP {status}: {body}"
        if status in RETRYABLE_STATUS or status >= 500:
            return RetryableError(msg, retry_after_s=retry_after, status=status)
        hint = {
            401: " (check the API key environment variable)",
            403: " (the key has no access to this model)",
            404: " (unknown model name or wrong base URL)",
        }.get(status, "")
        return LLMError(msg + hint, status=status)
    if isinstance(exc, sdk.APIResponseValidationError | ValueError):
        return RetryableError(f"{label}: malformed response body: {redact(_short(str(exc)))}")
    if isinstance(exc, sdk.APIError):
        return RetryableError(f"{label}: {type(exc).__name__}: {redact(_short(str(exc)))}")
    return LLMError(f"{label}: {type(exc).__name__}: {redact(_short(str(exc)))}")


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
