"""Typed SQLAlchemy 2.0 models: the whole schema of NexusAI."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, registry, relationship

from shared.types import Money, Price, UTCDateTime


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


# SQLite only auto-increments INTEGER PRIMARY KEY, not BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; Flask-SQLAlchemy uses it as `model_class`."""

    # On the registry, not as a class attribute: Flask-SQLAlchemy copies Base's namespace
    # (registry included) and SQLAlchemy 2.1 refuses a base with both.
    registry = registry(type_annotation_map={datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON})


Base.metadata.naming_convention = NAMING


class Provider(Base):
    """An upstream OpenAI-compatible server and the secret key to reach it."""

    __tablename__ = "provider"
    # Audit and usage rows outlive their provider: SQLite must never hand its id to a new one.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    server_url: Mapped[str] = mapped_column(String(500))
    # server_key and http_proxy: sealed with SECRET_KEY when set (shared/secret_box); what the
    # admin shows instead is kept beside them, so the admin never decrypts.
    server_key: Mapped[str] = mapped_column(Text, default="")
    server_key_hint: Mapped[str] = mapped_column(String(20), default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    http_proxy: Mapped[str | None] = mapped_column(Text, default=None)
    http_proxy_display: Mapped[str | None] = mapped_column(String(500), default=None)  # password masked
    timeout_s: Mapped[float] = mapped_column(Float, default=60.0)
    # The wire format (which adapter the proxy uses), the client APIs served natively (NULL: the
    # kind's defaults, see shared/provider_kinds) and the connect timeout, apart from timeout_s.
    kind: Mapped[str] = mapped_column(String(16), default="openai", server_default="openai")
    apis: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    connect_timeout_s: Mapped[float] = mapped_column(Float, default=5.0, server_default="5")
    # Azure's `api-version` query, Gemini's URL version (v1beta); NULL: the kind's default.
    api_version: Mapped[str | None] = mapped_column(String(40), default=None)
    # Higher priority is tried first; weight breaks ties between equal priorities.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    models: Mapped[list[ProviderModel]] = relationship(
        back_populates="provider", cascade="all, delete-orphan", passive_deletes=True
    )


class ProviderModel(Base):
    """A model a provider serves, with its prices."""

    __tablename__ = "provider_model"
    __table_args__ = (UniqueConstraint("provider_id", "model_name"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("provider.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    # None means "same as model_name".
    upstream_name: Mapped[str | None] = mapped_column(String(200), default=None)
    description: Mapped[str] = mapped_column(Text, default="")
    input_price: Mapped[Decimal | None] = mapped_column(Price, default=None)
    output_price: Mapped[Decimal | None] = mapped_column(Price, default=None)
    cached_input_price: Mapped[Decimal | None] = mapped_column(Price, default=None)  # cache read
    cache_write_price: Mapped[Decimal | None] = mapped_column(Price, default=None)
    context_length: Mapped[int | None] = mapped_column(Integer, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    provider: Mapped[Provider] = relationship(back_populates="models")

    @property
    def effective_upstream_name(self) -> str:
        """The name sent upstream."""
        return self.upstream_name or self.model_name


class ApiKey(Base):
    """A client ("personalized") key; only its SHA-256 is stored."""

    __tablename__ = "api_key"
    # Usage rows outlive their key: SQLite must never hand a deleted key's id to a new one.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_hint: Mapped[str] = mapped_column(String(32))
    # Scope: empty lists mean "everything".
    provider_ids: Mapped[list[Any]] = mapped_column(default=list)
    models: Mapped[list[Any]] = mapped_column(default=list)
    rpm: Mapped[int | None] = mapped_column(Integer, default=None)
    tpm: Mapped[int | None] = mapped_column(Integer, default=None)
    max_concurrency: Mapped[int | None] = mapped_column(Integer, default=None)
    token_quota: Mapped[int | None] = mapped_column(BigInteger, default=None)
    budget_usd: Mapped[Decimal | None] = mapped_column(Price, default=None)
    quota_period: Mapped[str] = mapped_column(String(16), default="total")
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    archive_messages: Mapped[bool | None] = mapped_column(Boolean, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class UsageRecord(Base):
    """One row per proxied request; key and provider ids survive their deletion."""

    __tablename__ = "usage_record"
    __table_args__ = (
        Index("ix_usage_record_key_created", "key_id", "created_at"),
        Index("ix_usage_record_provider_created", "provider_id", "created_at"),
        Index("ix_usage_record_model_created", "model", "created_at"),
        Index("ix_usage_record_api_created", "api", "created_at"),  # the console's records by API, newest first
        # Latency-ordered covering indexes: a p95 is found by walking one of them from the top
        # (see admin_app/usage_figures.py); the trailing columns let filters run inside the index.
        Index(
            "ix_usage_record_latency",
            "latency_ms", "created_at", "key_id", "provider_id", "provider_name", "model",
        ),
        Index("ix_usage_record_key_latency", "key_id", "latency_ms", "created_at", "provider_id", "model"),
        Index("ix_usage_record_model_latency", "model", "latency_ms", "created_at", "key_id", "provider_id"),
        Index("ix_usage_record_api_latency", "api", "latency_ms", "created_at", "key_id", "provider_id", "model"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[int | None] = mapped_column(Integer, default=None)
    provider_id: Mapped[int | None] = mapped_column(Integer, default=None)
    provider_name: Mapped[str | None] = mapped_column(String(100), default=None)
    model: Mapped[str] = mapped_column(String(200))
    upstream_model: Mapped[str | None] = mapped_column(String(200), default=None)
    conversation_id: Mapped[str | None] = mapped_column(String(128), index=True, default=None)
    transport: Mapped[str] = mapped_column(String(8), default="http")
    api: Mapped[str] = mapped_column(String(16), default="chat", server_default="chat")
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    token_source: Mapped[str] = mapped_column(String(16), default="upstream")
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float, default=None)
    status_code: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RollupSums:
    """The grouping key and sums shared by the hourly and daily rollups."""

    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    api: Mapped[str] = mapped_column(String(16), primary_key=True)  # the client API spoken
    requests: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    total_tokens: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[Decimal] = mapped_column(Money)
    # Sum of each latency rounded to whole microseconds: integer, so exact on both backends.
    latency_us: Mapped[int] = mapped_column(BigInteger)
    # Parts of prompt_tokens (cache reads, cache writes) and of completion_tokens (reasoning); 0008.
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)


class UsageRollup(RollupSums, Base):
    """Usage summed per UTC hour, key, provider, model and client API; kept by database triggers.

    Triggers on usage_record (migrations 0002, 0006) add every inserted row here and take
    deleted ones out, so reports read a few thousand rows instead of millions.
    Absent ids are 0 and an absent provider name is '' so the key has no NULLs.
    """

    __tablename__ = "usage_rollup"
    __table_args__ = (Index("ix_usage_rollup_key_hour", "key_id", "hour"),)

    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # hours since 1970-01-01 UTC


class UsageRollupDaily(RollupSums, Base):
    """The same sums per UTC day (days since 1970-01-01); kept by the same triggers (migration 0003).

    Long windows read whole days here, whole hours at their ends from `usage_rollup`
    and only the partial hours from usage_record.
    """

    __tablename__ = "usage_rollup_daily"
    __table_args__ = (Index("ix_usage_rollup_daily_key_day", "key_id", "day"),)

    day: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class AuditLog(Base):
    """Who changed what, when; secret values are never stored."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    remote_addr: Mapped[str | None] = mapped_column(String(64), default=None)
    action: Mapped[str] = mapped_column(String(32))
    resource: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[int | None] = mapped_column(Integer, default=None)
    changes: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ProviderHealth(Base):
    """What one proxy process saw of one provider lately (its circuits, attempts, latencies).

    Each process rewrites its own rows every few seconds and deletes them when it stops;
    the admin merges the fresh rows of every process into `GET /providers/{id}/health`.
    No foreign key: a proxy may still report a provider the admin just deleted.
    """

    __tablename__ = "provider_health"

    instance: Mapped[str] = mapped_column(String(100), primary_key=True)  # host:pid of the proxy process
    provider_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_name: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16))  # closed, half_open, open: the provider's own circuit
    models: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # model name -> its circuit's state
    requests: Mapped[int] = mapped_column(Integer, default=0)  # attempts in the recent window
    errors: Mapped[int] = mapped_column(Integer, default=0)
    latencies_ms: Mapped[list[float]] = mapped_column(JSON, default=list)  # successful attempts', sorted
    in_flight: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    last_error_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ConfigVersion(Base):
    """A single row whose version is bumped by every admin change."""

    __tablename__ = "config_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
