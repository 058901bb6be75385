"""`/usage`: period reports with a daily breakdown, and `/usage/export`: the raw records as CSV or JSONL.

A report covers [start, end): `start_date` or the start of the current UTC
period (`period=day|week|month|year`, weeks start on Monday), and `end_date`
or now. Its daily breakdown lists every UTC day of the window, days without
usage included, so a window is at most 366 days long.

The export streams rows from a server-side cursor (PostgreSQL) or SQLite's
lazy cursor, `EXPORT_BATCH` at a time, so memory stays flat however many rows
match. Costs are exact decimal strings; no secret is ever part of a row (keys
appear by id and name). CSV text cells that a spreadsheet would run as a
formula (starting with = + - @ or a tab/CR) get a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import orjson
from flask import Response, jsonify, stream_with_context
from sqlalchemy import ColumnElement, select

from admin_app.api import bp
from admin_app.errors import ValidationFailed
from admin_app.extensions import db
from admin_app.inputs import load_query
from admin_app.schemas.usage import MAX_DAYS, ExportQuerySchema, UsageQuerySchema
from admin_app.stats import window_from
from admin_app.usage_figures import (
    Cells,
    Sums,
    Window,
    begin_snapshot,
    breakdown,
    cells,
    cost_text,
    date_day,
    day_date,
    p95,
    raw_conditions,
)
from shared.models import ApiKey, UsageRecord

usage_query = UsageQuerySchema()
export_query = ExportQuerySchema()

EXPORT_BATCH = 1000
EXPORT_COLUMNS = (
    "id", "request_id", "created_at", "key_id", "key_name", "provider_id", "provider_name", "model",
    "upstream_model", "conversation_id", "api", "transport", "stream", "prompt_tokens", "completion_tokens",
    "total_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "token_source", "cost_usd",
    "latency_ms", "ttft_ms", "status_code", "error_type",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def iso(instant: datetime) -> str:
    """An aware instant as ISO 8601 in UTC with a Z."""
    return instant.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def utcnow() -> datetime:
    """Now, aware, UTC."""
    return datetime.now(timezone.utc)


def midnight(day: date) -> datetime:
    """The instant a UTC day starts."""
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def period_start(period: str, reference: datetime) -> datetime:
    """Start of the UTC day, ISO week, month or year holding `reference`."""
    day = reference.astimezone(timezone.utc).date()
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    elif period == "year":
        day = day.replace(month=1, day=1)
    return midnight(day)


def last_day(end_before: datetime | None, now: datetime) -> date:
    """The last UTC day a window ending at `end_before` (or now) touches."""
    if end_before is None:
        return now.date()
    return (end_before - timedelta(microseconds=1)).date()


def check_span(first: date, last: date) -> int:
    """The number of UTC days from `first` to `last`; 400 beyond MAX_DAYS."""
    days = max((last - first).days + 1, 0)
    if days > MAX_DAYS:
        raise ValidationFailed(
            "Invalid query parameters",
            code="invalid_parameter",
            details={"start_date": [f"The window spans {days} UTC days; at most {MAX_DAYS} are allowed."]},
        )
    return days


def daily_sums(cell_sums: Cells) -> dict[int, Sums]:
    """Sums per UTC day number."""
    out: dict[int, Sums] = {}
    for key, sums in cell_sums.items():
        assert key.day is not None
        out.setdefault(key.day, Sums()).add(sums)
    return out


@bp.get("/usage")
def usage_report() -> Response:
    """Totals of a period (or date range) with one entry per UTC day."""
    args = load_query(usage_query)
    now = utcnow()
    start = args["start"]
    end_before = args["end_before"]
    # A start_date replaces the period: the label says which of the two made the window.
    label = args["period"] if start is None else "custom"
    if start is None:
        reference = end_before - timedelta(microseconds=1) if end_before is not None else now
        start = period_start(args["period"], reference)
    first = start.date()
    days = check_span(first, last_day(end_before, now))
    begin_snapshot(db.session)
    window = window_from(args, start=start, end_before=end_before)
    cell_sums = cells(db.session, window, by_day=True, dims=("api",))
    per_day = daily_sums(cell_sums)
    report = breakdown(cell_sums, {})
    total = report.total
    first_day = date_day(first)
    body: dict[str, Any] = {
        "period": label,
        "start": iso(start),
        "end": iso(end_before or now),
        **total.sums.figures(p95(db.session, window, total)),
        "daily_breakdown": [
            {"date": day_date(day).isoformat(), **per_day.get(day, Sums()).figures(with_p95=False)}
            for day in range(first_day, first_day + days)
        ],
        "by_api": {api: group.sums.figures(p95(db.session, window, group)) for api, group in report.by_api.items()},
    }
    return jsonify(body)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def export_record(row: Any, key_names: dict[int, str]) -> dict[str, Any]:
    """One usage record as the export (and the console's table) shows it."""
    return {
        "id": row.id,
        "request_id": row.request_id,
        "created_at": iso(row.created_at),
        "key_id": row.key_id,
        "key_name": key_names.get(row.key_id) if row.key_id is not None else None,
        "provider_id": row.provider_id,
        "provider_name": row.provider_name,
        "model": row.model,
        "upstream_model": row.upstream_model,
        "conversation_id": row.conversation_id,
        "api": row.api,
        "transport": row.transport,
        "stream": bool(row.stream),
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.total_tokens,
        "cached_tokens": row.cached_tokens,
        "cache_write_tokens": row.cache_write_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "token_source": row.token_source,
        "cost_usd": cost_text(row.cost_usd),
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "status_code": row.status_code,
        "error_type": row.error_type,
    }


def _csv_chunk(records: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for record in records:
        writer.writerow(
            "true" if value is True else "false" if value is False else _csv_cell(value)
            for value in record.values()
        )
    return buffer.getvalue().encode("utf-8")


def _jsonl_chunk(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def record_conditions(window: Window, api: str | None = None, status: str | None = None) -> list[ColumnElement[bool]]:
    """Conditions on usage_record for a window, a client API and ok/error (the export's and the console's)."""
    u = UsageRecord
    conditions = raw_conditions(u.__table__, window, window.start, window.end_before)
    if api is not None:
        conditions.append(u.api == api)  # (api, created_at) walks the newest first (migration 0013)
    if status == "ok":
        conditions.append(u.status_code < 400)
    elif status == "error":
        conditions.append(u.status_code >= 400)
    return conditions


def export_rows(window: Window, fmt: str, key_names: dict[int, str],
                conditions: list[ColumnElement[bool]] | None = None) -> Iterator[bytes]:
    """The matching usage records in `fmt`, oldest first, one chunk per batch."""
    u = UsageRecord
    columns = [getattr(u, name) for name in EXPORT_COLUMNS if name != "key_name"]
    where = conditions if conditions is not None else record_conditions(window)
    query = select(*columns).where(*where).order_by(u.created_at, u.id)
    encode = _csv_chunk if fmt == "csv" else _jsonl_chunk
    if fmt == "csv":
        yield (",".join(EXPORT_COLUMNS) + "\r\n").encode("utf-8")
    # Its own connection, held for the length of the stream and returned at the end.
    with db.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=EXPORT_BATCH).execute(query)
        for batch in result.partitions():
            yield encode([export_record(row, key_names) for row in batch])


@bp.get("/usage/export")
def usage_export() -> Response:
    """Stream the usage records of a window as CSV or JSON Lines."""
    return export_response(load_query(export_query))


def export_response(args: dict[str, Any]) -> Response:
    """The streamed export for validated export query `args`."""
    window = window_from(args)
    fmt = args["format"]
    conditions = record_conditions(window, args.get("api"), args.get("status"))
    key_names = {int(kid): name for kid, name in db.session.execute(select(ApiKey.id, ApiKey.name))}
    db.session.close()  # the stream uses its own connection
    rows = export_rows(window, fmt, key_names, conditions)
    response = Response(stream_with_context(rows), mimetype=_MEDIA_TYPES[fmt])
    response.headers["Content-Type"] = _MEDIA_TYPES[fmt]
    response.headers["Content-Disposition"] = f'attachment; filename="nexusai-usage.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response

