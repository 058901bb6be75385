"""Usage statistics: the figures, and the date filters every stats endpoint accepts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validates_schema


@dataclass(frozen=True)
class DateBound:
    """A parsed start_date/end_date: an instant, and whether only a day was given."""

    at: datetime
    whole_day: bool


class DayOrInstant(fields.Field):
    """`YYYY-MM-DD` (a whole UTC day) or an ISO 8601 date-time (naive means UTC)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> DateBound:
        if not isinstance(value, str):
            raise ValidationError("Must be a date (YYYY-MM-DD) or an ISO 8601 date-time.")
        text = value.strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                if day == date.max:
                    raise ValidationError("Date out of range.")
                return DateBound(datetime.combine(day, time.min, tzinfo=timezone.utc), True)
            instant = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError("Must be a date (YYYY-MM-DD) or an ISO 8601 date-time.") from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=timezone.utc)
        try:
            bound = DateBound(instant.astimezone(timezone.utc), False)
            _end_exclusive(bound)  # the last representable day has no "day after"
        except OverflowError:
            raise ValidationError("Date out of range.") from None
        return bound


class StatsQuerySchema(Schema):
    """`?start_date=&end_date=`: both inclusive; a bare end date includes that whole day."""

    start_date = DayOrInstant(metadata={"type": "string", "example": "2026-11-01"})
    end_date = DayOrInstant(metadata={"type": "string", "example": "2026-11-30T23:59:59Z"})

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and _end_exclusive(end) <= start.at:
            raise ValidationError("end_date must not be before start_date.", "end_date")

    @post_load
    def _to_range(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        start, end = data.get("start_date"), data.get("end_date")
        return {
            "start": start.at if start else None,
            "end_before": _end_exclusive(end) if end else None,
        }


def _end_exclusive(bound: DateBound) -> datetime:
    return bound.at + (timedelta(days=1) if bound.whole_day else timedelta(microseconds=1))


class FiguresSchema(Schema):
    """Totals over a set of usage records."""

    requests = fields.Integer()
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()
    errors = fields.Integer(metadata={"description": "Requests answered with status >= 400."})
    cost_usd = fields.Float(metadata={"description": "Exact sum, rendered as a JSON number."})


class TotalStatsSchema(FiguresSchema):
    """`GET /stats/total`."""

    by_provider = fields.Dict(keys=fields.String(), values=fields.Nested(FiguresSchema))
    by_model = fields.Dict(keys=fields.String(), values=fields.Nested(FiguresSchema))


class ConversationStatsSchema(FiguresSchema):
    """`GET /stats/conversation/{conversation_id}`."""

    conversation_id = fields.String()
    first_at = fields.DateTime()
    last_at = fields.DateTime()
    models = fields.List(fields.String())
