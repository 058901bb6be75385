"""The hub format's pieces, shared by every layer: what adapters produce and fronts render.

The hub format is OpenAI Chat Completions: a stream piece carries one chat
completion chunk (or the end), and usage is counted the same way for every kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Piece:
    """One upstream stream event: its hub-format object (None for comments), its bytes, or the end."""

    obj: dict[str, Any] | None
    raw: bytes
    done: bool = False


@dataclass(slots=True)
class TokenUsage:
    """Token figures an upstream reported for one exchange."""

    prompt: int
    completion: int
    total: int
    cached: int = 0  # of prompt: read from the upstream's prompt cache
    reasoning: int = 0
    cache_write: int = 0  # of prompt: written to the cache (Anthropic bills these apart)
