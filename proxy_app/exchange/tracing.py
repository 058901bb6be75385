"""OpenTelemetry traces of exchanges (only with OTEL_EXPORTER_OTLP_ENDPOINT; nothing at all otherwise).

One SERVER span per exchange, named and attributed after the GenAI semantic conventions
(`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model`,
`gen_ai.provider.name`, `gen_ai.usage.*`, `gen_ai.response.finish_reasons`), with one
CLIENT child span per upstream attempt. The spans are built when the outcome is
recorded, from the times the runner noted, so a request costs nothing extra while it
runs; the SDK's batch processor exports them over OTLP/HTTP from its own thread. The
SDK is imported only when traces are on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from proxy_app.exchange.outcome import Outcome

log = logging.getLogger("nexusai.proxy.tracing")

OPERATIONS = {"chat": "chat", "responses": "chat", "messages": "chat", "embeddings": "embeddings",
              "completions": "text_completion"}
# gen_ai.provider.name values of the conventions, by provider kind.
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "azure": "azure.ai.openai"}


@dataclass(slots=True)
class Attempt:
    """One upstream attempt as the runner saw it (wall-clock nanoseconds)."""

    provider: str
    kind: str
    address: str
    upstream_model: str
    start_ns: int
    end_ns: int
    result: str  # ok, or a failure kind (connect_timeout, timeout, status_503, ...)
    status: int | None


class Tracing:
    """The tracer provider and the outcome sink that turns exchanges into spans."""

    def __init__(self, endpoint: str, service_name: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        self._kinds = SpanKind
        self._status = (Status, StatusCode)
        self._in_context = set_span_in_context
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        # Headers (OTEL_EXPORTER_OTLP_HEADERS) and timeouts come from the SDK's own environment variables.
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self.tracer = self.provider.get_tracer("nexusai.proxy")
        log.info("traces are exported to %s", url)

    def record(self, outcome: Outcome) -> None:
        """Build the exchange's span and its attempts' child spans."""
        ex = outcome.exchange
        route, usage, meter = ex.route, outcome.usage, ex.meter
        api = ex.api.name
        operation = OPERATIONS.get(api, "chat")
        start_ns = int(ex.created_at.timestamp() * 1e9)
        end_ns = start_ns + int(outcome.latency_ms * 1e6)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": ex.model,
            "gen_ai.response.model": route.upstream_name,
            "gen_ai.provider.name": PROVIDER_NAMES.get(route.provider.kind, route.provider.kind),
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.conversation.id": ex.conversation_id,
            "http.response.status_code": outcome.status,
            "nexusai.request_id": ex.request_id,
            "nexusai.api": "ws" if ex.transport == "ws" else api,
            "nexusai.provider": route.provider.name,
            "nexusai.key_id": ex.key.id,
            "nexusai.stream": ex.stream,
            "nexusai.attempts": ex.attempts,
            "nexusai.cost_usd": str(outcome.cost_usd),
            "nexusai.token_source": usage.source,
        }
        if usage.cached_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
        if usage.cache_write_tokens:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
        if usage.reasoning_tokens:
            attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if meter.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [meter.finish_reason]
        if meter.ttft_ms is not None:
            attributes["nexusai.ttft_ms"] = round(meter.ttft_ms, 3)
        status_cls, code = self._status
        span = self.tracer.start_span(f"{operation} {ex.model}", kind=self._kinds.SERVER, attributes=attributes,
                                      start_time=start_ns)
        if outcome.error_type is not None:
            span.set_attribute("error.type", outcome.error_type)
        if outcome.status >= 500:  # a 4xx is the client's (the conventions' rule for server spans)
            span.set_status(status_cls(code.ERROR, outcome.error_type or str(outcome.status)))
        parent = self._in_context(span)
        for attempt in ex.trail or ():
            child_attributes: dict[str, Any] = {
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": attempt.upstream_model,
                "gen_ai.provider.name": PROVIDER_NAMES.get(attempt.kind, attempt.kind),
                "server.address": attempt.address,
                "nexusai.provider": attempt.provider,
                "nexusai.attempt_result": attempt.result,
            }
            if attempt.status is not None:
                child_attributes["http.response.status_code"] = attempt.status
            child = self.tracer.start_span(f"{operation} {attempt.upstream_model}", context=parent,
                                           kind=self._kinds.CLIENT, attributes=child_attributes,
                                           start_time=attempt.start_ns)
            if attempt.result != "ok":
                child.set_attribute("error.type", attempt.result)
                child.set_status(status_cls(code.ERROR, attempt.result))
            # The attempt that served lasts until the reply ended.
            child.end(end_time=max(attempt.end_ns or end_ns, attempt.start_ns))
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        """Export what is left and stop (blocking: call from a thread)."""
        self.provider.shutdown()
