"""Strict field types shared by the resource schemas.

marshmallow's stock fields are lenient (1 passes as a boolean, "5" as an
integer, True as an integer); the admin API rejects wrong JSON types instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError, fields, validate

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
PRICE_PLACES = 6


class StrictBoolean(fields.Boolean):
    """Only JSON true/false."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class StrictInteger(fields.Integer):
    """Only JSON integers (no strings, floats or booleans)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)


class StrictFloat(fields.Float):
    """Only JSON numbers (no strings or booleans)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, str):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class Text(fields.String):
    """Free text; NUL is refused because PostgreSQL cannot store it."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("Must not contain NUL characters.")
        return text


class Name(fields.String):
    """A display name: surrounding whitespace stripped, then non-empty, no control characters."""

    def __init__(self, max_length: int, **kwargs: Any) -> None:
        validators = [validate.Length(min=1, max=max_length, error="Must be 1 to {max} characters.")]
        super().__init__(validate=validators + list(kwargs.pop("validate", [])), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        stripped = text.strip()
        if not stripped:
            raise ValidationError("Must not be empty or whitespace.")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in stripped):
            raise ValidationError("Must not contain control characters.")
        return stripped


class Usd(fields.Decimal):
    """USD amounts: numbers or numeric strings, >= 0, at most 6 decimal places; dumped as numbers."""

    def __init__(self, maximum: int, **kwargs: Any) -> None:
        super().__init__(
            validate=[validate.Range(min=0, max=maximum), _at_most_places(PRICE_PLACES)], **kwargs
        )

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> float | None:
        return None if value is None else float(value)


def _at_most_places(places: int) -> Callable[[Decimal], None]:
    def check(value: Decimal) -> None:
        """Refuse digits the scaled-integer column would round away."""
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and exponent < -places:
            raise ValidationError(f"At most {places} decimal places.")

    return check


class UtcDateTime(fields.DateTime):
    """ISO 8601; a naive value is taken as UTC; always returned aware in UTC."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
        try:
            return parsed.astimezone(timezone.utc)
        except OverflowError:
            raise ValidationError("Date-time out of range.") from None


class HttpUrl(fields.String):
    """An absolute URL whose scheme is in `schemes`, with a host and a valid port."""

    def __init__(self, schemes: frozenset[str], allow_credentials: bool, **kwargs: Any) -> None:
        super().__init__(validate=validate.Length(max=500), **kwargs)
        self.schemes = schemes
        self.allow_credentials = allow_credentials

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        url = super()._deserialize(value, attr, data, **kwargs).strip()
        schemes = ", ".join(sorted(self.schemes))
        if any(ch.isspace() or ord(ch) < 32 for ch in url):
            raise ValidationError("Must not contain whitespace.")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValidationError("Not a valid URL.") from None
        if parts.scheme.lower() not in self.schemes:
            raise ValidationError(f"Must be an absolute URL with scheme {schemes}.")
        if not parts.hostname:
            raise ValidationError("Must include a host.")
        if (parts.username or parts.password) and not self.allow_credentials:
            raise ValidationError("Must not contain credentials; put the secret in server_key.")
        _check_host(parts.hostname)
        return url


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not all(label and len(label) <= 63 for label in labels):
        raise ValidationError("Not a valid host name.")
    for label in labels:
        if not all(ch.isalnum() or ch in "-_" for ch in label):
            raise ValidationError("Not a valid host name.")


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
