"""`/provider_models` and `/providers/<id>/models`: the models a provider serves, with prices.

An unknown `provider_id` in a body is bad input (400, field error under
`details.provider_id`); an unknown id in the URL is a 404. A model created
without prices gets the built-in list prices of `shared/price_list.py` when
its upstream or model name is known there.
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
from admin_app.keys import check_provider_ids
from admin_app.lookups import get_or_404
from admin_app.price_list import list_price
from admin_app.schemas.common import PaginationQuerySchema
from admin_app.schemas.provider_models import (
    ProviderModelInSchema,
    ProviderModelOutSchema,
    ProviderModelQuerySchema,
)
from shared.models import Provider, ProviderModel

RESOURCE = "provider_model"

model_in = ProviderModelInSchema()
model_out = ProviderModelOutSchema()
model_query = ProviderModelQuerySchema()
pagination = PaginationQuerySchema()


def _check_pair_free(provider_id: int, model_name: str, model_id: int | None = None) -> None:
    query = select(ProviderModel.id).where(
        ProviderModel.provider_id == provider_id, ProviderModel.model_name == model_name
    )
    if model_id is not None:
        query = query.where(ProviderModel.id != model_id)
    if db.session.scalar(query) is not None:
        raise Conflict(
            f"Provider {provider_id} already has a model named {model_name!r}", code="duplicate_model_name"
        )


def fill_list_prices(data: dict[str, Any]) -> None:
    """Give each price the body leaves out its list price (shared/price_list.py); given ones, null included, win."""
    price = list_price(data.get("upstream_name"), data["model_name"])
    if price is None:
        return
    for field, value in (
        ("input_price", price.input),
        ("output_price", price.output),
        ("cached_input_price", price.cached_input),
        ("cache_write_price", price.cache_write),
    ):
        if field not in data and value is not None:
            data[field] = value


def _list(provider_id: int | None, limit: int | None, offset: int) -> Response:
    query = select(ProviderModel).order_by(ProviderModel.id).limit(limit).offset(offset)
    if provider_id is not None:
        query = query.where(ProviderModel.provider_id == provider_id)
    return jsonify(model_out.dump(db.session.scalars(query), many=True))


@bp.get("/provider_models")
def list_models() -> Response:
    """List every provider model (`?provider_id=` narrows it)."""
    args = load_query(model_query)
    return _list(args["provider_id"], args["limit"], args["offset"])


@bp.get("/providers/<int:provider_id>/models")
def list_provider_models(provider_id: int) -> Response:
    """List one provider's models."""
    get_or_404(Provider, provider_id, "Provider")
    page = load_query(pagination)
    return _list(provider_id, page["limit"], page["offset"])


@bp.post("/provider_models")
def create_model() -> tuple[Response, int]:
    """Add a model to a provider."""
    return jsonify(model_out.dump(create_model_from(raw_json_object() or {}))), 201


def create_model_from(body: dict[str, Any]) -> ProviderModel:
    """Validate `body`, add the model (list prices filled in) and commit."""
    data = load_mapping(model_in, body)
    check_provider_ids([data["provider_id"]], field="provider_id")
    _check_pair_free(data["provider_id"], data["model_name"])
    fill_list_prices(data)
    row = ProviderModel(**data)
    db.session.add(row)
    db.session.flush()
    record_change("create", RESOURCE, row.id, data)
    db.session.commit()
    return row


@bp.get("/provider_models/<int:model_id>")
def get_model(model_id: int) -> Response:
    """One provider model."""
    return jsonify(model_out.dump(get_or_404(ProviderModel, model_id, "Provider model")))


@bp.route("/provider_models/<int:model_id>", methods=["PUT", "PATCH"])
def update_model(model_id: int) -> Response:
    """Change the given fields of a provider model."""
    get_or_404(ProviderModel, model_id, "Provider model")  # a missing id is a 404 before a bad body is a 400
    return jsonify(model_out.dump(update_model_from(model_id, raw_json_object() or {})))


def update_model_from(model_id: int, body: dict[str, Any]) -> ProviderModel:
    """Validate `body` as a partial model, apply it and commit."""
    row = get_or_404(ProviderModel, model_id, "Provider model")
    data = load_mapping(model_in, body, partial=True)
    if "provider_id" in data:
        check_provider_ids([data["provider_id"]], field="provider_id")
    if "provider_id" in data or "model_name" in data:
        _check_pair_free(
            data.get("provider_id", row.provider_id), data.get("model_name", row.model_name), model_id
        )
    changed = apply_changes(row, data)
    if changed:
        record_change("update", RESOURCE, row.id, changed)
    db.session.commit()
    return row


@bp.delete("/provider_models/<int:model_id>")
def delete_model(model_id: int) -> Response:
    """Delete a provider model."""
    delete_model_row(model_id)
    return jsonify({"id": model_id, "deleted": True})


def delete_model_row(model_id: int) -> None:
    """Delete a provider model and commit."""
    row = get_or_404(ProviderModel, model_id, "Provider model")
    db.session.delete(row)
    record_change(
        "delete", RESOURCE, model_id, {"provider_id": row.provider_id, "model_name": row.model_name}
    )
    db.session.commit()
