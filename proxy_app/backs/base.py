"""What every provider adapter offers the exchange: requests out, replies and stream events in.

An adapter knows one provider kind's wire format (URLs, auth headers, reply and
stream shapes, usage fields, error bodies). Everything it hands back is in the
hub format (proxy_app.hub), with the upstream's own bytes beside it so a front that
speaks the upstream's API can pass them through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from proxy_app.config import ProviderCfg
from proxy_app.hub import Piece, TokenUsage

__all__ = ["Adapter", "Piece", "StreamDecoder", "TokenUsage", "UpstreamCall", "UpstreamFault"]


@dataclass(slots=True)
class UpstreamCall:
    """One HTTP request to a provider, ready for the transport."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class UpstreamFault:
    """An error the upstream reported inside a 200 reply or stream (an `error` event)."""

    status: int
    message: str
    code: str


class StreamDecoder(Protocol):
    """Turns a provider's stream bytes into pieces, one upstream read at a time."""

    def feed(self, data: bytes) -> list[Piece]:
        """The complete events in `data` (and what earlier reads left unfinished)."""
        ...

    def close(self) -> list[Piece]:
        """What is left when the upstream ends its body."""
        ...


class Adapter(Protocol):
    """One provider kind."""

    kind: str
    native_apis: frozenset[str]  # the client APIs the kind serves itself (SPEC: defaults per kind)
    translated_apis: frozenset[str]  # the client APIs it serves by translating them to a native one

    def build(self, provider: ProviderCfg, api: str, body: dict[str, Any], upstream_model: str,
              stream: bool, client_headers: Mapping[str, str]) -> UpstreamCall:
        """The upstream request for a client body of `api` (its model replaced by `upstream_model`).

        `client_headers`: the client's own headers of its API (e.g. `anthropic-version`), passed on
        when the provider serves that API natively.
        """
        ...

    def decode_reply(self, api: str, raw: bytes, request: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """A whole 2xx reply as a hub-format object (None when it is not one).

        `request`: the body `build` was given, for replies whose translation depends on it
        (the embeddings `encoding_format`).
        """
        ...

    def stream_decoder(self, api: str) -> StreamDecoder:
        """A decoder for one streamed reply."""
        ...

    def usage(self, obj: dict[str, Any]) -> TokenUsage | None:
        """The usage a reply or stream chunk carries, if any."""
        ...

    def fault(self, obj: dict[str, Any]) -> UpstreamFault | None:
        """The error a 200 reply or a stream event reports instead of content, if it does."""
        ...

    def error_body(self, status: int, raw: bytes, provider: ProviderCfg) -> bytes:
        """An upstream error reply as an OpenAI error body (never holding the provider's key)."""
        ...
