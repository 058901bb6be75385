"""`/stats/*`: usage figures over a window, with breakdowns by provider, model and key.

Sums come from the hourly rollup plus the partial hours at the window's ends,
p95s from latency-ordered indexes (`admin_app/usage_figures.py` explains both).
`cost_usd` stays a JSON number as in the seed; `cost_usd_exact` is the exact
decimal string. Every endpoint accepts `start_date`/`end_date`, `key_id`,
`provider_id` and `model`.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from sqlalchemy import func, select

from admin_app.api import bp
from admin_app.errors import NotFound
from admin_app.extensions import db
from admin_app.inputs import load_query
from admin_app.schemas.stats import ConversationStatsSchema, StatsQuerySchema
from admin_app.usage_figures import (
    Group,
    Window,
    begin_snapshot,
    breakdown,
    cells,
    p95,
    provider_names,
    raw_conditions,
)
from shared.models import UsageRecord

stats_query = StatsQuerySchema()
conversation_out = ConversationStatsSchema()


def window_from(args: dict[str, Any], **overrides: Any) -> Window:
    """The Window a validated stats query describes."""
    values = {
        "start": args.get("start"),
        "end_before": args.get("end_before"),
        "key_id": args.get("key_id"),
        "provider_id": args.get("provider_id"),
        "model": args.get("model"),
    }
    values.update(overrides)
    return Window(**values)


def group_figures(window: Window, group: Group) -> dict[str, Any]:
    """A group's figures, p95 included."""
    return group.sums.figures(p95(db.session, window, group))


@bp.get("/stats/total")
def total() -> Response:
    """Totals over all usage, with breakdowns by provider, model, key and client API."""
    args = load_query(stats_query)
    begin_snapshot(db.session)
    window = window_from(args)
    report = breakdown(cells(db.session, window), provider_names(db.session))
    body = group_figures(window, report.total)
    body["by_provider"] = {label: group_figures(window, g) for label, g in report.by_provider.items()}
    body["by_model"] = {label: group_figures(window, g) for label, g in report.by_model.items()}
    body["by_key"] = {label: group_figures(window, g) for label, g in report.by_key.items()}
    body["by_api"] = {label: group_figures(window, g) for label, g in report.by_api.items()}
    return jsonify(body)


@bp.get("/stats/conversation/<path:conversation_id>")
def conversation(conversation_id: str) -> Response:
    """Figures of one conversation, split by model; 404 when no usage carries that id."""
    args = load_query(stats_query)
    if "\x00" in conversation_id:  # PostgreSQL refuses NUL in a parameter; no id can hold one
        raise NotFound(f"Conversation {conversation_id!r} has no recorded usage")
    begin_snapshot(db.session)
    window = window_from(args, conversation_id=conversation_id)
    report = breakdown(cells(db.session, window), {})
    if not report.total.sums.requests:
        raise NotFound(f"Conversation {conversation_id!r} has no recorded usage")
    u = UsageRecord
    first_at, last_at = db.session.execute(
        select(func.min(u.created_at), func.max(u.created_at)).where(
            *raw_conditions(u.__table__, window, window.start, window.end_before)
        )
    ).one()
    body = {
        "conversation_id": conversation_id,
        **group_figures(window, report.total),
        "first_at": first_at,
        "last_at": last_at,
        "models": list(report.by_model),
        "by_model": {label: group_figures(window, g) for label, g in report.by_model.items()},
    }
    return jsonify(conversation_out.dump(body))
