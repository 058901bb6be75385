"""Provider kinds and client APIs: what the admin validates and the proxy routes by."""

from __future__ import annotations

from collections.abc import Iterable

# The client APIs a provider can serve (the usage row's `api` adds `ws` for /ws/chat).
CLIENT_APIS = ("chat", "responses", "embeddings", "completions", "messages")
USAGE_APIS = (*CLIENT_APIS, "ws")  # what a usage row's `api` may hold
# The APIs each kind serves natively when a provider does not say (SPEC: data model).
DEFAULT_APIS: dict[str, tuple[str, ...]] = {
    "openai": ("chat", "responses", "embeddings", "completions"),
    "anthropic": ("messages",),  # chat (and through it Responses, the WebSocket chat) by translation
    "gemini": (),  # none natively: chat and embeddings by translation, the rest through chat
    "azure": ("chat", "responses", "embeddings", "completions"),
}
# Kinds whose wire format is no client API: a provider's own `apis` list cannot add one.
TRANSLATED_ONLY = frozenset({"gemini"})
PROVIDER_KINDS = tuple(DEFAULT_APIS)
DEFAULT_KIND = "openai"
DEFAULT_CONNECT_TIMEOUT_S = 5.0


def provider_apis(kind: str, apis: Iterable[str] | None) -> frozenset[str]:
    """The APIs a provider serves natively: its own list, else its kind's defaults."""
    if kind in TRANSLATED_ONLY:
        return frozenset()
    if apis:
        return frozenset(apis)
    return frozenset(DEFAULT_APIS.get(kind, ()))
