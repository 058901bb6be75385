"""POST /v1/chat/completions over HTTP: JSON replies and SSE streams."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from proxy_app.errors import (
    ProxyError,
    bad_request,
    describe_parser_error,
    stream_failure,
    upstream_error_body,
    upstream_timeout,
    upstream_unreachable,
)
from proxy_app.exchange import ChatCall, finish, finish_detached, prepare_call, proxy_error_status, release
from proxy_app.json_body import parse_json
from proxy_app.keys import CLIENT_KEY, STATE
from proxy_app.meter import Meter
from proxy_app.sse import DONE, iter_event_batches, parse_event
from proxy_app.state import ProxyState
from proxy_app.upstream import UpstreamFailure, UpstreamReply, open_upstream
from proxy_app.upstream_http import UpstreamHTTPError
from shared.settings import Settings

CLIENT_CLOSED = 499
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
# Response headers of the upstream that are safe and useful to pass on.
# (Never the upstream's rate-limit headers: they describe our provider account, not the client's key.)
PASS_HEADERS = ("openai-processing-ms", "openai-version")


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


def _ids(call: ChatCall) -> dict[str, str]:
    headers = {"X-Request-Id": call.request_id, "X-Conversation-Id": call.conversation_id}
    if call.limit_headers:
        headers.update(call.limit_headers)
    return headers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Forward one chat completion to the upstream and meter it."""
    state = request.app[STATE]
    body = await read_json(request, state.settings)
    call = prepare_call(
        state, request[CLIENT_KEY], body,
        conversation_header=request.headers.get("X-Conversation-Id"), transport="http",
    )
    try:
        return await _forward(request, state, call)
    finally:
        release(state, call)


async def _forward(request: web.Request, state: ProxyState, call: ChatCall) -> web.StreamResponse:
    meter = Meter()
    try:
        reply = await open_upstream(
            state.upstream, call.routes, call.body, call.stream, call.request_id,
            state.settings.upstream_max_attempts,
        )
    except UpstreamFailure as exc:
        status, error_type = proxy_error_status(exc)
        await finish(state, call, exc.route, meter, status, error_type, delivered_any=False)
        return exc.response(_ids(call))
    except asyncio.CancelledError:
        finish_detached(state, call, call.routes[0], meter, CLIENT_CLOSED, "client_closed", delivered_any=False)
        raise
    response = reply.response
    is_sse = response.content_type == "text/event-stream"
    try:
        if call.stream and response.status == 200 and is_sse:
            return await _relay_stream(request, state, call, reply, meter)
        return await _relay_json(state, call, reply, meter)
    finally:
        response.release()


async def _relay_json(state: ProxyState, call: ChatCall, reply: UpstreamReply, meter: Meter) -> web.Response:
    response = reply.response
    route = reply.route
    try:
        raw = await response.read()
    except TimeoutError:
        exc = upstream_timeout(f"Upstream provider '{route.provider.name}' timed out sending its reply.")
        await finish(state, call, route, meter, exc.status, exc.code, delivered_any=False)
        return exc.response(_ids(call))
    except UpstreamHTTPError:
        exc = upstream_unreachable(f"Upstream provider '{route.provider.name}' broke off its reply.")
        await finish(state, call, route, meter, exc.status, exc.code, delivered_any=False)
        return exc.response(_ids(call))
    except asyncio.CancelledError:
        finish_detached(state, call, route, meter, CLIENT_CLOSED, "client_closed", delivered_any=False)
        raise
    meter.ttft_ms = (time.perf_counter() - call.started) * 1000.0
    status = response.status
    if status >= 400:
        body = upstream_error_body(status, raw, route.provider.name, route.provider.server_key)
        outcome = await finish(state, call, route, meter, status, "upstream_error", delivered_any=False)
    else:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            meter.add_completion(parsed)
        body = raw
        outcome = await finish(state, call, route, meter, status)
    headers = _ids(call)
    # Plain decimal notation: Decimal's str() would give "9E-7" for small costs.
    headers["X-Request-Cost"] = format(outcome.cost_usd.normalize(), "f") if outcome.cost_usd else "0"
    for name in PASS_HEADERS:
        if name in response.headers:
            headers[name] = response.headers[name]
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


async def _relay_stream(
    request: web.Request, state: ProxyState, call: ChatCall, reply: UpstreamReply, meter: Meter
) -> web.StreamResponse:
    upstream = reply.response
    route = reply.route
    out = web.StreamResponse(status=200, headers={**SSE_HEADERS, **_ids(call)})
    delivered = False
    complete = False  # the client has the whole reply ([DONE] or the upstream's end was written)
    recorded = False  # the usage row is journaled: from here on, never record again
    try:
        await out.prepare(request)
        # The events of one upstream read go out in one write: as prompt as one write per
        # event, without a syscall and a chunk header for each.
        async for events in iter_event_batches(upstream.iter_any()):
            batch: list[bytes] = []
            ends = False
            for raw in events:
                obj = parse_event(raw)
                if obj is DONE:
                    ends = True
                elif isinstance(obj, dict):
                    meter.take_usage(obj)
                    if not call.client_wants_usage and obj.get("usage"):
                        choices = obj.get("choices")
                        if not choices:
                            continue  # the usage-only chunk we asked for; the client did not
                        # Some upstreams attach usage to a content chunk: strip just that field.
                        obj = {k: v for k, v in obj.items() if k != "usage"}
                        raw = b"data: " + orjson.dumps(obj) + b"\n\n"
                    meter.add_chunk(obj)
                batch.append(raw)
            if not batch:
                continue
            if meter.ttft_ms is None:
                meter.ttft_ms = (time.perf_counter() - call.started) * 1000.0
            if ends:
                # The row is journaled before the client can see [DONE]: an acknowledged reply is
                # never lost, even if the process dies right after this write.
                recorded = True
                await finish(state, call, route, meter, 200, delivered_any=True)
            await out.write(batch[0] if len(batch) == 1 else b"".join(batch))
            delivered = True
            complete = complete or ends
        if not recorded:
            recorded = True
            await finish(state, call, route, meter, 200, delivered_any=delivered)
        complete = True
        await out.write_eof()
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        # The client left: stop reading upstream (closing cancels that call) and bill what was sent.
        # Clients hang up as soon as they read [DONE]: that exchange completed, it is no abort.
        upstream.close()
        if not recorded:
            status, error_type = (200, None) if complete else (CLIENT_CLOSED, "client_closed")
            finish_detached(state, call, route, meter, status, error_type, delivered_any=delivered)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return out
    except (UpstreamHTTPError, TimeoutError) as exc:
        failure = stream_failure(exc, route.provider.name)
        if not recorded:
            recorded = True
            await finish(state, call, route, meter, failure.status, failure.code, delivered_any=delivered)
        try:
            await out.write(b"data: " + orjson.dumps({"error": failure.body()}) + b"\n\n")
            await out.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return out
    return out
