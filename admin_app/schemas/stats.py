"""Usage statistics: the figures, and the date filters every stats endpoint accepts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from admin_app.schemas.fields import INT32_MAX, Documented, Text, utc_clamped


@dataclass(frozen=True)
class DateBound:
    """A parsed start_date/end_date: an instant, and whether only a day was given."""

    at: datetime
    whole_day: bool


_BOUND_ERROR = "Must be a date (YYYY-MM-DD) or an RFC 3339 date-time (2026-11-30T23:59:59Z)."
_UTC_MAX = datetime.max.replace(tzinfo=timezone.utc)


class DayOrInstant(Documented, fields.Field):
    """`YYYY-MM-DD` (a whole UTC day) or an ISO 8601 date-time (naive means UTC)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> DateBound:
        if not isinstance(value, str):
            raise ValidationError(_BOUND_ERROR)
        text = value.strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                return DateBound(datetime.combine(day, time.min, tzinfo=timezone.utc), True)
            instant = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(_BOUND_ERROR) from None
        return DateBound(utc_clamped(instant), False)

    def json_schema(self, prop: dict[str, Any]) -> None:
        """A date or a date-time."""
        prop.pop("type", None)
        prop["anyOf"] = [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]


class RangeQuerySchema(Schema):
    """`?start_date=&end_date=`: both inclusive; a bare end date includes that whole day."""

    start_date = DayOrInstant(metadata={"example": "2026-11-01"})
    end_date = DayOrInstant(metadata={"example": "2026-11-30T23:59:59Z"})

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and _end_exclusive(end) <= start.at:
            raise ValidationError(WINDOW_ORDER_ERROR, "end_date")

    @post_load
    def _to_range(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        start, end = data.pop("start_date", None), data.pop("end_date", None)
        return {
            **data,
            "start": start.at if start else None,
            "end_before": _end_exclusive(end) if end else None,
        }


WINDOW_ORDER_ERROR = "end_date must not be before start_date."


def id_filter(description: str) -> fields.Integer:
    """An optional positive id in a query string."""
    return fields.Integer(
        validate=validate.Range(min=1, max=INT32_MAX), load_default=None, metadata={"description": description}
    )


def model_filter() -> Text:
    """An optional model name in a query string."""
    return Text(
        validate=validate.Length(min=1, max=200), load_default=None,
        metadata={"description": "Only usage of this model name (as clients ask for it)."},
    )


class StatsQuerySchema(RangeQuerySchema):
    """Date range plus `key_id`, `provider_id` and `model` filters (each optional)."""

    key_id = id_filter("Only usage of this client key.")
    provider_id = id_filter("Only usage served by this provider.")
    model = model_filter()


def _end_exclusive(bound: DateBound) -> datetime:
    try:
        return bound.at + (timedelta(days=1) if bound.whole_day else timedelta(microseconds=1))
    except OverflowError:
        return _UTC_MAX  # the last representable instant stands for "no end"


CACHED_DOC = "Prompt tokens read from the provider's prompt cache (part of prompt_tokens)."
CACHE_WRITE_DOC = "Prompt tokens written to the provider's prompt cache (part of prompt_tokens)."
REASONING_DOC = "Completion tokens spent on reasoning (part of completion_tokens)."
COST_DOC = (
    "Exact sum rendered as a JSON number: the nearest double, whose shortest text equals the exact "
    "decimal while the total stays below $1000; use cost_usd_exact for billing."
)


class DayFiguresSchema(Schema):
    """Totals over a set of usage records (without a p95)."""

    requests = fields.Integer()
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()
    cached_tokens = fields.Integer(metadata={"description": CACHED_DOC})
    cache_write_tokens = fields.Integer(metadata={"description": CACHE_WRITE_DOC})
    reasoning_tokens = fields.Integer(metadata={"description": REASONING_DOC})
    errors = fields.Integer(metadata={"description": "Requests answered with status >= 400."})
    cost_usd = fields.Float(metadata={"description": COST_DOC})
    cost_usd_exact = fields.String(
        metadata={"description": "The exact cost in USD as a decimal string with 12 places."}
    )
    success_rate = fields.Float(
        allow_none=True,
        metadata={"description": "Percent of requests answered below 400, two places; null without requests."},
    )
    avg_latency_ms = fields.Float(
        allow_none=True,
        metadata={"description": "Mean latency in ms (each taken to the microsecond), three places."},
    )


class FiguresSchema(DayFiguresSchema):
    """Totals over a set of usage records."""

    p95_latency_ms = fields.Float(
        allow_none=True,
        metadata={
            "description": "Nearest-rank 95th percentile of the recorded latencies: the value at rank "
            "ceil(0.95 n) in ascending order; null without requests."
        },
    )


class TotalStatsSchema(FiguresSchema):
    """`GET /stats/total`."""

    by_provider = fields.Dict(keys=fields.String(), values=fields.Nested(FiguresSchema))
    by_model = fields.Dict(keys=fields.String(), values=fields.Nested(FiguresSchema))
    by_key = fields.Dict(
        keys=fields.String(metadata={"description": "Client key id ('none' for requests without one)."}),
        values=fields.Nested(FiguresSchema),
    )
    by_api = fields.Dict(
        keys=fields.String(metadata={"description": "The client API spoken: chat, responses, embeddings, "
                                                    "completions, messages or ws."}),
        values=fields.Nested(FiguresSchema),
    )


class ConversationStatsSchema(FiguresSchema):
    """`GET /stats/conversation/{conversation_id}`."""

    conversation_id = fields.String()
    first_at = fields.DateTime()
    last_at = fields.DateTime()
    models = fields.List(fields.String())
    by_model = fields.Dict(keys=fields.String(), values=fields.Nested(FiguresSchema))
