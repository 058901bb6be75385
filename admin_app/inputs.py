"""Reading request input: strict JSON object bodies and validated query strings."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from marshmallow import EXCLUDE, Schema, ValidationError

from admin_app.errors import ValidationFailed


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def raw_json_object(*, allow_empty: bool = False) -> dict[str, Any] | None:
    """The request body as a JSON object, or a 400; None for an allowed empty body."""
    data = request.get_data(cache=True)
    if not data and allow_empty:
        return None  # no body at all; white space alone is not a JSON document
    if not data.strip():
        raise ValidationFailed("A JSON object body is required", code="missing_body")
    if not request.is_json:
        raise ValidationFailed(
            "The body must be JSON with 'Content-Type: application/json'", code="invalid_content_type"
        )
    try:
        body = json.loads(data, parse_constant=_reject_constant)
        storable = _storable(body)
    except (ValueError, RecursionError) as exc:
        raise ValidationFailed(f"Malformed JSON body: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationFailed(
            f"The JSON body must be an object, not {type(body).__name__}", code="invalid_body"
        )
    if not storable:
        raise ValidationFailed(
            "JSON strings must not contain NUL characters or unpaired surrogates", code="invalid_json"
        )
    return body


def _storable(node: Any) -> bool:
    """False if any string in `node` holds NUL or a lone surrogate (no database stores those)."""
    if isinstance(node, str):
        return _utf8_encodable(node)
    if isinstance(node, dict):
        return all(_storable(k) and _storable(v) for k, v in node.items())
    if isinstance(node, list):
        return all(_storable(item) for item in node)
    return True


def _utf8_encodable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_body(schema: Schema, *, partial: bool = False) -> dict[str, Any]:
    """Validate the JSON object body against `schema`; unknown fields are a 400."""
    return load_mapping(schema, raw_json_object() or {}, partial=partial)


def load_mapping(schema: Schema, body: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Validate an already parsed object against `schema`, turning errors into a 400."""
    try:
        result: dict[str, Any] = schema.load(body, partial=partial)
    except ValidationError as exc:
        raise ValidationFailed("Invalid request body", details=_as_details(exc.messages)) from None
    return result


def load_query(schema: Schema) -> dict[str, Any]:
    """Validate the query string against `schema`; parameters it does not know are ignored."""
    try:
        result: dict[str, Any] = schema.load(request.args.to_dict(), unknown=EXCLUDE)
    except ValidationError as exc:
        raise ValidationFailed(
            "Invalid query parameters", code="invalid_parameter", details=_as_details(exc.messages)
        ) from None
    return result


def _as_details(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}
