"""What operators and their tools read: `GET /health/ready` and `GET /metrics`."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from proxy_app.app_keys import SETTINGS, STATE
from proxy_app.auth import check_operator
from proxy_app.exchange import new_request_id


async def ready(request: web.Request) -> web.Response:
    """200 when the config snapshot is fresh and the usage path is writing (503 with the reasons otherwise)."""
    state = request.app[STATE]
    settings = request.app[SETTINGS]
    config = state.config
    reasons: list[str] = []
    age = None if config.confirmed_at is None else time.monotonic() - config.confirmed_at
    if age is None or age > settings.config_stale_after_s:
        shown = "never loaded" if age is None else f"{age:.1f} s old"
        why = f" (last refresh failed: {config.last_error})" if config.last_error else ""
        reasons.append(f"the config snapshot is {shown}, over CONFIG_STALE_AFTER_S={settings.config_stale_after_s:g}"
                       f"{why}")
    trouble = state.usage.trouble()
    if trouble is not None:
        reasons.append(trouble)
    body: dict[str, object] = {
        "status": "not_ready" if reasons else "ready",
        "service": "proxy",
        "config_version": config.snapshot.version,
        "config_age_s": None if age is None else round(age, 3),
        "usage_backlog_rows": state.usage.backlog_rows(),
    }
    limits = state.limiter.status()
    body["limits"] = limits["backend"]
    if "instances" in limits:
        body["limits_shared_by"] = limits["instances"]  # proxy processes seen alive in Redis
    if limits["backend"] == "local":
        # Still ready: pulling every proxy out of rotation because Redis is away would take the
        # gateway down, which local shares of the limits avoid.
        body["status"] = "degraded" if not reasons else body["status"]
        body["degraded"] = [f"key limits are local shares (1/{limits['instances']} per process): "
                            f"Redis is unreachable ({limits['last_error']})"]
    if reasons:
        body["reasons"] = reasons
    return web.json_response(body, status=503 if reasons else 200, headers={"X-Request-Id": new_request_id()})


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus exposition (ADMIN_TOKEN as Bearer; without one, loopback clients only)."""
    settings = request.app[SETTINGS]
    check_operator(request.headers, request.remote, settings.admin_token)
    state = request.app[STATE]
    if state.metrics is None:
        raise web.HTTPNotFound()
    state.observe()
    if state.metrics.peers_dir is not None:
        await asyncio.get_running_loop().run_in_executor(None, state.metrics.gather)
    body, content_type = state.metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type, "X-Request-Id": new_request_id()})
