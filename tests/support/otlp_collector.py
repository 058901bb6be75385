"""An OTLP/HTTP trace collector double: takes `POST /v1/traces` (protobuf) and keeps the spans.

Written from the OTLP specification (ExportTraceServiceRequest in, an empty
ExportTraceServiceResponse out); the protobuf classes are opentelemetry-proto's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@dataclass
class Span:
    """One received span, flattened."""

    name: str
    kind: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    resource: dict[str, Any]


@dataclass
class OtlpCollector:
    """Receives spans on 127.0.0.1:<free port>; `endpoint` is the base URL to configure."""

    spans: list[Span] = field(default_factory=list)
    endpoint: str = ""

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="otlp-collector", daemon=True)
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    def start(self) -> OtlpCollector:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def wait_spans(self, n: int, timeout: float = 10.0) -> list[Span]:
        """At least `n` spans (bounded wait), in arrival order."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.spans) >= n:
                    return list(self.spans)
            time.sleep(0.05)
        with self._lock:
            return list(self.spans)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.endpoint = f"http://127.0.0.1:{port}"

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        received = []
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    received.append(Span(
                        s.name, s.kind, s.trace_id, s.span_id, s.parent_span_id, s.start_time_unix_nano,
                        s.end_time_unix_nano, {a.key: _value(a.value) for a in s.attributes}, s.status.code,
                        resource,
                    ))
        with self._lock:
            self.spans.extend(received)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")
