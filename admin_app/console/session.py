"""Console sign-in: the admin token once, then a signed session cookie; a CSRF token on every form.

The cookie is HttpOnly, SameSite=Strict, Secure when the request came over
HTTPS, and expires after CONSOLE_SESSION_S without a page view. Its signing key
is derived from a random per-installation secret (DATA_DIR, mode 0600) and the
admin token, so changing ADMIN_TOKEN signs every console session out. Without
ADMIN_TOKEN the admin is loopback-only and the console asks no sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Request, g, request, session
from flask.sessions import SecureCookieSessionInterface

from admin_app.errors import Forbidden
from shared.file_modes import open_private, private_dir
from shared.settings import Settings

COOKIE_NAME = "nexusai_console"
SECRET_FILE = "console-session.key"
SECRET_BYTES = 32
CSRF_FIELD = "csrf_token"
ACTOR_CONSOLE = "console"


class CsrfRefused(Forbidden):
    """A state-changing console request without this session's CSRF token."""

    code = "csrf_token_invalid"

    def __init__(self) -> None:
        super().__init__(
            "This form could not be verified: it was not sent from this console's own page, or your "
            "session ended. Reload the page and try again."
        )


class _CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions with `Secure` set per request: on when served over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure) or super().get_cookie_secure(app)


def installation_secret(data_dir: Path) -> bytes:
    """The random secret behind session signing, made once (0600) and shared by every admin worker."""
    private_dir(data_dir)
    path = data_dir / SECRET_FILE
    if path.exists():
        secret = path.read_bytes()
        if len(secret) >= SECRET_BYTES:
            return secret
        path.unlink()  # not ours, or cut short by a crash: start again
    # Written whole under another name, then linked into place: a worker racing this one either
    # links first (and this one reads its secret) or finds the complete file, never a partial one.
    staging = data_dir / f".{SECRET_FILE}.{os.getpid()}"
    fd = open_private(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, secrets.token_bytes(SECRET_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(staging, path)
    except FileExistsError:
        pass
    finally:
        staging.unlink()
    return path.read_bytes()


def init_sessions(app: Flask, settings: Settings) -> None:
    """Configure the signed-cookie session the console uses."""
    base = installation_secret(settings.data_dir)
    token = (settings.admin_token or "").encode("utf-8")
    app.secret_key = hmac.new(base, b"nexusai console session\x00" + token, hashlib.sha256).hexdigest()
    app.session_interface = _CookieSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.console_session_s),
        SESSION_REFRESH_EACH_REQUEST=True,
    )


def sign_in_required(settings: Settings) -> bool:
    """Whether the console asks for the admin token (it does whenever one is configured)."""
    return bool(settings.admin_token)


def token_matches(settings: Settings, presented: str) -> bool:
    """Constant-time check of a presented admin token."""
    expected = (settings.admin_token or "").encode("utf-8")
    return bool(expected) and hmac.compare_digest(presented.strip().encode("utf-8"), expected)


def signed_in(settings: Settings) -> bool:
    """Whether this request belongs to a signed-in console session (or needs none)."""
    return not sign_in_required(settings) or session.get("signed_in") is True


def start_session() -> None:
    """Begin a signed-in session: a fresh cookie (no fixation) and a fresh CSRF token."""
    session.clear()
    session.permanent = True
    session["signed_in"] = True
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def end_session() -> None:
    """Forget the session; the browser drops the cookie."""
    session.clear()


def csrf_token() -> str:
    """This session's CSRF token (created on first use; templates put it in every form)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        session.permanent = True
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def check_csrf(req: Request) -> None:
    """Refuse a state-changing request whose form does not carry this session's token."""
    expected = session.get(CSRF_FIELD)
    presented = req.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise CsrfRefused


def mark_actor() -> None:
    """Audit rows written from the console say so."""
    g.actor = ACTOR_CONSOLE


def safe_next(target: str | None, default: str) -> str:
    """A same-site path to go on to after signing in; anything else is the default."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
