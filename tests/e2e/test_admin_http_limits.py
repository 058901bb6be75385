"""The admin under gunicorn: requests it cannot parse get our JSON error, and the token is never logged."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.e2e.conftest import NexusFactory
from tests.support.nexus_process import DEFAULT_ADMIN_TOKEN

pytestmark = pytest.mark.db

TOKEN = DEFAULT_ADMIN_TOKEN.encode()
CASES = {
    "control byte in Authorization": b"GET /providers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN
    + b"\x01\r\n\r\n",
    "request line over the limit": b"GET /providers?t=" + TOKEN + b"&pad=" + b"a" * 9000 + b" HTTP/1.1\r\n"
    b"Host: x\r\n\r\n",
    "header over the limit": b"GET /providers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN
    + b"a" * 9000 + b"\r\n\r\n",
}


def _send(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        for _ in range(1000):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_gunicorn_refusals_are_json_and_never_quote_the_token(nexus_factory: NexusFactory) -> None:
    nexus = nexus_factory(mode="admin")
    for name, raw in CASES.items():
        reply = _send(nexus.admin_port, raw)
        head, _, body = reply.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert status in (400, 414, 431), name
        assert b"application/json" in head, name
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error" and error["message"], name
        assert TOKEN not in reply, name
    time.sleep(0.5)
    logs = (nexus.log_dir / "admin.log").read_text() + nexus.stderr
    assert "refused a malformed request" in logs
    assert DEFAULT_ADMIN_TOKEN not in logs
    assert nexus.admin("GET", "/providers").status_code == 200  # the server is still fine
