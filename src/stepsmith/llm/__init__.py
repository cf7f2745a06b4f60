"""stepsmith.llm — models behind one interface, with a call log, a cache, costs and budgets.

    from stepsmith.llm import LLMClient, CallStore, Budget
    client = LLMClient("openai:gpt-4o-2024-11-20", store=CallStore(), run_id="r1",
                       budget=Budget(max_cost_usd=5.0))
    comp = await client.sample(messages, temperature=0.7, sample_index=3, task="gemm_1")

See docs/llm.md. Heavy SDKs (openai, anthropic, llama_cpp) are imported only when used.
"""

from .backends import get_backend, parse_spec
from .base import Backend, Completion
from .budget import Budget
from .client import CACHE_MODES, LLMClient
from .errors import (
    BudgetExceeded,
    CacheMiss,
    InfrastructureError,
    LLMError,
    LLMLayerError,
    ModelIntegrityError,
    ModelNotInstalled,
    RetryableError,
)
from .models import DEFAULT_MODEL, KNOWN_MODELS, ensure_model
from .prices import Price, price_for
from .store import CallStore

__all__ = [
    "Backend",
    "Budget",
    "BudgetExceeded",
    "CACHE_MODES",
    "CacheMiss",
    "InfrastructureError",
    "CallStore",
    "Completion",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "LLMClient",
    "LLMError",
    "LLMLayerError",
    "ModelIntegrityError",
    "ModelNotInstalled",
    "Price",
    "RetryableError",
    "ensure_model",
    "get_backend",
    "parse_spec",
    "price_for",
]
