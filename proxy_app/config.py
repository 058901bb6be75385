"""The in-memory config snapshot (providers, models, keys) and its refresher.

The request path reads only `ConfigStore.snapshot`; loading and polling the
config version happen on a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from shared.db import read_config_version
from shared.models import ApiKey, Provider, ProviderModel
from shared.periods import consumption, period_bounds
from shared.provider_kinds import DEFAULT_CONNECT_TIMEOUT_S, PROVIDER_KINDS, provider_apis
from shared.secret_box import SecretBox, SecretUnavailable

log = logging.getLogger("nexusai.proxy.config")


@dataclass(frozen=True, slots=True)
class ProviderCfg:
    """What the proxy needs to reach one upstream."""

    id: int
    name: str
    base_url: str
    server_key: str
    http_proxy: str | None
    timeout_s: float  # first byte, and silence between stream events
    priority: int
    weight: int
    kind: str = "openai"  # which adapter speaks to it
    apis: frozenset[str] = frozenset({"chat"})  # the client APIs it serves natively
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    api_version: str | None = None  # azure: the api-version query; gemini: the URL's version


@dataclass(frozen=True, slots=True)
class Route:
    """One provider serving one model."""

    provider: ProviderCfg
    model_id: int
    model_name: str
    upstream_name: str
    input_price: Decimal | None
    output_price: Decimal | None
    created: int
    cached_input_price: Decimal | None = None
    cache_write_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class KeyCfg:
    """A client key as the proxy sees it."""

    id: int
    name: str
    hint: str
    provider_ids: frozenset[int]
    models: frozenset[str]
    enabled: bool
    expires_at: datetime | None
    archive_messages: bool | None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    token_quota: int | None = None
    budget_usd: Decimal | None = None
    quota_period: str = "total"

    def allows(self, route: Route) -> bool:
        """Whether this key's scope covers `route`."""
        if self.provider_ids and route.provider.id not in self.provider_ids:
            return False
        if self.models and route.model_name not in self.models:
            return False
        return True


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of the configuration at one config version."""

    version: int = -1
    keys_by_hash: dict[str, KeyCfg] = field(default_factory=dict)
    routes_by_model: dict[str, tuple[Route, ...]] = field(default_factory=dict)
    providers_by_name: dict[str, ProviderCfg] = field(default_factory=dict)
    # Quota-limited keys: (period, period start as epoch seconds, tokens, usd) recorded so far.
    consumption: dict[int, tuple[str, float, int, Decimal]] = field(default_factory=dict)


def load_snapshot(engine: Engine, secret_box: SecretBox | None = None) -> Snapshot:
    """Read the whole routing configuration, secrets opened (blocking: call from a thread)."""
    box = secret_box or SecretBox(None)
    with Session(engine) as session:
        version = read_config_version(session)
        providers = session.scalars(select(Provider).where(Provider.enabled.is_(True))).all()
        models = session.scalars(select(ProviderModel).where(ProviderModel.enabled.is_(True))).all()
        keys = session.scalars(select(ApiKey)).all()

        by_id: dict[int, ProviderCfg] = {}
        for p in providers:
            if p.kind not in PROVIDER_KINDS:
                # Written by a newer version, or by hand: serving it with the wrong wire format would be worse.
                log.warning("provider %s has unknown kind %r: not served", p.name, p.kind)
                continue
            try:
                server_key, http_proxy = box.open(p.server_key) or "", box.open(p.http_proxy) or None
            except SecretUnavailable as exc:
                log.error("provider %s is not served: its secrets cannot be decrypted: %s", p.name, exc)
                continue
            by_id[p.id] = ProviderCfg(
                id=p.id,
                name=p.name,
                base_url=p.server_url.rstrip("/"),
                server_key=server_key,
                http_proxy=http_proxy,
                timeout_s=float(p.timeout_s or 60.0),
                priority=p.priority or 0,
                weight=max(1, p.weight or 1),
                kind=p.kind,
                apis=provider_apis(p.kind, p.apis),
                connect_timeout_s=float(p.connect_timeout_s or DEFAULT_CONNECT_TIMEOUT_S),
                api_version=p.api_version or None,
            )
        routes: dict[str, list[Route]] = {}
        for m in models:
            provider = by_id.get(m.provider_id)
            if provider is None:
                continue
            routes.setdefault(m.model_name, []).append(
                Route(
                    provider=provider,
                    model_id=m.id,
                    model_name=m.model_name,
                    upstream_name=m.effective_upstream_name,
                    input_price=m.input_price,
                    output_price=m.output_price,
                    created=int(m.created_at.timestamp()),
                    cached_input_price=m.cached_input_price,
                    cache_write_price=m.cache_write_price,
                )
            )
        key_cfgs = {
            k.key_hash: KeyCfg(
                id=k.id,
                name=k.name,
                hint=k.key_hint,
                provider_ids=frozenset(int(i) for i in (k.provider_ids or [])),
                models=frozenset(str(n) for n in (k.models or [])),
                enabled=k.enabled,
                expires_at=k.expires_at,
                archive_messages=k.archive_messages,
                rpm=k.rpm,
                tpm=k.tpm,
                max_concurrency=k.max_concurrency,
                token_quota=k.token_quota,
                budget_usd=k.budget_usd,
                quota_period=k.quota_period,
            )
            for k in keys
        }
        periods = {
            k.id: k.quota_period for k in keys if k.token_quota or k.budget_usd is not None
        }
        now = datetime.now(timezone.utc)
        used = consumption(session, periods, now) if periods else {}
    return Snapshot(
        version=version,
        keys_by_hash=key_cfgs,
        routes_by_model={
            name: tuple(sorted(rs, key=lambda r: (-r.provider.priority, r.provider.id)))
            for name, rs in routes.items()
        },
        providers_by_name={p.name: p for p in by_id.values()},
        consumption={
            kid: (periods[kid], period_bounds(periods[kid], now)[0].timestamp(), tokens, usd)
            for kid, (tokens, usd) in used.items()
        },
    )


def read_version(engine: Engine) -> int:
    """The admin's current config version (blocking: call from a thread)."""
    with Session(engine) as session:
        return read_config_version(session)


class ConfigStore:
    """Holds the current snapshot and refreshes it when the config version moves."""

    def __init__(
        self, engine: Engine, poll_interval_s: float,
        on_load: Callable[[Snapshot], None] | None = None,
        secret_box: SecretBox | None = None,
    ) -> None:
        self.engine = engine
        self.secret_box = secret_box or SecretBox(None)
        self.poll_interval_s = poll_interval_s
        self.snapshot = Snapshot()
        self.on_load = on_load
        self.confirmed_at: float | None = None  # monotonic time the snapshot was last known current
        self.last_error: str | None = None  # why the last refresh failed, until one succeeds
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def load(self) -> None:
        """Load the snapshot now, off the loop."""
        loop = asyncio.get_running_loop()
        self.snapshot = await loop.run_in_executor(None, load_snapshot, self.engine, self.secret_box)
        self.confirmed_at, self.last_error = time.monotonic(), None
        if self.on_load is not None:
            self.on_load(self.snapshot)
        log.info("config loaded: version %d, %d keys, %d models",
                 self.snapshot.version, len(self.snapshot.keys_by_hash), len(self.snapshot.routes_by_model))

    async def start(self) -> None:
        """Load once, then keep polling in the background."""
        await self.load()
        self._task = asyncio.create_task(self._poll(), name="config-poller")

    async def stop(self) -> None:
        """Stop polling, letting a query already on its worker thread finish first."""
        self._stopping.set()
        if self._task is not None:
            # Cancelling would abandon a running DB call and leak its connection past dispose().
            await self._task

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.poll_interval_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                version = await loop.run_in_executor(None, read_version, self.engine)
                if version != self.snapshot.version:
                    await self.load()
                else:
                    self.confirmed_at, self.last_error = time.monotonic(), None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving the last good snapshot
                self.last_error = type(exc).__name__
                log.error("config refresh failed, keeping version %d: %s", self.snapshot.version, exc)
