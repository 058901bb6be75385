"""`POST /admin/providers/{id}/test`: one tiny request to one provider, for the operator only, recorded."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.proxy.conftest import SERVER_KEY, Gateway
from tests.support.fake_upstream import Scenario
from tests.support.seed import add_model, add_provider

pytestmark = pytest.mark.db

ADMIN_TOKEN = "operator-token-for-tests-55"


def _test(gw: Gateway, provider_id: int | str, token: str | None = ADMIN_TOKEN, **query: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{gw.url}/admin/providers/{provider_id}/test", headers=headers, params=query, timeout=10)


def test_a_provider_test_sends_one_small_chat_to_that_provider_and_is_recorded(make_gateway: Any) -> None:
    gw: Gateway = make_gateway(admin_token=ADMIN_TOKEN)
    gw.upstream.default = Scenario(reply="OK", prompt_tokens=14, completion_tokens=1)
    answer = _test(gw, gw.provider_id)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ok"] is True and body["status"] == 200 and body["reply"] == "OK"
    assert body["model"] == "gpt-3.5-turbo" and body["provider"] == "fake"  # the first by name, unless asked
    seen = gw.upstream.chat_requests()[-1]
    assert seen.headers["Authorization"] == f"Bearer {SERVER_KEY}"
    assert seen.body["model"] == "gpt-3.5-turbo" and len(seen.body["messages"]) == 1
    (row,) = gw.wait_rows(1)
    assert row.key_id is None and row.request_id == body["request_id"] and row.prompt_tokens == 14
    assert str(row.cost_usd.normalize()) == body["cost_usd"] != "0"
    assert _test(gw, gw.provider_id, model="gpt-4o-mini").json()["model"] == "gpt-4o-mini"


def test_an_upstream_refusal_is_reported_not_raised(make_gateway: Any) -> None:
    gw: Gateway = make_gateway(admin_token=ADMIN_TOKEN)
    gw.upstream.default = Scenario(status=401, error_body={"error": {"message": "Incorrect API key provided",
                                                                     "type": "invalid_request_error"}})
    body = _test(gw, gw.provider_id).json()
    assert body["ok"] is False and body["status"] == 401 and "Incorrect API key" in body["error"]


def test_only_the_operator_may_test_and_unknown_or_unserved_providers_are_404(make_gateway: Any, engine: Any) -> None:
    gw: Gateway = make_gateway(admin_token=ADMIN_TOKEN)
    assert _test(gw, gw.provider_id, token=None).status_code == 401
    assert _test(gw, gw.provider_id, token="wrong").status_code == 401
    assert _test(gw, gw.provider_id, token=gw.key).status_code == 401  # a client key is not the operator's
    assert not gw.upstream.chat_requests()
    disabled = add_provider(engine, "off", gw.upstream.base_url, enabled=False)
    add_model(engine, disabled, "gpt-4o-mini")
    gw.wait_config()
    for provider_id in (disabled, 999, "abc"):
        missing = _test(gw, provider_id)
        assert missing.status_code == 404 and missing.json()["ok"] is False
    assert _test(gw, gw.provider_id, model="no-such-model").status_code == 404
    assert not gw.upstream.chat_requests()
