"""Server-sent-events framing: split a provider's byte stream into whole events."""

from __future__ import annotations

from typing import Any

import orjson

from proxy_app.transport.http import UpstreamPayloadError

MAX_EVENT_BYTES = 16 * 1024 * 1024
DONE = object()  # the `data: [DONE]` sentinel


def _boundary(buf: bytes | bytearray, start: int, crlf_first: bool) -> tuple[int, int]:
    """Index of the next blank-line separator at or after `start`, and its length (0: none yet).

    The separator the stream used last is looked for first and the other only before it:
    looking for `\n\n` in a stream framed with `\r\n\r\n` (Gemini's) scanned every
    event's whole remaining read, once per event.
    """
    first, other = (b"\r\n\r\n", b"\n\n") if crlf_first else (b"\n\n", b"\r\n\r\n")
    idx = buf.find(first, start)
    alt = buf.find(other, start, len(buf) if idx == -1 else idx + len(other) - 1)
    if alt != -1:
        return alt, len(other)
    return (idx, len(first)) if idx != -1 else (-1, 0)


def parse_event(raw: bytes) -> Any:
    """The JSON object in an event's data lines, DONE, or None (comment, non-JSON)."""
    payload: bytes | None
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


def event_name(raw: bytes) -> str | None:
    """The `event:` field of an event, if it has one."""
    for line in raw.splitlines():
        if line.startswith(b"event:"):
            return line[6:].strip().decode("utf-8", "replace")
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


class SseSplitter:
    """Complete events (each with its trailing blank line) out of the reads of one body."""

    __slots__ = ("_buf", "_crlf")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._crlf = False  # whether the last separator was \r\n\r\n

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events `chunk` completes, in order."""
        buf = self._buf
        buf += chunk
        events: list[bytes] = []
        start = 0
        while True:
            idx, sep = _boundary(buf, start, self._crlf)
            if idx == -1:
                break
            self._crlf = sep == 4
            events.append(bytes(buf[start:idx + sep]))
            start = idx + sep
        if start:
            del buf[:start]
        elif len(buf) > MAX_EVENT_BYTES:
            # An upstream that never ends its event must not grow our memory without bound.
            raise UpstreamPayloadError(f"SSE event larger than {MAX_EVENT_BYTES} bytes")
        return events

    def close(self) -> list[bytes]:
        """An unterminated last event, as a whole one."""
        rest = bytes(self._buf)
        self._buf.clear()
        return [rest + b"\n\n"] if rest.strip() else []
