"""Provider secrets sealed with SECRET_KEY on disk, opened only by the proxy; data files private."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from shared.db import make_engine
from tests.support.fake_upstream import FakeUpstream
from tests.support.nexus_process import REPO_ROOT, RUN_PY, NexusProcess

pytestmark = pytest.mark.db

SERVER_KEY = "sk-upstream-at-rest-5e1f0c9a7b3d"
PROXY_PASSWORD = "proxy-pass-at-rest-8d2c"
FIRST_SECRET, SECOND_SECRET = "first-secret-key-for-tests", "second-secret-key-for-tests"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _configure(nx: NexusProcess, upstream: FakeUpstream) -> str:
    """A served provider, a disabled one with a proxy password, a model and a key; the key."""
    served = nx.admin("POST", "/providers", json={
        "name": "sealed", "server_url": upstream.base_url, "server_key": SERVER_KEY,
    })
    assert served.status_code == 201, served.text
    assert served.json()["server_key_hint"] == "…" + SERVER_KEY[-4:]
    proxied = nx.admin("POST", "/providers", json={
        "name": "behind-proxy", "server_url": "https://api.example.test/v1", "server_key": "sk-other",
        "enabled": False, "http_proxy": f"http://nexus:{PROXY_PASSWORD}@127.0.0.1:9",
    })
    assert proxied.status_code == 201, proxied.text
    assert proxied.json()["http_proxy"] == "http://nexus:***@127.0.0.1:9"
    model = nx.admin("POST", "/provider_models", json={"provider_id": served.json()["id"], "model_name": "gpt-4o-mini"})
    assert model.status_code == 201, model.text
    key = nx.admin("POST", "/keys", json={"name": "at-rest"})
    assert key.status_code == 201, key.text
    return str(key.json()["key"])


def _chat(nx: NexusProcess, key: str, deadline_s: float = 5.0) -> int:
    import requests

    deadline = time.monotonic() + deadline_s
    while True:  # the proxy picks the new config up within its poll interval
        reply = requests.post(
            nx.proxy_url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        if reply.status_code not in (401, 404) or time.monotonic() > deadline:
            return reply.status_code
        time.sleep(0.1)


def _stored(database_url: str) -> list[tuple[str, str | None]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT server_key, http_proxy FROM provider ORDER BY id"))]
    finally:
        engine.dispose()


def _reseal(nx: NexusProcess, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN_PY), "reseal-secrets"], cwd=REPO_ROOT, env={**nx.env, **env},
        capture_output=True, text=True, timeout=60,
    )


def test_sealed_at_rest_opened_by_the_proxy_and_resealed_under_a_new_key(
    tmp_path: Path, fresh_database_url: str, upstream: FakeUpstream
) -> None:
    env = {"SECRET_KEY": FIRST_SECRET, "ARCHIVE_MESSAGES": "1"}
    with NexusProcess(fresh_database_url, tmp_path / "nx", env=env) as nx:
        key = _configure(nx, upstream)
        assert _chat(nx, key) == 200
        assert upstream.chat_requests()[-1].headers["Authorization"] == f"Bearer {SERVER_KEY}"

        # On disk, while running (the WAL holds the newest pages): neither secret in clear.
        stored = _stored(fresh_database_url)
        assert all(value.startswith("enc:v1:") for row in stored for value in row if value)
        if fresh_database_url.startswith("sqlite:///"):
            db_file = Path(fresh_database_url[len("sqlite:///"):])
            files = [db_file] + [db_file.with_name(db_file.name + s) for s in ("-wal", "-shm")]
            assert all(f.exists() for f in files)
            for f in files:
                raw = f.read_bytes()
                assert SERVER_KEY.encode() not in raw and PROXY_PASSWORD.encode() not in raw, f
                assert _mode(f) == 0o600, f
            assert _mode(db_file.parent) == 0o700
        for logged in (nx.log_dir / "proxy.log", nx.log_dir / "admin.log"):
            assert SERVER_KEY not in logged.read_text() and PROXY_PASSWORD not in logged.read_text()

        # Archive and usage journal: files 0600, directories 0700.
        deadline = time.monotonic() + 5
        while not list(nx.messages_dir.rglob("*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        archived = list(nx.messages_dir.rglob("*.jsonl"))
        assert archived and all(_mode(f) == 0o600 for f in archived)
        assert _mode(nx.messages_dir) == 0o700 and all(_mode(f.parent) == 0o700 for f in archived)
        journal = [f for f in (nx.data_dir / "usage-journal").rglob("*") if f.is_file()]
        assert journal and all(_mode(f) == 0o600 for f in journal)
        assert _mode(nx.data_dir) == 0o700

    # A wrong key: nothing is changed, and the command says why.
    refused = _reseal(nx, SECRET_KEY=SECOND_SECRET, SECRET_KEY_FALLBACKS="")
    assert refused.returncode == 2 and "nothing was changed" in refused.stderr
    assert _stored(fresh_database_url) == stored

    # Rotation: seal under the second key, the first still opening; then only the second is needed.
    rotated = _reseal(nx, SECRET_KEY=SECOND_SECRET, SECRET_KEY_FALLBACKS=FIRST_SECRET)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.strip() == "2 provider(s) re-stored; every provider secret is now encrypted with SECRET_KEY"
    assert all(new != old for new, old in zip(_stored(fresh_database_url), stored, strict=True))
    seen = len(upstream.chat_requests())
    with NexusProcess(fresh_database_url, tmp_path / "nx2", env={"SECRET_KEY": SECOND_SECRET}) as nx2:
        assert _chat(nx2, key) == 200
        assert upstream.chat_requests()[seen].headers["Authorization"] == f"Bearer {SERVER_KEY}"

    # Without the key the provider cannot be opened: it is not served, and the log says why.
    with NexusProcess(fresh_database_url, tmp_path / "nx3", env={"SECRET_KEY": ""}) as nx3:
        assert _chat(nx3, key, deadline_s=0) == 404
        assert "provider sealed is not served: its secrets cannot be decrypted" in nx3.stderr
        assert len(upstream.chat_requests()) == seen + 1

    # Back to clear text (SECRET_KEY unset, the last key as a fallback).
    cleared = _reseal(nx, SECRET_KEY="", SECRET_KEY_FALLBACKS=SECOND_SECRET)
    assert cleared.returncode == 0, cleared.stderr
    assert _stored(fresh_database_url)[0] == (SERVER_KEY, None)
