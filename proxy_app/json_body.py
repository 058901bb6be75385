"""Client JSON in: parsed with orjson, refused (400) when nested deeper than we can re-serialise."""

from __future__ import annotations

from typing import Any

import orjson

from proxy_app.errors import bad_request

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
