"""Translate SDK exceptions (openai / anthropic share a shape) into our retry taxonomy."""

from __future__ import annotations

import email.utils
import time
from typing import Any

from .errors import LLMError, RetryableError
from .redact import redact

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
MAX_RETRY_AFTER_S = 120.0


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
