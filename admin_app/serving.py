"""The admin's gunicorn worker: errors gunicorn answers itself come in our JSON shape, logged without the request."""

from __future__ import annotations

import json
import logging
from ssl import SSLError
from typing import Any

from gunicorn import util
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker

# Request limits of the admin's HTTP server (gunicorn's settings; see run.py).
LIMIT_REQUEST_LINE = 8190
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190
KEEPALIVE_S = 5

# Ours, not gunicorn's error log: that one shows only warnings below LOG_LEVEL=DEBUG (shared/logs.py).
log = logging.getLogger("nexusai.admin")


def _answer(exc: BaseException) -> tuple[int, str, str, str]:
    """Status, reason phrase, message and code for a request gunicorn refused."""
    if isinstance(exc, LimitRequestLine):
        return 414, "URI Too Long", f"The request line is longer than {LIMIT_REQUEST_LINE} bytes.", "uri_too_long"
    if isinstance(exc, LimitRequestHeaders):
        return 431, "Request Header Fields Too Large", "The request headers are too large.", "header_too_large"
    return 400, "Bad Request", "The request is not valid HTTP.", "malformed_request"


class JsonErrorWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker whose own error pages are JSON and whose log lines quote no request bytes."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer a request gunicorn could not parse (or the app could not serve) in the admin's error shape."""
        client_error = type(exc).__module__.startswith("gunicorn.http.errors") or isinstance(exc, SSLError)
        if client_error:
            status, reason, message, code = _answer(exc)
            # gunicorn's own line quotes the offending header or line, which may hold the admin token.
            log.info("refused a malformed request from %s: %s", (addr or ("",))[0], type(exc).__name__)
            type_ = "invalid_request_error"
        else:
            self.log.error("unhandled error serving an admin request: %s", type(exc).__name__)
            status, reason, message, code = 500, "Internal Server Error", "Internal error.", "internal_error"
            type_ = "server_error"
        body = json.dumps({"error": {"message": message, "type": type_, "code": code, "details": {}}}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            util.write_nonblock(client, head + body)
        except Exception:  # noqa: BLE001 - the client is gone
            self.log.debug("failed to send the error response")
