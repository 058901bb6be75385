"""`/stats/*`: usage figures aggregated in SQL from usage_record rows.

`cost_usd` is summed exactly as scaled integers and rendered as a JSON number.
Every endpoint accepts `start_date`/`end_date`; new breakdowns add a grouping
column to `grouped_figures` or a filter to `_filters`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flask import Response, jsonify
from sqlalchemy import BigInteger, ColumnElement, Row, case, func, literal_column, select, type_coerce

from admin_app.api import bp
from admin_app.errors import NotFound
from admin_app.extensions import db
from admin_app.inputs import load_query
from admin_app.schemas.stats import ConversationStatsSchema, StatsQuerySchema
from shared.models import Provider, UsageRecord
from shared.types import Money

stats_query = StatsQuerySchema()
conversation_out = ConversationStatsSchema()

UNKNOWN_PROVIDER = "unknown"


def figure_columns() -> list[ColumnElement[Any]]:
    """The aggregate columns behind every set of figures."""
    u = UsageRecord
    return [
        func.count(u.id).label("requests"),
        func.coalesce(func.sum(u.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(u.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(u.total_tokens), 0).label("total_tokens"),
        func.coalesce(func.sum(case((u.status_code >= 400, 1), else_=0)), 0).label("errors"),
        # Sum the raw scaled integers: exact on both backends, converted once below.
        func.coalesce(func.sum(type_coerce(u.cost_usd, BigInteger)), 0).label("cost_scaled"),
    ]


def figures(row: Row[Any]) -> dict[str, Any]:
    """Turn one aggregate row into the figures of the API."""
    return {
        "requests": int(row.requests),
        "prompt_tokens": int(row.prompt_tokens),
        "completion_tokens": int(row.completion_tokens),
        "total_tokens": int(row.total_tokens),
        "errors": int(row.errors),
        "cost_usd": float(Money.from_scaled(row.cost_scaled)),
    }


def _filters(start: datetime | None, end_before: datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if start is not None:
        conditions.append(UsageRecord.created_at >= start)
    if end_before is not None:
        conditions.append(UsageRecord.created_at < end_before)
    return conditions


def grouped_figures(
    label: ColumnElement[Any], conditions: Sequence[ColumnElement[bool]], *, join_provider: bool = False
) -> dict[str, dict[str, Any]]:
    """Figures per distinct value of `label`."""
    query = select(label.label("grp"), *figure_columns()).where(*conditions).group_by(label)
    if join_provider:
        query = query.select_from(UsageRecord).outerjoin(Provider, Provider.id == UsageRecord.provider_id)
    return {str(row.grp): figures(row) for row in db.session.execute(query)}


@bp.get("/stats/total")
def total() -> Response:
    """Totals over all usage, with breakdowns by provider and by model."""
    args = load_query(stats_query)
    conditions = _filters(args["start"], args["end_before"])
    body = figures(db.session.execute(select(*figure_columns()).where(*conditions)).one())
    # The name recorded with the usage wins; deleted providers fall back to "unknown".
    provider_label = func.coalesce(
        UsageRecord.provider_name, Provider.name, literal_column(f"'{UNKNOWN_PROVIDER}'")
    )
    body["by_provider"] = grouped_figures(provider_label, conditions, join_provider=True)
    body["by_model"] = grouped_figures(UsageRecord.model, conditions)
    return jsonify(body)


@bp.get("/stats/conversation/<conversation_id>")
def conversation(conversation_id: str) -> Response:
    """Figures of one conversation; 404 when no usage carries that id."""
    args = load_query(stats_query)
    if "\x00" in conversation_id:  # PostgreSQL refuses NUL in a parameter; no id can hold one
        raise NotFound(f"Conversation {conversation_id!r} has no recorded usage")
    conditions = [
        UsageRecord.conversation_id == conversation_id,
        *_filters(args["start"], args["end_before"]),
    ]
    row = db.session.execute(
        select(
            *figure_columns(),
            func.min(UsageRecord.created_at).label("first_at"),
            func.max(UsageRecord.created_at).label("last_at"),
        ).where(*conditions)
    ).one()
    if not row.requests:
        raise NotFound(f"Conversation {conversation_id!r} has no recorded usage")
    models = db.session.scalars(
        select(UsageRecord.model).where(*conditions).distinct().order_by(UsageRecord.model)
    )
    body = {
        "conversation_id": conversation_id,
        **figures(row),
        "first_at": row.first_at,
        "last_at": row.last_at,
        "models": list(models),
    }
    return jsonify(conversation_out.dump(body))
