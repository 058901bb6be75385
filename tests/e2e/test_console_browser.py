"""The console in a real browser (Debian's Chromium via Playwright) against a real `python run.py`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.browser import DESKTOP, PHONE, chromium
from tests.support.fake_upstream import FakeUpstream
from tests.support.nexus_process import DEFAULT_ADMIN_TOKEN, NexusProcess

pytestmark = pytest.mark.db

SERVER_KEY = "sk-console-upstream-4d9e2a"
POLL_S = 0.2


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _until(check: Any, timeout: float = 8.0, page: Any = None) -> Any:
    """Poll `check` (reloading `page` between tries) until it is truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(POLL_S)
        if page is not None:
            page.reload()


def _chat(nx: NexusProcess, key: str) -> int:
    client = openai.OpenAI(base_url=nx.proxy_url + "/v1", api_key=key, max_retries=0, timeout=10)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def _served_within(nx: NexusProcess, key: str, status: int, timeout: float = 4.0) -> bool:
    return bool(_until(lambda: _chat(nx, key) == status, timeout))


def _sign_in(page: Any, nx: NexusProcess) -> None:
    page.goto(nx.admin_url + "/")
    assert "/console/sign-in" in page.url
    page.get_by_label("Admin token").fill(DEFAULT_ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(nx.admin_url + "/")


def test_an_operator_runs_the_gateway_from_the_console(
    tmp_path: Path, fresh_database_url: str, upstream: FakeUpstream, browser: Any
) -> None:
    with NexusProcess(fresh_database_url, tmp_path / "nx") as nx:
        context = browser.new_context(viewport=DESKTOP)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=nx.admin_url)
        context.set_default_timeout(5000)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        _sign_in(page, nx)
        assert page.get_by_role("heading", name="Dashboard").is_visible()

        # A provider, then a model on it.
        page.get_by_role("link", name="Providers").click()
        page.get_by_role("link", name="New provider").click()
        page.get_by_label("Name", exact=True).fill("fake-openai")
        page.get_by_label("Server URL").fill(upstream.base_url)
        page.get_by_label("Server key").fill(SERVER_KEY)
        page.get_by_role("button", name="Create provider").click()
        assert page.get_by_text("Provider created.").is_visible()
        page.get_by_label("Model name").fill("gpt-4o-mini")
        page.get_by_label("Input price ($ per 1M tokens)").fill("1.5")
        page.get_by_label("Output price ($ per 1M tokens)").fill("6")
        page.get_by_role("button", name="Add model").click()
        assert page.get_by_text("Provider model added.").is_visible()
        assert page.get_by_role("link", name="gpt-4o-mini").is_visible()

        # Test it: one tiny request, sent by the proxy (which holds the decrypted key).
        def tested() -> bool:
            page.get_by_role("button", name="Test").click()
            return "Test passed" in page.locator("#test-result").inner_text()
        assert _until(tested), page.locator("#test-result").inner_text()
        assert "HTTP 200" in page.locator("#test-result").inner_text()
        assert upstream.chat_requests()[-1].headers["Authorization"] == f"Bearer {SERVER_KEY}"

        # A key, read once from the page that creates it (and copied with its button).
        page.get_by_role("link", name="Keys").click()
        page.get_by_role("link", name="New key").click()
        page.get_by_label("Name", exact=True).fill("team-a")
        page.get_by_label("Requests per minute").fill("100")
        page.get_by_role("button", name="Create key").click()
        assert page.get_by_text("shown this once").is_visible()
        key = page.get_by_label("Key", exact=True).input_value()
        assert key.startswith("nx-")
        page.get_by_role("button", name="Copy").click()
        assert _until(lambda: page.get_by_text("Copied").is_visible())
        assert page.evaluate("navigator.clipboard.readText()") == key
        page.get_by_role("link", name="Done").click()
        assert key not in page.content()  # never shown again

        # Traffic through the proxy, seen in the dashboard's numbers and the usage table.
        assert _served_within(nx, key, 200)
        assert upstream.chat_requests()[-1].headers["Authorization"] == f"Bearer {SERVER_KEY}"
        page.get_by_role("link", name="Dashboard").click()
        assert _until(lambda: page.locator("[data-figure=requests]").inner_text() == "2", page=page)
        totals = nx.admin("GET", "/stats/total").json()  # the JSON API's figures, from the same report code
        assert totals["requests"] == 2 and totals["total_tokens"] > 0
        assert page.locator("[data-figure=tokens]").inner_text() == f"{totals['total_tokens']:,}"
        cost = Decimal(totals["cost_usd_exact"])
        assert cost > 0
        assert page.locator("[data-figure=cost]").inner_text() == "$" + format(
            cost.quantize(Decimal("0.000001")).normalize(), "f")
        assert page.get_by_role("cell", name="team-a").is_visible()
        assert page.get_by_role("cell", name="(provider tests)").is_visible()
        page.get_by_role("link", name="Usage").click()
        row = page.locator("table.records tbody tr").first
        assert "gpt-4o-mini" in row.inner_text() and "200" in row.inner_text() and "team-a" in row.inner_text()
        page.get_by_label("Status").select_option("error")
        page.get_by_role("button", name="Filter").click()
        assert page.get_by_text("No records match.").is_visible()

        # Rotate: the old value stops working, the new one works; then disable it.
        page.get_by_role("link", name="Keys").click()
        page.get_by_role("link", name="team-a").click()
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Rotate").click()
        rotated = page.get_by_label("Key", exact=True).input_value()
        assert rotated != key
        assert _served_within(nx, key, 401) and _served_within(nx, rotated, 200)
        page.get_by_role("link", name="Done").click()
        page.get_by_role("button", name="Disable").click()
        assert page.get_by_text("This key is disabled").is_visible()
        assert _served_within(nx, rotated, 401)

        assert not errors, errors  # no script error, no failed load, on any page so far
        # A form whose CSRF token was tampered with is refused, and nothing changes.
        page.get_by_role("link", name="Providers").click()
        page.get_by_role("link", name="New provider").click()
        page.get_by_label("Name", exact=True).fill("forged")
        page.get_by_label("Server URL").fill(upstream.base_url)
        page.evaluate("document.querySelector('main input[name=csrf_token]').value = 'forged'")
        page.get_by_role("button", name="Create provider").click()
        assert page.get_by_role("heading", name="Not allowed").is_visible()
        assert [p["name"] for p in nx.admin("GET", "/providers").json()] == ["fake-openai"]
        assert errors == ["Failed to load resource: the server responded with a status of 403 (FORBIDDEN)"]
        errors.clear()

        # Audit trail, health, and signing out.
        page.get_by_role("link", name="Audit log").click()
        assert page.get_by_role("cell", name="console").first.is_visible()
        page.get_by_role("link", name="Health").click()
        assert page.get_by_role("link", name="fake-openai").is_visible()
        page.get_by_role("button", name="Sign out").click()
        page.goto(nx.admin_url + "/console/keys")
        assert "/console/sign-in" in page.url
        assert not errors, errors
        context.close()


def test_a_console_session_expires_and_the_phone_layout_has_no_sideways_scroll(
    tmp_path: Path, fresh_database_url: str, browser: Any
) -> None:
    with NexusProcess(fresh_database_url, tmp_path / "nx", env={"CONSOLE_SESSION_S": "3"}) as nx:
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        page = context.new_page()
        _sign_in(page, nx)
        for path in ("/", "/console/providers", "/console/keys/new", "/console/usage", "/console/audit"):
            page.goto(nx.admin_url + path)
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, (path, overflow)
        time.sleep(4.5)  # the cookie's timestamp has one-second resolution
        page.goto(nx.admin_url + "/console/keys")
        assert "/console/sign-in" in page.url and "next=" in page.url
        context.close()
