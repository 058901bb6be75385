"""The one exchange runner every front uses: resolve, admit, call with failover, relay, record once.

    exchange = await open_exchange(state, CHAT, key, body, conversation_header=..., transport="http")
    await exchange.run(renderer)     # the front's Renderer puts each event on its wire

`open_exchange` validates through the front's `Api`, picks the candidates and admits
the request through the limiter (refusals raise ProxyError and record nothing).
`run` calls the candidates through their kind's adapter, hands the front what
arrives (stream pieces as each upstream read completes, or the whole reply), and
records the outcome exactly once through the outcome sinks, whatever happens:
success, upstream error, mid-stream failure or error event, timeout, the client
gone, the front's task cancelled. The row is recorded before the front writes the
end of the reply (`[DONE]`, a WebSocket `done`), so an acknowledged reply is never
unrecorded. Time to first token is the time of the first upstream stream event,
or of the whole reply, for every front.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Protocol

import orjson

from proxy_app.backs import ADAPTERS
from proxy_app.backs.base import Adapter
from proxy_app.config import KeyCfg, Route
from proxy_app.errors import ProxyError, bad_request, echo, stream_failure, upstream_timeout, upstream_unreachable
from proxy_app.exchange.api import OFFLOAD_COUNT_CHARS, Api
from proxy_app.exchange.meter import Meter, Usage
from proxy_app.exchange.outcome import Outcome, Sink
from proxy_app.exchange.pricing import ZERO, request_cost
from proxy_app.exchange.routing import resolve, speaks
from proxy_app.exchange.state import ProxyState
from proxy_app.exchange.tracing import Attempt
from proxy_app.governance import Ticket, is_limited, needs_reservation
from proxy_app.governance.breaker import Circuit, retry_after_seconds
from proxy_app.hub import Piece
from proxy_app.transport.http import UpstreamConnectTimeout, UpstreamHTTPError, UpstreamResponse

log = logging.getLogger("nexusai.proxy.upstream")

CLIENT_CLOSED = 499
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_CONVERSATION_ID = 128
# It is sent back in a header: a control character there would break the reply after the upstream was paid.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ClientGone(Exception):
    """The client's connection closed under a write: nobody is listening any more."""


class UpstreamFailure(ProxyError):
    """No candidate answered; `route` is the last one tried, the provider the failure is recorded for."""

    def __init__(self, error: ProxyError, route: Route) -> None:
        super().__init__(error.status, error.message, type=error.type, code=error.code)
        self.route = route


@dataclass(slots=True)
class WholeReply:
    """A reply that came in one piece: a 2xx body, or an error status with its body in OpenAI's shape."""

    status: int
    body: bytes
    obj: dict[str, Any] | None  # the hub-format reply (2xx only)
    headers: Mapping[str, str]  # the upstream's response headers


class Renderer(Protocol):
    """How a front puts an exchange on its wire. Sends raise ClientGone when the client has left."""

    async def start_stream(self, exchange: Exchange) -> None:
        """The upstream is streaming: open the client's stream (before the first pieces)."""
        ...

    async def pieces(self, exchange: Exchange, pieces: list[Piece], final: bool) -> None:
        """The events of one upstream read; `final`: they end the reply, and the row is recorded."""
        ...

    async def finished(self, exchange: Exchange, outcome: Outcome) -> None:
        """The stream ended and is recorded: close it (WebSocket: usage, then done)."""
        ...

    async def whole(self, exchange: Exchange, reply: WholeReply, outcome: Outcome) -> None:
        """A reply in one piece, recorded: send it."""
        ...

    async def failed(self, exchange: Exchange, error: ProxyError, outcome: Outcome) -> None:
        """The exchange failed (before or during the reply) and is recorded: tell the client."""
        ...


def new_request_id() -> str:
    """A fresh request id."""
    return "req_" + uuid.uuid4().hex


def new_conversation_id() -> str:
    """A fresh conversation id."""
    return "conv_" + uuid.uuid4().hex


def pick_conversation_id(header_value: str | None, body: dict[str, Any], default: str | None = None) -> str:
    """Conversation id from the header, else the body field (removed from the body), else new."""
    body_value = body.pop("conversation_id", None)
    value = header_value if header_value else body_value
    if value is None or value == "":
        return default or new_conversation_id()
    if (
        not isinstance(value, str) or len(value) > MAX_CONVERSATION_ID or not _is_utf8(value)
        or _CONTROL.search(value) is not None
    ):
        raise bad_request(
            f"'conversation_id' must be a UTF-8 string of at most {MAX_CONVERSATION_ID} characters"
            " without control characters.",
            param="conversation_id",
        )
    return value


def _is_utf8(value: str) -> bool:
    # A header's undecodable bytes arrive as surrogates, which no database or JSON line can hold.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def open_exchange(
    state: ProxyState,
    api: Api,
    key: KeyCfg,
    body: Any,
    *,
    conversation_header: str | None,
    transport: str,
    default_conversation: str | None = None,
) -> Exchange:
    """Validate, route and admit one request (raises ProxyError; nothing is recorded for a refusal)."""
    started = time.perf_counter()
    try:
        model, stream = api.validate(body)
        conversation_id = pick_conversation_id(conversation_header, body, default_conversation)
    except ProxyError as exc:
        state.refusals[(api.name, exc.code or exc.type)] += 1
        raise
    try:
        translation = api.translation
        routes = resolve(state.config.snapshot, key, model, api.name, via_chat=translation is not None,
                         rank=state.rank)
        if translation is not None:
            routes = _translatable(routes, api.name, translation.native_only(body), model)
        exchange = Exchange(state, api, key, model, body, stream, conversation_id, transport, routes, started)
        if translation is not None and not all(speaks(r.provider, api.name) for r in routes):
            # Translated up front: a request the translation cannot carry is refused, not half-sent.
            exchange.chat_body = translation.chat_body(exchange.body, stream)
        if is_limited(key):
            tokens, usd = _reservation(state, api, key, exchange.body, routes) if needs_reservation(key) else (0, ZERO)
            exchange.ticket, exchange.limit_headers = await state.limiter.admit(key, tokens, usd)
    except ProxyError as exc:
        # Refused after the conversation was known (unknown model, scope, limits): say which one.
        exc.headers.setdefault("X-Conversation-Id", conversation_id)
        state.refusals[(api.name, exc.code or exc.type)] += 1
        raise
    return exchange


def _translatable(routes: list[Route], api: str, native_only: str | None, model: str) -> list[Route]:
    """The candidates left when the request uses what only a native upstream offers."""
    if native_only is None:
        return routes
    native = [r for r in routes if speaks(r.provider, api)]
    if not native:
        raise bad_request(
            f"{native_only} needs a provider serving the {api} API natively, and no provider of the model"
            f" '{echo(model)}' does (the others are reached through chat completions).",
        )
    return native


def _reservation(state: ProxyState, api: Api, key: KeyCfg, body: dict[str, Any],
                 routes: list[Route]) -> tuple[int, Decimal]:
    """Tokens and USD to hold while the request runs: prompt plus the most it may generate."""
    size = api.prompt_chars(body)
    # A huge prompt is estimated from its length rather than tokenised on the loop.
    if size > OFFLOAD_COUNT_CHARS:
        prompt = size // 3 + 1
    else:
        prompt = api.count_prompt(state.tokens, body, routes[0].upstream_name)
    limit = api.completion_limit(body)
    completion = limit if limit is not None else state.settings.default_reserve_tokens
    usd = max((request_cost(prompt, completion, r.input_price, r.output_price) for r in routes), default=ZERO)
    return prompt + completion, usd


class Exchange:
    """One client request on its way through the gateway."""

    __slots__ = (
        "state", "api", "key", "model", "client_body", "body", "stream", "conversation_id", "transport", "routes",
        "started", "request_id", "created_at", "ticket", "limit_headers", "route", "adapter", "meter", "attempts",
        "delivered", "complete", "chat_body", "translated", "client_headers", "_upstream", "_stop", "_recording",
        "_outcome", "_waiters", "_serving", "_claimed", "_headers_ms", "trail",
    )

    def __init__(self, state: ProxyState, api: Api, key: KeyCfg, model: str, body: dict[str, Any], stream: bool,
                 conversation_id: str, transport: str, routes: list[Route], started: float) -> None:
        self.state = state
        self.api = api
        self.key = key
        self.model = model
        self.client_body = body
        self.body = api.upstream_body(body, stream)
        self.stream = stream
        self.conversation_id = conversation_id
        self.transport = transport
        self.routes = routes
        self.started = started
        self.request_id = new_request_id()
        self.created_at = datetime.now(timezone.utc)
        self.ticket: Ticket | None = None
        self.limit_headers: dict[str, str] | None = None
        self.route: Route = routes[0]
        self.adapter: Adapter = ADAPTERS[self.route.provider.kind]
        self.meter = Meter()
        self.attempts = 0
        self.delivered = False  # the client has been sent part of the reply
        self.complete = False  # the client has been sent the end of the reply
        self.chat_body: dict[str, Any] | None = None  # the request as chat, for providers lacking the API
        self.translated = False  # the provider tried last gets chat_body, and its reply is chat
        self.client_headers: dict[str, str] = {}  # what a provider serving the API natively gets as it came
        self._upstream: UpstreamResponse | None = None
        self._stop: tuple[int, str] | None = None
        self._recording = False
        self._outcome: Outcome | None = None
        self._waiters: list[asyncio.Future[Outcome]] = []
        self._serving: Route | None = None  # the route whose reply is being relayed (busy in the breakers)
        self._claimed: tuple[Circuit, ...] = ()  # circuit probes its attempt claimed
        self._headers_ms = 0.0  # time from the attempt's start to the upstream's response headers
        self.trail: list[Attempt] | None = [] if state.tracing is not None else None  # attempts, for traces

    # --- for fronts -----------------------------------------------------------

    def ids(self) -> dict[str, str]:
        """The headers naming this exchange (and its key's limits)."""
        headers = {"X-Request-Id": self.request_id, "X-Conversation-Id": self.conversation_id}
        if self.limit_headers:
            headers.update(self.limit_headers)
        return headers

    @property
    def wire_api(self) -> str:
        """The API the upstream is spoken to in: the client's, or chat when translated."""
        return "chat" if self.translated else self.api.name

    def stop(self, status: int, error_type: str) -> None:
        """Say how to record the exchange if its task is cancelled next (WebSocket cancel, shutdown)."""
        if self._stop is None:
            self._stop = (status, error_type)

    @property
    def recording(self) -> bool:
        """Whether the outcome is being (or has been) recorded: cancelling now changes nothing."""
        return self._recording

    async def outcome(self) -> Outcome:
        """The recorded outcome (waits for a recording in progress)."""
        if self._outcome is not None:
            return self._outcome
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    async def run(self, renderer: Renderer) -> None:
        """Relay the exchange to `renderer`; it is recorded once however this ends."""
        state = self.state
        state.in_flight += 1
        try:
            await self._run(renderer)
        except asyncio.CancelledError:
            self._abandon()
            raise
        except ClientGone:
            self._abandon()
        except Exception:
            if not self._recording:
                self._stop = (500, "internal_error")  # a bug below us: still one row, never none
            self._abandon()
            raise
        finally:
            state.in_flight -= 1
            serving = self._serving
            if serving is not None:
                self._serving = None
                state.breakers.end(serving, self._claimed)

    async def close(self, status: int, error_type: str) -> Outcome:
        """Record an exchange that ends without running (or before its reply), with this status."""
        return await self._record(status, error_type, delivered=self.delivered)

    # --- the relay ------------------------------------------------------------

    async def _run(self, renderer: Renderer) -> None:
        try:
            response = await self._open()
        except UpstreamFailure as exc:
            self.route = exc.route
            outcome = await self._record(exc.status, exc.code or exc.type, delivered=False)
            await renderer.failed(self, exc, outcome)
            return
        self._upstream = response
        try:
            if self.stream and response.status == 200 and response.content_type == "text/event-stream":
                await self._relay_stream(response, renderer)
            else:
                await self._relay_whole(response, renderer)
        finally:
            self._upstream = None
            response.release()  # back to the pool when read to its end, else closed

    async def _open(self) -> UpstreamResponse:
        """POST to the first candidate that answers usefully.

        Candidates whose circuits are open are passed over (see governance/breaker). A
        candidate is skipped when it cannot be reached, times out before its headers,
        or answers 429/5xx; the last candidate's answer is returned as it is.
        """
        state = self.state
        breakers = state.breakers
        candidates = breakers.usable(self.routes)[:state.settings.upstream_max_attempts]
        last_error: UpstreamFailure | None = None
        for attempt, route in enumerate(candidates, start=1):
            is_last = attempt == len(candidates)
            self.route, self.attempts = route, attempt
            provider = route.provider
            self.adapter = adapter = ADAPTERS[provider.kind]
            self.translated = self.chat_body is not None and not speaks(provider, self.api.name)
            if self.translated:
                assert self.chat_body is not None
                call = adapter.build(provider, "chat", self.chat_body, route.upstream_name, self.stream, {})
            else:
                call = adapter.build(provider, self.api.name, self.body, route.upstream_name, self.stream,
                                     self.client_headers)
            claimed = breakers.begin(route)
            began = time.perf_counter()
            trail = self.trail
            if trail is not None:
                trail.append(Attempt(provider.name, provider.kind, _server_address(call.url), route.upstream_name,
                                     time.time_ns(), 0, "ok", None))
            try:
                response = await state.upstream.request(
                    call.method, call.url, body=call.body, headers=call.headers, proxy=_proxy_url(route),
                    connect_timeout=provider.connect_timeout_s, read_timeout=provider.timeout_s,
                )
            except UpstreamConnectTimeout:
                log.warning("request %s attempt %d: provider %s: no connection within %g s",
                            self.request_id, attempt, provider.name, provider.connect_timeout_s)
                breakers.failed(route, "connect timeout", kind="connect_timeout", provider_wide=True)
                breakers.end(route, claimed)
                _note(trail, "connect_timeout")
                last_error = UpstreamFailure(upstream_timeout(
                    f"Upstream provider '{provider.name}' did not accept a connection within "
                    f"{provider.connect_timeout_s:g} s."), route)
                continue
            except TimeoutError:
                log.warning("request %s attempt %d: provider %s timed out", self.request_id, attempt, provider.name)
                breakers.failed(route, "first-byte timeout", kind="timeout", provider_wide=True)
                breakers.end(route, claimed)
                _note(trail, "timeout")
                last_error = UpstreamFailure(upstream_timeout(
                    f"Upstream provider '{provider.name}' did not answer within {provider.timeout_s:g} s."), route)
                continue
            except UpstreamHTTPError as exc:
                log.warning("request %s attempt %d: provider %s unreachable: %s",
                            self.request_id, attempt, provider.name, type(exc).__name__)
                breakers.failed(route, f"unreachable ({type(exc).__name__})", kind="unreachable", provider_wide=True)
                breakers.end(route, claimed)
                _note(trail, "unreachable")
                last_error = UpstreamFailure(
                    upstream_unreachable(f"Upstream provider '{provider.name}' is unreachable."), route)
                continue
            except BaseException:
                breakers.end(route, claimed)  # cancelled: the probe, if this was one, is given back
                _note(trail, "cancelled")
                raise
            self._headers_ms = (time.perf_counter() - began) * 1000.0
            if trail is not None:
                trail[-1].status = response.status
            if response.status in RETRY_STATUSES:
                if trail is not None:
                    trail[-1].result = f"status_{response.status}"
                wait = retry_after_seconds(response.headers.get("retry-after")) if response.status in (429, 503) \
                    else None
                breakers.failed(route, f"HTTP {response.status}", kind=f"status_{response.status}",
                                provider_wide=False, latency_ms=self._headers_ms, retry_after_s=wait)
                if not is_last:
                    log.warning("request %s attempt %d: provider %s answered %d, trying next",
                                self.request_id, attempt, provider.name, response.status)
                    breakers.end(route, claimed)
                    _note(trail, trail[-1].result if trail else "")
                    response.release()
                    continue
            if attempt > 1:
                log.info("request %s served by provider %s on attempt %d", self.request_id, provider.name, attempt)
            self._serving, self._claimed = route, claimed
            return response
        assert last_error is not None
        raise last_error

    def _healthy(self) -> None:
        """The serving upstream's reply went through: its circuits close."""
        if self._serving is not None:
            self.state.breakers.succeeded(self._serving, self._headers_ms)

    def _sick(self, error: str, kind: str, provider_wide: bool) -> None:
        """The serving upstream failed while replying."""
        if self._serving is not None:
            self.state.breakers.failed(self._serving, error, kind=kind, provider_wide=provider_wide,
                                       latency_ms=self._headers_ms)

    async def _relay_whole(self, response: UpstreamResponse, renderer: Renderer) -> None:
        """An error status, or a reply in one piece (a JSON reply, or an upstream that ignored `stream`)."""
        provider = self.route.provider
        try:
            raw = await response.read()
        except (UpstreamHTTPError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                error = upstream_timeout(f"Upstream provider '{provider.name}' timed out sending its reply.")
            else:
                error = upstream_unreachable(f"Upstream provider '{provider.name}' broke off its reply.")
            self._sick(error.code or "reply failed", "reply_failed", provider_wide=True)
            outcome = await self._record(error.status, error.code, delivered=False)
            await renderer.failed(self, error, outcome)
            return
        self.meter.ttft_ms = (time.perf_counter() - self.started) * 1000.0
        status = response.status
        if status not in RETRY_STATUSES:
            self._healthy()  # a 4xx is the request's fault, not the upstream's
        if status >= 400:
            body = self.adapter.error_body(status, raw, provider)
            outcome = await self._record(status, "upstream_error", delivered=False)
            await renderer.whole(self, WholeReply(status, body, None, response.headers), outcome)
            return
        obj = self.adapter.decode_reply(self.wire_api, raw, self.chat_body if self.translated else self.body)
        if obj is not None:
            self.meter.add_completion(obj)
            self.meter.upstream_usage = self.adapter.usage(obj)
            if self.wire_api not in provider.apis:
                raw = orjson.dumps(obj)  # the adapter translated the reply: the client gets the translation
        outcome = await self._record(status, None, delivered=True)
        await renderer.whole(self, WholeReply(status, raw, obj, response.headers), outcome)
        self.delivered = self.complete = True

    async def _relay_stream(self, response: UpstreamResponse, renderer: Renderer) -> None:
        decoder = self.adapter.stream_decoder(self.wire_api)
        await renderer.start_stream(self)
        try:
            async for data in response.iter_any():
                pieces = decoder.feed(data)
                if pieces and await self._take(pieces, renderer):
                    return
            rest = decoder.close()
            if rest and await self._take(rest, renderer):
                return
        except (UpstreamHTTPError, TimeoutError) as exc:
            if self.complete:
                # It broke off after the end of the reply ([DONE]): the client has all of it.
                self._healthy()
                await renderer.finished(self, await self.outcome())
                return
            error = stream_failure(exc, self.route.provider.name)
            self._sick(error.code or "stream failed", "stream_failed", provider_wide=True)
            outcome = await self._record(error.status, error.code, delivered=self.delivered)
            await renderer.failed(self, error, outcome)
            return
        # The upstream ended its body (after [DONE], or without one).
        self._healthy()
        outcome = await self._record(200, None, delivered=self.delivered)
        self.complete = True
        await renderer.finished(self, outcome)

    async def _take(self, pieces: list[Piece], renderer: Renderer) -> bool:
        """Meter and pass on one read's pieces; True when an error event ended the exchange."""
        meter, adapter = self.meter, self.adapter
        if meter.ttft_ms is None:
            meter.ttft_ms = (time.perf_counter() - self.started) * 1000.0
        final = False
        for index, piece in enumerate(pieces):
            obj = piece.obj
            final = final or piece.done
            if obj is None:
                continue
            fault = adapter.fault(obj)
            if fault is not None:
                # An error event in place of content: the reply failed, whatever the HTTP status said.
                if index:
                    await renderer.pieces(self, pieces[:index], False)
                    self.delivered = True
                error = ProxyError(fault.status, fault.message, type="upstream_error", code=fault.code)
                if fault.status in RETRY_STATUSES:
                    self._sick(f"error event ({fault.code or fault.status})", "error_event", provider_wide=False)
                outcome = await self._record(error.status, error.code, delivered=self.delivered)
                await renderer.failed(self, error, outcome)
                return True
            usage = adapter.usage(obj)
            if usage is not None:
                meter.upstream_usage = usage
            meter.add_chunk(obj)
        if final and not self._recording:
            # Recorded before the client can see the end: an acknowledged reply is never lost,
            # even if the process dies right after this write.
            await self._record(200, None, delivered=True)
        await renderer.pieces(self, pieces, final)
        self.delivered = True
        self.complete = self.complete or final
        return False

    # --- recording ------------------------------------------------------------

    async def _record(self, status: int, error_type: str | None, delivered: bool) -> Outcome:
        """Record the outcome once (counting off the loop when large); later calls get the same outcome."""
        if self._recording:
            return await self.outcome()
        self._recording = True
        if self._count_offloaded(delivered):
            # Counting leaves the loop, so the recording runs in its own task: a client hanging
            # up meanwhile cancels the handler, never the usage row.
            return await asyncio.shield(self._record_in_task(status, error_type, delivered))
        usage = self.meter.usage(self.state.tokens, self.api, self.body, self.route.upstream_name, delivered)
        return await self._finish(usage, status, error_type)

    def _abandon(self) -> None:
        """The front is gone (cancelled, or its client left): record in the background and drop upstream."""
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.close()  # closing (not releasing) the connection cancels the upstream's work
        if self._recording:
            return
        self._recording = True
        status, error_type = self._stop or ((200, None) if self.complete else (CLIENT_CLOSED, "client_closed"))
        self._record_in_task(status, error_type, self.delivered)

    def _record_in_task(self, status: int, error_type: str | None, delivered: bool) -> asyncio.Task[Outcome]:
        if self.ticket is not None:
            self.ticket.detached = True  # the task settles it, whatever happens to the handler
        return self._spawn(self._count_and_finish(status, error_type, delivered))

    def _count_offloaded(self, delivered: bool) -> bool:
        if self.meter.upstream_usage is not None or not delivered:
            return False
        return self.api.prompt_chars(self.body) + self.meter.content_chars() > OFFLOAD_COUNT_CHARS

    async def _count_and_finish(self, status: int, error_type: str | None, delivered: bool) -> Outcome:
        model = self.route.upstream_name
        if self._count_offloaded(delivered):
            loop = asyncio.get_running_loop()
            usage = await loop.run_in_executor(
                None, self.meter.usage, self.state.tokens, self.api, self.body, model, delivered
            )
        else:
            usage = self.meter.usage(self.state.tokens, self.api, self.body, model, delivered)
        return await self._finish(usage, status, error_type)

    async def _finish(self, usage: Usage, status: int, error_type: str | None) -> Outcome:
        route = self.route
        latency_ms = (time.perf_counter() - self.started) * 1000.0
        cost = request_cost(usage.prompt_tokens, usage.completion_tokens, route.input_price, route.output_price,
                            cached_tokens=usage.cached_tokens, cached_price=route.cached_input_price,
                            cache_write_tokens=usage.cache_write_tokens, cache_write_price=route.cache_write_price)
        outcome = Outcome(self, status, error_type, usage, cost, latency_ms)
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(outcome)
        sinks = self.state.sinks
        for index, sink in enumerate(sinks):
            try:
                pending = sink.record(outcome)
                if pending is not None:
                    await pending
            except asyncio.CancelledError:
                # Cancelled while a sink waited on I/O: the others still get their record.
                self._spawn(_run_sinks(outcome, sinks[index + 1:]))
                raise
            except Exception:  # noqa: BLE001 - one sink's failure must not cost the others their record
                log.exception("outcome sink %s failed for request %s", type(sink).__name__, self.request_id)
        return outcome

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        background = self.state.background
        background.add(task)
        task.add_done_callback(background.discard)
        return task


async def _run_sinks(outcome: Outcome, sinks: Sequence[Sink]) -> None:
    for sink in sinks:
        try:
            pending = sink.record(outcome)
            if pending is not None:
                await pending
        except Exception:  # noqa: BLE001
            log.exception("outcome sink %s failed for request %s", type(sink).__name__, outcome.exchange.request_id)


def _server_address(url: str) -> str:
    """host:port of an upstream URL, without any user:password a provider's URL may carry."""
    netloc = url.split("/", 3)[2] if "://" in url else url
    return netloc.rpartition("@")[2]


def _note(trail: list[Attempt] | None, result: str) -> None:
    """End the attempt being traced with `result` (no-op without traces)."""
    if trail:
        attempt = trail[-1]
        attempt.result, attempt.end_ns = result, time.time_ns()


def _proxy_url(route: Route) -> str | None:
    proxy = route.provider.http_proxy
    if proxy and not proxy.startswith(("http://", "https://")):
        raise UpstreamHTTPError(f"unsupported proxy scheme for provider {route.provider.name}")
    return proxy or None
