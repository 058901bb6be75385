"""The outcome sinks: each keeps one part of every finished exchange.

The runner hands every outcome to each sink once, in order: the usage row first (it is
what must never be lost), then the limiter's settlement, the archive line and the
access-log line. A metrics sink joins the same list.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from proxy_app.exchange.archive import ArchiveWriter
from proxy_app.exchange.outcome import Outcome
from proxy_app.governance import Limiter
from shared.logs import log_info_line
from shared.usage_journal import UsageRecorder

access_log = logging.getLogger("nexusai.proxy.access")


class UsageRowSink:
    """The usage row, journaled before the client's reply completes (see shared/usage_journal)."""

    def __init__(self, journal: UsageRecorder) -> None:
        self._journal = journal

    def record(self, outcome: Outcome) -> None:
        """Journal the row: one write() to the kernel."""
        ex = outcome.exchange
        route = ex.route
        usage = outcome.usage
        meter = ex.meter
        self._journal.submit({
            "request_id": ex.request_id,
            "key_id": ex.key.id or None,  # 0: the gateway's own request (a provider test), no client key
            "provider_id": route.provider.id,
            "provider_name": route.provider.name,
            "model": route.model_name,
            "upstream_model": route.upstream_name,
            "api": ex.api.name if ex.transport != "ws" else "ws",
            "conversation_id": ex.conversation_id,
            "transport": ex.transport,
            "stream": ex.stream,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "token_source": usage.source,
            "cost_usd": outcome.cost_usd,
            "latency_ms": round(outcome.latency_ms, 3),
            "ttft_ms": round(meter.ttft_ms, 3) if meter.ttft_ms is not None else None,
            "status_code": outcome.status,
            "error_type": outcome.error_type,
            "created_at": ex.created_at,
        })


class SettlementSink:
    """The key's limits: its reservation replaced by what the request really used."""

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter

    def record(self, outcome: Outcome) -> Awaitable[None] | None:
        """Settle the exchange's ticket, if it was admitted with one (the limiter's call, awaited)."""
        ticket = outcome.exchange.ticket
        if ticket is None:
            return None
        return self._limiter.settle(ticket, outcome.usage.total_tokens, outcome.cost_usd)


class ArchiveSink:
    """The archive line, for keys (or a gateway) that archive messages."""

    def __init__(self, archive: ArchiveWriter, archive_by_default: bool) -> None:
        self._archive = archive
        self._default = archive_by_default

    def record(self, outcome: Outcome) -> None:
        """Queue the exchange's archive entry (written on the archive's thread)."""
        ex = outcome.exchange
        wanted = ex.key.archive_messages if ex.key.archive_messages is not None else self._default
        if not wanted:
            return
        route, usage, meter = ex.route, outcome.usage, ex.meter
        self._archive.submit({
            "created_at": ex.created_at,
            "request_id": ex.request_id,
            "conversation_id": ex.conversation_id,
            "transport": ex.transport,
            "api": ex.api.name,
            "key_id": ex.key.id or None,
            "model": ex.model,
            "upstream_model": route.upstream_name,
            "provider": route.provider.name,
            "stream": ex.stream,
            "status": outcome.status,
            "error_type": outcome.error_type,
            "request": ex.api.archived_request(ex.client_body),
            "reply": meter.reply_message(),
            "finish_reason": meter.finish_reason,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
                "cached_tokens": usage.cached_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
                "token_source": usage.source,
            },
            "cost_usd": str(outcome.cost_usd),
            "latency_ms": round(outcome.latency_ms, 3),
            "ttft_ms": meter.ttft_ms,
        })


class AccessLogSink:
    """One access-log line per exchange (the key as its hint only)."""

    def record(self, outcome: Outcome) -> None:
        """Write the line through the proxy's batching log handler."""
        ex, usage = outcome.exchange, outcome.usage
        log_info_line(
            access_log, "%s %s api=%s key=%s model=%s provider=%s status=%d latency_ms=%.1f tokens=%d/%d source=%s",
            ex.request_id, ex.transport, ex.api.name, ex.key.hint, ex.model, ex.route.provider.name, outcome.status,
            outcome.latency_ms, usage.prompt_tokens, usage.completion_tokens, usage.source,
        )
