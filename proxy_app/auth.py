"""Client-key extraction and lookup in the config snapshot."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from datetime import datetime, timezone

from proxy_app.config import KeyCfg, Snapshot
from proxy_app.errors import ProxyError


def extract_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The client key from `Authorization: Bearer`, `X-API-Key` or `?api_key=`."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("X-API-Key") or query.get("api_key")
    return key.strip() if key and key.strip() else None


def authenticate(snapshot: Snapshot, raw_key: str | None, now: datetime | None = None) -> KeyCfg:
    """The key's config, or a 401 that says why it was refused."""
    if not raw_key:
        raise ProxyError(
            401,
            "Missing API key. Send it as 'Authorization: Bearer <key>', 'X-API-Key' or '?api_key='.",
            code="invalid_api_key",
        )
    try:
        digest = hashlib.sha256(raw_key.encode("utf-8")).hexdigest()
    except UnicodeEncodeError:  # bytes that are not UTF-8 cannot be any key we issued
        digest = ""
    key = snapshot.keys_by_hash.get(digest)
    if key is None:
        raise ProxyError(401, "Incorrect API key provided.", code="invalid_api_key")
    if not key.enabled:
        raise ProxyError(401, f"API key {key.hint} is disabled.", code="key_disabled")
    if key.expires_at is not None and key.expires_at <= (now or datetime.now(timezone.utc)):
        raise ProxyError(
            401, f"API key {key.hint} expired at {key.expires_at.isoformat()}.", code="key_expired"
        )
    return key


def check_operator(headers: Mapping[str, str], remote: str | None, admin_token: str | None) -> None:
    """Let an operator's tool in (`Authorization: Bearer <ADMIN_TOKEN>`; without a token, loopback only)."""
    if admin_token is None:
        try:
            loopback = remote is not None and ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ProxyError(403, "Without ADMIN_TOKEN this endpoint answers loopback clients only.",
                             type="permission_error", code="operator_only")
        return
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    presented = value.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""
    if not hmac.compare_digest(presented, admin_token.encode("utf-8")):
        raise ProxyError(401, "This endpoint needs 'Authorization: Bearer <ADMIN_TOKEN>'.", code="invalid_admin_token")
