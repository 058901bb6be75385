"""Usage reports: `/usage`, `/usage/export` and `/keys/{id}/usage` queries and answers."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from admin_app.schemas.stats import (
    CACHE_WRITE_DOC,
    CACHED_DOC,
    COST_DOC,
    REASONING_DOC,
    DayFiguresSchema,
    FiguresSchema,
    RangeQuerySchema,
    StatsQuerySchema,
    id_filter,
    model_filter,
)
from shared.provider_kinds import USAGE_APIS

PERIODS = ("day", "week", "month", "year")
RECORD_STATUSES = ("ok", "error")
EXPORT_FORMATS = ("csv", "jsonl")
MAX_DAYS = 366


class UsageQuerySchema(StatsQuerySchema):
    """`GET /usage?period=&start_date=&end_date=&key_id=&provider_id=&model=`."""

    period = fields.String(
        validate=validate.OneOf(PERIODS),
        load_default="month",
        metadata={
            "description": "Without start_date the report starts at the beginning of the current UTC "
            "day, ISO week (Monday), month or year (of end_date when given)."
        },
    )


class ExportQuerySchema(StatsQuerySchema):
    """`GET /usage/export?format=csv|jsonl` plus the stats filters."""

    format = fields.String(validate=validate.OneOf(EXPORT_FORMATS), load_default="csv")
    api = fields.String(
        validate=validate.OneOf(USAGE_APIS), load_default=None,
        metadata={"description": "Only records of this client API (ws: the WebSocket chat)."},
    )
    status = fields.String(
        validate=validate.OneOf(RECORD_STATUSES), load_default=None,
        metadata={"description": "ok: answered below 400; error: 400 and above."},
    )


class RecordsQuerySchema(ExportQuerySchema):
    """The console's usage table: the export's filters plus a page."""

    page = fields.Integer(validate=validate.Range(min=1, max=100_000), load_default=1)


class KeyUsageQuerySchema(RangeQuerySchema):
    """`GET /keys/{key_id}/usage?days=30` (start_date/end_date replace the days window)."""

    days = fields.Integer(
        validate=validate.Range(min=1, max=MAX_DAYS),
        load_default=30,
        metadata={"description": "The last N UTC days, today included."},
    )
    provider_id = id_filter("Only usage served by this provider.")
    model = model_filter()


class DayFiguresEntrySchema(DayFiguresSchema):
    """One UTC day of a usage report."""

    date = fields.String(metadata={"example": "2026-11-21"})


class UsageReportSchema(FiguresSchema):
    """`GET /usage`: totals of the window and one entry per UTC day (days without usage included)."""

    period = fields.String(
        metadata={"enum": [*PERIODS, "custom"],
                  "description": "The period the window is (to date), or custom when start_date set it."}
    )
    start = fields.String(metadata={"description": "First instant covered (ISO 8601, UTC)."})
    end = fields.String(metadata={"description": "End of the window, exclusive (ISO 8601, UTC)."})
    daily_breakdown = fields.List(fields.Nested(DayFiguresEntrySchema))
    by_api = fields.Dict(keys=fields.String(metadata={"description": "The client API spoken."}),
                         values=fields.Nested(FiguresSchema))


class UsageEntrySchema(Schema):
    """Requests, tokens and cost of one model or day of a key."""

    requests = fields.Integer()
    tokens = fields.Integer()
    cached_tokens = fields.Integer(metadata={"description": CACHED_DOC})
    cache_write_tokens = fields.Integer(metadata={"description": CACHE_WRITE_DOC})
    reasoning_tokens = fields.Integer(metadata={"description": REASONING_DOC})
    cost = fields.Float(metadata={"description": COST_DOC})
    cost_exact = fields.String(metadata={"description": "Exact cost in USD, 12 places."})


class KeyUsageSchema(Schema):
    """`GET /keys/{key_id}/usage`: the AI Hub per-key usage shape."""

    key_id = fields.Integer()
    key_name = fields.String()
    key_hint = fields.String()
    period_days = fields.Integer()
    start = fields.String()
    end = fields.String()
    total_requests = fields.Integer()
    total_tokens = fields.Integer()
    total_cached_tokens = fields.Integer(metadata={"description": CACHED_DOC})
    total_cache_write_tokens = fields.Integer(metadata={"description": CACHE_WRITE_DOC})
    total_reasoning_tokens = fields.Integer(metadata={"description": REASONING_DOC})
    total_cost = fields.Float(metadata={"description": COST_DOC})
    total_cost_exact = fields.String()
    avg_response_time = fields.Float(allow_none=True, metadata={"description": "Mean latency in ms."})
    p95_response_time = fields.Float(allow_none=True, metadata={"description": "Nearest-rank p95 latency in ms."})
    success_rate = fields.Float(allow_none=True, metadata={"description": "Percent, two places."})
    model_usage = fields.Dict(keys=fields.String(), values=fields.Nested(UsageEntrySchema))
    api_usage = fields.Dict(keys=fields.String(metadata={"description": "The client API spoken."}),
                            values=fields.Nested(UsageEntrySchema))
    daily_usage = fields.Dict(
        keys=fields.String(metadata={"example": "2026-11-21"}), values=fields.Nested(UsageEntrySchema)
    )
