"""Start-up and shutdown of the proxy's services (aiohttp cleanup contexts)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from proxy_app.app_keys import SETTINGS, STATE
from proxy_app.config import ConfigStore
from proxy_app.exchange.archive import ArchiveWriter
from proxy_app.exchange.metrics import ProxyMetrics
from proxy_app.exchange.recording import AccessLogSink, ArchiveSink, SettlementSink, UsageRowSink
from proxy_app.exchange.state import ProxyState
from proxy_app.exchange.tokens import TokenCounter
from proxy_app.exchange.tracing import Tracing
from proxy_app.governance import Limiter, MemoryLimiter
from proxy_app.governance.breaker import Breakers
from proxy_app.health_rows import HealthRows
from proxy_app.memory import trim_heap
from proxy_app.transport.http import UpstreamClient
from shared.db import make_engine
from shared.usage_journal import UsageRecorder

if TYPE_CHECKING:
    from proxy_app.governance.shared_limits import RedisLimiter

log = logging.getLogger("nexusai.proxy")

ENCODING_LOAD_TIMEOUT_S = 15.0
# Shutdown budget, inside run.py's STOP_TIMEOUT_S together with aiohttp's shutdown_timeout:
# finalisations of cancelled requests, then the usage flush, then the archive.
BACKGROUND_DRAIN_S = 5.0
USAGE_FLUSH_S = 20.0
ARCHIVE_FLUSH_S = 5.0
METRICS_REFRESH_S = 1.0


async def _observe(state: ProxyState, metrics: ProxyMetrics) -> None:
    """Copy the proxy's running state into its metrics once a second (and publish it for the other workers)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(METRICS_REFRESH_S)
        try:
            state.observe()
            if metrics.peers_dir is not None:
                await loop.run_in_executor(None, metrics.publish)
        except Exception:  # noqa: BLE001 - metrics must never take the proxy down
            log.exception("metrics refresh failed")


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create the upstream client, config store, writers and token counter; flush them on exit."""
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    engine = make_engine(settings.database_url, settings.db_connect_timeout_s, settings.db_statement_timeout_s)
    tokens = TokenCounter(settings.data_dir / "tiktoken")
    try:
        # May try the network for o200k: bounded, and off the loop.
        await asyncio.wait_for(loop.run_in_executor(None, tokens.preload), ENCODING_LOAD_TIMEOUT_S)
    except asyncio.TimeoutError:
        log.warning("tiktoken encodings did not load within %.0f s; counting with the bundled cl100k",
                    ENCODING_LOAD_TIMEOUT_S)
    usage = UsageRecorder(
        engine,
        settings.journal_dir,
        flush_interval_s=settings.usage_flush_interval_s,
        batch_size=settings.usage_batch_size,
        record_journal=settings.usage_recorder == "thread",
    )
    # Claimed before serving: no request is accepted that the journal could not take.
    usage.open()
    archive = ArchiveWriter(settings.messages_dir)
    limiter: Limiter
    shared: RedisLimiter | None = None
    if settings.redis_url:
        from proxy_app.governance.shared_limits import RedisLimiter  # redis-py only when it is used

        limiter = shared = RedisLimiter(
            settings.redis_url, prefix=settings.redis_key_prefix, timeout_s=settings.redis_timeout_s,
            lease_s=settings.redis_lease_s, workers=settings.proxy_workers,
        )
    else:
        limiter = MemoryLimiter()
    # Quota consumption so far this period comes with each snapshot, so a restart does not reset it.
    config = ConfigStore(
        engine, settings.config_poll_interval_s, on_load=lambda snap: limiter.seed(snap.consumption),
        secret_box=settings.secret_box(),
    )
    await config.start()
    if shared is not None:
        # Back from an outage, periods Redis lost are seeded from the records as they are now.
        shared.on_return = config.load
        await shared.start()
    usage.start()
    archive.start()
    # No cookies, no environment proxies: one client's upstream state never rides along on
    # another key's calls, and a provider's own http_proxy is the only proxy used.
    upstream = UpstreamClient()
    breakers = Breakers(settings.breaker_failures, settings.breaker_cooldown_s, settings.retry_after_max_s)
    rank = {"least_latency": breakers.rank_latency, "least_busy": breakers.rank_busy}.get(settings.routing_strategy)
    # Several workers on one port: any of them answers a scrape with everyone's figures.
    peers_dir = settings.data_dir / "metrics" / "proxy" if settings.proxy_workers > 1 else None
    metrics = ProxyMetrics(peers_dir) if settings.metrics_enabled else None
    tracing = Tracing(settings.otel_endpoint, settings.otel_service_name) if settings.otel_endpoint else None
    extra_sinks = tuple(sink for sink in (metrics, tracing) if sink is not None)
    state = ProxyState(
        settings=settings, config=config, upstream=upstream, usage=usage, archive=archive, tokens=tokens,
        limiter=limiter, breakers=breakers, rank=rank, metrics=metrics, tracing=tracing,
        # The usage row first: it is the part that must never be lost.
        sinks=(UsageRowSink(usage), SettlementSink(limiter), ArchiveSink(archive, settings.archive_messages),
               AccessLogSink(), *extra_sinks),
    )
    observer = asyncio.create_task(_observe(state, metrics), name="metrics-refresh") if metrics is not None else None
    health_rows = HealthRows(engine, breakers, settings.health_write_interval_s)
    health_rows.start()
    app[STATE] = state
    # Start-up leaves ~half a million long-lived objects (SQLAlchemy, aiohttp, tiktoken); a full
    # collection over them stalled the loop for 50-200 ms. Freeze them out of the collector.
    gc.collect()
    gc.freeze()
    trim_heap()
    try:
        yield
    finally:
        if observer is not None:
            observer.cancel()
        if metrics is not None:
            metrics.withdraw()
        await health_rows.stop()
        if state.background:
            await asyncio.wait(set(state.background), timeout=BACKGROUND_DRAIN_S)
        await config.stop()
        if shared is not None:
            await shared.stop()
        await upstream.close()
        # Joining the writer threads blocks; do it on a worker so the loop stays free. Rows the
        # database does not take in time stay journaled for the next start.
        await loop.run_in_executor(None, usage.stop, USAGE_FLUSH_S)
        await loop.run_in_executor(None, archive.stop, ARCHIVE_FLUSH_S)
        if tracing is not None:
            await loop.run_in_executor(None, tracing.shutdown)
        engine.dispose()
        if usage.record_journal:
            log.info("proxy stopped: usage rows recorded this run: %d", usage.written)
        else:
            log.info("proxy stopped: its usage rows are journaled for the recorder process")
