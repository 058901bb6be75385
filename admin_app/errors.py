"""Every admin error response, in one shape: `{"error": {message, type, code, details}}`.

    ApiError                      raised by our code; status, type and code chosen here
     ├─ ValidationFailed   400    invalid_request_error / validation_error (+ field details)
     ├─ NotFound           404    not_found_error / not_found
     └─ Conflict           409    conflict_error / duplicate_* or conflict
    HTTPException (werkzeug)      404 unknown path, 405 wrong method, 413 body too large, ...
    IntegrityError                409 conflict_error / conflict (a race past our checks; rolled back)
    DataError                     400 invalid_request_error / invalid_value (the DB refused a value)
    OperationalError              503 server_error / database_unavailable
    Exception                     500 server_error / internal_error (logged without secrets)
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

from admin_app.extensions import db

logger = logging.getLogger("nexusai.admin")

# Status -> error type for werkzeug's own exceptions.
_HTTP_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "invalid_admin_token"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "invalid_content_type"),
}


class ApiError(Exception):
    """An error with a status and the fields of the error body."""

    status = 400
    type = "invalid_request_error"
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details or {}
        self.headers = headers or {}


class ValidationFailed(ApiError):
    """400: the request body or query failed validation."""

    code = "validation_error"


class NotFound(ApiError):
    """404: the id in the URL does not exist."""

    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(ApiError):
    """409: the change clashes with an existing row (duplicate name, key, ...)."""

    status = 409
    type = "conflict_error"
    code = "conflict"


class Forbidden(ApiError):
    """403: the request is understood and refused (a console form without its CSRF token)."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class Unauthorized(ApiError):
    """401: missing or wrong admin token."""

    status = 401
    type = "authentication_error"
    code = "invalid_admin_token"


HTML_ERRORS = "nexusai.html_errors"


class HtmlErrors(Protocol):
    """How a part of the app that serves HTML (the console) shows an error instead of JSON."""

    def wants_html(self) -> bool:
        """Whether the current request is for one of its pages."""

    def render(self, status: int, message: str, details: dict[str, Any]) -> Response:
        """The error page."""


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build an error response: the admin error shape in JSON, or the console's page for its paths."""
    html: HtmlErrors | None = current_app.extensions.get(HTML_ERRORS)
    if html is not None and html.wants_html():
        response = html.render(status, message, details or {})
    else:
        body = {"error": {"message": message, "type": type_, "code": code, "details": details or {}}}
        response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _api_error(exc: ApiError) -> Response:
    db.session.rollback()
    return error_response(exc.status, exc.message, exc.type, exc.code, exc.details, exc.headers)


def _http_error(exc: HTTPException) -> Response | HTTPException:
    if exc.code is None or exc.code < 400:
        return exc  # routing redirects are not errors
    type_, code = _HTTP_TYPES.get(
        exc.code, ("server_error" if exc.code >= 500 else "invalid_request_error", "http_error")
    )
    headers: dict[str, str] = {}
    valid_methods = getattr(exc, "valid_methods", None)
    if exc.code == 405 and valid_methods:
        headers["Allow"] = ", ".join(valid_methods)
    message = exc.description or exc.name
    if exc.code == 404:
        message = f"No such endpoint: {request.method} {request.path}"
        if request.path == "/" or request.path.startswith("/console/"):
            message = f"There is no page at {request.path}"
    elif exc.code == 405:
        message = f"Method {request.method} is not allowed on {request.path}"
    return error_response(exc.code, message, type_, code, None, headers)


def _integrity_error(exc: IntegrityError) -> Response:
    db.session.rollback()
    logger.info("integrity conflict on %s %s: %s", request.method, request.path, type(exc.orig).__name__)
    return error_response(
        409, "The change conflicts with existing data (a concurrent change?)", "conflict_error", "conflict"
    )


def _data_error(exc: DataError) -> Response:
    # Validation should stop these first; this keeps a miss from becoming a 500.
    db.session.rollback()
    logger.warning(
        "database refused a value on %s %s: %s", request.method, request.path, type(exc.orig).__name__
    )
    return error_response(
        400, "A value was refused by the database", "invalid_request_error", "invalid_value"
    )


def _operational_error(exc: OperationalError) -> Response:
    db.session.rollback()
    logger.error("database unavailable on %s %s: %s", request.method, request.path, type(exc.orig).__name__)
    return error_response(503, "The database is unavailable", "server_error", "database_unavailable")


def _unexpected_error(exc: Exception) -> Response:
    db.session.rollback()
    # exc_info gives the traceback; DB errors carry no bound values (hide_parameters).
    logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.path, exc_info=exc)
    return error_response(500, "Internal server error", "server_error", "internal_error")


def init_app(app: Flask) -> None:
    """Register the handlers that shape every error as JSON."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(IntegrityError, _integrity_error)
    app.register_error_handler(DataError, _data_error)
    app.register_error_handler(OperationalError, _operational_error)
    app.register_error_handler(Exception, _unexpected_error)
