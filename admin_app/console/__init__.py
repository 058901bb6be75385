"""The operators' web console, served by the admin at `/` (Jinja pages, assets served from here).

Layout: `session.py` (sign-in, cookie, CSRF), `forms.py` (form fields to the API's
bodies), `charts.py` (server-drawn SVG charts), `pages.py` (dashboard, usage
records, audit, health), `manage.py` (providers, models, keys). Reads go
through the same report code as the JSON API; writes through the same
functions as its POST/PUT/DELETE handlers, so validation, audit rows and
config-version bumps are the API's own.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from admin_app.console import session as console_session
from admin_app.errors import HTML_ERRORS
from shared.settings import Settings

bp = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/console/static",
)

OPEN_ENDPOINTS = frozenset({"console.static", "console.sign_in"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The console's own pages: no inline scripts or styles, nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


def settings() -> Settings:
    """The app's settings."""
    return current_app.config["NEXUSAI_SETTINGS"]  # type: ignore[no-any-return]


@bp.before_request
def _guard() -> BaseResponse | None:
    if request.endpoint in OPEN_ENDPOINTS and request.method not in UNSAFE_METHODS:
        return None
    if request.method in UNSAFE_METHODS:
        console_session.check_csrf(request)  # before anything: sign-in and sign-out included
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if not console_session.signed_in(settings()):
        target = request.full_path if request.method == "GET" else None
        return redirect(url_for("console.sign_in", next=target.rstrip("?") if target else None))
    console_session.mark_actor()
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"  # pages may show a key once; never cached
    return response


ERROR_TITLES = {400: "That did not work", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
                413: "Too large", 503: "Database unavailable"}


class ConsoleErrors:
    """The app's error handlers render console paths with this page, in the console's look."""

    def wants_html(self) -> bool:
        """Console pages are `/` and everything under `/console/`."""
        return request.path == "/" or request.path.startswith("/console/")

    def render(self, status: int, message: str, details: dict[str, Any]) -> Response:
        """The error page."""
        title = ERROR_TITLES.get(status, "Something went wrong" if status >= 500 else "That did not work")
        page = render_template("console/error.html", status=status, title=title, message=message, details=details)
        return Response(page, status=status, mimetype="text/html")


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    s = settings()
    return {
        "csrf_token": console_session.csrf_token,
        "sign_in_required": console_session.sign_in_required(s),
        "secrets_sealed": bool(s.secret_key),
        "nav": NAV,
    }


NAV = (
    ("console.dashboard", "Dashboard"),
    ("console.providers", "Providers"),
    ("console.keys", "Keys"),
    ("console.usage", "Usage"),
    ("console.audit", "Audit log"),
    ("console.health", "Health"),
)


def init_app(app: Flask, settings: Settings) -> None:
    """Mount the console at `/` with its sessions."""
    from admin_app.console import manage, pages  # noqa: F401  (routes register on import)

    console_session.init_sessions(app, settings)
    app.extensions[HTML_ERRORS] = ConsoleErrors()
    app.register_blueprint(bp)
