"""One access line per request: method, path (no query string), status, duration, remote addr.

Never headers or bodies: they carry the admin token and secrets.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

access_logger = logging.getLogger("nexusai.admin.access")


def init_app(app: Flask) -> None:
    """Time every request and log one line when its response is ready."""

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _log_access(response: Response) -> Response:
        started = g.get("request_started", time.perf_counter())
        duration_ms = (time.perf_counter() - started) * 1000
        access_logger.info(
            "%s %s %s %.1fms %s",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            request.remote_addr or "-",
        )
        return response
