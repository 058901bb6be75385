"""`GET /metrics` of the admin: its requests by method, route and status, and their durations.

Gunicorn runs several workers: with PROMETHEUS_MULTIPROC_DIR set (run.py sets it for the
admin) every worker's values live in files there and any worker's /metrics adds them up.
Routes are the URL rules (`/providers/<int:provider_id>`), never raw paths, so the
label set stays bounded.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from admin_app.api import bp
from admin_app.errors import NotFound

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_EXTENSION = "nexusai.metrics"
disable_created_metrics()  # no `_created` series beside each counter


class AdminMetrics:
    """The admin's metric families."""

    def __init__(self) -> None:
        self.shared_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("nexusai_admin_requests", "Admin API requests by method, route and status.",
                                ("method", "route", "status"), registry=self.registry)
        self.duration = Histogram("nexusai_admin_request_duration_seconds", "Admin API request durations.",
                                  ("method", "route"), buckets=DURATION_BUCKETS, registry=self.registry)
        if self.shared_dir is None:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    def render(self) -> bytes:
        """The exposition text of this process, or of every worker sharing the directory."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


def init_app(app: Flask, enabled: bool) -> None:
    """Count every request (when metrics are enabled)."""
    if not enabled:
        return
    metrics = app.extensions[_EXTENSION] = AdminMetrics()

    @app.before_request
    def _start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(request.method, rule, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            metrics.duration.labels(request.method, rule).observe(time.perf_counter() - started)
        return response


@bp.get("/metrics")
def metrics_exposition() -> Response:
    """The Prometheus exposition of the admin (404 with METRICS_ENABLED=0)."""
    metrics = current_app.extensions.get(_EXTENSION)
    if metrics is None:
        raise NotFound("Metrics are off (METRICS_ENABLED=0).")
    return Response(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
