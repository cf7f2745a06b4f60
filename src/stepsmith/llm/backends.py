"""Model spec strings → backends.

    openai:gpt-4o-2024-11-20
    anthropic:claude-3-5-sonnet-20241022
    openai-compatible:<model>                    (base URL from OPENAI_BASE_URL / config)
    openai-compatible:<model>@http://host:8000/v1
    llamacpp:qwen2.5-coder-0.5b | llamacpp:/path/model.gguf
"""

from __future__ import annotations

from .base import Backend
from .errors import LLMError

PROVIDERS = ("openai", "anthropic", "openai-compatible", "llamacpp")


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """(provider, model, base_url) from a spec; a clear error names the accepted forms."""
    if not isinstance(spec, str) or ":" not in spec:
        raise LLMError(
            f"model spec {spec!r} must look like PROVIDER:MODEL with PROVIDER one of "
            f"{', '.join(PROVIDERS)} (e.g. openai:gpt-4o-2024-11-20, llamacpp:qwen2.5-coder-0.5b)"
        )
    provider, _, model = spec.partition(":")
    provider = provider.strip().lower()
    if provider not in PROVIDERS:
        raise LLMError(
            f"model spec {spec!r}: unknown provider {provider!r}; expected one of "
            f"{', '.join(PROVIDERS)}"
        )
    base_url = None
    if provider == "openai-compatible":
        for marker in ("@http://", "@https://"):
            if marker in model:
                model, _, rest = model.partition(marker)
                base_url = marker[1:] + rest
                break
    if not model.strip():
        raise LLMError(f"model spec {spec!r}: the model name after {provider}: is empty")
    return provider, model.strip(), base_url


def get_backend(spec: str | Backend, *, base_url: str | None = None, api_key: str | None = None,
                timeout_s: float = 120.0) -> Backend:
    """Build the backend for a spec (a Backend instance is returned unchanged)."""
    if not isinstance(spec, str):
        if isinstance(spec, Backend):
            return spec
        raise LLMError(f"expected a model spec string or a Backend; found {type(spec).__name__}")
    provider, model, spec_url = parse_spec(spec)
    url = base_url or spec_url
    if provider in ("openai", "openai-compatible"):
        from .backend_openai import OpenAIBackend

        return OpenAIBackend(model, compatible=provider == "openai-compatible", base_url=url,
                             api_key=api_key, timeout_s=timeout_s)
    if provider == "anthropic":
        from .backend_anthropic import AnthropicBackend

        return AnthropicBackend(model, base_url=url, api_key=api_key, timeout_s=timeout_s)
    from .backend_llamacpp import LlamaCppBackend

    return LlamaCppBackend(model)
