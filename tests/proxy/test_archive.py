"""The message archive: one line per exchange, streams re-assembled, no secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.proxy.conftest import CLIENT_KEY, SERVER_KEY
from tests.support.seed import add_key

pytestmark = pytest.mark.db

MESSAGES = [{"role": "user", "content": "Archive this."}]


def _lines(root: Path) -> list[dict]:
    out = []
    for path in sorted(root.rglob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines())
    return out


def test_archive_holds_each_exchange_without_secrets(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(archive_messages=True)
    for stream in (False, True):
        r = requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), timeout=10,
                          json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream,
                                "conversation_id": "conv-archive"})
        assert r.status_code == 200
        r.content  # noqa: B018 - drain the stream
    gw.proxy.stop()  # flushes the writers
    root = gw.settings.messages_dir
    files = list(root.rglob("*.jsonl"))
    assert len(files) == 1 and files[0].name == "conv-archive.jsonl"
    assert files[0].parent.name.count("-") == 2  # messages/YYYY-MM-DD/
    entries = _lines(root)
    assert len(entries) == 2
    for entry, stream in zip(entries, (False, True), strict=True):
        assert entry["stream"] is stream
        assert entry["request"]["messages"] == MESSAGES
        assert entry["reply"]["content"] == "Hello from the fake upstream, my friend."
        assert entry["usage"]["total_tokens"] == 24
        assert entry["model"] == "gpt-4o-mini" and entry["provider"] == "fake"
        assert entry["latency_ms"] > 0
    everything = "".join(p.read_text() for p in root.rglob("*") if p.is_file())
    everything += "".join(p.read_text() for p in gw.settings.log_dir.rglob("*") if p.is_file())
    assert CLIENT_KEY not in everything and SERVER_KEY not in everything


def test_archive_is_off_by_default_and_per_key_override(make_gateway, engine) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway()
    archived_id = add_key(engine, "nx-archived-key-00000000000000", archive_messages=True)
    import time

    time.sleep(0.6)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert requests.post(gw.url + "/v1/chat/completions", headers=gw.headers(), json=body, timeout=10).ok
    assert requests.post(gw.url + "/v1/chat/completions", json=body, timeout=10,
                         headers={"X-API-Key": "nx-archived-key-00000000000000"}).ok
    gw.proxy.stop()
    entries = _lines(gw.settings.messages_dir)
    assert len(entries) == 1 and entries[0]["key_id"] == archived_id
