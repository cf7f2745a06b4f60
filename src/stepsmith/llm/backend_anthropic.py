"""Anthropic Messages API through the official `anthropic` SDK."""

from __future__ import annotations

from typing import Any

from ._http_errors import checked_usage, translate, within_deadline
from .base import Completion, estimate_tokens, normalize_finish_reason
from .config import provider_flag, provider_setting
from .errors import LLMError, RetryableError
from .redact import redact_secrets

PROMPT_CACHE_ENV = "STEPSMITH_ANTHROPIC_PROMPT_CACHE"


def prompt_cache_enabled() -> bool:
    """Whether to mark the system prompt cacheable: on unless `STEPSMITH_ANTHROPIC_PROMPT_CACHE=0`
    or `[anthropic] prompt_cache = false` (Anthropic, unlike OpenAI, caches only on request)."""
    return provider_flag("anthropic", "prompt_cache", (PROMPT_CACHE_ENV,), True)


def build_request(model: str, messages: list[dict], params: dict[str, Any], *,
                  prompt_cache: bool = True) -> dict:
    """System messages go to `system`; temperature must lie in [0, 1]; max_tokens is required.

    With `prompt_cache` the system prompt (the long, run-wide STeP reference) is sent as one text
    block with `cache_control: ephemeral`, so later calls read it from Anthropic's prompt cache
    at a tenth of the input price; the user turn with the task stays uncached.
    """
    body: dict[str, Any] = {"model": model, "max_tokens": int(params.get("max_tokens") or 1024)}
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    if system and prompt_cache:
        body["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    elif system:
        body["system"] = system
    body["messages"] = [
        {"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"
    ]
    temperature = params.get("temperature")
    if temperature is not None:
        if not 0.0 <= float(temperature) <= 1.0:
            raise LLMError(
                f"anthropic:{model}: temperature must be in [0, 1] for Anthropic models; "
                f"found {temperature}"
            )
        # newer SDKs dropped the typed `temperature` argument; the API still takes it
        body["extra_body"] = {"temperature": float(temperature)}
    return body


def usage_input_parts(usage: Any) -> tuple[int, int, int]:
    """(uncached, cache-write, cache-read) prompt tokens of an Anthropic usage object or dict.

    Anthropic's `input_tokens` counts only the uncached part; the total prompt is the sum of all
    three. The cache fields may be missing or None (older API versions, proxies).
    """
    def field(name: str) -> int:
        value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
        try:
            return max(0, int(value or 0))
        except (TypeError, ValueError):
            return 0

    return (field("input_tokens"), field("cache_creation_input_tokens"),
            field("cache_read_input_tokens"))


class AnthropicBackend:
    """`anthropic:<model>`; honours ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL."""

    def __init__(
        self, model: str, *, base_url: str | None = None, api_key: str | None = None,
        timeout_s: float = 120.0, prompt_cache: bool | None = None,
    ):
        import anthropic

        self._sdk = anthropic
        self.provider = "anthropic"
        self.model = model
        self.name = f"anthropic:{model}"
        self.base_url = base_url or provider_setting("anthropic", "base_url", ("ANTHROPIC_BASE_URL",))
        self._api_key = api_key or provider_setting("anthropic", "api_key", ("ANTHROPIC_API_KEY",))
        if not self._api_key:
            raise LLMError(f"{self.name}: no API key; set ANTHROPIC_API_KEY")
        self.timeout_s = timeout_s
        self.prompt_cache = prompt_cache_enabled() if prompt_cache is None else prompt_cache

    def _client(self) -> Any:
        """A fresh SDK client per call (see OpenAIBackend._client)."""
        return self._sdk.AsyncAnthropic(
            api_key=self._api_key, base_url=self.base_url, timeout=self.timeout_s, max_retries=0
        )

    async def complete(self, messages: list[dict], params: dict[str, Any]) -> Completion:
        if params.get("constraint") is not None:
            raise LLMError(
                f"{self.name}: constrained decoding is not available for Anthropic models; "
                "use --constrain none"
            )
        body = build_request(self.model, messages, params, prompt_cache=self.prompt_cache)
        try:
            async with self._client() as client:
                resp = await within_deadline(
                    client.messages.create(**body), self.timeout_s, self.name
                )
        except LLMError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated into our taxonomy
            raise translate(exc, self._sdk, self.name) from None
        blocks = getattr(resp, "content", None)
        if blocks is None:
            raise RetryableError(f"{self.name}: response has no content: {str(resp)[:200]}")
        text = "".join(getattr(b, "text", "") or "" for b in blocks)
        text = redact_secrets(text, [self._api_key] if self._api_key else [])
        usage = getattr(resp, "usage", None)
        finish = normalize_finish_reason(getattr(resp, "stop_reason", None))
        if usage is not None and getattr(usage, "input_tokens", None) is not None:
            checked_usage(self.name, usage.input_tokens, usage.output_tokens,
                          int(body["max_tokens"]))
            uncached, write, read = usage_input_parts(usage)
            _, output_tokens = checked_usage(self.name, uncached + write + read,
                                             usage.output_tokens, int(body["max_tokens"]))
            return Completion(text, uncached + write + read, output_tokens, finish,
                              cache_read_tokens=read, cache_write_tokens=write)
        return Completion(
            text,
            sum(estimate_tokens(m["content"]) for m in messages),
            estimate_tokens(text),
            finish,
            usage_estimated=True,
        )
