"""The exchange: the one runner every front hands its requests to, and how outcomes are recorded."""

from __future__ import annotations

from proxy_app.exchange.outcome import Outcome, Sink
from proxy_app.exchange.runner import (
    CLIENT_CLOSED,
    ClientGone,
    Exchange,
    Renderer,
    UpstreamFailure,
    WholeReply,
    new_conversation_id,
    new_request_id,
    open_exchange,
)

__all__ = [
    "CLIENT_CLOSED", "ClientGone", "Exchange", "Outcome", "Renderer", "Sink", "UpstreamFailure", "WholeReply",
    "new_conversation_id", "new_request_id", "open_exchange",
]
