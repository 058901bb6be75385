"""Secrets at rest: provider server keys and proxy URLs sealed with SECRET_KEY (Fernet).

A sealed value is `enc:v1:` + a Fernet token; anything else is a value stored
in clear (no SECRET_KEY, or written before one was set). The admin only seals;
the proxy opens, into its in-memory snapshot. `reseal_provider_secrets` brings
every row under the current SECRET_KEY (or back to clear when it is unset):
the migration that introduced sealing and `python run.py reseal-secrets` use it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_PREFIX = "enc:v1:"
SEALED_COLUMNS = ("server_key", "http_proxy")
_HKDF_INFO = b"nexusai provider secrets at rest v1"


class SecretUnavailable(Exception):
    """A sealed value that the configured keys cannot open."""


def _fernet(secret_key: str) -> Fernet:
    # Operators pick any string; HKDF turns it into the 32 bytes Fernet wants.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secret_key.encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def is_sealed(value: str | None) -> bool:
    """Whether `value` is a sealed secret rather than one stored in clear."""
    return bool(value) and str(value).startswith(SEALED_PREFIX)


class SecretBox:
    """Seals with SECRET_KEY; opens with it or any of SECRET_KEY_FALLBACKS."""

    def __init__(self, secret_key: str | None, fallbacks: Iterable[str] = ()) -> None:
        self._sealer = _fernet(secret_key) if secret_key else None
        openers = [_fernet(k) for k in ([secret_key] if secret_key else []) + [f for f in fallbacks if f]]
        self._opener = MultiFernet(openers) if openers else None

    @property
    def sealing(self) -> bool:
        """Whether new secrets are encrypted (SECRET_KEY is set)."""
        return self._sealer is not None

    def seal(self, value: str | None) -> str | None:
        """`value` sealed under SECRET_KEY; unchanged when it is empty or no SECRET_KEY is set."""
        if not value or self._sealer is None:
            return value
        return SEALED_PREFIX + self._sealer.encrypt(value.encode("utf-8")).decode("ascii")

    def open(self, value: str | None) -> str | None:
        """The clear text of `value` (returned as is when stored in clear)."""
        if not is_sealed(value):
            return value
        assert value is not None
        if self._opener is None:
            raise SecretUnavailable("the value is encrypted but SECRET_KEY is not set")
        try:
            return self._opener.decrypt(value[len(SEALED_PREFIX):].encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError, UnicodeError):
            raise SecretUnavailable(
                "the value was encrypted with a key that is neither SECRET_KEY nor in SECRET_KEY_FALLBACKS"
            ) from None

    def is_current(self, value: str | None) -> bool:
        """Whether `value` is stored as the current configuration would store it."""
        if not value:
            return True
        if self._sealer is None:
            return not is_sealed(value)
        if not is_sealed(value):
            return False
        try:
            self._sealer.decrypt(value[len(SEALED_PREFIX):].encode("ascii"))
        except (InvalidToken, ValueError):
            return False
        return True


def reseal_provider_secrets(connection: sa.Connection, box: SecretBox) -> int:
    """Re-store every provider secret as `box` would store it now; the number of rows changed.

    Raises SecretUnavailable, naming the provider, before writing anything when a
    sealed value cannot be opened, so a wrong key never leaves rows half converted.
    """
    provider = sa.table("provider", sa.column("id"), sa.column("name"), *(sa.column(c) for c in SEALED_COLUMNS))
    rows = connection.execute(sa.select(provider).order_by(provider.c.id)).mappings().all()
    updates: list[dict[str, object]] = []
    for row in rows:
        changes: dict[str, object] = {}
        for column in SEALED_COLUMNS:
            value = row[column]
            if box.is_current(value):
                continue
            try:
                changes[column] = box.seal(box.open(value))
            except SecretUnavailable as exc:
                raise SecretUnavailable(f"provider {row['name']!r} ({column}): {exc}") from None
        if changes:
            updates.append({"row_id": row["id"], **changes})
    for update in updates:
        row_id = update.pop("row_id")
        connection.execute(sa.update(provider).where(provider.c.id == row_id).values(**update))
    return len(updates)
