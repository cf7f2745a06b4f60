"""The backend interface: messages in, text + usage + finish reason out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

ROLES = ("system", "user", "assistant")


@dataclass
class Completion:
    """One model answer. Backends fill the first four fields and the cache counts;
    `LLMClient` fills the rest.

    `input_tokens` is always the whole prompt (uncached + provider-cached), so "input tokens"
    means the same for every provider; `cache_read_tokens` / `cache_write_tokens` are the parts
    of it the provider read from / wrote to its prompt cache (they are priced differently).
    """

    text: str
    input_tokens: int  # total prompt tokens, cached ones included
    output_tokens: int
    finish_reason: str  # "stop", "length", or the provider's own word
    cost_usd: float = 0.0  # 0.0 for cache hits and for models without a known price
    cached: bool = False
    latency_s: float = 0.0
    call_id: int | None = None  # row id in the CallStore, when one is used
    usage_estimated: bool = False  # the server sent no usage; counts are len(text)//4
    model: str = ""
    cache_read_tokens: int = 0  # subset of input_tokens served from the provider's prompt cache
    cache_write_tokens: int = 0  # subset of input_tokens written to it (Anthropic charges extra)
    trace: str = ""  # what a local constrained decoder did (attempts, backtracks); logged


@runtime_checkable
class Backend(Protocol):
    """What `LLMClient` needs from a model provider.

    `name` is the spec used for logging, pricing and cache keys (e.g. `openai:gpt-4o`); it must
    not contain a base URL or a key. `params` holds `temperature` (float or None),
    `max_tokens` (int) and `sample_index` (int; local backends derive their seed from it).
    Transient failures raise `RetryableError`, permanent ones `LLMError`.
    """

    name: str
    provider: str
    model: str

    async def complete(self, messages: list[dict], params: dict[str, Any]) -> Completion: ...


def estimate_tokens(text: str) -> int:
    """Rough token count (len/4) used when a server sends no usage, and for budget checks."""
    return max(1, len(text) // 4) if text else 0


def messages_tokens(messages: list[dict]) -> int:
    return sum(estimate_tokens(str(m.get("content", ""))) + 4 for m in messages)


def prompt_tokens_upper(messages: list[dict]) -> int:
    """A prompt's token count erring high (len/4 undercounts code-heavy text by up to ~25%):
    what budgets reserve and cost estimates assume before the server reports usage."""
    return messages_tokens(messages) * 4 // 3


def validate_messages(messages: Any) -> list[dict]:
    """Check the chat format early so a bad request fails with a message, not a 400 later."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(
            "messages must be a non-empty list of {'role', 'content'} dicts; "
            f"found {type(messages).__name__} {messages!r:.80}"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content'; found {m!r:.80}")
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"messages[{i}]['role'] must be one of {ROLES}; found {role!r}")
        if not isinstance(m.get("content"), str):
            raise ValueError(
                f"messages[{i}]['content'] must be a string; found {type(m.get('content')).__name__}"
            )
    return messages


def normalize_finish_reason(reason: str | None) -> str:
    mapping = {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "max_tokens": "length",
        "eos": "stop",
        None: "unknown",
    }
    return mapping.get(reason, reason or "unknown")
