"""Client JSON in: read with size and time limits, parsed with orjson, refused when too deep."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from proxy_app.errors import ProxyError, bad_request, describe_parser_error
from shared.settings import Settings

# orjson writes at most 254 levels; a body that parses but cannot be written again would
# fail after the upstream call had been paid for. Far deeper than any real request needs.
MAX_JSON_DEPTH = 64


def parse_json(raw: bytes | str, what: str = "request body") -> Any:
    """The JSON value of `raw`; 400 when it is not JSON or nests deeper than MAX_JSON_DEPTH."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The {what} is not valid JSON: {exc}.", code="invalid_json") from None
    # Only a text with that many brackets can nest that deep: a count in C spares most bodies the walk.
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH and too_deep(value, MAX_JSON_DEPTH):
        raise bad_request(
            f"The {what} nests deeper than {MAX_JSON_DEPTH} levels of objects and arrays.", code="json_too_deep",
        )
    return value


def too_deep(value: Any, limit: int) -> bool:
    """Whether `value` has objects/arrays nested more than `limit` levels (iterative: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


async def read_json(request: web.Request, settings: Settings) -> Any:
    """The request body as JSON: 413 when too large, 408 when it stalls, 400 when it is not JSON."""
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ProxyError(413, f"Request body exceeds the limit of {limit} bytes.", code="request_too_large")
    try:
        if request.content.is_eof():
            raw = await request.read()  # the body came with the headers: no timer to arm
        else:
            async with asyncio.timeout(settings.proxy_body_timeout_s):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProxyError(413, f"Request body exceeds the limit of {limit} bytes.", code="request_too_large") from None
    except TimeoutError:
        raise ProxyError(
            408, f"The request body did not arrive within {settings.proxy_body_timeout_s:g} s.",
            code="request_timeout", headers={"Connection": "close"},
        ) from None
    except (HttpProcessingError, RequestPayloadError, zlib.error) as exc:
        # A body aiohttp cannot de-chunk or decompress: the message is ours, never the bytes.
        status, message, code = describe_parser_error(exc.__cause__ if isinstance(exc, RequestPayloadError) else exc)
        raise ProxyError(status, message, code=code, headers={"Connection": "close"}) from None
    if not raw:
        raise bad_request("The request body is empty; send a JSON object.")
    return parse_json(raw)
