"""Test doubles: a scripted backend that behaves like a real one for the client.

    backend = ScriptedBackend(lambda messages, temperature, sample_index: "impl: |-\\n  ...")
    client = LLMClient(backend, store=CallStore(tmp_path / "db"), run_id="t")

Token counts are estimated as len(text)//4, so budgets and "input tokens" plots work in tests.
The function may raise (e.g. `RetryableError` to exercise retries); `calls` records every call.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from .base import Completion, estimate_tokens

ScriptFn = Callable[[list[dict], float | None, int], Any]


class ScriptedBackend:
    """A `Backend` whose answers come from `fn(messages, temperature, sample_index) -> str`."""

    provider = "scripted"

    def __init__(self, fn: ScriptFn, *, model: str = "test", delay_s: float = 0.0,
                 finish_reason: str = "stop"):
        self.fn = fn
        self.model = model
        self.name = f"scripted:{model}"
        self.delay_s = delay_s
        self.finish_reason = finish_reason
        self.calls: list[dict[str, Any]] = []

    async def complete(self, messages: list[dict], params: dict[str, Any]) -> Completion:
        temperature = params.get("temperature")
        sample_index = int(params.get("sample_index", 0))
        self.calls.append({"messages": messages, **params})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out = self.fn(messages, temperature, sample_index)
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, Completion):
            return out
        if not isinstance(out, str):
            raise TypeError(f"ScriptedBackend fn must return a str; returned {type(out).__name__}")
        max_tokens = int(params.get("max_tokens") or 1024)
        finish = self.finish_reason
        if estimate_tokens(out) > max_tokens:
            out, finish = out[: max_tokens * 4], "length"
        return Completion(
            text=out,
            input_tokens=sum(estimate_tokens(m["content"]) for m in messages),
            output_tokens=estimate_tokens(out),
            finish_reason=finish,
        )


def echo(messages: list[dict], temperature: float | None, sample_index: int) -> str:
    """A handy script: echoes the last message with the temperature and sample index."""
    return f"echo[{temperature}/{sample_index}]: {messages[-1]['content']}"
