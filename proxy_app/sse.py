"""Server-sent-events framing: split an upstream byte stream into whole events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

DONE = object()  # the `data: [DONE]` sentinel


def _boundary(buf: bytes | bytearray, start: int) -> tuple[int, int]:
    """Index of the next blank-line separator at or after `start`, and its length."""
    lf = buf.find(b"\n\n", start)
    crlf = buf.find(b"\r\n\r\n", start)
    if crlf != -1 and (lf == -1 or crlf < lf):
        return crlf, 4
    return lf, 2 if lf != -1 else 0


def parse_event(raw: bytes) -> Any:
    """The JSON object in an event's data lines, DONE, or None (comment, non-JSON)."""
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    if not data:
        return None
    payload = b"\n".join(data).strip()
    if payload == b"[DONE]":
        return DONE
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


async def iter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield each complete event (with its trailing blank line) as soon as it has arrived."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        start = 0
        while True:
            idx, sep = _boundary(buf, start)
            if idx == -1:
                break
            yield bytes(buf[start:idx + sep])
            start = idx + sep
        if start:
            del buf[:start]
    if buf.strip():
        yield bytes(buf) + b"\n\n"
