"""Model prices: the built-in list, its fill-in on create, and exact cost sums over many records."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from admin_app.price_list import PRICES, list_price
from proxy_app.exchange.pricing import request_cost
from shared.db import make_engine
from shared.models import UsageRecord
from shared.settings import Settings
from tests.admin.conftest import SEED_PROVIDER, AdminClient


@pytest.mark.parametrize(
    "names, expected",
    [
        (("gpt-4o",), ("2.50", "10.00", "1.25")),
        (("gpt-4o-2024-08-06",), ("2.50", "10.00", "1.25")),
        (("gpt-4o-2024-05-13",), ("5.00", "15.00", None)),  # a snapshot priced unlike its alias
        (("GPT-4o-mini-2024-07-18",), ("0.15", "0.60", "0.075")),
        (("openai/gpt-4.1-nano",), ("0.10", "0.40", "0.025")),
        (("gpt-4-0613",), ("30.00", "60.00", None)),
        (("gpt-3.5-turbo-0125",), ("0.50", "1.50", None)),
        (("claude-3-5-sonnet-20241022",), ("3.00", "15.00", "0.30")),
        (("claude-3-5-haiku-latest",), ("0.80", "4.00", "0.08")),
        (("anthropic/claude-sonnet-4-20250514",), ("3.00", "15.00", "0.30")),
        (("models/gemini-2.0-flash-001",), ("0.10", "0.40", "0.025")),
        (("gemini-1.5-pro-002",), ("1.25", "5.00", None)),
        (("gemini-2.5-pro-preview-05-06",), ("1.25", "10.00", "0.31")),
        (("deepseek/deepseek-chat",), ("0.28", "0.42", "0.028")),
        (("grok-4-0709",), ("3.00", "15.00", "0.75")),
        (("x-ai/grok-3-mini",), ("0.30", "0.50", None)),
        (("mistral-large-2411",), ("2.00", "6.00", None)),
        (("mistral-small-latest",), ("0.10", "0.30", None)),
        ((None, "my-alias", "gpt-4o-mini"), ("0.15", "0.60", "0.075")),  # upstream unknown, model known
        (("gpt-4o", "claude-3-opus"), ("2.50", "10.00", "1.25")),  # the upstream name wins
    ],
)
def test_list_price_matching(names: tuple[str | None, ...], expected: tuple[str, str, str | None]) -> None:
    price = list_price(*names)
    assert price is not None
    cached = Decimal(expected[2]) if expected[2] else None
    assert (price.input, price.output, price.cached_input) == (Decimal(expected[0]), Decimal(expected[1]), cached)


@pytest.mark.parametrize(
    "name", ["llama3:8b", "deepseek/deepseek-chat:free", "gpt-4o-audio-preview", "my-model", "", "gemini-exp-1206"]
)
def test_unknown_or_tagged_names_have_no_list_price(name: str) -> None:
    assert list_price(name) is None


def test_every_list_price_is_storable() -> None:
    for name, price in PRICES.items():
        assert name == name.lower() and "/" not in name, name
        for value in (price.input, price.output, price.cached_input):
            assert value is None or (0 <= value < 1000 and value == value.quantize(Decimal("0.000001"))), name


@pytest.mark.db
def test_create_fills_missing_prices_and_explicit_ones_win(admin: AdminClient) -> None:
    provider = admin.ok("POST", "/providers", 201, json=SEED_PROVIDER)["id"]

    def create(**body: Any) -> dict[str, Any]:
        return admin.ok("POST", "/provider_models", 201, json={"provider_id": provider, **body})  # type: ignore[no-any-return]

    def prices(model: dict[str, Any]) -> tuple[Any, Any, Any]:
        return model["input_price"], model["output_price"], model["cached_input_price"]

    assert prices(create(model_name="gpt-4o-2024-08-06")) == (2.5, 10.0, 1.25)
    assert prices(create(model_name="mini", upstream_name="openai/gpt-4o-mini")) == (0.15, 0.6, 0.075)
    assert prices(create(model_name="claude-3-5-sonnet-latest", input_price="2.75")) == (2.75, 15.0, 0.3)
    assert prices(create(model_name="gpt-4.1", output_price=None, cached_input_price=0)) == (2.0, None, 0.0)
    assert prices(create(model_name="local-llama")) == (None, None, None)
    # Only creation fills: an update that leaves prices out keeps them as they are.
    model = create(model_name="gpt-3.5-turbo", input_price=None, output_price=None)
    assert prices(model)[:2] == (None, None)
    updated = admin.ok("PUT", f"/provider_models/{model['id']}", json={"description": "no prices"})
    assert prices(updated)[:2] == (None, None)
    # The filled prices are in the audit trail like typed ones.
    entry = admin.ok("GET", "/audit?resource=provider_model&limit=50")[-1]
    assert entry["changes"]["input_price"] in ("2.50", "2.5", 2.5)


@pytest.mark.db
def test_ten_thousand_costs_sum_exactly(admin: AdminClient, settings: Settings) -> None:
    key_id = admin.ok("POST", "/keys", 201, json={"name": "billing"})["id"]
    rng = random.Random(7)
    prices = [(Decimal("0.15"), Decimal("0.60")), (Decimal("2.50"), Decimal("10.00")),
              (Decimal("0.0375"), Decimal("0.15")), (Decimal("3.00"), Decimal("15.00"))]
    start = datetime.now(timezone.utc) - timedelta(days=3)
    rows = []
    for i in range(10_000):
        prompt, completion = rng.randrange(1, 5000), rng.randrange(1, 2000)
        input_price, output_price = prices[i % 4]
        rows.append({
            "request_id": f"exact-{i}", "key_id": key_id, "model": f"m{i % 4}", "status_code": 200,
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "cost_usd": request_cost(prompt, completion, input_price, output_price),
            "latency_ms": 10.0, "created_at": start + timedelta(seconds=20 * i),
        })
    # Every cost is exact: prompt * price / 1e6 needs at most 10 places.
    for row, (input_price, output_price) in zip(rows[:8], prices * 2, strict=True):
        exact = (row["prompt_tokens"] * input_price + row["completion_tokens"] * output_price) / Decimal(10**6)
        assert row["cost_usd"] == exact
    expected = sum((r["cost_usd"] for r in rows), Decimal(0))
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(UsageRecord), rows)
        with engine.connect() as conn:
            # SUM keeps the column type, so the ORM hands back an exact Decimal on both backends.
            assert conn.scalar(select(func.sum(UsageRecord.cost_usd))) == expected
    finally:
        engine.dispose()

    body = admin.ok("GET", "/stats/total")
    assert body["requests"] == 10_000
    assert body["cost_usd_exact"] == f"{expected:.12f}"
    assert Decimal(body["cost_usd_exact"]) == expected
    assert body["cost_usd"] == float(expected)
    assert Decimal(repr(body["cost_usd"])) == expected  # below $1000 the number's text is exact too
    per_model = sum((Decimal(f["cost_usd_exact"]) for f in body["by_model"].values()), Decimal(0))
    assert per_model == expected
    usage = admin.ok("GET", f"/usage?start_date={start.date().isoformat()}")
    assert sum((Decimal(d["cost_usd_exact"]) for d in usage["daily_breakdown"]), Decimal(0)) == expected
    key_usage = admin.ok("GET", f"/keys/{key_id}/usage?days=5")
    assert Decimal(key_usage["total_cost_exact"]) == expected
