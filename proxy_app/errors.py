"""Every way a proxied call can fail, in OpenAI's error shape.

    ProxyError                       {"error": {"message","type","param","code"}}
    ├── 400 invalid_request_error    bad JSON, missing model/messages
    ├── 401 invalid_api_key          missing/unknown key; key_disabled, key_expired
    ├── 403 model_not_allowed        model outside the key's scope
    ├── 404 model_not_found          no enabled provider serves the model
    ├── 413 request_too_large        body over MAX_BODY_BYTES
    ├── 429 rate limits and quotas   (key governance)
    ├── 502 upstream_unreachable     connection to every candidate failed
    └── 504 upstream_timeout         no answer within the provider's timeout
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from shared.secrets import key_hint


class ProxyError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The OpenAI error object."""
        return error_object(self.message, self.type, self.code, self.param)

    def response(self, extra_headers: Mapping[str, str] | None = None) -> web.Response:
        """This error as an HTTP response."""
        headers = {**self.headers, **(extra_headers or {})}
        return web.Response(
            status=self.status,
            body=orjson.dumps({"error": self.body()}),
            content_type="application/json",
            headers=headers,
        )


def error_object(message: str, type: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"message": message, "type": type, "param": param, "code": code}


# Anthropic's error types by status (its API reference, "Errors").
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error",
}
ANTHROPIC_PATH_PREFIX = "/v1/messages"


def anthropic_error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def anthropic_error_bytes(status: int, message: str, request_id: str | None = None) -> bytes:
    """`{"type":"error","error":{"type","message"}}`, as Anthropic answers errors."""
    body: dict[str, Any] = {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


def anthropic_error_response(error: ProxyError, headers: Mapping[str, str]) -> web.Response:
    """A ProxyError in Anthropic's shape (the Messages API's clients read only that)."""
    return web.Response(status=error.status, content_type="application/json", headers={**error.headers, **headers},
                        body=anthropic_error_bytes(error.status, error.message, headers.get("X-Request-Id")))


def speaks_anthropic(request: web.BaseRequest) -> bool:
    """Whether the caller is an Anthropic client: a Messages path, or Anthropic's version header."""
    return request.path.startswith(ANTHROPIC_PATH_PREFIX) or "anthropic-version" in request.headers


def error_response_for(request: web.BaseRequest, error: ProxyError, headers: Mapping[str, str]) -> web.Response:
    """The error in the shape of the caller's API."""
    if speaks_anthropic(request):
        return anthropic_error_response(error, headers)
    return error.response(headers)


ECHO_LIMIT = 100


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """A client-supplied value for an error message: cut to `limit` characters, never the whole of it."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ProxyError:
    """400 invalid_request_error."""
    return ProxyError(400, message, param=param, code=code)


def upstream_error_body(status: int, raw: bytes, provider: str, server_key: str = "") -> bytes:
    """The upstream's error body if OpenAI-shaped, else one we shape around its text.

    An upstream that echoes the credential it was sent ("invalid key sk-…") must not
    hand our server key to the client, so any copy of it is replaced by its hint.
    """
    if server_key and len(server_key) >= 8:
        secret = server_key.encode("utf-8", "surrogateescape")
        if secret in raw:
            raw = raw.replace(secret, key_hint(server_key).encode("utf-8"))
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return raw
    message = raw.decode("utf-8", "replace").strip()[:1000] or f"Upstream provider '{provider}' answered {status}."
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        message = parsed["error"]
    return orjson.dumps({"error": {"message": message, "type": "upstream_error", "param": None, "code": str(status)}})


def upstream_unreachable(message: str) -> ProxyError:
    """502: no candidate could be reached."""
    return ProxyError(502, message, type="upstream_error", code="upstream_unreachable")


def upstream_timeout(message: str) -> ProxyError:
    """504: the upstream did not answer in time."""
    return ProxyError(504, message, type="upstream_error", code="upstream_timeout")


def stream_failure(exc: BaseException, provider: str) -> ProxyError:
    """504 when the upstream stalled mid-stream (a read timeout), else 502: it broke off."""
    if isinstance(exc, asyncio.TimeoutError):
        return upstream_timeout(f"Upstream provider '{provider}' stalled mid-stream.")
    return upstream_unreachable(f"Upstream provider '{provider}' broke off the stream.")


# aiohttp's own texts quote the offending bytes; these say what was wrong without them.
_PARSER_MESSAGES = {
    "BadHttpMethod": "The request method is not valid HTTP.",
    "BadStatusLine": "The request line is not valid HTTP.",
    "InvalidURLError": "The request URL is not valid.",
    "InvalidHeader": "A request header is not valid HTTP.",
    "ContentLengthError": "The request body does not match its Content-Length.",
    "TransferEncodingError": "The request body's chunked encoding is not valid.",
    "ContentEncodingError": "The request body could not be decoded with its Content-Encoding.",
}


def describe_parser_error(exc: BaseException | None) -> tuple[int, str, str]:
    """Status, message and code for a request aiohttp's parser refused (never quoting the request)."""
    if isinstance(exc, LineTooLong):
        # aiohttp passes the start of the line that was too long: a URL, or a header's name or value.
        start = exc.args[0] if exc.args else b""
        if isinstance(start, str):
            start = start.encode("latin-1", "replace")
        if start.startswith((b"/", b"http:", b"https:", b"*")):
            return 414, "The request URL is too long.", "uri_too_long"
        return 431, "A request header is too large.", "header_too_large"
    name = type(exc).__name__ if exc is not None else ""
    message = _PARSER_MESSAGES.get(name, "The request is not valid HTTP.")
    return 400, message, "malformed_request"
