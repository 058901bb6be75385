"""Strict field types shared by the resource schemas.

marshmallow's stock fields are lenient (1 passes as a boolean, "5" as an
integer, True as an integer); the admin API rejects wrong JSON types instead.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

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


def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled as a JSON Schema validator reads it: ASCII classes, `$` only at the very end."""
    body = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
    return re.compile(body, re.ASCII)


class Documented:
    """A field that states its exact rules in the OpenAPI document (see admin_app/openapi.py)."""

    def json_schema(self, prop: dict[str, Any]) -> None:
        """Adjust `prop`, the property apispec derived from the field, to what the field accepts."""


class Text(Documented, fields.String):
    """Free text; NUL is refused because PostgreSQL cannot store it."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("Must not contain NUL characters.")
        return text

    def json_schema(self, prop: dict[str, Any]) -> None:
        """No NUL."""
        prop["pattern"] = r"^[^\x00]*$"


# What str.strip() and a JSON Schema validator's \s both call white space, outside the control range.
_WIDE_SPACES = r"\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_STRIPPED = " \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
    "\u2028\u2029\u202f\u205f\u3000\ufeff"


class Name(Documented, fields.String):
    """A display name: no control characters, not blank; surrounding spaces are stripped."""

    def __init__(self, max_length: int, forbid: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.forbid = forbid
        allowed = rf"[^\x00-\x1f\x7f{re.escape(forbid)}]"
        visible = rf"[^\x00-\x20\x7f{_WIDE_SPACES}{re.escape(forbid)}]"
        self.pattern = rf"^{allowed}*{visible}{allowed}*$"
        self._match = ecma_pattern(self.pattern).search

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > self.max_length:
            raise ValidationError(f"Must be at most {self.max_length} characters.")
        if self._match(text) is None:
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
                raise ValidationError("Must not contain control characters.")
            if any(ch in self.forbid for ch in text):
                raise ValidationError(f"Must not contain {' or '.join(repr(ch) for ch in self.forbid)}.")
            raise ValidationError("Must not be empty or white space.")
        return text.strip(_STRIPPED)

    def json_schema(self, prop: dict[str, Any]) -> None:
        """Length of the raw value, and the pattern itself."""
        prop.update(minLength=1, maxLength=self.max_length, pattern=self.pattern)


class Slug(Documented, fields.String):
    """A short identifier safe in a URL as it is (letters, digits, `.`, `_`, `-`), e.g. an API version."""

    def __init__(self, max_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pattern = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{max_length - 1}}}$"
        self._match = ecma_pattern(self.pattern).search

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if self._match(text) is None:
            raise ValidationError(f"Must match {self.pattern}.")
        return text

    def json_schema(self, prop: dict[str, Any]) -> None:
        """The pattern."""
        prop["pattern"] = self.pattern


class Usd(Documented, fields.Decimal):
    """USD amounts: JSON numbers or decimal strings, 0 to `maximum`, at most 6 decimal places; dumped as numbers."""

    def __init__(self, maximum: int, **kwargs: Any) -> None:
        digits = len(str(maximum)) - 1
        if maximum != 10**digits:
            raise ValueError("the maximum of a Usd field is a power of ten")
        super().__init__(validate=[validate.Range(min=0, max=maximum)], **kwargs)
        self.maximum = maximum
        places = PRICE_PLACES
        self.pattern = rf"^(?:[0-9]{{1,{digits}}}(?:\.[0-9]{{1,{places}}})?|{maximum}(?:\.0{{1,{places}}})?)$"
        self._match = ecma_pattern(self.pattern).search

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, str):
            if self._match(value) is None:
                raise ValidationError(
                    f"A decimal string needs digits, at most {PRICE_PLACES} decimal places, "
                    f"and at most {self.maximum}."
                )
            return Decimal(value)
        if not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        amount: Decimal = super()._deserialize(value, attr, data, **kwargs)
        if not 0 <= amount <= self.maximum:
            return amount  # the range validator words the refusal
        return _whole_places(amount)

    def json_schema(self, prop: dict[str, Any]) -> None:
        """A number (a multiple of 0.000001) or the same amount as a string."""
        number = {"type": "number", "minimum": 0, "maximum": self.maximum, "multipleOf": 10**-PRICE_PLACES}
        text = {"type": "string", "pattern": self.pattern}
        for key in ("type", "minimum", "maximum"):
            prop.pop(key, None)
        prop["anyOf"] = [number, text]


def _whole_places(amount: Decimal) -> Decimal:
    """`amount` if it has at most 6 decimal places (a float's shortest text, as JSON Schema's multipleOf reads it)."""
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PRICE_PLACES:
        raise ValidationError(f"At most {PRICE_PLACES} decimal places.")
    return amount


class UtcDateTime(fields.DateTime):
    """ISO 8601; a naive value is taken as UTC; always returned aware in UTC.

    An instant whose UTC form falls outside years 1..9999 (year 1 with a + offset) becomes the
    first or last representable one: it is before or after every record either way.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        return utc_clamped(parsed)


def utc_clamped(instant: datetime) -> datetime:
    """`instant` in UTC (naive means UTC), clamped to the representable range."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=timezone.utc)
    try:
        return instant.astimezone(timezone.utc)
    except OverflowError:
        edge = datetime.min if instant.year == 1 else datetime.max
        return edge.replace(tzinfo=timezone.utc)


_DEC_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
# RFC 3986's IPv6address, alternative by alternative.
_IPV6 = "(?:" + "|".join([
    rf"(?:{_H16}:){{6}}{_LS32}",
    rf"::(?:{_H16}:){{5}}{_LS32}",
    rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
    rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
    rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
    rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
]) + ")"
_LABEL = r"[A-Za-z0-9_-]{1,63}"
_HOST = rf"(?:\[{_IPV6}\]|{_LABEL}(?:\.{_LABEL})*\.?)"
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
_USERINFO = r"(?:[A-Za-z0-9._~%!$&'()*+,;=-]*(?::[A-Za-z0-9._~%!$&'()*+,;=-]*)?@)?"
_REST = r"(?:[/?#][!-~]*)?"
_URL_MAX = 500


def _case_free(word: str) -> str:
    return "".join(f"[{ch.lower()}{ch.upper()}]" if ch.isalpha() else ch for ch in word)


class HttpUrl(Documented, fields.String):
    """An absolute URL: a scheme of `schemes`, a host name or IP literal, an optional port (1-65535),
    printable ASCII only; user:password@ only where `allow_credentials`."""

    def __init__(self, schemes: frozenset[str], allow_credentials: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schemes = schemes
        self.allow_credentials = allow_credentials
        scheme = "(?:" + "|".join(_case_free(s) for s in sorted(schemes, key=len, reverse=True)) + ")"
        userinfo = _USERINFO if allow_credentials else ""
        self.pattern = f"^{scheme}://{userinfo}{_HOST}{_PORT}{_REST}$"
        self._match = ecma_pattern(self.pattern).search

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        url = super()._deserialize(value, attr, data, **kwargs)
        if len(url) > _URL_MAX:
            raise ValidationError(f"Must be at most {_URL_MAX} characters.")
        if self._match(url) is not None:
            return url
        schemes = ", ".join(sorted(self.schemes))
        if any(not "!" <= ch <= "~" for ch in url):
            raise ValidationError("Must be printable ASCII without spaces (percent-encode the rest).")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in self.schemes:
            raise ValidationError(f"Must be an absolute URL with scheme {schemes}.")
        authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        if "@" in authority and not self.allow_credentials:
            raise ValidationError("Must not contain credentials; put the secret in server_key.")
        raise ValidationError("Must have a valid host name or IP address and, optionally, a port from 1 to 65535.")

    def json_schema(self, prop: dict[str, Any]) -> None:
        """Length and the URL grammar above."""
        prop.update(maxLength=_URL_MAX, pattern=self.pattern)
