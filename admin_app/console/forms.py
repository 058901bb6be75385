"""HTML form fields to the JSON bodies the admin's schemas validate, read off the schemas themselves.

A form sends strings; the schemas are strict (a number must be a number). Each
field is converted by its schema type, so the console and the JSON API accept
exactly the same values and report the same field errors. A value that does
not convert is passed on as the string it is, for the schema to refuse.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, fields
from werkzeug.datastructures import MultiDict

from admin_app.schemas.fields import StrictBoolean, StrictFloat, StrictInteger

TRUE_VALUES = frozenset({"true", "on", "1", "yes"})
OMIT = object()  # a blank input for a field that cannot be null: the default, or unchanged
LIST_SEPARATORS = (",", "\n")


def _number(kind: type, raw: str) -> Any:
    try:
        return kind(raw)
    except ValueError:
        return raw


def _split(raw: str) -> list[str]:
    for separator in LIST_SEPARATORS[1:]:
        raw = raw.replace(separator, LIST_SEPARATORS[0])
    return [part.strip() for part in raw.split(LIST_SEPARATORS[0]) if part.strip()]


def _value(field: fields.Field, values: list[str]) -> Any:
    if isinstance(field, fields.List):
        inner = field.inner
        items = values if len(values) != 1 else _split(values[0])
        return [_value(inner, [item]) for item in items if item.strip()]
    raw = values[-1].strip()  # a checkbox follows its hidden "false": the last value wins
    if isinstance(field, StrictBoolean):
        if raw == "" and field.allow_none:
            return None
        return raw.lower() in TRUE_VALUES
    if raw == "":
        return None if field.allow_none else OMIT
    if isinstance(field, StrictInteger):
        return _number(int, raw)
    if isinstance(field, StrictFloat):
        return _number(float, raw)
    if isinstance(field, fields.Decimal):
        return raw  # Usd fields take decimal strings: exact, as typed
    return raw


def form_body(schema: Schema, form: MultiDict[str, str], *, skip_blank: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON body `form` stands for under `schema`; fields it does not send are left out.

    `skip_blank` names fields whose empty input means "leave unchanged" (a write-only
    secret on an edit form, say) rather than "clear".
    """
    body: dict[str, Any] = {}
    for name, field in schema.load_fields.items():
        values = form.getlist(name)
        if not values:
            if isinstance(field, fields.List) and form.get(f"{name}__present"):
                # A group of checkboxes with none ticked: "none" where the list may be null, else empty.
                body[name] = None if field.allow_none else []
            continue
        if name in skip_blank and not "".join(values).strip():
            continue
        value = _value(field, values)
        if value is not OMIT:
            body[name] = value
    return body


def decimal_text(value: Decimal | float | None) -> str:
    """A price or budget as the form shows it (no exponent, no trailing zeros)."""
    if value is None:
        return ""
    text = format(Decimal(str(value)).normalize(), "f")
    return text
