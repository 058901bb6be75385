"""POST /v1/chat/completions: forwarding, headers, ids, errors, token sources."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests

from proxy_app.exchange.tokens import TokenCounter
from tests.proxy.conftest import CLIENT_KEY, SERVER_KEY, Gateway
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_key, add_model

pytestmark = pytest.mark.db

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


def post(gw: Gateway, body: object, path: str = "/v1/chat/completions", **kw: object) -> requests.Response:
    headers = kw.pop("headers", gw.headers())
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(gw.url + path, data=data, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def test_non_stream_forwards_and_records(gateway: Gateway) -> None:
    r = post(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.2,
                       "conversation_id": "conv-body-1"})
    assert r.status_code == 200
    reply = r.json()
    assert reply["choices"][0]["message"]["content"] == "Hello from the fake upstream, my friend."
    assert r.headers["X-Request-Id"].startswith("req_")
    assert r.headers["X-Conversation-Id"] == "conv-body-1"
    assert r.headers["X-Request-Cost"] == "0.00000675"  # 17*0.15/1M + 7*0.60/1M

    seen = gateway.upstream.chat_requests()[-1]
    assert seen.headers["Authorization"] == f"Bearer {SERVER_KEY}"
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert "conversation_id" not in seen.body
    assert seen.body["temperature"] == 0.2  # other parameters pass untouched

    (row,) = gateway.wait_rows(1)
    assert (row.status_code, row.prompt_tokens, row.completion_tokens, row.total_tokens) == (200, 17, 7, 24)
    assert row.token_source == "upstream"
    assert row.conversation_id == "conv-body-1"
    assert row.request_id == r.headers["X-Request-Id"]
    assert row.provider_name == "fake" and row.model == "gpt-4o-mini" and row.transport == "http"
    assert str(row.cost_usd) == "0.000006750000"
    assert row.latency_ms > 0 and row.ttft_ms is not None


def test_alias_path_header_conversation_and_upstream_name(gateway: Gateway) -> None:
    add_model(gateway.engine, gateway.provider_id, "house-model", upstream_name="real-upstream-model")
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = post(gateway, {"model": "house-model", "messages": MESSAGES}, path="/chat/completions",
                 headers={**gateway.headers(), "X-Conversation-Id": "conv-hdr"})
        if r.status_code != 404:
            break
        time.sleep(0.1)
    assert r.status_code == 200
    assert r.headers["X-Conversation-Id"] == "conv-hdr"
    assert gateway.upstream.chat_requests()[-1].body["model"] == "real-upstream-model"


def test_generated_conversation_id(gateway: Gateway) -> None:
    r = post(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES})
    assert r.headers["X-Conversation-Id"].startswith("conv_")


def test_key_in_x_api_key_and_query(gateway: Gateway) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert post(gateway, body, headers={"X-API-Key": CLIENT_KEY}).status_code == 200
    r = requests.post(gateway.url + "/v1/chat/completions", params={"api_key": CLIENT_KEY}, json=body, timeout=10)
    assert r.status_code == 200


def test_estimated_tokens_when_upstream_reports_none(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(report_usage=False, reply="Counting these words exactly please")
    r = post(gateway, {"model": "gpt-3.5-turbo", "messages": MESSAGES})
    assert r.status_code == 200
    (row,) = gateway.wait_rows(1)
    counter = TokenCounter()
    assert row.token_source == "estimated"
    assert row.prompt_tokens == counter.count_messages(MESSAGES, "gpt-3.5-turbo")
    assert row.completion_tokens == counter.count_text("Counting these words exactly please", "gpt-3.5-turbo")
    assert row.total_tokens == row.prompt_tokens + row.completion_tokens


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"messages": MESSAGES}).encode(), 400, "'model'"),
        (json.dumps({"model": "gpt-4o-mini", "messages": []}).encode(), 400, "'messages'"),
        (json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "stream": "yes"}).encode(), 400, "'stream'"),
        (json.dumps({"model": "no-such-model", "messages": MESSAGES}).encode(), 404, "gpt-4o-mini"),
    ],
)
def test_bad_requests_are_shaped_and_not_forwarded(gateway: Gateway, data: bytes, status: int, fragment: str) -> None:
    r = post(gateway, data)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert fragment in err["message"]
    assert gateway.upstream.chat_requests() == []


def test_body_too_large_is_413(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(max_body_bytes=2048)
    r = post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_auth_failures(gateway: Gateway) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    r = post(gateway, body, headers={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = post(gateway, body, headers={"Authorization": "Bearer nx-wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    add_key(gateway.engine, "nx-disabled-key-000000000000", enabled=False)
    add_key(gateway.engine, "nx-expired-key-0000000000000",
            expires_at=datetime.now(timezone.utc) - timedelta(minutes=1))
    add_key(gateway.engine, "nx-scoped-key-00000000000000", models=["gpt-3.5-turbo"])
    import time

    time.sleep(0.6)  # > poll interval: the snapshot picks the keys up
    r = post(gateway, body, headers={"X-API-Key": "nx-disabled-key-000000000000"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_disabled"
    assert "disabled" in r.json()["error"]["message"]
    r = post(gateway, body, headers={"X-API-Key": "nx-expired-key-0000000000000"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"
    r = post(gateway, body, headers={"X-API-Key": "nx-scoped-key-00000000000000"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert gateway.upstream.chat_requests() == []
    assert gateway.wait_rows(0, timeout=0.3) == []  # refusals are logged, not recorded


def test_upstream_errors_pass_through(gateway: Gateway) -> None:
    gateway.upstream.default = Scenario(status=400, error_body={"error": {
        "message": "bad temperature", "type": "invalid_request_error", "param": "temperature", "code": None,
    }})
    r = post(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "bad temperature"
    gateway.upstream.default = Scenario(status=503, error_body="<html>overloaded</html>")
    r = post(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES})
    assert r.status_code == 503
    err = r.json()["error"]
    assert "overloaded" in err["message"] and err["type"] == "upstream_error"
    rows = gateway.wait_rows(2)
    assert [x.status_code for x in rows] == [400, 503]
    assert all(x.error_type == "upstream_error" and x.total_tokens == 0 for x in rows)


def test_unreachable_upstream_is_502(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    from tests.support.seed import add_provider

    gw = make_gateway()
    pid = add_provider(engine, "dead", "http://127.0.0.1:9/v1")
    add_model(engine, pid, "dead-model")
    import time

    time.sleep(0.6)
    r = post(gw, {"model": "dead-model", "messages": MESSAGES})
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
    (row,) = gw.wait_rows(1)
    assert row.status_code == 502 and row.provider_name == "dead"


def test_timeout_is_504(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    from tests.support.seed import add_provider

    gw = make_gateway()
    pid = add_provider(engine, "slow", upstream.base_url, timeout_s=0.3)
    add_model(engine, pid, "slow-model")
    upstream.scenarios["slow-model"] = Scenario(delay_s=2.0)
    import time

    time.sleep(0.6)
    r = post(gw, {"model": "slow-model", "messages": MESSAGES})
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    (row,) = gw.wait_rows(1)
    assert row.status_code == 504


def test_explicit_provider_prefix(make_gateway, engine, upstream) -> None:  # type: ignore[no-untyped-def]
    from tests.support.seed import add_provider

    gw = make_gateway()
    other = add_provider(engine, "other", upstream.base_url, priority=10)
    add_model(engine, other, "gpt-4o-mini", upstream_name="other-upstream-name")
    import time

    time.sleep(0.6)
    # Unprefixed: the higher-priority provider wins.
    assert post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES}).status_code == 200
    assert upstream.chat_requests()[-1].body["model"] == "other-upstream-name"
    # Prefixed: exactly that provider.
    assert post(gw, {"model": "fake/gpt-4o-mini", "messages": MESSAGES}).status_code == 200
    assert upstream.chat_requests()[-1].body["model"] == "gpt-4o-mini"
    rows = gw.wait_rows(2)
    assert [x.provider_name for x in rows] == ["other", "fake"]


def test_models_list_respects_scope(gateway: Gateway) -> None:
    for path in ("/v1/models", "/models"):
        r = requests.get(gateway.url + path, headers=gateway.headers(), timeout=5)
        assert r.status_code == 200
        data = r.json()
        assert data["object"] == "list"
        assert {m["id"] for m in data["data"]} == {"gpt-4o-mini", "gpt-3.5-turbo"}
        assert all(m["owned_by"] == "fake" and m["object"] == "model" for m in data["data"])
    add_key(gateway.engine, "nx-only-35-key-00000000000000", models=["gpt-3.5-turbo"])
    import time

    time.sleep(0.6)
    r = requests.get(gateway.url + "/v1/models", headers={"X-API-Key": "nx-only-35-key-00000000000000"}, timeout=5)
    assert [m["id"] for m in r.json()["data"]] == ["gpt-3.5-turbo"]
    assert requests.get(gateway.url + "/v1/models", timeout=5).status_code == 401


def test_unknown_path_and_method_are_json(gateway: Gateway) -> None:
    r = requests.get(gateway.url + "/v1/nothing", headers=gateway.headers(), timeout=5)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.get(gateway.url + "/v1/chat/completions", headers=gateway.headers(), timeout=5)
    assert r.status_code == 405 and "error" in r.json()
