"""Server-sent-events framing: split an upstream byte stream into whole events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy_app.upstream_http import UpstreamPayloadError

MAX_EVENT_BYTES = 16 * 1024 * 1024
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
    if raw.startswith(b"data: ") and raw.find(b"\n", 6) >= len(raw) - 3:
        payload = raw[6:].strip()  # the usual event: one data line
    else:
        payload = _data_payload(raw)
        if payload is None:
            return None
    if payload == b"[DONE]":
        return DONE
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _data_payload(raw: bytes) -> bytes | None:
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    if not data:
        return None
    return b"\n".join(data).strip()


async def iter_event_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """Yield the complete events (each with its trailing blank line) of every read as soon as it has arrived."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        events: list[bytes] = []
        start = 0
        while True:
            idx, sep = _boundary(buf, start)
            if idx == -1:
                break
            events.append(bytes(buf[start:idx + sep]))
            start = idx + sep
        if start:
            del buf[:start]
        elif len(buf) > MAX_EVENT_BYTES:
            # An upstream that never ends its event must not grow our memory without bound.
            raise UpstreamPayloadError(f"SSE event larger than {MAX_EVENT_BYTES} bytes")
        if events:
            yield events
    if buf.strip():
        yield [bytes(buf) + b"\n\n"]


async def iter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield each complete event (with its trailing blank line) as soon as it has arrived."""
    async for events in iter_event_batches(chunks):
        for event in events:
            yield event
