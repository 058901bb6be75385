"""`/providers`: upstream servers; `server_key` is write-only (responses carry `server_key_hint`).

Deleting a provider deletes its models (FK cascade) and removes its id from
every client key's `provider_ids`. A key whose non-empty provider scope
becomes empty while it has no model scope either is DISABLED rather than left
with an empty scope, which would silently widen it to "all providers"; the
provider's audit row and one audit row per affected key record this.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from sqlalchemy import func, select

from admin_app.api import bp
from admin_app.change_log import apply_changes, record_change
from admin_app.errors import Conflict
from admin_app.extensions import db
from admin_app.inputs import load_mapping, load_query, raw_json_object
from admin_app.keys import check_key_free, issue_key, key_summary
from admin_app.lookups import get_or_404
from admin_app.schemas.common import PaginationQuerySchema
from admin_app.schemas.providers import ProviderInSchema, ProviderOutSchema
from shared.models import ApiKey, Provider, ProviderModel
from shared.secret_box import SecretBox
from shared.secrets import hash_key, key_hint, mask_url_password

RESOURCE = "provider"
KEY_NAME_SUFFIX = " key"

provider_in = ProviderInSchema()
provider_out = ProviderOutSchema()
pagination = PaginationQuerySchema()


def _check_name_free(name: str, provider_id: int | None = None) -> None:
    query = select(Provider.id).where(Provider.name == name)
    if provider_id is not None:
        query = query.where(Provider.id != provider_id)
    if db.session.scalar(query) is not None:
        raise Conflict(f"A provider named {name!r} already exists", code="duplicate_provider_name")


def _sealed(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with its secrets sealed (SECRET_KEY) and what the admin shows of them beside."""
    box: SecretBox = current_app.config["NEXUSAI_SECRET_BOX"]
    out = dict(data)
    if "server_key" in data:
        out["server_key_hint"] = key_hint(data["server_key"] or "")
        out["server_key"] = box.seal(data["server_key"])
    if "http_proxy" in data:
        out["http_proxy_display"] = mask_url_password(data["http_proxy"])
        out["http_proxy"] = box.seal(data["http_proxy"])
    return out


def _personalized_key(provider: Provider, key: str) -> dict[str, Any]:
    """Attach the seed's `personalized_key` to `provider` as a client key scoped to it."""
    existing = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if existing is not None and existing.provider_ids == [provider.id]:
        return key_summary(existing)  # the same key sent again on an update: nothing to do
    check_key_free(key)
    name = provider.name[: 100 - len(KEY_NAME_SUFFIX)] + KEY_NAME_SUFFIX
    row, _ = issue_key({"name": name, "key": key, "provider_ids": [provider.id]})
    return key_summary(row)


def _written(provider: Provider, key: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = provider_out.dump(provider)
    if key is not None:
        body["personalized_key"] = key
    return body


@bp.get("/providers")
def list_providers() -> Response:
    """List providers, oldest first."""
    page = load_query(pagination)
    rows = db.session.scalars(
        select(Provider).order_by(Provider.id).limit(page["limit"]).offset(page["offset"])
    )
    return jsonify(provider_out.dump(rows, many=True))


@bp.post("/providers")
def create_provider() -> tuple[Response, int]:
    """Create a provider; a `personalized_key` becomes a client key scoped to it."""
    provider, key = create_provider_from(raw_json_object() or {})
    return jsonify(_written(provider, key)), 201


def create_provider_from(body: dict[str, Any]) -> tuple[Provider, dict[str, Any] | None]:
    """Validate `body`, create the provider (and its personalized key) and commit; both rows."""
    data = load_mapping(provider_in, body)
    personalized = data.pop("personalized_key", None)
    _check_name_free(data["name"])
    if personalized is not None:
        check_key_free(personalized)
    provider = Provider(**_sealed(data))
    db.session.add(provider)
    db.session.flush()
    record_change("create", RESOURCE, provider.id, data)
    key = _personalized_key(provider, personalized) if personalized is not None else None
    db.session.commit()
    return provider, key


@bp.get("/providers/<int:provider_id>")
def get_provider(provider_id: int) -> Response:
    """One provider."""
    return jsonify(provider_out.dump(get_or_404(Provider, provider_id, "Provider")))


@bp.route("/providers/<int:provider_id>", methods=["PUT", "PATCH"])
def update_provider(provider_id: int) -> Response:
    """Change the given fields of a provider (a `personalized_key` adds a scoped client key)."""
    get_or_404(Provider, provider_id, "Provider")  # a missing id is a 404 before a bad body is a 400
    provider, key = update_provider_from(provider_id, raw_json_object() or {})
    return jsonify(_written(provider, key))


def update_provider_from(provider_id: int, body: dict[str, Any]) -> tuple[Provider, dict[str, Any] | None]:
    """Validate `body` as a partial provider, apply it and commit."""
    provider = get_or_404(Provider, provider_id, "Provider")
    data = load_mapping(provider_in, body, partial=True)
    personalized = data.pop("personalized_key", None)
    if "name" in data:
        _check_name_free(data["name"], provider_id)
    if data.get("http_proxy") and data["http_proxy"] == provider.http_proxy_display:
        # A client sending back the masked URL it was shown means "unchanged", not password "***".
        del data["http_proxy"]
    secrets = {field: data.pop(field) for field in ("server_key", "http_proxy") if field in data}
    changed = apply_changes(provider, data)
    if secrets:
        # Sealed values differ on every write: what was sent counts as changed.
        for field, value in _sealed(secrets).items():
            setattr(provider, field, value)
        changed.update(secrets)
    if changed:
        record_change("update", RESOURCE, provider.id, changed)
    key = _personalized_key(provider, personalized) if personalized is not None else None
    db.session.commit()
    return provider, key


@bp.delete("/providers/<int:provider_id>")
def delete_provider(provider_id: int) -> Response:
    """Delete a provider, its models, and its id from every key's scope (see module docstring)."""
    return jsonify(delete_provider_row(provider_id))


def delete_provider_row(provider_id: int) -> dict[str, Any]:
    """Delete the provider as the module docstring says and commit; what went with it."""
    provider = get_or_404(Provider, provider_id, "Provider")
    models_deleted = db.session.scalar(
        select(func.count(ProviderModel.id)).where(ProviderModel.provider_id == provider_id)
    ) or 0
    descoped, disabled = _remove_from_key_scopes(provider_id)
    db.session.delete(provider)
    record_change(
        "delete",
        RESOURCE,
        provider_id,
        {
            "name": provider.name,
            "models_deleted": models_deleted,
            "keys_descoped": descoped,
            "keys_disabled": disabled,
        },
    )
    db.session.commit()
    return {
        "id": provider_id,
        "deleted": True,
        "models_deleted": models_deleted,
        "keys_descoped": descoped,
        "keys_disabled": disabled,
    }


def _remove_from_key_scopes(provider_id: int) -> tuple[list[int], list[int]]:
    """Drop `provider_id` from every key's scope; disable keys whose provider scope would empty."""
    descoped: list[int] = []
    disabled: list[int] = []
    # provider_ids is a JSON list: filtering in Python keeps this portable across backends.
    for key in db.session.scalars(select(ApiKey).order_by(ApiKey.id)):
        if provider_id not in key.provider_ids:
            continue
        remaining = [pid for pid in key.provider_ids if pid != provider_id]
        changes: dict[str, Any] = {"provider_ids": remaining, "reason": f"provider {provider_id} deleted"}
        key.provider_ids = remaining
        descoped.append(key.id)
        # An empty provider list means "every provider": with or without a model scope, that
        # would widen what the key reaches, so a key whose last provider goes is disabled.
        if not remaining and key.enabled:
            key.enabled = False
            changes["enabled"] = False
            disabled.append(key.id)
        record_change("update", "key", key.id, changes)
    return descoped, disabled
