"""Admin report latency on a large usage history (run by hand; no test times it).

    python -m bench.reports                       # 1,000,000 rows, ~2-3 minutes to build
    python -m bench.reports --rows 100000 --repeat 3
    python -m bench.reports --db /tmp/usage.db    # reuse a database built before (kept with --keep)
    python -m bench.reports --markdown --json results.json

Builds a SQLite database in a temp dir: migrated to revision 0001, N usage rows
bulk-inserted with `executemany` (spread over --days days ending now, --keys
keys, 8 models on 4 providers, 3% errors, conversations of 1-9 turns plus one
of 2,000), then upgraded to head so migration 0002 builds the hourly rollup and
the latency indexes from those rows (its backfill time is printed too). The
real admin app (`admin_app.create_app`) then answers each report through
Flask's test client: one warm-up, then --repeat timed runs (median and max,
wall clock of the whole request: validation, SQL, JSON or the rendered page).
The export is timed to its first chunk and to its end. API reports are held to
200 ms, the console's pages (dashboard, key, usage records, audit, health) to 300 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

if __package__ in (None, ""):  # `python bench/reports.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alembic import command
from flask.testing import FlaskClient

from proxy_app.exchange.pricing import request_cost
from shared.migrate import alembic_config
from shared.settings import Settings

MODELS = {  # model -> (provider, input price, output price), USD per 1M tokens
    "gpt-4o": ("openai", "2.50", "10.00"),
    "gpt-4o-mini": ("openai", "0.15", "0.60"),
    "gpt-4.1": ("openai", "2.00", "8.00"),
    "claude-sonnet-4": ("anthropic", "3.00", "15.00"),
    "claude-3-5-haiku": ("anthropic", "0.80", "4.00"),
    "gemini-2.5-flash": ("google", "0.30", "2.50"),
    "deepseek-chat": ("deepseek", "0.28", "0.42"),
    "deepseek-reasoner": ("deepseek", "0.28", "0.42"),
}
PROVIDERS = ("openai", "anthropic", "google", "deepseek")
BIG_CONVERSATION = "conv-big"
BIG_CONVERSATION_ROWS = 2000
LIMIT_MS = 200.0
CONSOLE_LIMIT_MS = 300.0  # the console's pages (issue: dashboards under 300 ms on 1M rows)
INSERT_SQL = (
    "INSERT INTO usage_record (request_id, key_id, provider_id, provider_name, model, upstream_model, "
    "conversation_id, transport, stream, prompt_tokens, completion_tokens, total_tokens, token_source, "
    "cost_usd, latency_ms, ttft_ms, status_code, error_type, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class Timing:
    """One report's timings."""

    name: str
    path: str
    median_ms: float
    max_ms: float
    bytes: int
    note: str = ""


def _rows(count: int, days: int, keys: int, now: datetime, seed: int = 1, prefix: str = "req") -> Any:
    """Usage rows as tuples for INSERT_SQL, oldest first."""
    rng = random.Random(seed)
    prices = {m: (Decimal(i), Decimal(o)) for m, (_, i, o) in MODELS.items()}
    models = list(MODELS)
    begin = now - timedelta(days=days)
    step_us = days * 86_400_000_000 // count
    conversation, turns_left = 0, 0
    big_every = max(count // BIG_CONVERSATION_ROWS, 1)
    for i in range(count):
        created = begin + timedelta(microseconds=i * step_us + rng.randrange(step_us))
        model = models[rng.randrange(len(models))]
        provider = MODELS[model][0]
        prompt, completion = rng.randrange(20, 4000), rng.randrange(1, 1500)
        status = 200 if rng.random() > 0.03 else rng.choice((429, 499, 502))
        latency = round(rng.lognormvariate(6.5, 0.6), 3)
        if turns_left == 0:
            conversation, turns_left = conversation + 1, rng.randrange(1, 10)
        turns_left -= 1
        conv = BIG_CONVERSATION if i % big_every == 0 else f"conv-{conversation}"
        cost = request_cost(prompt, completion, *prices[model])
        yield (
            f"{prefix}_{i:032x}", 1 + rng.randrange(keys), 1 + PROVIDERS.index(provider), provider, model, model,
            conv, "http", i % 2, prompt, completion, prompt + completion, "upstream",
            int(cost.scaleb(12)), latency, round(latency * 0.3, 3), status,
            None if status == 200 else "upstream_error", created.replace(tzinfo=None).isoformat(sep=" "),
        )


def build_database(path: Path, rows: int, days: int, keys: int, now: datetime, progress: bool) -> dict[str, float]:
    """Migrate to 0001, bulk insert, then upgrade to head (rollup backfill + indexes). Returns timings in s."""
    url = f"sqlite:///{path}"
    command.upgrade(alembic_config(url), "0001")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB
    conn.executemany("INSERT INTO provider (id, name, server_url, server_key, description, enabled, timeout_s, "
                     "priority, weight, created_at, updated_at) VALUES (?, ?, 'http://127.0.0.1:9/v1', '', '', 1, "
                     "60, 0, 1, ?, ?)", [(i + 1, p, now, now) for i, p in enumerate(PROVIDERS)])
    conn.executemany("INSERT INTO api_key (id, name, key_hash, key_hint, provider_ids, models, quota_period, "
                     "enabled, created_at, updated_at) VALUES (?, ?, ?, 'nx-...', '[]', '[]', 'total', 1, ?, ?)",
                     [(k, f"key-{k}", f"{k:064x}", now, now) for k in range(1, keys + 1)])
    started = time.perf_counter()
    conn.executemany(INSERT_SQL, _rows(rows, days, keys, now))
    conn.commit()
    conn.close()
    inserted = time.perf_counter() - started
    if progress:
        print(f"inserted {rows:,} rows in {inserted:.1f} s", file=sys.stderr)
    started = time.perf_counter()
    command.upgrade(alembic_config(url), "head")
    upgraded = time.perf_counter() - started
    if progress:
        print(f"migrations 0002-0003 (rollup backfill, 3 indexes, triggers) in {upgraded:.1f} s", file=sys.stderr)
    # No ANALYZE: a deployed database has no planner statistics either.
    return {"insert_s": inserted, "upgrade_s": upgraded}


def _time(client: FlaskClient, path: str, repeat: int) -> tuple[list[float], int]:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.get_data(as_text=True)[:300])
    samples = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        body = response.get_data()
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, path
        size = len(body)
    return samples, size


def _time_export(client: FlaskClient, path: str) -> tuple[float, float, int, int]:
    started = time.perf_counter()
    response = client.get(path, buffered=False)
    chunks = iter(response.response)
    first = next(chunks)
    first_ms = (time.perf_counter() - started) * 1000
    size, lines = len(first), first.count(b"\n")
    for chunk in chunks:
        size += len(chunk)
        lines += chunk.count(b"\n")
    response.close()
    return first_ms, (time.perf_counter() - started) * 1000, size, lines


def run_reports(db_path: Path, now: datetime, keys: int, repeat: int, progress: bool) -> list[Timing]:
    """Time every report against the database at `db_path`."""
    from admin_app import create_app

    # No ADMIN_TOKEN: the console asks no sign-in; its session secret goes beside the database.
    app = create_app(Settings(database_url=f"sqlite:///{db_path}", data_dir=db_path.parent))
    client = app.test_client()
    today = now.date()
    month_ago = (today - timedelta(days=30)).isoformat()
    odd_start = quote((now - timedelta(days=45, minutes=17, seconds=3)).isoformat())
    odd_end = quote((now - timedelta(days=3, minutes=41, microseconds=7)).isoformat())
    small_conversation = "conv-1000"
    reports = [
        ("stats/total, whole history", "/stats/total"),
        ("stats/total, last 30 days", f"/stats/total?start_date={month_ago}&end_date={today.isoformat()}"),
        ("stats/total, instants cutting hours", f"/stats/total?start_date={odd_start}&end_date={odd_end}"),
        ("stats/total?key_id=3", "/stats/total?key_id=3"),
        ("stats/total?model=gpt-4o, 30 days", f"/stats/total?model=gpt-4o&start_date={month_ago}"),
        ("stats/total?provider_id=2", "/stats/total?provider_id=2"),
        ("stats/conversation (a few turns)", f"/stats/conversation/{small_conversation}"),
        (f"stats/conversation ({BIG_CONVERSATION_ROWS:,} turns)", f"/stats/conversation/{BIG_CONVERSATION}"),
        ("keys/1/usage?days=30", "/keys/1/usage?days=30"),
        ("keys/1/usage?days=366", "/keys/1/usage?days=366"),
        ("usage?period=day", "/usage?period=day"),
        ("usage?period=week", "/usage?period=week"),
        ("usage?period=month", "/usage?period=month"),
        ("usage?period=year", "/usage?period=year"),
        ("usage, 90 days, key 2, model", f"/usage?start_date={(today - timedelta(days=89)).isoformat()}"
                                          "&key_id=2&model=claude-sonnet-4"),
        ("console: dashboard, 7 days", "/"),
        ("console: dashboard, 30 days", "/?days=30"),
        ("console: dashboard, 90 days", "/?days=90"),
        ("console: key 1 (30 days, quota)", "/console/keys/1"),
        ("console: usage records, newest", "/console/usage"),
        ("console: usage records, gpt-4o errors", "/console/usage?model=gpt-4o&status=error"),
        ("console: usage records, key 2, page 20", "/console/usage?key_id=2&page=20"),
        ("console: usage records, 30 days, api", f"/console/usage?start_date={month_ago}&api=chat"),
        ("console: audit log", "/console/audit"),
        ("console: health", "/console/health"),
    ]
    out = []
    for name, path in reports:
        samples, size = _time(client, path, repeat)
        out.append(Timing(name, path, statistics.median(samples), max(samples), size))
        if progress:
            print(f"{name:45} median {out[-1].median_ms:7.1f} ms  max {out[-1].max_ms:7.1f} ms", file=sys.stderr)
    day_ago = quote((now - timedelta(days=1)).isoformat())
    for name, path in (
        ("usage/export csv, key 1, last day", f"/usage/export?format=csv&key_id=1&start_date={day_ago}"),
        ("usage/export jsonl, everything", "/usage/export?format=jsonl"),
    ):
        first_ms, total_ms, size, lines = _time_export(client, path)
        rate = lines / (total_ms / 1000) if total_ms else 0.0
        out.append(Timing(name, path, first_ms, total_ms, size,
                          note=f"first chunk {first_ms:.1f} ms; {lines:,} lines in {total_ms / 1000:.1f} s "
                               f"({rate:,.0f} rows/s)"))
        if progress:
            print(f"{name:45} {out[-1].note}", file=sys.stderr)
    with app.app_context():
        from admin_app.extensions import db

        db.engine.dispose()
    return out


ROLLUP_TRIGGERS = ("usage_rollup_on_insert", "usage_rollup_on_delete", "usage_rollup_on_update")
LATENCY_INDEXES = ("ix_usage_record_latency", "ix_usage_record_key_latency", "ix_usage_record_model_latency")


def measure_write_cost(db_path: Path, now: datetime, keys: int, rows: int = 20_000) -> dict[str, float]:
    """Insert rate (rows/s) with and without the rollup triggers and latency indexes; rolled back."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    out = {}
    for variant in ("with", "without"):
        conn.execute("BEGIN")
        if variant == "without":
            for name in ROLLUP_TRIGGERS:
                conn.execute(f"DROP TRIGGER {name}")
            for name in LATENCY_INDEXES:
                conn.execute(f"DROP INDEX {name}")
        batch = list(_rows(rows, 1, keys, now, seed=2, prefix=f"write-{variant}"))
        started = time.perf_counter()
        for offset in range(0, rows, 500):  # the proxy's writer inserts 500-row batches
            conn.executemany(INSERT_SQL, batch[offset:offset + 500])
        out[f"insert_rows_per_s_{variant}"] = rows / (time.perf_counter() - started)
        conn.execute("ROLLBACK")
    conn.close()
    return out


def limit_ms(name: str) -> float:
    """The target a timing is held to: the API's reports, or the console's pages."""
    return CONSOLE_LIMIT_MS if name.startswith("console:") else LIMIT_MS


def markdown(timings: list[Timing], meta: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"{meta['rows']:,} usage rows over {meta['days']} days, {meta['keys']} keys, {len(MODELS)} models, "
        f"{len(PROVIDERS)} providers; SQLite {meta['sqlite']}; {meta['repeat']} timed runs after one warm-up.",
        "",
        "| report | median ms | max ms | response bytes |",
        "|---|---:|---:|---:|",
    ]
    for t in timings:
        if t.note:
            continue
        lines.append(f"| {t.name} (`{t.path.split('?')[0]}`) | {t.median_ms:.1f} | {t.max_ms:.1f} | {t.bytes:,} |")
    lines.append("")
    for t in timings:
        if t.note:
            lines.append(f"- {t.name}: {t.note}.")
    if "insert_rows_per_s_with" in meta:
        lines.append(
            f"- Write cost of the rollups and latency indexes: {meta['insert_rows_per_s_with']:,.0f} rows/s "
            f"inserted with them, {meta['insert_rows_per_s_without']:,.0f} rows/s without (20,000 rows in "
            "500-row batches into the 1M-row table, one transaction, rolled back)."
        )
    if "insert_s" in meta:
        lines.append(
            f"- Building: {meta['rows']:,} rows bulk-inserted in {meta['insert_s']:.1f} s at revision 0001; "
            f"migrations 0002-0003 (rollup backfill, 3 indexes, triggers) took {meta['upgrade_s']:.1f} s."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the database, time the reports, print the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, help="reuse this database (built before with --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the temp database and print its path")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    now = datetime.now(timezone.utc)
    meta: dict[str, Any] = {"rows": args.rows, "days": args.days, "keys": args.keys, "repeat": args.repeat,
                            "sqlite": sqlite3.sqlite_version}
    tmp = None
    if args.db:
        db_path = args.db
    else:
        tmp = tempfile.TemporaryDirectory(prefix="nexusai-bench-reports-")
        db_path = Path(tmp.name) / "usage.db"
        meta.update(build_database(db_path, args.rows, args.days, args.keys, now, progress=True))
    try:
        timings = run_reports(db_path, now, args.keys, args.repeat, progress=True)
        meta.update(measure_write_cost(db_path, now, args.keys))
        print(f"insert rate with rollups+latency indexes {meta['insert_rows_per_s_with']:,.0f} rows/s, "
              f"without {meta['insert_rows_per_s_without']:,.0f} rows/s", file=sys.stderr)
    finally:
        if tmp is not None:
            if args.keep:
                print(f"database kept at {db_path}", file=sys.stderr)
                tmp._finalizer.detach()  # type: ignore[attr-defined]
            else:
                tmp.cleanup()
    slow = [t.name for t in timings if not t.note and t.median_ms >= limit_ms(t.name)]
    if args.markdown:
        print(markdown(timings, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "timings": [asdict(t) for t in timings]}, indent=2))
    if slow:
        print(f"over their limit ({LIMIT_MS:.0f} ms, console {CONSOLE_LIMIT_MS:.0f} ms): {', '.join(slow)}",
              file=sys.stderr)
    return 1 if slow else 0


if __name__ == "__main__":
    raise SystemExit(main())
