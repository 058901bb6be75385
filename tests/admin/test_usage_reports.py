"""Every report against a straightforward recomputation from the raw rows.

A generated history (40 days, 3 keys, 4 models, 2 providers, errors, ties,
rows on hour and day edges, latencies with and without rounding) is written
straight into usage_record; each endpoint's figures must equal what plain
Python computes from those rows, on SQLite and (with TEST_POSTGRES_URL) on
PostgreSQL alike.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from alembic import command
from sqlalchemy import MetaData, Table, delete, func, insert, inspect, select, update
from sqlalchemy.orm import Session

from proxy_app.exchange.pricing import request_cost
from shared.db import make_engine
from shared.migrate import alembic_config, upgrade_database
from shared.models import UsageRecord, UsageRollup, UsageRollupDaily
from shared.settings import Settings
from tests.admin.conftest import AdminClient, assert_error

pytestmark = pytest.mark.db

Row = dict[str, Any]
MODELS = {  # model -> (provider index, input price, output price)
    "gpt-4o": (0, "2.50", "10.00"),
    "gpt-4o-mini": (0, "0.15", "0.60"),
    "claude-3-5-sonnet": (1, "3.00", "15.00"),
    "deepseek-chat": (1, "0.28", "0.42"),
}
PROVIDERS = ("openai", "anthropic-ish")
DAYS = 40
ROWS = 1500


# --- the history --------------------------------------------------------------------------------


def _latency(rng: random.Random) -> float:
    choice = rng.random()
    if choice < 0.1:
        return 250.0  # ties
    if choice < 0.2:
        return rng.random() * 5000  # full double precision
    return round(rng.uniform(20, 4000), 3)  # as the proxy records them


APIS = ("chat", "chat", "responses", "embeddings", "ws")


def generate(now: datetime, key_ids: list[int], provider_ids: list[int], seed: int = 5) -> list[Row]:
    """The rows of a 40-day history ending a minute before `now`."""
    rng = random.Random(seed)
    begin = now - timedelta(days=DAYS)
    span_us = (DAYS * 86400 - 60) * 1_000_000
    instants = [begin + timedelta(microseconds=rng.randrange(span_us)) for _ in range(ROWS)]
    # Hour and day edges: the last microsecond before a boundary, and the boundary itself.
    base = (now - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    for delta in (timedelta(0), timedelta(microseconds=-1), timedelta(microseconds=-400), timedelta(hours=5)):
        instants.append(base + delta)
        midnight = base.replace(hour=0) - timedelta(days=2)
        instants.append(midnight + delta)
    rows: list[Row] = []
    for i, created in enumerate(instants):
        model = rng.choice(list(MODELS))
        provider_index, input_price, output_price = MODELS[model]
        prompt, completion = rng.randrange(1, 3000), rng.randrange(0, 1500)
        cached = rng.randrange(0, prompt + 1) if i % 4 == 0 else 0
        cache_write = rng.randrange(0, prompt - cached + 1) if i % 6 == 0 else 0
        reasoning = rng.randrange(0, completion + 1) if i % 5 == 0 else 0
        status = rng.choices([200, 400, 429, 499, 502], weights=[85, 3, 4, 5, 3])[0]
        key_id: int | None = rng.choice(key_ids) if i % 97 else None
        provider_id: int | None = provider_ids[provider_index]
        provider_name: str | None = PROVIDERS[provider_index]
        if i % 89 == 0:
            provider_name = None  # an older row: the provider's current name labels it
        if i % 211 == 0:
            provider_id = provider_name = None  # refused before routing
        rows.append({
            "request_id": f"req-{seed}-{i}",
            "key_id": key_id,
            "provider_id": provider_id,
            "provider_name": provider_name,
            "model": model,
            "api": APIS[i % len(APIS)],
            "conversation_id": f"conv-{i % 7}" if i % 3 == 0 else None,
            "stream": bool(i % 2),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cached_tokens": cached,
            "cache_write_tokens": cache_write,
            "reasoning_tokens": reasoning,
            "cost_usd": request_cost(prompt, completion, Decimal(input_price), Decimal(output_price)),
            "latency_ms": _latency(rng),
            "status_code": status,
            "error_type": None if status < 400 else "upstream_error",
            "created_at": created,
        })
    return rows


def insert_rows(settings: Settings, rows: list[Row]) -> None:
    """Bulk insert, as the proxy's writer does (only the columns the database's revision has)."""
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            present = {column["name"] for column in inspect(conn).get_columns("usage_record")}
            table = Table("usage_record", MetaData(),
                          *(c._copy() for c in UsageRecord.__table__.columns if c.name in present))
            conn.execute(insert(table), [{k: v for k, v in row.items() if k in present} for row in rows])
    finally:
        engine.dispose()


# --- the recomputation --------------------------------------------------------------------------


def expected_figures(rows: list[Row], with_p95: bool = True) -> dict[str, Any]:
    """The admin figures of `rows`, computed the obvious way."""
    n = len(rows)
    errors = sum(1 for r in rows if r["status_code"] >= 400)
    cost = sum((r["cost_usd"] for r in rows), Decimal(0))
    latency_us = sum(math.floor(r["latency_ms"] * 1000 + 0.5) for r in rows)
    body: dict[str, Any] = {
        "requests": n,
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "total_tokens": sum(r["total_tokens"] for r in rows),
        "cached_tokens": sum(r["cached_tokens"] for r in rows),
        "cache_write_tokens": sum(r["cache_write_tokens"] for r in rows),
        "reasoning_tokens": sum(r["reasoning_tokens"] for r in rows),
        "errors": errors,
        "cost_usd": float(cost),
        "cost_usd_exact": f"{cost.quantize(Decimal('1e-12')):f}",
        "success_rate": float((Decimal((n - errors) * 100) / n).quantize(Decimal("0.01"), ROUND_HALF_UP))
        if n else None,
        "avg_latency_ms": float((Decimal(latency_us) / n / 1000).quantize(Decimal("0.001"), ROUND_HALF_UP))
        if n else None,
    }
    if with_p95:
        ordered = sorted(r["latency_ms"] for r in rows)
        body["p95_latency_ms"] = ordered[math.ceil(0.95 * n) - 1] if n else None
    return body


def provider_label(row: Row, names: dict[int, str]) -> str:
    return row["provider_name"] or names.get(row["provider_id"]) or "unknown"


def grouped(rows: list[Row], label: Callable[[Row], str]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(label(row), []).append(row)
    return {name: expected_figures(members) for name, members in sorted(groups.items())}


def select_rows(
    rows: list[Row], start: datetime | None = None, end_before: datetime | None = None, **equal: Any
) -> list[Row]:
    return [
        r for r in rows
        if (start is None or r["created_at"] >= start)
        and (end_before is None or r["created_at"] < end_before)
        and all(r[k] == v for k, v in equal.items())
    ]


def expected_total(rows: list[Row], names: dict[int, str]) -> dict[str, Any]:
    return {
        **expected_figures(rows),
        "by_provider": grouped(rows, lambda r: provider_label(r, names)),
        "by_model": grouped(rows, lambda r: r["model"]),
        "by_key": grouped(rows, lambda r: "none" if r["key_id"] is None else str(r["key_id"])),
        "by_api": grouped(rows, lambda r: r["api"]),
    }


def day_of(instant: datetime) -> date:
    return instant.astimezone(timezone.utc).date()


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def days_between(first: date, last: date) -> Iterable[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


# --- fixtures -----------------------------------------------------------------------------------


class History:
    """The served admin app, the generated rows, and the ids they refer to."""

    def __init__(self, admin: AdminClient, rows: list[Row], key_ids: list[int], provider_ids: list[int]) -> None:
        self.admin = admin
        self.rows = rows
        self.key_ids = key_ids
        self.provider_ids = provider_ids
        self.names = dict(zip(provider_ids, PROVIDERS, strict=True))

    def get(self, path: str, **query: Any) -> Any:
        return self.admin.ok("GET", path + ("?" + urlencode(query) if query else ""))


@pytest.fixture
def history(admin: AdminClient, settings: Settings) -> History:
    provider_ids = [
        admin.ok("POST", "/providers", 201, json={"name": name, "server_url": "http://127.0.0.1:9/v1"})["id"]
        for name in PROVIDERS
    ]
    key_ids = [admin.ok("POST", "/keys", 201, json={"name": f"team-{i}"})["id"] for i in range(3)]
    rows = generate(datetime.now(timezone.utc), key_ids, provider_ids)
    insert_rows(settings, rows)
    return History(admin, rows, key_ids, provider_ids)


# --- /stats ---------------------------------------------------------------------------------------


def test_total_matches_recomputation_under_every_filter(history: History) -> None:
    rows, names = history.rows, history.names
    assert history.get("/stats/total") == expected_total(rows, names)

    now = datetime.now(timezone.utc)
    first_day = day_of(now - timedelta(days=25))
    last_day = day_of(now - timedelta(days=6))
    # Whole days, both inclusive.
    body = history.get("/stats/total", start_date=first_day.isoformat(), end_date=last_day.isoformat())
    assert body == expected_total(
        select_rows(rows, midnight(first_day), midnight(last_day + timedelta(days=1))), names
    )
    # Instants that cut hours in two, with and without an offset.
    start = now - timedelta(days=17, minutes=23, seconds=4, microseconds=250)
    end = now - timedelta(days=2, minutes=41, microseconds=3)
    body = history.get(
        "/stats/total",
        start_date=start.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
        end_date=end.replace(tzinfo=None).isoformat(),
    )
    assert body == expected_total(select_rows(rows, start, end + timedelta(microseconds=1)), names)
    # Within a single hour, and across exactly one hour boundary.
    edge = (now - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    for lo, hi in ((edge - timedelta(minutes=50), edge - timedelta(minutes=1)),
                   (edge - timedelta(microseconds=400), edge + timedelta(minutes=1))):
        body = history.get("/stats/total", start_date=lo.isoformat(), end_date=hi.isoformat())
        assert body == expected_total(select_rows(rows, lo, hi + timedelta(microseconds=1)), names)
    # Equality filters, alone and combined with a window.
    key = history.key_ids[1]
    assert history.get("/stats/total", key_id=key) == expected_total(select_rows(rows, key_id=key), names)
    assert history.get("/stats/total", model="deepseek-chat") == expected_total(
        select_rows(rows, model="deepseek-chat"), names
    )
    provider = history.provider_ids[0]
    assert history.get("/stats/total", provider_id=provider) == expected_total(
        select_rows(rows, provider_id=provider), names
    )
    body = history.get("/stats/total", key_id=key, model="gpt-4o", start_date=first_day.isoformat())
    assert body == expected_total(select_rows(rows, midnight(first_day), key_id=key, model="gpt-4o"), names)


def test_conversation_matches_recomputation(history: History) -> None:
    for conversation in ("conv-0", "conv-3"):
        chosen = select_rows(history.rows, conversation_id=conversation)
        body = history.get(f"/stats/conversation/{conversation}")
        assert {k: body[k] for k in expected_figures(chosen)} == expected_figures(chosen)
        assert body["by_model"] == grouped(chosen, lambda r: r["model"])
        assert body["models"] == sorted({r["model"] for r in chosen})
        first = min(r["created_at"] for r in chosen)
        assert datetime.fromisoformat(body["first_at"]) == first


# --- /keys/{id}/usage and /usage ----------------------------------------------------------------


def _stable_today(call: Callable[[], Any]) -> tuple[date, Any]:
    """Call `call`, retrying once if the UTC date changed meanwhile (a report made at midnight)."""
    for _ in range(2):
        before = datetime.now(timezone.utc).date()
        result = call()
        if datetime.now(timezone.utc).date() == before:
            return before, result
    raise AssertionError("the UTC date changed twice")


def expected_key_usage(rows: list[Row], first: date, last: date) -> dict[str, Any]:
    figures = expected_figures(rows)

    def entry(members: list[Row]) -> dict[str, Any]:
        f = expected_figures(members, with_p95=False)
        return {"requests": f["requests"], "tokens": f["total_tokens"], "cached_tokens": f["cached_tokens"],
                "cache_write_tokens": f["cache_write_tokens"], "reasoning_tokens": f["reasoning_tokens"],
                "cost": f["cost_usd"], "cost_exact": f["cost_usd_exact"]}

    by_model: dict[str, list[Row]] = {}
    by_api: dict[str, list[Row]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
        by_api.setdefault(row["api"], []).append(row)
    return {
        "period_days": (last - first).days + 1,
        "total_requests": figures["requests"],
        "total_tokens": figures["total_tokens"],
        "total_cached_tokens": figures["cached_tokens"],
        "total_cache_write_tokens": figures["cache_write_tokens"],
        "total_reasoning_tokens": figures["reasoning_tokens"],
        "total_cost": figures["cost_usd"],
        "total_cost_exact": figures["cost_usd_exact"],
        "avg_response_time": figures["avg_latency_ms"],
        "p95_response_time": figures["p95_latency_ms"],
        "success_rate": figures["success_rate"],
        "model_usage": {m: entry(members) for m, members in sorted(by_model.items())},
        "api_usage": {a: entry(members) for a, members in sorted(by_api.items())},
        "daily_usage": {
            day.isoformat(): entry([r for r in rows if day_of(r["created_at"]) == day])
            for day in days_between(first, last)
        },
    }


def test_key_usage_matches_recomputation(history: History) -> None:
    key = history.key_ids[0]
    for days in (1, 7, 30, 366):
        today, body = _stable_today(lambda: history.get(f"/keys/{key}/usage", days=days))  # noqa: B023
        first = today - timedelta(days=days - 1)
        chosen = select_rows(history.rows, midnight(first), key_id=key)
        expected = expected_key_usage(chosen, first, today)
        assert {k: body[k] for k in expected} == expected
        assert body["key_id"] == key and body["key_name"] == "team-0" and body["key_hint"]
        assert len(body["daily_usage"]) == days and list(body["daily_usage"]) == sorted(body["daily_usage"])


def test_key_usage_with_explicit_dates_and_model(history: History) -> None:
    key = history.key_ids[2]
    now = datetime.now(timezone.utc)
    first, last = day_of(now - timedelta(days=20)), day_of(now - timedelta(days=10))
    body = history.get(f"/keys/{key}/usage", start_date=first.isoformat(), end_date=last.isoformat(), model="gpt-4o")
    chosen = select_rows(history.rows, midnight(first), midnight(last + timedelta(days=1)), key_id=key, model="gpt-4o")
    expected = expected_key_usage(chosen, first, last)
    assert {k: body[k] for k in expected} == expected
    # `days` ending at end_date.
    body = history.get(f"/keys/{key}/usage", days=5, end_date=last.isoformat())
    chosen = select_rows(
        history.rows, midnight(last - timedelta(days=4)), midnight(last + timedelta(days=1)), key_id=key
    )
    expected = expected_key_usage(chosen, last - timedelta(days=4), last)
    assert {k: body[k] for k in expected} == expected


def _period_start(period: str, day: date) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "year":
        return day.replace(month=1, day=1)
    return day


def expected_usage(rows: list[Row], first: date, last: date) -> dict[str, Any]:
    return {
        **expected_figures(rows),
        "daily_breakdown": [
            {"date": day.isoformat(),
             **expected_figures([r for r in rows if day_of(r["created_at"]) == day], with_p95=False)}
            for day in days_between(first, last)
        ],
        "by_api": grouped(rows, lambda r: r["api"]),
    }


def test_usage_periods_match_recomputation(history: History) -> None:
    for period in ("day", "week", "month", "year"):
        today, body = _stable_today(lambda: history.get("/usage", period=period))  # noqa: B023
        first = _period_start(period, today)
        expected = expected_usage(select_rows(history.rows, midnight(first)), first, today)
        assert {k: body[k] for k in expected} == expected
        assert body["period"] == period and body["start"] == f"{first.isoformat()}T00:00:00Z"


def test_usage_with_range_and_filters_matches_recomputation(history: History) -> None:
    now = datetime.now(timezone.utc)
    start = now - timedelta(days=33, hours=5, minutes=7)
    last = day_of(now - timedelta(days=4))
    provider = history.provider_ids[1]
    body = history.get("/usage", start_date=start.isoformat(), end_date=last.isoformat(), provider_id=provider)
    chosen = select_rows(history.rows, start, midnight(last + timedelta(days=1)), provider_id=provider)
    expected = expected_usage(chosen, day_of(start), last)
    assert {k: body[k] for k in expected} == expected
    # The label says what made the window: the dates, not the default period (was "month").
    assert body["period"] == "custom"
    assert body["start"] == start.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert body["end"] == f"{(last + timedelta(days=1)).isoformat()}T00:00:00Z"
    # period with only an end date: the period holding that end.
    body = history.get("/usage", period="week", end_date=last.isoformat(), key_id=history.key_ids[1])
    first = _period_start("week", last)
    chosen = select_rows(history.rows, midnight(first), midnight(last + timedelta(days=1)), key_id=history.key_ids[1])
    expected = expected_usage(chosen, first, last)
    assert {k: body[k] for k in expected} == expected
    assert body["period"] == "week" and body["start"] == f"{first.isoformat()}T00:00:00Z"


# --- /usage/export ------------------------------------------------------------------------------


def test_export_streams_every_matching_row_exactly(history: History) -> None:
    key = history.key_ids[0]
    start = datetime.now(timezone.utc) - timedelta(days=12)
    expected = sorted(select_rows(history.rows, start, key_id=key), key=lambda r: r["created_at"])
    query = urlencode({"key_id": key, "start_date": start.isoformat(), "format": "jsonl"})
    response = history.admin.get(f"/usage/export?{query}", stream=True)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/x-ndjson"
    records = [json.loads(line) for line in response.iter_lines() if line]
    assert [r["request_id"] for r in records] == [r["request_id"] for r in expected]
    assert [r["cost_usd"] for r in records] == [f"{r['cost_usd']:.12f}" for r in expected]
    assert [r["latency_ms"] for r in records] == [r["latency_ms"] for r in expected]
    assert {r["key_name"] for r in records} == {"team-0"}
    assert all(datetime.fromisoformat(r["created_at"]) >= start for r in records)

    response = history.admin.get(f"/usage/export?key_id={key}", stream=True)
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    everything = select_rows(history.rows, key_id=key)
    assert len(table) == len(everything)
    assert sum(Decimal(r["cost_usd"]) for r in table) == sum(r["cost_usd"] for r in everything)
    assert {r["stream"] for r in table} == {"true", "false"}


def test_export_filters_by_client_api_and_status(history: History) -> None:
    for api in APIS:
        for status, keep in (("ok", lambda r: r["status_code"] < 400), ("error", lambda r: r["status_code"] >= 400)):
            expected = sorted((r for r in history.rows if r["api"] == api and keep(r)), key=lambda r: r["created_at"])
            body = history.admin.get(f"/usage/export?format=jsonl&api={api}&status={status}").text
            records = [json.loads(line) for line in body.splitlines() if line]
            assert [r["request_id"] for r in records] == [r["request_id"] for r in expected], (api, status)
    assert_error(history.admin.get("/usage/export?status=maybe"), 400)
    assert_error(history.admin.get("/usage/export?api=fax"), 400)


def test_export_defuses_spreadsheet_formulas(admin: AdminClient, settings: Settings) -> None:
    row = generate(datetime.now(timezone.utc), [1], [1, 2], seed=9)[0]
    row.update(key_id=None, provider_id=None, provider_name=None, conversation_id="=HYPERLINK(\"http://x\")")
    insert_rows(settings, [row])
    table = list(csv.DictReader(io.StringIO(admin.get("/usage/export").text)))
    assert table[0]["conversation_id"] == "'=HYPERLINK(\"http://x\")"
    jsonl = admin.get("/usage/export?format=jsonl").text
    assert json.loads(jsonl)["conversation_id"] == "=HYPERLINK(\"http://x\")"


# --- the rollup -----------------------------------------------------------------------------------


PARTS = ("cached_tokens", "cache_write_tokens", "reasoning_tokens")


def rollup_equals_rows(settings: Settings) -> None:
    """usage_rollup and usage_rollup_daily hold exactly the per-hour and per-day sums of usage_record."""
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            rows = [
                {c: getattr(r, c) for c in ("key_id", "provider_id", "provider_name", "model", "api", "prompt_tokens",
                                            "completion_tokens", "total_tokens", "status_code", "cost_usd",
                                            "latency_ms", "created_at", *PARTS)}
                for r in session.scalars(select(UsageRecord))
            ]
            stored = {
                (r.hour, r.key_id, r.provider_id, r.provider_name, r.model, r.api):
                    (r.requests, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.errors, r.cost_usd,
                     r.latency_us, *(getattr(r, part) for part in PARTS))
                for r in session.scalars(select(UsageRollup))
            }
            stored_daily = {
                (r.day, r.key_id, r.provider_id, r.provider_name, r.model, r.api):
                    (r.requests, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.errors, r.cost_usd,
                     r.latency_us, *(getattr(r, part) for part in PARTS))
                for r in session.scalars(select(UsageRollupDaily))
            }
    finally:
        engine.dispose()
    expected: dict[tuple[Any, ...], list[Any]] = {}
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for r in rows:
        hour = (r["created_at"] - epoch) // timedelta(hours=1)
        key = (hour, r["key_id"] or 0, r["provider_id"] or 0, r["provider_name"] or "", r["model"], r["api"])
        sums = expected.setdefault(key, [0, 0, 0, 0, 0, Decimal(0), 0, 0, 0, 0])
        for i, value in enumerate((1, r["prompt_tokens"], r["completion_tokens"], r["total_tokens"],
                                   int(r["status_code"] >= 400), r["cost_usd"],
                                   math.floor(r["latency_ms"] * 1000 + 0.5), *(r[part] for part in PARTS))):
            sums[i] += value
    assert stored == {k: tuple(v) for k, v in expected.items()}
    daily: dict[tuple[Any, ...], list[Any]] = {}
    for (hour, *dims), sums in expected.items():
        day_sums = daily.setdefault((hour // 24, *dims), [0, 0, 0, 0, 0, Decimal(0), 0, 0, 0, 0])
        for i, value in enumerate(sums):
            day_sums[i] += value
    assert stored_daily == {k: tuple(v) for k, v in daily.items()}


def test_rollup_follows_inserts_updates_and_deletes(history: History, settings: Settings) -> None:
    rollup_equals_rows(settings)
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(delete(UsageRecord).where(UsageRecord.id % 5 == 0))
            conn.execute(
                update(UsageRecord).where(UsageRecord.id % 7 == 0)
                .values(model="gpt-4o", status_code=503, latency_ms=UsageRecord.latency_ms + 1)
            )
            conn.execute(update(UsageRecord).where(UsageRecord.id % 11 == 0).values(key_id=None))
            conn.execute(update(UsageRecord).where(UsageRecord.id % 13 == 0).values(api="messages"))
            conn.execute(update(UsageRecord).where(UsageRecord.id % 17 == 0).values(
                cached_tokens=UsageRecord.cached_tokens + 3, cache_write_tokens=UsageRecord.cache_write_tokens + 2,
                reasoning_tokens=UsageRecord.reasoning_tokens + 1))
        rollup_equals_rows(settings)
        with engine.begin() as conn:
            conn.execute(delete(UsageRecord))
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(UsageRollup)) == 0
            assert conn.scalar(select(func.count()).select_from(UsageRollupDaily)) == 0
    finally:
        engine.dispose()


def test_migrations_backfill_the_rollups_from_existing_rows(settings: Settings) -> None:
    command.downgrade(alembic_config(settings.database_url), "0001")
    insert_rows(settings, generate(datetime.now(timezone.utc), [1, 2], [1, 2], seed=11)[:400])
    upgrade_database(settings.database_url)
    rollup_equals_rows(settings)
    insert_rows(settings, generate(datetime.now(timezone.utc), [3], [1, 2], seed=12)[:100])
    rollup_equals_rows(settings)
    # Rows written under 0007's triggers (no token parts in the rollups) are summed in by 0008.
    command.downgrade(alembic_config(settings.database_url), "0007")
    insert_rows(settings, generate(datetime.now(timezone.utc), [3], [1, 2], seed=13)[:100])
    upgrade_database(settings.database_url)
    rollup_equals_rows(settings)


# --- bad input ----------------------------------------------------------------------------------


BAD_FILTERS = [
    ("/stats/total?start_date=2026-13-01", "start_date"),
    ("/stats/total?end_date=yesterday", "end_date"),
    ("/stats/total?start_date=2026-05-02&end_date=2026-05-01", "end_date"),
    ("/stats/total?key_id=abc", "key_id"),
    ("/stats/total?provider_id=1.5", "provider_id"),
    ("/stats/total?key_id=0", "key_id"),
    ("/stats/total?key_id=99999999999", "key_id"),
    ("/stats/conversation/c1?model=", "model"),
    ("/usage?period=decade", "period"),
    ("/usage?start_date=2020-01-01&end_date=2026-01-01", "start_date"),
    ("/usage?start_date=2026-05-02T00:00:00Z&end_date=2026-05-01", "end_date"),
    ("/usage/export?format=xml", "format"),
    ("/usage/export?key_id=x", "key_id"),
    ("/keys/1/usage?days=0", "days"),
    ("/keys/1/usage?days=367", "days"),
    ("/keys/1/usage?days=-3", "days"),
    ("/keys/1/usage?days=ten", "days"),
    ("/keys/1/usage?start_date=2020-01-01&end_date=2026-01-01", "start_date"),
]


def test_bad_filters_are_400_with_details_and_change_nothing(admin: AdminClient, dump_db: Any) -> None:
    admin.ok("POST", "/keys", 201, json={"name": "k"})
    before = dump_db()
    for path, field in BAD_FILTERS:
        error = assert_error(admin.get(path), 400, "invalid_parameter")
        assert field in error["details"], (path, error)
    assert dump_db() == before


def test_unknown_key_usage_is_404(admin: AdminClient) -> None:
    assert_error(admin.get("/keys/12345/usage"), 404, "not_found")
