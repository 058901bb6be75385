"""What a front tells the exchange about its client API: validation, upstream body, metering.

The runner assumes no request shape; each front hands it an `Api`, and the exchange's
usage row, reservation and token estimate come from it. An API that can be served by a
provider lacking it natively carries a `ChatTranslation`: the exchange sends such a
provider the request as chat completions (the hub format), and the front renders the
chat reply back into its own shape.
"""

from __future__ import annotations

from typing import Any, Protocol

from proxy_app.exchange.tokens import TokenCounter

# Above this many characters of prompt, counting moves to a worker thread.
OFFLOAD_COUNT_CHARS = 50_000


class ChatTranslation(Protocol):
    """How a client API's request becomes a chat completion request, for chat-only providers."""

    def native_only(self, body: dict[str, Any]) -> str | None:
        """What in the request the translation cannot carry (it then needs a native upstream), else None."""
        ...

    def chat_body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """The request as chat completions (ProxyError 400 for what cannot be translated)."""
        ...


class Api(Protocol):
    """One client API as the exchange needs to know it."""

    name: str  # the usage row's `api`: chat, responses, embeddings, completions, messages

    @property
    def translation(self) -> ChatTranslation | None:
        """How to send the API to chat-only providers; None: only providers serving it are candidates."""
        ...

    def validate(self, body: Any) -> tuple[str, bool]:
        """The model and whether the client wants a stream; ProxyError 400 when the body is not valid."""
        ...

    def upstream_body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """The body to send upstream (the client's, plus what the gateway needs, e.g. stream usage)."""
        ...

    def archived_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request as the archive shows it: as the client sent it."""
        ...

    def prompt_chars(self, body: dict[str, Any]) -> int:
        """A cheap size of the prompt, to decide whether counting it may run on the loop."""
        ...

    def count_prompt(self, counter: TokenCounter, body: dict[str, Any], model: str) -> int:
        """The prompt's tokens by tiktoken (when the upstream reports none)."""
        ...

    def completion_limit(self, body: dict[str, Any]) -> int | None:
        """The most tokens the reply may have, if the client said (for limit reservations)."""
        ...
