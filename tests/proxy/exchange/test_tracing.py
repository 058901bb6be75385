"""Traces exported over OTLP/HTTP to a collector double in the test, with the GenAI conventions' attributes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from proxy_app.app_keys import STATE
from tests.proxy.conftest import Gateway
from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.otlp_collector import OtlpCollector
from tests.support.seed import add_key, add_model, add_provider

pytestmark = pytest.mark.db

SPAN_SERVER, SPAN_CLIENT = 2, 3  # SpanKind in OTLP's enumeration
STATUS_ERROR = 2


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpCollector]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # the SDK's batch delay, ms
    c = OtlpCollector().start()
    yield c
    c.stop()


def test_one_span_per_exchange_with_a_child_per_attempt(make_gateway: Any, engine: Any, upstream: FakeUpstream,
                                                        collector: OtlpCollector) -> None:
    failing = FakeUpstream(default=Scenario(status=503)).start()
    try:
        gw: Gateway = make_gateway(seed=False, otel_endpoint=collector.endpoint, otel_service_name="nexusai-test")
        # Credentials in a provider's URL must not reach a span.
        primary = add_provider(engine, "primary", failing.base_url.replace("http://", "http://user:pw-secret@"),
                               priority=10)
        secondary = add_provider(engine, "secondary", upstream.base_url)
        add_model(engine, primary, "shared-model", upstream_name="up-model")
        add_model(engine, secondary, "shared-model", upstream_name="up-model-2")
        add_key(engine, gw.key)
        gw.wait_config()
        upstream.default = Scenario(prompt_tokens=21, completion_tokens=4)
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "shared-model", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        spans = collector.wait_spans(3)
        failing_address = failing.base_url.split("/")[2]
    finally:
        failing.stop()
    (server,) = [s for s in spans if s.kind == SPAN_SERVER]
    clients = sorted((s for s in spans if s.kind == SPAN_CLIENT), key=lambda s: s.start_ns)
    assert server.name == "chat shared-model" and server.resource["service.name"] == "nexusai-test"
    a = server.attributes
    assert (a["gen_ai.operation.name"], a["gen_ai.request.model"], a["gen_ai.response.model"],
            a["gen_ai.provider.name"]) == ("chat", "shared-model", "up-model-2", "openai")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (21, 4)
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["nexusai.request_id"] == r.headers["X-Request-Id"] and a["nexusai.attempts"] == 2
    assert a["http.response.status_code"] == 200
    assert [(c.attributes["nexusai.provider"], c.attributes["nexusai.attempt_result"]) for c in clients] == [
        ("primary", "status_503"), ("secondary", "ok")]
    assert clients[0].status_code == STATUS_ERROR and clients[1].name == "chat up-model-2"
    assert clients[0].attributes["server.address"] == failing_address
    assert all("pw-secret" not in str(span.attributes) for span in spans)
    for child in clients:
        assert child.trace_id == server.trace_id and child.parent_span_id == server.span_id
        assert server.start_ns <= child.start_ns <= child.end_ns <= server.end_ns


def test_no_tracing_without_an_endpoint(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    assert gw.proxy.app[STATE].tracing is None
    r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
