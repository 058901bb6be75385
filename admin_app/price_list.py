"""Built-in list prices (USD per 1M tokens) for common models, used when a model is created without prices.

These are the providers' published list prices for standard (non-batch,
non-priority) text usage, as the author knew them; they were written down
from memory, WITHOUT internet access, so each provider's block names its
official pricing page and the date its figures are believed current. Check
them against that page before billing anyone: an operator's explicit prices
always win, and the admin API can change them at any time. Tiered prices
(e.g. Gemini's long-context tier) use the first, smallest-prompt tier.

Matching (`list_price`): the upstream name, then the model name, each
lower-cased, without a provider prefix (`openai/gpt-4o`, `models/gemini-2.0-flash`)
and tried first as is, then with dated or versioned suffixes removed one at a
time (`gpt-4o-2024-08-06`, `claude-3-5-sonnet-20241022`, `-latest`,
`gemini-1.5-pro-002`, `mistral-large-2411`, `grok-4-0709`). Names with a `:tag`
(OpenRouter's `:free`, Bedrock's `:0`, Ollama's `:8b`) never match: their
prices differ from the list. Snapshots priced unlike their alias have their
own entry (e.g. `gpt-4o-2024-05-13`), which wins because it matches first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class ListPrice:
    """USD per 1M tokens; `cached_input` is the cache-hit input price, `cache_write` the cache-write one,
    where published."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None


def _p(input_price: str, output_price: str, cached: str | None = None, write: str | None = None) -> ListPrice:
    return ListPrice(Decimal(input_price), Decimal(output_price), Decimal(cached) if cached else None,
                     Decimal(write) if write else None)


PRICES: dict[str, ListPrice] = {
    # OpenAI — https://openai.com/api/pricing/ (and https://platform.openai.com/docs/pricing), as of 2025-08-07.
    "gpt-5": _p("1.25", "10.00", "0.125"),
    "gpt-5-mini": _p("0.25", "2.00", "0.025"),
    "gpt-5-nano": _p("0.05", "0.40", "0.005"),
    "gpt-5-chat-latest": _p("1.25", "10.00", "0.125"),
    "gpt-4.1": _p("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": _p("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": _p("0.10", "0.40", "0.025"),
    "gpt-4o": _p("2.50", "10.00", "1.25"),
    "gpt-4o-2024-05-13": _p("5.00", "15.00"),
    "chatgpt-4o-latest": _p("5.00", "15.00"),
    "gpt-4o-mini": _p("0.15", "0.60", "0.075"),
    "o1": _p("15.00", "60.00", "7.50"),
    "o1-mini": _p("1.10", "4.40", "0.55"),
    "o1-pro": _p("150.00", "600.00"),
    "o1-preview": _p("15.00", "60.00", "7.50"),
    "o3": _p("2.00", "8.00", "0.50"),
    "o3-mini": _p("1.10", "4.40", "0.55"),
    "o3-pro": _p("20.00", "80.00"),
    "o4-mini": _p("1.10", "4.40", "0.275"),
    "gpt-4-turbo": _p("10.00", "30.00"),
    "gpt-4-turbo-preview": _p("10.00", "30.00"),
    "gpt-4-1106-preview": _p("10.00", "30.00"),
    "gpt-4-0125-preview": _p("10.00", "30.00"),
    "gpt-4": _p("30.00", "60.00"),
    "gpt-4-32k": _p("60.00", "120.00"),
    "gpt-3.5-turbo": _p("0.50", "1.50"),
    "gpt-3.5-turbo-instruct": _p("1.50", "2.00"),
    # Anthropic — https://www.anthropic.com/pricing#api (and
    # https://docs.anthropic.com/en/docs/about-claude/pricing), as of 2025-10-15; cached = cache read,
    # write = a 5-minute cache write (1.25 times the input price).
    "claude-haiku-4-5": _p("1.00", "5.00", "0.10", "1.25"),
    "claude-sonnet-4-5": _p("3.00", "15.00", "0.30", "3.75"),
    "claude-opus-4-1": _p("15.00", "75.00", "1.50", "18.75"),
    "claude-opus-4": _p("15.00", "75.00", "1.50", "18.75"),
    "claude-sonnet-4": _p("3.00", "15.00", "0.30", "3.75"),
    "claude-3-7-sonnet": _p("3.00", "15.00", "0.30", "3.75"),
    "claude-3-5-sonnet": _p("3.00", "15.00", "0.30", "3.75"),
    "claude-3-5-haiku": _p("0.80", "4.00", "0.08", "1.00"),
    "claude-3-opus": _p("15.00", "75.00", "1.50", "18.75"),
    "claude-3-sonnet": _p("3.00", "15.00"),
    "claude-3-haiku": _p("0.25", "1.25", "0.03", "0.30"),
    # Google Gemini API — https://ai.google.dev/gemini-api/docs/pricing, as of 2025-07-22;
    # prompts up to 200k tokens (128k for 1.5), text input.
    "gemini-2.5-pro": _p("1.25", "10.00", "0.31"),
    "gemini-2.5-flash": _p("0.30", "2.50", "0.075"),
    "gemini-2.5-flash-lite": _p("0.10", "0.40", "0.025"),
    "gemini-2.0-flash": _p("0.10", "0.40", "0.025"),
    "gemini-2.0-flash-lite": _p("0.075", "0.30"),
    "gemini-1.5-pro": _p("1.25", "5.00"),
    "gemini-1.5-flash": _p("0.075", "0.30"),
    "gemini-1.5-flash-8b": _p("0.0375", "0.15"),
    # DeepSeek — https://api-docs.deepseek.com/quick_start/pricing, as of 2025-09-29 (V3.2-Exp prices;
    # both names served by the same model); cached = cache hit.
    "deepseek-chat": _p("0.28", "0.42", "0.028"),
    "deepseek-reasoner": _p("0.28", "0.42", "0.028"),
    # xAI — https://docs.x.ai/docs/models, as of 2025-07-10.
    "grok-4": _p("3.00", "15.00", "0.75"),
    "grok-3": _p("3.00", "15.00"),
    "grok-3-mini": _p("0.30", "0.50"),
    "grok-2": _p("2.00", "10.00"),
    "grok-2-vision": _p("2.00", "10.00"),
    "grok-beta": _p("5.00", "15.00"),
    # Mistral — https://mistral.ai/pricing#api-pricing, as of 2025-06-10.
    "mistral-large": _p("2.00", "6.00"),
    "mistral-medium": _p("0.40", "2.00"),
    "mistral-small": _p("0.10", "0.30"),
    "magistral-medium": _p("2.00", "5.00"),
    "magistral-small": _p("0.50", "1.50"),
    "codestral": _p("0.30", "0.90"),
    "pixtral-large": _p("2.00", "6.00"),
    "pixtral-12b": _p("0.15", "0.15"),
    "open-mistral-nemo": _p("0.15", "0.15"),
    "ministral-8b": _p("0.10", "0.10"),
    "ministral-3b": _p("0.04", "0.04"),
}

# Removed one at a time from the end of a name until it matches.
_SUFFIXES = (
    re.compile(r"-latest$"),
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # gpt-4o-2024-08-06
    re.compile(r"[-@]\d{8}$"),  # claude-3-5-sonnet-20241022, ...@20241022
    re.compile(r"-preview-\d{2}-\d{2}$"),  # gemini-2.5-pro-preview-05-06
    re.compile(r"-\d{4}$"),  # gpt-4-0613, mistral-large-2411, grok-4-0709
    re.compile(r"-\d{3}$"),  # gemini-1.5-pro-002
)
MAX_STRIPS = 3


def _candidates(name: str) -> list[str]:
    """`name` normalised, then with one more suffix removed each time."""
    text = name.strip().lower().rsplit("/", 1)[-1]
    if not text or ":" in text:
        return []
    out = [text]
    for _ in range(MAX_STRIPS):
        for pattern in _SUFFIXES:
            stripped = pattern.sub("", text)
            if stripped != text and stripped:
                text = stripped
                out.append(text)
                break
        else:
            break
    return out


def list_price(*names: str | None) -> ListPrice | None:
    """The list price of the first name that matches (give upstream name, then model name)."""
    for name in names:
        if not name:
            continue
        for candidate in _candidates(name):
            price = PRICES.get(candidate)
            if price is not None:
                return price
    return None
