"""Exact cost arithmetic: tokens times USD-per-1M-token prices, in Decimal."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from shared.types import COST_PLACES

MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
ZERO = Decimal(0).quantize(COST_QUANTUM)


def request_cost(
    prompt_tokens: int,
    completion_tokens: int,
    input_price: Decimal | None,
    output_price: Decimal | None,
    *,
    cached_tokens: int = 0,
    cached_price: Decimal | None = None,
    cache_write_tokens: int = 0,
    cache_write_price: Decimal | None = None,
) -> Decimal:
    """Cost in USD of one request; unpriced sides cost nothing.

    Cached prompt tokens (part of `prompt_tokens`) cost `cached_price` when the model has one,
    else the input price like the rest of the prompt; prompt tokens written to the cache cost
    `cache_write_price` when the model has one, else the input price.
    """
    cost = Decimal(0)
    if cached_price is not None and cached_tokens > 0:
        cached = min(cached_tokens, prompt_tokens)
        cost += Decimal(cached) * cached_price
        prompt_tokens -= cached
    if cache_write_price is not None and cache_write_tokens > 0:
        written = min(cache_write_tokens, prompt_tokens)
        cost += Decimal(written) * cache_write_price
        prompt_tokens -= written
    if input_price:
        cost += Decimal(prompt_tokens) * input_price
    if output_price:
        cost += Decimal(completion_tokens) * output_price
    return (cost / MILLION).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)
