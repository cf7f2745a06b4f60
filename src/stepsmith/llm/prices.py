"""USD prices per million tokens (input, output), overridable in config.toml `[prices]`.

List prices as published by the providers (late 2024 for the paper's models); check your
provider's page and override when they change. Local models cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import load_config


@dataclass(frozen=True)
class Price:
    input_per_m: float
    output_per_m: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_m + output_tokens * self.output_per_m) / 1e6


# Keys are model names (without provider) or full specs; lookup tries the full spec, the model
# name, then the longest key that prefixes the model name (so dated snapshots match).
PRICES: dict[str, Price] = {
    # the paper's models
    "gpt-4o-2024-11-20": Price(2.50, 10.00),
    "claude-3-5-sonnet-20241022": Price(3.00, 15.00),
    "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo": Price(3.50, 3.50),
    "llama-3.1-405b": Price(3.50, 3.50),
    "deepseek-chat": Price(0.27, 1.10),  # DeepSeek-V3
    "deepseek-ai/DeepSeek-V3": Price(1.25, 1.25),  # Together
    # common current ones
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o1": Price(15.00, 60.00),
    "o1-mini": Price(1.10, 4.40),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "deepseek-reasoner": Price(0.55, 2.19),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-opus-4": Price(15.00, 75.00),
    "claude-3-opus": Price(15.00, 75.00),
}

FREE_PROVIDERS = ("llamacpp", "scripted")


def _config_prices() -> dict[str, Price]:
    table = load_config().get("prices", {})
    out: dict[str, Price] = {}
    if not isinstance(table, dict):
        return out
    for key, val in table.items():
        try:
            out[key] = Price(float(val["input"]), float(val["output"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(
                f"config [prices.\"{key}\"] needs numeric 'input' and 'output' "
                f"(USD per million tokens); found {val!r}"
            ) from exc
    return out


def price_for(spec: str) -> Price | None:
    """The price of a model spec like `openai:gpt-4o-2024-11-20`, or None when unknown."""
    provider, _, model = spec.partition(":")
    if provider in FREE_PROVIDERS:
        return Price(0.0, 0.0)
    table = {**PRICES, **_config_prices()}
    for key in (spec, model, model.lower()):
        if key in table:
            return table[key]
    candidates = [k for k in table if model.lower().startswith(k.lower())]
    if candidates:
        return table[max(candidates, key=len)]
    return None
