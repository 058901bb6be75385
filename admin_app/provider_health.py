"""`GET /providers/{id}/health`: the provider's circuits and recent figures, as the proxies report them.

Every proxy process writes its view every few seconds (`provider_health`); rows not
refreshed within three intervals belong to stopped processes and are left out. States
merge to the worst, counts add up, latency percentiles are taken over the union of the
processes' samples.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Response, current_app, jsonify
from sqlalchemy import select

from admin_app.api import bp
from admin_app.extensions import db
from admin_app.lookups import get_or_404
from admin_app.schemas.provider_health import ProviderHealthSchema
from shared.models import Provider, ProviderHealth
from shared.settings import Settings

WINDOW_S = 300  # the proxies' breakers keep this much (governance/breaker.RECENT_WINDOW_S)
FRESH_INTERVALS = 3
_RANK = {"unknown": -1, "closed": 0, "half_open": 1, "open": 2}
health_out = ProviderHealthSchema()


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value is not None else None


def _nearest_rank(ordered: list[float], percent: int) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _worst(states: list[str]) -> str:
    return max(states, key=lambda s: _RANK.get(s, 0), default="unknown")


def merged_health(provider: Provider, rows: list[ProviderHealth]) -> dict[str, Any]:
    """One provider's health from its fresh rows."""
    requests = sum(r.requests for r in rows)
    errors = sum(r.errors for r in rows)
    latencies = sorted(v for r in rows for v in (r.latencies_ms or []))
    models: dict[str, list[str]] = {}
    for row in rows:
        for model, state in (row.models or {}).items():
            models.setdefault(model, []).append(state)
    last = max((r for r in rows if r.last_error_at is not None), key=lambda r: r.last_error_at or 0, default=None)
    return {
        "provider_id": provider.id,
        "name": provider.name,
        "state": _worst([r.state for r in rows]),
        "models": {model: _worst(states) for model, states in sorted(models.items())},
        "window_s": WINDOW_S,
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else None,
        "latency_ms": {"p50": _nearest_rank(latencies, 50), "p95": _nearest_rank(latencies, 95)},
        "in_flight": sum(r.in_flight for r in rows),
        "last_error": last.last_error if last is not None else None,
        "last_error_at": _iso(last.last_error_at) if last is not None else None,
        "instances": [
            {"instance": r.instance, "state": r.state, "requests": r.requests, "errors": r.errors,
             "in_flight": r.in_flight, "updated_at": _iso(r.updated_at)}
            for r in sorted(rows, key=lambda r: r.instance)
        ],
    }


@bp.get("/providers/<int:provider_id>/health")
def provider_health(provider_id: int) -> Response:
    """A provider's circuit states, error rate, latency p50/p95 and last error, from every live proxy."""
    provider = get_or_404(Provider, provider_id, "Provider")
    return jsonify(health_out.dump(merged_health(provider, fresh_rows(provider_id))))


def fresh_rows(provider_id: int | None = None) -> list[ProviderHealth]:
    """The health rows live proxies wrote lately (one provider's, or every provider's)."""
    settings: Settings = current_app.config["NEXUSAI_SETTINGS"]
    fresh_after = datetime.now(timezone.utc) - timedelta(seconds=FRESH_INTERVALS * settings.health_write_interval_s)
    query = select(ProviderHealth).where(ProviderHealth.updated_at >= fresh_after)
    if provider_id is not None:
        query = query.where(ProviderHealth.provider_id == provider_id)
    return list(db.session.scalars(query))
