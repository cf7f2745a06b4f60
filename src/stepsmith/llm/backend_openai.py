"""OpenAI and OpenAI-compatible servers (vLLM, SGLang, Ollama, llama.cpp server, DeepSeek,
Together, OpenRouter) through the official `openai` SDK."""

from __future__ import annotations

import re
from typing import Any

from ._http_errors import checked_usage, translate, within_deadline
from .base import Completion, estimate_tokens, normalize_finish_reason
from .config import provider_setting
from .errors import LLMError, RetryableError
from .redact import redact_secrets

# o1/o3/o4-style reasoning models: no temperature, `max_completion_tokens`, no system role.
_REASONING = re.compile(r"^(o\d+)(-|$)|^gpt-5")
_NO_DEVELOPER_ROLE = re.compile(r"^o1-(mini|preview)")


def is_reasoning_model(model: str) -> bool:
    return bool(_REASONING.match(model.split("/")[-1]))


def build_request(model: str, messages: list[dict], params: dict[str, Any], *, official: bool) -> dict:
    """The request body this model family accepts (pure; unit-tested without a server)."""
    body: dict[str, Any] = {"model": model}
    temperature = params.get("temperature")
    max_tokens = int(params.get("max_tokens") or 1024)
    if official and is_reasoning_model(model):
        body["max_completion_tokens"] = max_tokens
        if _NO_DEVELOPER_ROLE.match(model):
            system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
            rest = [dict(m) for m in messages if m["role"] != "system"]
            if system and rest and rest[0]["role"] == "user":
                rest[0]["content"] = system + "\n\n" + rest[0]["content"]
            messages = rest
        else:
            messages = [
                {**m, "role": "developer"} if m["role"] == "system" else m for m in messages
            ]
    else:
        body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = float(temperature)
    body["messages"] = messages
    return body


def grammar_fields(server_kind: str | None, gbnf: str) -> dict[str, Any]:
    """The request field that carries a GBNF grammar to each engine (sent as `extra_body`):
    vLLM >= 0.12 `structured_outputs.grammar` (EBNF recognised by `::=`), SGLang `ebnf`,
    llama.cpp server `grammar`."""
    if server_kind == "vllm":
        return {"structured_outputs": {"grammar": gbnf}}
    if server_kind == "sglang":
        return {"ebnf": gbnf}
    if server_kind == "llamacpp":
        return {"grammar": gbnf}
    raise LLMError(
        "--constrain grammar on an OpenAI-compatible server needs to know which engine serves "
        "it: pass --server-kind vllm|sglang|llamacpp (or set STEPSMITH_SERVER_KIND)"
    )


def cached_prompt_tokens(usage: Any) -> int:
    """Prompt tokens the server read from its prompt cache (0 when it does not say).

    OpenAI (automatic caching, nothing to request) reports
    `usage.prompt_tokens_details.cached_tokens`; compatible servers may omit it or send None.
    DeepSeek reports `usage.prompt_cache_hit_tokens` instead. Both are part of `prompt_tokens`.
    """
    def get(obj: Any, name: str) -> Any:  # SDK objects and plain dicts (batch output lines)
        return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)

    cached = get(get(usage, "prompt_tokens_details"), "cached_tokens")
    if cached is None:
        cached = get(usage, "prompt_cache_hit_tokens")
    try:
        return max(0, int(cached or 0))
    except (TypeError, ValueError):
        return 0


class OpenAIBackend:
    """`openai:<model>` (official API) or `openai-compatible:<model>[@<base_url>]`."""

    def __init__(
        self,
        model: str,
        *,
        compatible: bool = False,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        server_kind: str | None = None,
    ):
        import openai  # imported here: keeps `import stepsmith.llm` light

        self._sdk = openai
        self.provider = "openai-compatible" if compatible else "openai"
        self.model = model
        self.name = f"{self.provider}:{model}"
        section = self.provider
        self.base_url = base_url or provider_setting(
            section, "base_url",
            ("STEPSMITH_OPENAI_COMPATIBLE_BASE_URL", "OPENAI_BASE_URL") if compatible
            else ("OPENAI_BASE_URL",),
        )
        self._api_key = api_key or provider_setting(
            section, "api_key",
            ("STEPSMITH_OPENAI_COMPATIBLE_API_KEY", "OPENAI_API_KEY") if compatible
            else ("OPENAI_API_KEY",),
        )
        if compatible and not self.base_url:
            raise LLMError(
                f"{self.name}: no base URL; set OPENAI_BASE_URL (e.g. http://127.0.0.1:8000/v1), "
                "write the spec as openai-compatible:<model>@<base_url>, or add base_url under "
                "[openai-compatible] in config.toml"
            )
        if not compatible and not self._api_key:
            raise LLMError(f"{self.name}: no API key; set OPENAI_API_KEY")
        self.timeout_s = timeout_s
        self.server_kind = server_kind or provider_setting(
            section, "server_kind", ("STEPSMITH_SERVER_KIND",))

    def _client(self) -> Any:
        """A fresh SDK client per call, closed after it: an httpx client must never outlive or
        cross the event loop it was made in (sample_sync runs a loop per call)."""
        return self._sdk.AsyncOpenAI(
            api_key=self._api_key or "EMPTY",
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=0,  # LLMClient retries, with Retry-After and a shared bound
        )

    async def complete(self, messages: list[dict], params: dict[str, Any]) -> Completion:
        body = build_request(self.model, messages, params, official=self.provider == "openai")
        constraint = params.get("constraint")
        if constraint is not None:
            if self.provider == "openai" or constraint.mode != "grammar":
                raise LLMError(
                    f"{self.name}: --constrain {constraint.mode} is not available here; typed "
                    "decoding runs on local llamacpp: models, and grammar pass-through on "
                    "openai-compatible servers (vLLM, SGLang, llama.cpp server)"
                )
            body["extra_body"] = grammar_fields(self.server_kind, constraint.grammar())
        try:
            async with self._client() as client:
                resp = await within_deadline(
                    client.chat.completions.create(**body), self.timeout_s, self.name
                )
        except LLMError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated into our taxonomy
            raise translate(exc, self._sdk, self.name) from None
        choices = getattr(resp, "choices", None)
        if not choices:
            raise RetryableError(f"{self.name}: response has no choices: {str(resp)[:200]}")
        choice = choices[0]
        text = (choice.message.content if choice.message else None) or ""
        if not isinstance(text, str):
            raise RetryableError(f"{self.name}: the answer is {type(text).__name__}, not text")
        text = redact_secrets(text, [self._api_key] if self._api_key else [])
        usage = getattr(resp, "usage", None)
        if usage is not None and usage.prompt_tokens is not None:
            input_tokens, output_tokens = checked_usage(
                self.name, usage.prompt_tokens, usage.completion_tokens,
                int(params.get("max_tokens") or 1024),
            )
            return Completion(
                text=text,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                finish_reason=normalize_finish_reason(choice.finish_reason),
                cache_read_tokens=min(cached_prompt_tokens(usage), input_tokens),
            )
        return Completion(
            text=text,
            input_tokens=sum(estimate_tokens(m["content"]) for m in messages),
            output_tokens=estimate_tokens(text),
            finish_reason=normalize_finish_reason(choice.finish_reason),
            usage_estimated=True,
        )
