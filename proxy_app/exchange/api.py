"""What a front tells the exchange about its client API: validation, upstream body, metering.

The runner assumes no request shape; each front hands it an `Api` (chat now; responses,
embeddings, completions and messages join in later issues), and the exchange's usage
row, reservation and token estimate come from it.
"""

from __future__ import annotations

from typing import Any, Protocol

from proxy_app.exchange.tokens import TokenCounter

# Above this many characters of prompt, counting moves to a worker thread.
OFFLOAD_COUNT_CHARS = 50_000


class Api(Protocol):
    """One client API as the exchange needs to know it."""

    name: str  # the usage row's `api`: chat, responses, embeddings, completions, messages

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
