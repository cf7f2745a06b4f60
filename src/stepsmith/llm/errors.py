"""Errors of the LLM layer.

`LLMError` means one call failed for good (after retries); callers usually record the sample as
failed and go on. `BudgetExceeded` and `CacheMiss` are *run-stopping* signals, deliberately not
subclasses of `LLMError`, so an `except LLMError` around one sample cannot swallow them.

`InfrastructureError` is the exception to that split: *we could not ask the model at all*
(authentication, a dead or unreachable server, server errors or rate limits that outlived the
retries). It is an `LLMError` — for a single call (`stepsmith ask`, scripts) it is simply a
failed call — but a run must not record it as the model's failed sample (a 401 would look like
a weak model), so the agent re-raises it and the run stops, resumable, naming the endpoint.
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


class InfrastructureError(LLMError):
    """The model could not be asked (auth, connection, server errors after retries).

    `endpoint` names where the request went (base URL, or the provider when it has no URL) so
    the message tells a user which server or key to fix.
    """

    def __init__(self, message: str, *, model: str = "", attempts: int = 0,
                 status: int | None = None, endpoint: str = ""):
        super().__init__(message, model=model, attempts=attempts, status=status)
        self.endpoint = endpoint


# Statuses that say "this request can never succeed as configured" (key, access, URL/model name),
# as opposed to a bad request the model's prompt caused (400, 413, 422 stay per-sample failures).
INFRASTRUCTURE_STATUS = frozenset({401, 402, 403, 404, 407})


def infrastructure_error(exc: LLMError, *, endpoint: str, retries_exhausted: bool
                         ) -> InfrastructureError | None:
    """`exc` as an `InfrastructureError` when it means the model could not be asked, else None.

    Retryable failures that outlived every retry (connection refused, timeouts, 5xx, 429,
    malformed bodies from a proxy) and auth/URL statuses are infrastructure; anything else (a
    400 for an over-long prompt, a backend bug) stays one failed sample.
    """
    if isinstance(exc, InfrastructureError):
        return exc
    if not retries_exhausted and exc.status not in INFRASTRUCTURE_STATUS:
        return None
    where = f" at {endpoint}" if endpoint else ""
    return InfrastructureError(
        f"could not ask the model{where}: {exc}",
        model=exc.model, attempts=exc.attempts, status=exc.status, endpoint=endpoint,
    )


_DEFAULT_ENDPOINTS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}


def endpoint_of(backend: object) -> str:
    """Where a backend sends requests: its base URL, the provider's default URL, or the provider."""
    url = getattr(backend, "base_url", None)
    if url:
        return str(url)
    provider = str(getattr(backend, "provider", "") or "")
    return _DEFAULT_ENDPOINTS.get(provider, provider)


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
