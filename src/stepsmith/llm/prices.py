"""USD prices per million tokens, overridable in config.toml `[prices]`.

List prices as published by the providers (late 2024 for the paper's models); check your
provider's page and override when they change. Local models cost nothing.

Provider prompt caching bills part of the prompt differently: OpenAI and DeepSeek charge cache
*reads* less (writes cost the normal input price); Anthropic charges reads 0.1x and writes
1.25x the input price. Where a cache price is unknown the full input price is charged, so an
estimate errs on the expensive side.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import load_config


@dataclass(frozen=True)
class Price:
    input_per_m: float
    output_per_m: float
    cached_input_per_m: float | None = None  # prompt-cache reads; None: the input price
    cache_write_per_m: float | None = None  # prompt-cache writes; None: the input price

    def cost(self, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0,
             cache_write_tokens: int = 0) -> float:
        """USD for one call; `input_tokens` is the whole prompt, the cache counts parts of it."""
        read = max(0, cache_read_tokens)
        write = max(0, cache_write_tokens)
        uncached = max(0, input_tokens - read - write)
        read_price = self.input_per_m if self.cached_input_per_m is None else self.cached_input_per_m
        write_price = self.input_per_m if self.cache_write_per_m is None else self.cache_write_per_m
        return (uncached * self.input_per_m + read * read_price + write * write_price
                + output_tokens * self.output_per_m) / 1e6


def _anthropic(input_per_m: float, output_per_m: float) -> Price:
    """Anthropic's published cache multipliers: reads 0.1x, (5-minute) writes 1.25x input."""
    return Price(input_per_m, output_per_m, round(input_per_m * 0.1, 6),
                 round(input_per_m * 1.25, 6))


# Keys are model names (without provider) or full specs; lookup tries the full spec, the model
# name, then the longest key that prefixes the model name (so dated snapshots match).
# Price(input, output, cached_input, cache_write): OpenAI's cached input is 50% of input for
# gpt-4o / o1 / o3-mini families and 25% for gpt-4.1 / o3 / o4-mini; writes are free there.
PRICES: dict[str, Price] = {
    # the paper's models
    "gpt-4o-2024-11-20": Price(2.50, 10.00, 1.25),
    "claude-3-5-sonnet-20241022": _anthropic(3.00, 15.00),
    "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo": Price(3.50, 3.50),
    "llama-3.1-405b": Price(3.50, 3.50),
    "deepseek-chat": Price(0.27, 1.10, 0.07),  # DeepSeek-V3; cache hit 0.07
    "deepseek-ai/DeepSeek-V3": Price(1.25, 1.25),  # Together
    # common current ones
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "o1": Price(15.00, 60.00, 7.50),
    "o1-mini": Price(1.10, 4.40, 0.55),
    "o3": Price(2.00, 8.00, 0.50),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "o4-mini": Price(1.10, 4.40, 0.275),
    "deepseek-reasoner": Price(0.55, 2.19, 0.14),
    "claude-3-5-haiku": _anthropic(0.80, 4.00),
    "claude-3-7-sonnet": _anthropic(3.00, 15.00),
    "claude-sonnet-4": _anthropic(3.00, 15.00),
    "claude-opus-4": _anthropic(15.00, 75.00),
    "claude-3-opus": _anthropic(15.00, 75.00),
}

FREE_PROVIDERS = ("llamacpp", "scripted")


def _config_prices() -> dict[str, Price]:
    table = load_config().get("prices", {})
    out: dict[str, Price] = {}
    if not isinstance(table, dict):
        return out
    for key, val in table.items():
        try:
            price = Price(float(val["input"]), float(val["output"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(
                f"config [prices.\"{key}\"] needs numeric 'input' and 'output' "
                f"(USD per million tokens); found {val!r}"
            ) from exc
        try:
            # an override replaces the built-in entry: cache prices not given fall back to input
            cached = val.get("cached_input")
            write = val.get("cache_write")
            out[key] = Price(price.input_per_m, price.output_per_m,
                             None if cached is None else float(cached),
                             None if write is None else float(write))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"config [prices.\"{key}\"] optional 'cached_input' and 'cache_write' must be "
                f"numeric (USD per million tokens); found {val!r}"
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
