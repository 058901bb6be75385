"""SSE framing: whole events out of arbitrary reads, bounded buffering."""

from __future__ import annotations

import pytest

from proxy_app.backs.sse import DONE, MAX_EVENT_BYTES, SseSplitter, event_name, parse_event
from proxy_app.transport.http import UpstreamPayloadError


async def _collect(*parts: bytes) -> list[bytes]:
    splitter = SseSplitter()
    events = [event for part in parts for event in splitter.feed(part)]
    return events + splitter.close()


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


async def test_each_read_gives_the_events_it_completes() -> None:
    splitter = SseSplitter()
    assert splitter.feed(b"event: message_start\ndata: {") == []
    (event,) = splitter.feed(b'"a": 1}\n\ndata: {"b"')
    assert event_name(event) == "message_start" and parse_event(event) == {"a": 1}
    assert splitter.close() == [b'data: {"b"\n\n']


async def test_either_separator_is_found_first_whichever_the_stream_used_last() -> None:
    # One read, the two framings interleaved, and a CRLF separator that ends where "\n\n" would begin.
    splitter = SseSplitter()
    read = (b"data: 1\r\n\r\ndata: 2\r\n\r\ndata: 3\n\ndata: 4\r\n\r\ndata: 5\r\n\r\n\ndata: 6\n\n"
            b"data: 7\r\n\r\ndata: 8")
    assert splitter.feed(read) == [b"data: 1\r\n\r\n", b"data: 2\r\n\r\n", b"data: 3\n\n", b"data: 4\r\n\r\n",
                                   b"data: 5\r\n\r\n", b"\ndata: 6\n\n", b"data: 7\r\n\r\n"]
    assert splitter.close() == [b"data: 8\n\n"]
