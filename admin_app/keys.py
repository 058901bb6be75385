"""`/keys`: client ("personalized") keys; only their SHA-256 and a hint are stored.

The full key appears in a response exactly once: the create or rotate answer,
and only when the server generated it (a caller-supplied key is never echoed).
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from sqlalchemy import select

from admin_app.api import bp
from admin_app.change_log import apply_changes, record_change
from admin_app.errors import Conflict
from admin_app.extensions import db
from admin_app.inputs import load_mapping, load_query, raw_json_object
from admin_app.key_quota import key_with_consumption
from admin_app.lookups import get_or_404
from admin_app.schemas.common import PaginationQuerySchema
from admin_app.schemas.keys import KeyInSchema, KeyOutSchema, KeyRotateSchema, KeyUpdateSchema
from shared.models import ApiKey, Provider
from shared.secrets import generate_client_key, hash_key, key_hint

RESOURCE = "key"

key_in = KeyInSchema()
key_update = KeyUpdateSchema()
key_rotate = KeyRotateSchema()
key_out = KeyOutSchema()
pagination = PaginationQuerySchema()


def _dedupe(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def check_provider_ids(provider_ids: list[int], field: str = "provider_ids") -> None:
    """409 unless every id names an existing provider: the body is valid, what it names is not there (now)."""
    if not provider_ids:
        return
    found = set(db.session.scalars(select(Provider.id).where(Provider.id.in_(provider_ids))))
    missing = [pid for pid in provider_ids if pid not in found]
    if missing:
        raise Conflict(
            "Unknown provider id(s)",
            code="unknown_provider",
            details={field: [f"Provider {pid} does not exist." for pid in missing]},
        )


def check_key_free(key: str) -> str:
    """Return the key's hash, or 409 when a key with that value already exists."""
    digest = hash_key(key)
    if db.session.scalar(select(ApiKey.id).where(ApiKey.key_hash == digest)) is not None:
        raise Conflict("A client key with this value already exists", code="duplicate_key")
    return digest


def issue_key(data: dict[str, Any]) -> tuple[ApiKey, str | None]:
    """Create a key row from validated `data`; return it and the value if we generated it."""
    fields = dict(data)
    supplied = fields.pop("key", None)
    value = supplied or generate_client_key()
    fields["provider_ids"] = _dedupe(fields.get("provider_ids", []))
    fields["models"] = _dedupe(fields.get("models", []))
    check_provider_ids(fields["provider_ids"])
    row = ApiKey(key_hash=check_key_free(value), key_hint=key_hint(value), **fields)
    db.session.add(row)
    db.session.flush()
    record_change("create", RESOURCE, row.id, {**fields, "key": value, "key_hint": row.key_hint})
    return row, None if supplied else value


def key_summary(row: ApiKey) -> dict[str, Any]:
    """A key named without its value."""
    return {"id": row.id, "name": row.name, "key_hint": row.key_hint}


def _issued(row: ApiKey, generated: str | None) -> dict[str, Any]:
    body: dict[str, Any] = key_out.dump(row)
    if generated is not None:
        body["key"] = generated
    return body


@bp.get("/keys")
def list_keys() -> Response:
    """List client keys, oldest first."""
    page = load_query(pagination)
    rows = db.session.scalars(
        select(ApiKey).order_by(ApiKey.id).limit(page["limit"]).offset(page["offset"])
    )
    return jsonify(key_out.dump(rows, many=True))


@bp.post("/keys")
def create_key() -> tuple[Response, int]:
    """Create a client key (generated unless `key` is given)."""
    row, generated = create_key_from(raw_json_object() or {})
    return jsonify(_issued(row, generated)), 201


def create_key_from(body: dict[str, Any]) -> tuple[ApiKey, str | None]:
    """Validate `body`, create the key and commit; the row and the value if we generated it."""
    row, generated = issue_key(load_mapping(key_in, body))
    db.session.commit()
    return row, generated


@bp.get("/keys/<int:key_id>")
def get_key(key_id: int) -> Response:
    """One client key, with its consumption in the current quota period."""
    return jsonify(key_with_consumption(get_or_404(ApiKey, key_id, "Key")))


@bp.route("/keys/<int:key_id>", methods=["PUT", "PATCH"])
def update_key(key_id: int) -> Response:
    """Change the given fields of a client key."""
    get_or_404(ApiKey, key_id, "Key")  # a missing id is a 404 before a bad body is a 400
    return jsonify(key_out.dump(update_key_from(key_id, raw_json_object() or {})))


def update_key_from(key_id: int, body: dict[str, Any]) -> ApiKey:
    """Validate `body` as a partial key, apply it and commit."""
    row = get_or_404(ApiKey, key_id, "Key")
    data = load_mapping(key_update, body, partial=True)
    for field in ("provider_ids", "models"):
        if field in data:
            data[field] = _dedupe(data[field])
    check_provider_ids(data.get("provider_ids", []))
    changed = apply_changes(row, data)
    if changed:
        record_change("update", RESOURCE, row.id, changed)
    db.session.commit()
    return row


@bp.delete("/keys/<int:key_id>")
def delete_key(key_id: int) -> Response:
    """Delete a client key; the proxy stops accepting it on its next reload."""
    delete_key_row(key_id)
    return jsonify({"id": key_id, "deleted": True})


def delete_key_row(key_id: int) -> None:
    """Delete a client key and commit."""
    row = get_or_404(ApiKey, key_id, "Key")
    db.session.delete(row)
    record_change("delete", RESOURCE, key_id, {"name": row.name, "key_hint": row.key_hint})
    db.session.commit()


@bp.post("/keys/<int:key_id>/rotate")
def rotate_key(key_id: int) -> Response:
    """Replace a key's value (generated unless `key` is given); the old value stops working."""
    get_or_404(ApiKey, key_id, "Key")  # a missing id is a 404 before a bad body is a 400
    row, generated = rotate_key_from(key_id, raw_json_object(allow_empty=True) or {})
    return jsonify(_issued(row, generated))


def rotate_key_from(key_id: int, body: dict[str, Any]) -> tuple[ApiKey, str | None]:
    """Give the key a new value (`body.key` or generated) and commit; the row and a generated value."""
    row = get_or_404(ApiKey, key_id, "Key")
    supplied = load_mapping(key_rotate, body).get("key")
    value = supplied or generate_client_key()
    row.key_hash = check_key_free(value)
    row.key_hint = key_hint(value)
    record_change("rotate", RESOURCE, row.id, {"key": value, "key_hint": row.key_hint})
    db.session.commit()
    return row, None if supplied else value
