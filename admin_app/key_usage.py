"""`GET /keys/{key_id}/usage?days=30`: one client key's usage in the AI Hub shape.

The window is the last `days` UTC days, today included (or `start_date` to
`end_date`, or `days` ending with `end_date`); `daily_usage` has an entry for
every day of it, zeros included. Costs are JSON numbers (`total_cost`, `cost`)
with exact decimal strings beside them (`total_cost_exact`, `cost_exact`).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Response, jsonify

from admin_app.api import bp
from admin_app.extensions import db
from admin_app.inputs import load_query
from admin_app.lookups import get_or_404
from admin_app.schemas.usage import KeyUsageQuerySchema
from admin_app.stats import window_from
from admin_app.usage import check_span, daily_sums, iso, last_day, midnight, utcnow
from admin_app.usage_figures import (
    Sums,
    begin_snapshot,
    breakdown,
    cells,
    cost_number,
    cost_text,
    date_day,
    day_date,
    p95,
)
from shared.models import ApiKey

key_usage_query = KeyUsageQuerySchema()


def usage_entry(sums: Sums) -> dict[str, Any]:
    """Requests, tokens and cost of one model or day."""
    return {
        "requests": sums.requests,
        "tokens": sums.total_tokens,
        "cached_tokens": sums.cached_tokens,
        "cache_write_tokens": sums.cache_write_tokens,
        "reasoning_tokens": sums.reasoning_tokens,
        "cost": cost_number(sums.cost),
        "cost_exact": cost_text(sums.cost),
    }


@bp.get("/keys/<int:key_id>/usage")
def key_usage(key_id: int) -> Response:
    """Usage of one client key over the last `days` days, per model and per day."""
    args = load_query(key_usage_query)
    key = get_or_404(ApiKey, key_id, "Key")
    name, hint = key.name, key.key_hint
    now = utcnow()
    end_before = args["end_before"]
    final = last_day(end_before, now)
    if args["start"] is not None:
        start = args["start"]
        first = start.date()
    else:
        try:
            first = final - timedelta(days=args["days"] - 1)
        except OverflowError:
            first = date.min  # nothing was recorded before year 1 either
        start = midnight(first)
    days = check_span(first, final)
    db.session.rollback()  # the snapshot must begin with the report's first read
    begin_snapshot(db.session)
    window = window_from(args, start=start, end_before=end_before, key_id=key_id)
    cell_sums = cells(db.session, window, by_day=True, dims=("model", "api"))
    report = breakdown(cell_sums, {})
    total = report.total.sums
    per_day = daily_sums(cell_sums)
    first_day = date_day(first)
    body = {
        "key_id": key_id,
        "key_name": name,
        "key_hint": hint,
        "period_days": days,
        "start": iso(start),
        "end": iso(end_before or now),
        "total_requests": total.requests,
        "total_tokens": total.total_tokens,
        "total_cached_tokens": total.cached_tokens,
        "total_cache_write_tokens": total.cache_write_tokens,
        "total_reasoning_tokens": total.reasoning_tokens,
        "total_cost": cost_number(total.cost),
        "total_cost_exact": cost_text(total.cost),
        "avg_response_time": total.avg_latency_ms,
        "p95_response_time": p95(db.session, window, report.total),
        "success_rate": total.success_rate,
        "model_usage": {model: usage_entry(group.sums) for model, group in report.by_model.items()},
        "api_usage": {api: usage_entry(group.sums) for api, group in report.by_api.items()},
        "daily_usage": {
            day_date(day).isoformat(): usage_entry(per_day.get(day, Sums()))
            for day in range(first_day, first_day + days)
        },
    }
    return jsonify(body)
