"""Client-key generation, hashing, and the hints and masks that stand in for secrets."""

from __future__ import annotations

import hashlib
import secrets
from urllib.parse import urlsplit

KEY_PREFIX = "nx-"


def generate_client_key() -> str:
    """A new client key: `nx-` + 43 url-safe random characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 hex digest of a client key: the only form we store."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


HINT_MAX_CHARS = 4


def key_hint(key: str) -> str:
    """A displayable hint such as `…3f9a`: at most 4 characters of the key and at most a third of it."""
    if not key:
        return ""
    shown = min(HINT_MAX_CHARS, len(key) // 3)
    return "…" + key[len(key) - shown:] if shown else "…"


def mask_url_password(url: str | None) -> str | None:
    """Replace the password in `url` (e.g. a proxy URL) with `***` for display."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()
