"""Serve the real admin app over loopback for each test and talk to it with `requests`.

`admin` is an app without ADMIN_TOKEN, `secured_admin` one with it; both are
`AdminClient`s that remember every response body (for the secret scans).
`start_admin(settings)` serves any other variant. `dump_db()` returns every
row of every table, to prove that bad input changed nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select
from werkzeug.serving import WSGIRequestHandler, make_server

from admin_app import create_app, db
from shared.db import make_engine
from shared.logs import setup_logging
from shared.models import Base
from shared.settings import Settings
from tests.support.seed import SEED_CLIENT_KEY, seed_provider
from tests.support.seed import SEED_MODEL as SEED_MODEL  # re-exported for the admin tests

ADMIN_TOKEN = "adm-test-token-7f3c9e1b2d"
SERVER_KEY = "sk-upstream-secret-0a1b2c3d4e5f"
CLIENT_KEY = SEED_CLIENT_KEY
SEED_PROVIDER = seed_provider(SERVER_KEY)

Dump = dict[str, list[tuple[Any, ...]]]


class _QuietHandler(WSGIRequestHandler):
    """The dev server's own request line would duplicate (and include query strings); the app logs."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class AdminClient:
    """A `requests` session bound to one served admin app."""

    def __init__(self, base_url: str, settings: Settings, token: str | None) -> None:
        self.base_url = base_url
        self.settings = settings
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.bodies: list[str] = []

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request to the app and remember the body it answered."""
        kwargs.setdefault("timeout", 10)
        response = self.session.request(method, self.base_url + path, **kwargs)
        self.bodies.append(response.text)
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """Send a request, assert its status and JSON content type, return the JSON."""
        response = self.request(method, path, **kwargs)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        assert response.headers["Content-Type"].startswith("application/json")
        return response.json()

    def close(self) -> None:
        self.session.close()


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the admin error shape (JSON, never HTML) and return the inner error object."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "code", "details"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, error
    return error


def dump_database(database_url: str) -> Dump:
    """Every row of every table, ordered by primary key."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            dump: Dump = {}
            for table in Base.metadata.sorted_tables:
                rows = conn.execute(select(table).order_by(*table.primary_key.columns))
                dump[table.name] = [tuple(row) for row in rows]
            return dump
    finally:
        engine.dispose()


def _reset_logging() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_nexusai", False):
            root.removeHandler(handler)
            handler.close()
    root._nexusai_configured = None  # type: ignore[attr-defined]


@pytest.fixture
def start_admin(settings: Settings) -> Iterator[Callable[..., AdminClient]]:
    """Serve `create_app(settings)` (overridable) on 127.0.0.1:<free port>; stop everything at teardown."""
    running: list[tuple[Any, threading.Thread, AdminClient, Any]] = []
    # shared.logs configures once per process; reset so this test's tmp log dir is used.
    _reset_logging()
    setup_logging(settings, "admin")

    def start(app_settings: Settings | None = None, token: str | None = None) -> AdminClient:
        app_settings = app_settings or settings
        app = create_app(app_settings)
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="admin-test-server", daemon=True
        )
        thread.start()
        client = AdminClient(f"http://127.0.0.1:{server.server_port}", app_settings, token)
        running.append((server, thread, client, app))
        return client

    yield start
    for server, thread, client, app in running:
        client.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        with app.app_context():
            db.engine.dispose()
    _reset_logging()


@pytest.fixture
def admin(start_admin: Callable[..., AdminClient]) -> AdminClient:
    """The admin app without ADMIN_TOKEN."""
    return start_admin()


@pytest.fixture
def secured_admin(start_admin: Callable[..., AdminClient], settings: Settings) -> AdminClient:
    """The admin app with ADMIN_TOKEN set, and a client that sends it."""
    return start_admin(settings.with_overrides(admin_token=ADMIN_TOKEN), token=ADMIN_TOKEN)


@pytest.fixture
def dump_db(settings: Settings) -> Callable[[], Dump]:
    """A function returning every row of every table of the test database."""
    return lambda: dump_database(settings.database_url)
