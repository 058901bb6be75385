"""A key's consumption in its quota period: `GET /keys/{id}` figures and `GET /keys/{id}/quota`.

Figures come from the recorded usage rows; the proxy enforces the same limits
in memory and also counts requests still in flight.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from flask import Response, jsonify

from admin_app.api import bp
from admin_app.extensions import db
from admin_app.lookups import get_or_404
from admin_app.schemas.key_quota import KeyDetailSchema, KeyQuotaSchema
from shared.models import ApiKey
from shared.periods import EPOCH, consumption, period_bounds

key_detail = KeyDetailSchema()
key_quota = KeyQuotaSchema()


def _period(row: ApiKey, now: datetime) -> tuple[int, Decimal, datetime, datetime | None]:
    tokens, usd = consumption(db.session, {row.id: row.quota_period}, now)[row.id]
    start, end = period_bounds(row.quota_period, now)
    return tokens, usd, start, end


def key_with_consumption(row: ApiKey) -> dict[str, Any]:
    """A key's public fields plus used_tokens, used_usd and period_resets_at."""
    tokens, usd, _, end = _period(row, datetime.now(timezone.utc))
    out: dict[str, Any] = key_detail.dump(row)
    out.update(key_detail.dump({"used_tokens": tokens, "used_usd": usd, "period_resets_at": end}))
    return out


def _percent(used: int | Decimal, limit: int | Decimal | None) -> float | None:
    if not limit:
        return None
    return round(float(Decimal(used) * 100 / Decimal(limit)), 2)


@bp.get("/keys/<int:key_id>/quota")
def quota(key_id: int) -> Response:
    """Limits, consumption, what remains and when the period resets."""
    row = get_or_404(ApiKey, key_id, "Key")
    tokens, usd, start, end = _period(row, datetime.now(timezone.utc))
    remaining_tokens = max(0, row.token_quota - tokens) if row.token_quota else None
    remaining_usd = max(Decimal(0), row.budget_usd - usd) if row.budget_usd is not None else None
    return jsonify(key_quota.dump({
        "key_id": row.id,
        "name": row.name,
        "key_hint": row.key_hint,
        "enabled": row.enabled,
        "expires_at": row.expires_at,
        "quota_period": row.quota_period,
        "period_start": None if start == EPOCH else start,
        "reset_date": end,
        "limits": {"tokens": row.token_quota, "usd": row.budget_usd},
        "used": {"tokens": tokens, "usd": usd},
        "remaining": {"tokens": remaining_tokens, "usd": remaining_usd},
        "usage_percent": {"tokens": _percent(tokens, row.token_quota), "usd": _percent(usd, row.budget_usd)},
        "rate_limits": {"rpm": row.rpm, "tpm": row.tpm, "max_concurrency": row.max_concurrency},
    }))
