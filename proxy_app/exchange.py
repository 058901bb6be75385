"""One chat exchange from validation to usage record; shared by HTTP and WebSocket.

`prepare_call` checks the body and picks candidates; `finish` turns what the
exchange delivered into a usage row, an archive line and an access-log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from proxy_app.config import KeyCfg, Route
from proxy_app.errors import ProxyError, bad_request
from proxy_app.limits import Ticket, is_limited, needs_reservation
from proxy_app.meter import Meter, Usage
from proxy_app.routing import resolve
from proxy_app.state import ProxyState
from shared.logs import log_info_line
from shared.pricing import ZERO, request_cost
from shared.tokens import messages_char_size

access_log = logging.getLogger("nexusai.proxy.access")

MAX_CONVERSATION_ID = 128
# It is sent back in a header: a control character there would break the reply after the upstream was paid.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Above this many characters, counting moves to a worker thread.
OFFLOAD_COUNT_CHARS = 50_000


def new_request_id() -> str:
    """A fresh request id."""
    return "req_" + uuid.uuid4().hex


def new_conversation_id() -> str:
    """A fresh conversation id."""
    return "conv_" + uuid.uuid4().hex


@dataclass(slots=True)
class ChatCall:
    """A validated chat request bound to its key and candidate routes."""

    request_id: str
    conversation_id: str
    key: KeyCfg
    model: str
    routes: list[Route]
    body: dict[str, Any]
    stream: bool
    client_wants_usage: bool
    transport: str
    started: float
    created_at: datetime
    ticket: Ticket | None = None
    limit_headers: dict[str, str] | None = None


def validate_body(body: Any) -> None:
    """Just enough validation: a JSON object with a model string and a non-empty messages list."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty list.", param="messages")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise bad_request("'stream' must be a boolean.", param="stream")


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


def prepare_call(
    state: ProxyState,
    key: KeyCfg,
    body: Any,
    *,
    conversation_header: str | None,
    transport: str,
    default_conversation: str | None = None,
) -> ChatCall:
    """Validate, route and shape the upstream body (raises ProxyError)."""
    started = time.perf_counter()
    validate_body(body)
    conversation_id = pick_conversation_id(conversation_header, body, default_conversation)
    try:
        return _routed_call(state, key, body, conversation_id, transport, started)
    except ProxyError as exc:
        # Refused after the conversation was known (unknown model, scope, limits): say which one.
        exc.headers.setdefault("X-Conversation-Id", conversation_id)
        raise


def _routed_call(
    state: ProxyState, key: KeyCfg, body: dict[str, Any], conversation_id: str, transport: str, started: float
) -> ChatCall:
    routes = resolve(state.config.snapshot, key, body["model"])
    stream = bool(body.get("stream", False))
    wants_usage = False
    if stream:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise bad_request("'stream_options' must be an object.", param="stream_options")
        wants_usage = bool(options and options.get("include_usage"))
        # Ask for usage so streamed requests are never recorded as free.
        body["stream_options"] = {**(options or {}), "include_usage": True}
    call = ChatCall(
        request_id=new_request_id(),
        conversation_id=conversation_id,
        key=key,
        model=body["model"],
        routes=routes,
        body=body,
        stream=stream,
        client_wants_usage=wants_usage,
        transport=transport,
        started=started,
        created_at=datetime.now(timezone.utc),
    )
    if is_limited(key):
        tokens, usd = _reservation(state, key, body, routes) if needs_reservation(key) else (0, ZERO)
        call.ticket, call.limit_headers = state.limiter.admit(key, tokens, usd)
    return call


def _reservation(state: ProxyState, key: KeyCfg, body: dict[str, Any], routes: list[Route]) -> tuple[int, Any]:
    """Tokens and USD to hold while the request runs: prompt plus the most it may generate."""
    messages = body.get("messages")
    size = messages_char_size(messages)
    # A huge prompt is estimated from its length rather than tokenised on the loop.
    if size > OFFLOAD_COUNT_CHARS:
        prompt = size // 3 + 1
    else:
        prompt = state.tokens.count_messages(messages, routes[0].upstream_name)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    completion = limit if isinstance(limit, int) and limit > 0 else state.settings.default_reserve_tokens
    usd = max(
        (request_cost(prompt, completion, r.input_price, r.output_price) for r in routes), default=ZERO
    )
    return prompt + completion, usd


@dataclass(slots=True)
class Outcome:
    """What `finish` recorded, for headers and WebSocket messages."""

    usage: Usage
    cost_usd: Any
    latency_ms: float


def _record(
    state: ProxyState, call: ChatCall, route: Route | None, meter: Meter, usage: Usage,
    status: int, error_type: str | None,
) -> Outcome:
    latency_ms = (time.perf_counter() - call.started) * 1000.0
    cost = request_cost(
        usage.prompt_tokens, usage.completion_tokens,
        route.input_price if route else None, route.output_price if route else None,
    )
    state.usage.submit({
        "request_id": call.request_id,
        "key_id": call.key.id,
        "provider_id": route.provider.id if route else None,
        "provider_name": route.provider.name if route else None,
        "model": route.model_name if route else call.model,
        "upstream_model": route.upstream_name if route else None,
        "conversation_id": call.conversation_id,
        "transport": call.transport,
        "stream": call.stream,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "token_source": usage.source,
        "cost_usd": cost,
        "latency_ms": round(latency_ms, 3),
        "ttft_ms": round(meter.ttft_ms, 3) if meter.ttft_ms is not None else None,
        "status_code": status,
        "error_type": error_type,
        "created_at": call.created_at,
    })
    if call.ticket is not None:
        state.limiter.settle(call.ticket, usage.total_tokens, cost)
    archive = call.key.archive_messages if call.key.archive_messages is not None else state.settings.archive_messages
    if archive:
        state.archive.submit({
            "created_at": call.created_at,
            "request_id": call.request_id,
            "conversation_id": call.conversation_id,
            "transport": call.transport,
            "key_id": call.key.id,
            "model": call.model,
            "upstream_model": route.upstream_name if route else None,
            "provider": route.provider.name if route else None,
            "stream": call.stream,
            "status": status,
            "error_type": error_type,
            "request": {k: v for k, v in call.body.items() if k != "stream_options" or call.client_wants_usage},
            "reply": meter.reply_message(),
            "finish_reason": meter.finish_reason,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
                "token_source": usage.source,
            },
            "cost_usd": str(cost),
            "latency_ms": round(latency_ms, 3),
            "ttft_ms": meter.ttft_ms,
        })
    log_info_line(
        access_log, "%s %s key=%s model=%s provider=%s status=%d latency_ms=%.1f tokens=%d/%d source=%s",
        call.request_id, call.transport, call.key.hint, call.model,
        route.provider.name if route else "-", status, latency_ms,
        usage.prompt_tokens, usage.completion_tokens, usage.source,
    )
    return Outcome(usage=usage, cost_usd=cost, latency_ms=latency_ms)


async def finish(
    state: ProxyState, call: ChatCall, route: Route | None, meter: Meter,
    status: int, error_type: str | None = None, delivered_any: bool = True,
) -> Outcome:
    """Count tokens (off the loop when large) and record the exchange, exactly once.

    When counting must leave the loop, the recording runs in its own task: a client
    hanging up meanwhile cancels the handler, never the usage row.
    """
    model = route.upstream_name if route else call.model
    messages = call.body.get("messages")
    if meter.upstream_usage is None and delivered_any and (
        messages_char_size(messages) + sum(len(c) for c in meter.content) > OFFLOAD_COUNT_CHARS
    ):
        if call.ticket is not None:
            call.ticket.detached = True  # the task settles it, whatever happens to the handler
        task = asyncio.get_running_loop().create_task(
            _count_and_record(state, call, route, meter, model, status, error_type, delivered_any)
        )
        state.background.add(task)
        task.add_done_callback(state.background.discard)
        return await asyncio.shield(task)
    usage = meter.usage(state.tokens, messages, model, delivered_any)
    return _record(state, call, route, meter, usage, status, error_type)


async def _count_and_record(
    state: ProxyState, call: ChatCall, route: Route | None, meter: Meter, model: str,
    status: int, error_type: str | None, delivered_any: bool,
) -> Outcome:
    loop = asyncio.get_running_loop()
    messages = call.body.get("messages")
    usage = await loop.run_in_executor(None, meter.usage, state.tokens, messages, model, delivered_any)
    return _record(state, call, route, meter, usage, status, error_type)


def finish_detached(
    state: ProxyState, call: ChatCall, route: Route | None, meter: Meter,
    status: int, error_type: str | None = None, delivered_any: bool = True,
) -> None:
    """Record from a cancelled handler: the work runs in its own task, awaited at shutdown."""
    if call.ticket is not None:
        call.ticket.detached = True
    task = asyncio.get_running_loop().create_task(
        finish(state, call, route, meter, status, error_type, delivered_any)
    )
    state.background.add(task)
    task.add_done_callback(state.background.discard)


def release(state: ProxyState, call: ChatCall) -> None:
    """Free the call's hold on its key's limits if nothing settled it (idempotent)."""
    if call.ticket is not None:
        state.limiter.release(call.ticket)


def proxy_error_status(exc: ProxyError) -> tuple[int, str | None]:
    """Status and error type to record for a ProxyError."""
    return exc.status, exc.code or exc.type
