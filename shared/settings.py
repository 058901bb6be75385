"""The one frozen Settings object, read from the environment (and `.env`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from shared.secret_box import SecretBox

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ROUTING_STRATEGIES = ("weighted", "least_latency", "least_busy")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _redis_url(raw: str) -> str | None:
    """REDIS_URL: redis://, rediss:// or unix:// (never echoed: it may hold a password)."""
    value = raw.strip()
    if not value:
        return None
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("REDIS_URL must start with redis://, rediss:// or unix://")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    """CORS_ORIGINS: `*`, or a comma list of origins (`scheme://host[:port]`, no path)."""
    values = tuple(v.strip().rstrip("/").lower() for v in raw.split(",") if v.strip())
    if "*" in values:
        if len(values) > 1:
            raise SettingsError("CORS_ORIGINS is either * or a list of origins, not both")
        return values
    for value in values:
        scheme, sep, rest = value.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise SettingsError(f"CORS_ORIGINS: {value!r} is not an origin like https://app.example.com")
    return values


def _int(name: str, raw: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise SettingsError(f"{name} must be {bound}, got {value}")
    return value


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be > 0, got {value}")
    return value


def _path(raw: str, root: Path) -> Path:
    path = Path(raw)
    return path if path.is_absolute() else root / path


def _database_url(raw: str, root: Path) -> str:
    # SQLite URLs in the environment are relative to the project root, not the cwd.
    prefix = "sqlite:///"
    if raw.startswith(prefix) and not raw.startswith("sqlite:////"):
        rest = raw[len(prefix):]
        if rest and rest != ":memory:" and not rest.startswith(":"):
            return prefix + str(root / rest)
    if raw.startswith("postgresql://"):
        # psycopg 3 is the driver we ship; plain postgresql:// would pick psycopg2.
        return "postgresql+psycopg://" + raw[len("postgresql://"):]
    if raw.startswith("postgres://"):
        return "postgresql+psycopg://" + raw[len("postgres://"):]
    return raw


@dataclass(frozen=True)
class Settings:
    """Every tunable of NexusAI; build with `Settings.from_env()`, override with `replace()`."""

    database_url: str
    admin_host: str = "127.0.0.1"
    admin_port: int = 8000
    proxy_host: str = "0.0.0.0"
    proxy_port: int = 5231
    admin_token: str | None = field(default=None, repr=False)  # secrets stay out of reprs
    archive_messages: bool = False
    data_dir: Path = PROJECT_ROOT / "data"
    log_dir: Path = PROJECT_ROOT / "logs"
    messages_dir: Path = PROJECT_ROOT / "messages"
    log_level: str = "INFO"
    max_body_bytes: int = 10 * 1024 * 1024
    config_poll_interval_s: float = 1.0
    usage_flush_interval_s: float = 0.5
    usage_batch_size: int = 500
    upstream_max_attempts: int = 3
    ws_max_message_bytes: int = 1024 * 1024
    ws_max_concurrent_chats: int = 4
    ws_auth_timeout_s: float = 10.0
    default_reserve_tokens: int = 4096
    admin_workers: int = 2
    # Where usage rows wait for the database; None: DATA_DIR/usage-journal (see `journal_dir`).
    usage_journal_dir: Path | None = None
    # Who moves the journal into the database: each proxy's own thread, or one recorder process.
    usage_recorder: str = "thread"
    # Browser origins allowed to call the proxy (CORS); empty: none; ("*",): any.
    cors_origins: tuple[str, ...] = ()
    # Connection and time limits of the proxy's HTTP server.
    proxy_max_connections: int = 10_000
    proxy_header_timeout_s: float = 10.0
    proxy_body_timeout_s: float = 30.0
    proxy_keepalive_timeout_s: float = 30.0
    # Database calls give up after these (both apps).
    db_connect_timeout_s: float = 5.0
    db_statement_timeout_s: float = 10.0
    # Circuit breaker: consecutive failures that open a circuit (0: never), and its cooldown.
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    # The longest a 429's Retry-After takes a provider (for that model) out of rotation.
    retry_after_max_s: float = 300.0
    # How equal-priority providers share requests: weighted, least_latency or least_busy.
    routing_strategy: str = "weighted"
    # /metrics on both apps; OpenTelemetry traces only with an OTLP endpoint.
    metrics_enabled: bool = True
    otel_endpoint: str | None = None
    otel_service_name: str = "nexusai"
    # /health/ready fails when the config snapshot is older than this.
    config_stale_after_s: float = 10.0
    # How often each proxy process writes its provider health for the admin.
    health_write_interval_s: float = 5.0
    # Log lines as text (the default) or one JSON object per line.
    log_format: str = "text"
    # Proxy processes `python run.py` starts on the proxy port (SO_REUSEPORT).
    proxy_workers: int = 1
    # Key limits shared by every proxy process and machine through this Redis; None: per process.
    redis_url: str | None = field(default=None, repr=False)
    redis_key_prefix: str = "nexusai:"
    # Every Redis call gives up after this; then limits are local shares until Redis answers again.
    redis_timeout_s: float = 0.25
    # A process's concurrency slots and reservations outlive it by at most this long.
    redis_lease_s: float = 30.0
    # Provider server keys and proxy URLs are encrypted at rest with this; None: stored in clear.
    secret_key: str | None = field(default=None, repr=False)
    # Earlier SECRET_KEYs: still opened, never used to seal (until `run.py reseal-secrets`).
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    # A console session ends after this long without a page view (signed cookie, sliding).
    console_session_s: float = 8 * 3600.0
    # Where the console sends a provider test (a proxy's base URL); None: this machine's proxy port.
    console_proxy_url: str | None = None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT
    ) -> Settings:
        """Read settings from `environ` (default: os.environ plus `root/.env`)."""
        if environ is None:
            env_file = root / ".env"
            if env_file.is_file():
                from dotenv import dotenv_values

                # Real environment variables win over the file.
                file_values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
                environ = {**file_values, **os.environ}
            else:
                environ = os.environ
        env = environ

        def get(name: str, default: str) -> str:
            value = env.get(name)
            return default if value is None or value == "" else value

        data_dir = _path(get("DATA_DIR", "data"), root)
        log_level = get("LOG_LEVEL", "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise SettingsError(f"LOG_LEVEL must be DEBUG/INFO/WARNING/ERROR/CRITICAL, got {log_level!r}")
        # Presented tokens are stripped, so a padded or blank one could never match.
        token = (env.get("ADMIN_TOKEN") or "").strip() or None
        return cls(
            database_url=_database_url(get("DATABASE_URL", f"sqlite:///{data_dir / 'nexusai.db'}"), root),
            admin_host=get("ADMIN_HOST", "127.0.0.1"),
            admin_port=_int("ADMIN_PORT", get("ADMIN_PORT", "8000"), 0, 65535),
            proxy_host=get("PROXY_HOST", "0.0.0.0"),
            proxy_port=_int("PROXY_PORT", get("PROXY_PORT", "5231"), 0, 65535),
            admin_token=token,
            archive_messages=_bool("ARCHIVE_MESSAGES", get("ARCHIVE_MESSAGES", "0")),
            data_dir=data_dir,
            log_dir=_path(get("LOG_DIR", "logs"), root),
            messages_dir=_path(get("MESSAGES_DIR", "messages"), root),
            log_level=log_level,
            max_body_bytes=_int("MAX_BODY_BYTES", get("MAX_BODY_BYTES", str(10 * 1024 * 1024)), 1),
            config_poll_interval_s=_float("CONFIG_POLL_INTERVAL", get("CONFIG_POLL_INTERVAL", "1.0")),
            upstream_max_attempts=_int("UPSTREAM_MAX_ATTEMPTS", get("UPSTREAM_MAX_ATTEMPTS", "3"), 1),
            ws_max_message_bytes=_int("WS_MAX_MESSAGE_BYTES", get("WS_MAX_MESSAGE_BYTES", str(1024 * 1024)), 1),
            ws_max_concurrent_chats=_int("WS_MAX_CONCURRENT_CHATS", get("WS_MAX_CONCURRENT_CHATS", "4"), 1),
            ws_auth_timeout_s=_float("WS_AUTH_TIMEOUT_S", get("WS_AUTH_TIMEOUT_S", "10")),
            default_reserve_tokens=_int("DEFAULT_RESERVE_TOKENS", get("DEFAULT_RESERVE_TOKENS", "4096"), 1),
            admin_workers=_int("ADMIN_WORKERS", get("ADMIN_WORKERS", "2"), 1),
            usage_journal_dir=_path(env["USAGE_JOURNAL_DIR"], root) if env.get("USAGE_JOURNAL_DIR") else None,
            cors_origins=_origins(env.get("CORS_ORIGINS") or ""),
            usage_recorder=_choice("USAGE_RECORDER", get("USAGE_RECORDER", "thread"), ("thread", "process")),
            proxy_max_connections=_int("PROXY_MAX_CONNECTIONS", get("PROXY_MAX_CONNECTIONS", "10000"), 1),
            proxy_header_timeout_s=_float("PROXY_HEADER_TIMEOUT_S", get("PROXY_HEADER_TIMEOUT_S", "10")),
            proxy_body_timeout_s=_float("PROXY_BODY_TIMEOUT_S", get("PROXY_BODY_TIMEOUT_S", "30")),
            proxy_keepalive_timeout_s=_float("PROXY_KEEPALIVE_TIMEOUT_S", get("PROXY_KEEPALIVE_TIMEOUT_S", "30")),
            db_connect_timeout_s=_float("DB_CONNECT_TIMEOUT_S", get("DB_CONNECT_TIMEOUT_S", "5")),
            db_statement_timeout_s=_float("DB_STATEMENT_TIMEOUT_S", get("DB_STATEMENT_TIMEOUT_S", "10")),
            breaker_failures=_int("BREAKER_FAILURES", get("BREAKER_FAILURES", "5"), 0),
            breaker_cooldown_s=_float("BREAKER_COOLDOWN_S", get("BREAKER_COOLDOWN_S", "30")),
            retry_after_max_s=_float("RETRY_AFTER_MAX_S", get("RETRY_AFTER_MAX_S", "300")),
            routing_strategy=_choice("ROUTING_STRATEGY", get("ROUTING_STRATEGY", "weighted"), ROUTING_STRATEGIES),
            metrics_enabled=_bool("METRICS_ENABLED", get("METRICS_ENABLED", "1")),
            otel_endpoint=(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip() or None,
            otel_service_name=get("OTEL_SERVICE_NAME", "nexusai"),
            health_write_interval_s=_float("HEALTH_WRITE_INTERVAL_S", get("HEALTH_WRITE_INTERVAL_S", "5")),
            config_stale_after_s=_float("CONFIG_STALE_AFTER_S", get("CONFIG_STALE_AFTER_S", "10")),
            log_format=_choice("LOG_FORMAT", get("LOG_FORMAT", "text"), ("text", "json")),
            proxy_workers=_int("PROXY_WORKERS", get("PROXY_WORKERS", "1"), 1, 64),
            redis_url=_redis_url(env.get("REDIS_URL") or ""),
            redis_key_prefix=get("REDIS_KEY_PREFIX", "nexusai:"),
            redis_timeout_s=_float("REDIS_TIMEOUT_S", get("REDIS_TIMEOUT_S", "0.25")),
            redis_lease_s=_float("REDIS_LEASE_S", get("REDIS_LEASE_S", "30")),
            console_proxy_url=(env.get("CONSOLE_PROXY_URL") or "").strip().rstrip("/") or None,
            console_session_s=_float("CONSOLE_SESSION_S", get("CONSOLE_SESSION_S", str(8 * 3600))),
            secret_key=(env.get("SECRET_KEY") or "").strip() or None,
            secret_key_fallbacks=tuple(
                k.strip() for k in (env.get("SECRET_KEY_FALLBACKS") or "").split(",") if k.strip()
            ),
        )

    def with_overrides(self, **changes: Any) -> Settings:
        """Return a copy with some fields replaced (tests use this)."""
        return replace(self, **changes)

    def secret_box(self) -> SecretBox:
        """The sealer/opener of provider secrets for this configuration."""
        from shared.secret_box import SecretBox  # cryptography only where secrets are handled

        return SecretBox(self.secret_key, self.secret_key_fallbacks)

    @property
    def proxy_url_for_admin(self) -> str:
        """The proxy the admin talks to (provider tests): CONSOLE_PROXY_URL, else the local proxy port."""
        if self.console_proxy_url:
            return self.console_proxy_url
        host = self.proxy_host if self.proxy_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.proxy_port}"

    @property
    def journal_dir(self) -> Path:
        """The usage journal's directory."""
        return self.usage_journal_dir or self.data_dir / "usage-journal"

    @property
    def is_sqlite(self) -> bool:
        """True when the database is SQLite."""
        return self.database_url.startswith("sqlite")
