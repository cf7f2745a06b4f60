"""Errors of the LLM layer.

`LLMError` means one call failed for good (after retries); callers usually record the sample as
failed and go on. `BudgetExceeded` and `CacheMiss` are *run-stopping* signals, deliberately not
subclasses of `LLMError`, so an `except LLMError` around one sample cannot swallow them.
"""

from __future__ import annotations


class LLMLayerError(Exception):
    """Base of every error raised by `stepsmith.llm` (catch-all for callers that want one)."""


class LLMError(LLMLayerError):
    """A backend call failed for good (after retries); the message never contains a key."""

    def __init__(self, message: str, *, model: str = "", attempts: int = 0, status: int | None = None):
        super().__init__(message)
        self.model = model
        self.attempts = attempts
        self.status = status


class RetryableError(LLMError):
    """A transient failure (429, 5xx, timeout, connection, malformed body) worth retrying.

    `retry_after_s` is the server's `Retry-After` hint when it sent one.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None, status: int | None = None):
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class BudgetExceeded(LLMLayerError):
    """Raised *before* a call that could push spending past `--max-cost` / `--max-tokens`."""

    def __init__(self, message: str, *, limit: str, limit_value: float, spent: float, needed: float):
        super().__init__(message)
        self.limit = limit
        self.limit_value = limit_value
        self.spent = spent
        self.needed = needed


class CacheMiss(LLMLayerError):
    """Replay mode found no cached response for a request (the run is not fully recorded)."""

    def __init__(self, message: str, *, cache_key: str):
        super().__init__(message)
        self.cache_key = cache_key


class ModelNotInstalled(LLMLayerError):
    """A known local model's chunk packages are not installed; the message says what to run."""


class ModelIntegrityError(LLMLayerError):
    """An assembled model file does not have the pinned sha256; it was not kept."""
