"""Backs: one adapter per provider kind, chosen by the provider's `kind`."""

from __future__ import annotations

from proxy_app.backs.anthropic import AnthropicAdapter
from proxy_app.backs.azure import AzureAdapter
from proxy_app.backs.base import Adapter
from proxy_app.backs.gemini import GeminiAdapter
from proxy_app.backs.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    adapter.kind: adapter for adapter in (OpenAIAdapter(), AnthropicAdapter(), GeminiAdapter(), AzureAdapter())
}


def adapter_for(kind: str) -> Adapter:
    """The adapter of a provider kind (the snapshot holds only providers of known kinds)."""
    return ADAPTERS[kind]
