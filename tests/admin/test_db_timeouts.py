"""A hung database server: the admin answers 503 within seconds instead of hanging with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from admin_app import create_app, db
from shared.settings import Settings
from tests.support.tcp_relay import FreezableRelay

pytestmark = pytest.mark.db


@pytest.fixture
def relayed_settings(settings: Settings) -> Iterator[tuple[Settings, FreezableRelay]]:
    url = urlsplit(settings.database_url)
    if not url.scheme.startswith("postgresql"):
        pytest.skip("needs a database server reached over TCP (the PostgreSQL leg)")
    relay = FreezableRelay(url.hostname or "127.0.0.1", url.port or 5432).start()
    netloc = url.netloc.rsplit("@", 1)
    relayed = (netloc[0] + "@" if len(netloc) == 2 else "") + f"127.0.0.1:{relay.port}"
    yield settings.with_overrides(
        database_url=url._replace(netloc=relayed).geturl(), db_connect_timeout_s=1.0, db_statement_timeout_s=1.0,
    ), relay
    relay.stop()


def _timed_get(client, path: str) -> tuple[int, float, dict]:
    # On a thread, so that a regression (a call hanging with the database) fails instead of hanging.
    result: list = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: result.append(client.get(path)), daemon=True)
    worker.start()
    worker.join(30)
    assert result, f"GET {path} still hangs after 30 s"
    return result[0].status_code, time.monotonic() - started, result[0].get_json()


def test_health_and_admin_calls_give_503_quickly_while_the_database_hangs(
    relayed_settings: tuple[Settings, FreezableRelay],
) -> None:
    settings, relay = relayed_settings
    app = create_app(settings)
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/providers").status_code == 200  # the pool now holds a live connection

    relay.freeze()
    status, elapsed, body = _timed_get(client, "/health")
    assert status == 503 and body["status"] == "error"
    assert elapsed < 8, elapsed
    status, elapsed, body = _timed_get(client, "/providers")
    assert status == 503 and body["error"]["code"] == "database_unavailable"
    assert elapsed < 8, elapsed

    relay.thaw()
    deadline = time.monotonic() + 10
    while client.get("/health").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("/providers").status_code == 200
    with app.app_context():
        db.engine.dispose()
