"""The official openai SDK against run.py-started admin + proxy and a fake upstream.

Everything is configured through the admin REST API, as an operator would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
import requests

from tests.support.fake_upstream import FakeUpstream, Scenario
from tests.support.nexus_process import NexusProcess

pytestmark = pytest.mark.db

SERVER_KEY = "sk-e2e-upstream-secret-7781"
MESSAGES = [{"role": "user", "content": "Hello through the SDK"}]


@pytest.fixture
def setup(nexus_factory, upstream: FakeUpstream) -> tuple[NexusProcess, str]:  # type: ignore[no-untyped-def]
    nx = nexus_factory(env={"MAX_BODY_BYTES": "8192", "CONFIG_POLL_INTERVAL": "0.5"})
    r = nx.admin("POST", "/providers", json={"name": "fake", "server_url": upstream.base_url,
                                             "server_key": SERVER_KEY, "description": "fake upstream"})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    for name in ("gpt-4o-mini", "slow-model"):
        assert nx.admin("POST", "/provider_models", json={"provider_id": pid, "model_name": name,
                                                          "input_price": 0.15, "output_price": 0.6}).status_code == 201
    dead = nx.admin("POST", "/providers", json={"name": "dead", "server_url": "http://127.0.0.1:9/v1",
                                                "server_key": "sk-dead-0000"}).json()["id"]
    nx.admin("POST", "/provider_models", json={"provider_id": dead, "model_name": "dead-model"})
    slow = nx.admin("POST", "/providers", json={"name": "slowprov", "server_url": upstream.base_url,
                                                "server_key": "sk-slow-0000", "timeout_s": 0.5}).json()["id"]
    nx.admin("POST", "/provider_models", json={"provider_id": slow, "model_name": "timeout-model",
                                               "upstream_name": "slow-model"})
    upstream.scenarios["slow-model"] = Scenario(delay_s=3)
    key = nx.admin("POST", "/keys", json={"name": "sdk"}).json()["key"]
    wait_until_served(nx, key)
    return nx, key


def wait_until_served(nx: NexusProcess, key: str, model: str = "gpt-4o-mini", timeout: float = 5.0) -> float:
    """Seconds until the proxy lists `model` for `key` (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        r = requests.get(nx.proxy_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        if r.status_code == 200 and model in {m["id"] for m in r.json()["data"]}:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{model} not served within {timeout} s")


_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(nx: NexusProcess, key: str) -> openai.OpenAI:
    sdk = openai.OpenAI(base_url=nx.proxy_url + "/v1", api_key=key, max_retries=0, timeout=20)
    _clients.append(sdk)
    return sdk


def test_sdk_happy_paths(setup) -> None:  # type: ignore[no-untyped-def]
    nx, key = setup
    sdk = client(nx, key)
    models = {m.id: m.owned_by for m in sdk.models.list()}
    assert models == {"gpt-4o-mini": "fake", "slow-model": "fake", "dead-model": "dead", "timeout-model": "slowprov"}

    reply = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from the fake upstream, my friend."
    assert reply.usage is not None and reply.usage.total_tokens == 24

    chunks = list(sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert all(c.usage is None for c in chunks)

    chunks = list(sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 24 and chunks[-1].choices == []

    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES,
                                                        extra_headers={"X-Conversation-Id": "sdk-conv"})
    assert raw.headers["x-conversation-id"] == "sdk-conv" and raw.headers["x-request-id"].startswith("req_")

    # Stats on the admin agree with what was proxied.
    stats = wait_stats(nx, 4)
    assert stats["requests"] == 4 and stats["errors"] == 0
    assert stats["prompt_tokens"] == 4 * 17 and stats["completion_tokens"] == 4 * 7
    assert stats["by_provider"]["fake"]["requests"] == 4 and stats["by_model"]["gpt-4o-mini"]["total_tokens"] == 96
    conv = nx.admin("GET", "/stats/conversation/sdk-conv").json()
    assert conv["conversation_id"] == "sdk-conv" and conv["requests"] == 1 and conv["total_tokens"] == 24
    assert conv["models"] == ["gpt-4o-mini"]
    assert nx.admin("GET", "/stats/conversation/nope").status_code == 404


def wait_stats(nx: NexusProcess, n: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = nx.admin("GET", "/stats/total").json()
        if stats["requests"] >= n or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def test_sdk_error_statuses(setup) -> None:  # type: ignore[no-untyped-def]
    nx, key = setup
    with pytest.raises(openai.AuthenticationError) as e401:
        client(nx, "nx-not-a-key").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "Incorrect API key" in e401.value.message

    scoped = nx.admin("POST", "/keys", json={"name": "scoped", "models": ["slow-model"]}).json()["key"]
    wait_until_served(nx, scoped, model="slow-model")
    with pytest.raises(openai.PermissionDeniedError) as e403:
        client(nx, scoped).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "not allowed" in e403.value.message

    sdk = client(nx, key)
    with pytest.raises(openai.NotFoundError) as e404:
        sdk.chat.completions.create(model="gpt-9-ultra", messages=MESSAGES)
    assert "gpt-9-ultra" in e404.value.message

    cases = [
        (413, dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 20000}]), "exceeds"),
        (502, dict(model="dead-model", messages=MESSAGES), "unreachable"),
        (504, dict(model="timeout-model", messages=MESSAGES), "did not answer"),
    ]
    for status, kwargs, fragment in cases:
        with pytest.raises(openai.APIStatusError) as exc:
            sdk.chat.completions.create(**kwargs)
        assert exc.value.status_code == status
        assert fragment in exc.value.message


def test_admin_changes_reach_the_proxy_within_two_seconds(setup, upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    nx, key = setup
    created = nx.admin("POST", "/keys", json={"name": "to-revoke"}).json()
    victim = created["key"]
    wait_until_served(nx, victim)
    sdk = client(nx, victim)
    assert sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices
    assert nx.admin("DELETE", f"/keys/{created['id']}").status_code in (200, 204)
    revoked_at = time.monotonic()
    while True:
        try:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        except openai.AuthenticationError:
            break
        assert time.monotonic() - revoked_at < 2.0, "revoked key still accepted after 2 s"
        time.sleep(0.05)

    pid = nx.admin("GET", "/providers").json()[0]["id"]
    assert nx.admin("POST", "/provider_models", json={"provider_id": pid, "model_name": "brand-new"}).status_code == 201
    assert wait_until_served(nx, key, model="brand-new", timeout=2.0) < 2.0
    assert client(nx, key).chat.completions.create(model="brand-new", messages=MESSAGES).choices


def test_no_secret_in_logs(setup) -> None:  # type: ignore[no-untyped-def]
    nx, key = setup
    client(nx, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        client(nx, "nx-wrong-secret-value-123").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert nx.stop() == 0
    logs = "".join(p.read_text() for p in nx.log_dir.rglob("*.log*"))
    assert "access" in logs or "req_" in logs
    for secret in (key, SERVER_KEY, "nx-wrong-secret-value-123", nx.admin_token):
        assert secret not in logs
        assert secret not in nx.stdout + nx.stderr
