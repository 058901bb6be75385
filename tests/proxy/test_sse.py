"""SSE framing: whole events out of arbitrary reads, bounded buffering."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proxy_app.sse import DONE, MAX_EVENT_BYTES, iter_events, parse_event
from proxy_app.upstream_http import UpstreamPayloadError


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _collect(*parts: bytes) -> list[bytes]:
    return [event async for event in iter_events(_chunks(*parts))]


async def test_events_split_across_reads_and_line_endings() -> None:
    events = await _collect(b'data: {"a":', b' 1}\n\ndata: {"b": 2}\r\n\r\n: keep-alive\n\ndata: [DO', b"NE]\n\n")
    assert events == [b'data: {"a": 1}\n\n', b'data: {"b": 2}\r\n\r\n', b": keep-alive\n\n", b"data: [DONE]\n\n"]
    assert [parse_event(e) for e in events] == [{"a": 1}, {"b": 2}, None, DONE]


async def test_multi_line_data_is_joined_and_a_trailing_event_is_kept() -> None:
    events = await _collect(b'data: {"text":\ndata: "x"}\n\n', b'data: {"last": true}')
    assert parse_event(events[0]) == {"text": "x"}
    assert parse_event(events[1]) == {"last": True}


async def test_an_event_that_never_ends_is_refused_not_buffered_forever() -> None:
    piece = b"x" * (1024 * 1024)
    with pytest.raises(UpstreamPayloadError):
        await _collect(b"data: ", *([piece] * (MAX_EVENT_BYTES // len(piece) + 2)))
