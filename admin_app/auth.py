"""Admin auth: a Bearer ADMIN_TOKEN on every endpoint but /health, when one is configured."""

from __future__ import annotations

import hmac

from flask import Flask, g, request

from admin_app.errors import Unauthorized
from shared.settings import Settings

OPEN_PATHS = frozenset({"/health"})
# The console's pages sign in with a session of their own (admin_app/console/session.py).
CONSOLE_ROOT, CONSOLE_PREFIX = "/", "/console/"
ACTOR_TOKEN = "admin-token"
ACTOR_ANONYMOUS = "anonymous"


def _presented_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def init_app(app: Flask, settings: Settings) -> None:
    """Require the admin token (if set) before every request and record the actor."""
    expected = settings.admin_token.encode("utf-8") if settings.admin_token else None

    @app.before_request
    def _check_admin_token() -> None:
        g.actor = ACTOR_ANONYMOUS
        if expected is None or request.path in OPEN_PATHS:
            return
        if request.path == CONSOLE_ROOT or request.path.startswith(CONSOLE_PREFIX):
            return
        presented = _presented_token()
        challenge = {"WWW-Authenticate": 'Bearer realm="nexusai-admin"'}
        if presented is None:
            raise Unauthorized(
                "Missing admin token: send 'Authorization: Bearer <ADMIN_TOKEN>'",
                code="missing_admin_token",
                headers=challenge,
            )
        if not hmac.compare_digest(presented.encode("utf-8"), expected):
            raise Unauthorized("Invalid admin token", headers=challenge)
        g.actor = ACTOR_TOKEN


def current_actor() -> str:
    """Who is making the current request, for the audit log."""
    return str(g.get("actor", ACTOR_ANONYMOUS))
