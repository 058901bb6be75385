"""The console over real HTTP: sign-in, cookie flags, CSRF, expiry, forms through the API's own code."""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from admin_app import create_app, db
from admin_app.console.session import installation_secret
from shared.settings import Settings
from tests.admin.conftest import ADMIN_TOKEN, AdminClient, Dump

pytestmark = pytest.mark.db

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PAGES = ("/", "/?days=30", "/?days=90", "/console/providers", "/console/providers/new", "/console/keys",
         "/console/keys/new", "/console/usage", "/console/audit", "/console/health")


class Browser:
    """A cookie-keeping client of one admin, as a browser without script would be."""

    def __init__(self, admin: AdminClient) -> None:
        self.base = admin.base_url
        self.http = requests.Session()

    def get(self, path: str, **kw: object) -> requests.Response:
        return self.http.get(self.base + path, allow_redirects=False, timeout=10, **kw)  # type: ignore[arg-type]

    def csrf(self, path: str = "/console/sign-in") -> str:
        page = self.get(path)
        match = CSRF.search(page.text)
        assert match, page.text
        return match.group(1)

    def post(self, path: str, data: dict[str, object], csrf: str | None = None) -> requests.Response:
        body = {"csrf_token": self.csrf() if csrf is None else csrf, **data}
        return self.http.post(self.base + path, data=body, allow_redirects=False, timeout=10)

    def sign_in(self, token: str = ADMIN_TOKEN) -> requests.Response:
        return self.post("/console/sign-in", {"token": token, "next": "/console/keys"})


@pytest.fixture
def console(start_admin: Callable[..., AdminClient], settings: Settings) -> tuple[Browser, AdminClient]:
    admin = start_admin(settings.with_overrides(admin_token=ADMIN_TOKEN), token=ADMIN_TOKEN)
    return Browser(admin), admin


def test_every_page_asks_for_sign_in_and_the_json_api_keeps_its_bearer(console: tuple[Browser, AdminClient]) -> None:
    browser, admin = console
    for path in PAGES:
        page = browser.get(path)
        assert page.status_code == 302 and page.headers["Location"].startswith("/console/sign-in?next="), path
    # The API is not opened by the console: no cookie, no bearer, no answer.
    assert requests.get(admin.base_url + "/keys", timeout=5).status_code == 401
    assert browser.get("/console/static/console.css").status_code == 200  # the sign-in page's own look


def test_sign_in_sets_a_strict_httponly_cookie_and_every_page_renders(console: tuple[Browser, AdminClient]) -> None:
    browser, admin = console
    wrong = browser.sign_in("not-the-token")
    assert wrong.status_code == 401 and "not the admin token" in wrong.text
    signed = browser.sign_in()
    assert signed.status_code == 302 and signed.headers["Location"] == "/console/keys"
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; HTTPS requests get Secure
    assert ADMIN_TOKEN not in cookie
    for path in PAGES:
        page = browser.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert page.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["Cache-Control"] == "no-store"
        assert ADMIN_TOKEN not in page.text


def test_over_https_the_session_cookie_is_secure(settings: Settings) -> None:
    app = create_app(settings.with_overrides(admin_token=ADMIN_TOKEN))
    client = app.test_client()
    page = client.get("/console/sign-in", base_url="https://admin.example.test")
    token = CSRF.search(page.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    signed = client.post("/console/sign-in", data={"csrf_token": token, "token": ADMIN_TOKEN},
                         base_url="https://admin.example.test")
    assert signed.status_code == 302
    assert "Secure" in signed.headers["Set-Cookie"] and "HttpOnly" in signed.headers["Set-Cookie"]
    with app.app_context():
        db.engine.dispose()


def test_a_form_without_the_session_csrf_token_is_refused_and_changes_nothing(
    console: tuple[Browser, AdminClient], dump_db: Callable[[], Dump]
) -> None:
    browser, _ = console
    assert browser.sign_in().status_code == 302
    before = dump_db()
    form = {"name": "forged", "kind": "openai", "server_url": "http://127.0.0.1:9/v1", "enabled": "true"}
    for token in ("", "forged-token"):
        refused = browser.post("/console/providers/new", form, csrf=token)
        assert refused.status_code == 403 and "could not be verified" in refused.text
        assert refused.headers["Content-Type"].startswith("text/html")
    # Another session's token does not do either.
    other = Browser.__new__(Browser)
    other.base, other.http = browser.base, requests.Session()
    assert browser.post("/console/providers/new", form, csrf=other.csrf()).status_code == 403
    assert browser.post("/console/sign-out", {}, csrf="nope").status_code == 403
    assert dump_db() == before


def test_sign_in_itself_needs_the_csrf_token(console: tuple[Browser, AdminClient]) -> None:
    browser, _ = console
    refused = browser.http.post(browser.base + "/console/sign-in", data={"token": ADMIN_TOKEN},
                                allow_redirects=False, timeout=10)
    assert refused.status_code == 403
    assert browser.get("/console/keys").status_code == 302


def test_a_session_expires_after_the_idle_time(start_admin: Callable[..., AdminClient], settings: Settings) -> None:
    # The cookie's timestamp has one-second resolution: a 3 s session, viewed every 1.5 s, then left.
    admin = start_admin(settings.with_overrides(admin_token=ADMIN_TOKEN, console_session_s=3.0), token=ADMIN_TOKEN)
    browser = Browser(admin)
    assert browser.sign_in().status_code == 302
    for _ in range(3):  # 4.5 s in all, longer than the session: each page view renews it
        time.sleep(1.5)
        assert browser.get("/console/keys").status_code == 200
    time.sleep(4.5)
    expired = browser.get("/console/keys")
    assert expired.status_code == 302 and expired.headers["Location"].startswith("/console/sign-in")


def test_changing_the_admin_token_signs_every_session_out(
    start_admin: Callable[..., AdminClient], settings: Settings
) -> None:
    first = start_admin(settings.with_overrides(admin_token=ADMIN_TOKEN), token=ADMIN_TOKEN)
    browser = Browser(first)
    assert browser.sign_in().status_code == 302
    cookies = browser.http.cookies.copy()
    second = start_admin(settings.with_overrides(admin_token="another-admin-token-31"), token="another-admin-token-31")
    moved = Browser(second)
    moved.http.cookies = cookies
    assert moved.get("/console/keys").status_code == 302


def test_without_an_admin_token_no_sign_in_but_forms_still_need_csrf(admin: AdminClient) -> None:
    browser = Browser(admin)
    assert browser.get("/console/keys").status_code == 200
    assert browser.get("/console/sign-in").status_code == 302
    assert browser.post("/console/keys/new", {"name": "x"}, csrf="bad").status_code == 403
    created = browser.post("/console/keys/new", {"name": "no-token-key", "enabled": "true"},
                           csrf=browser.csrf("/console/keys/new"))
    assert created.status_code == 200 and 'id="issued-key"' in created.text
    audit = admin.ok("GET", "/audit?resource=key")
    assert audit[0]["actor"] == "console"


def test_forms_report_the_apis_field_errors_and_keep_what_was_typed_but_secrets(
    console: tuple[Browser, AdminClient], dump_db: Callable[[], Dump]
) -> None:
    browser, admin = console
    browser.sign_in()
    before = dump_db()
    refused = browser.post("/console/providers/new", {
        "name": "typed-name", "kind": "openai", "server_url": "not a url", "server_key": "sk-typed-secret-1234",
        "timeout_s": "soon", "enabled": "true",
    })
    assert refused.status_code == 400
    assert 'id="server_url-error"' in refused.text and 'id="timeout_s-error"' in refused.text
    assert 'value="typed-name"' in refused.text and "sk-typed-secret-1234" not in refused.text
    assert dump_db() == before
    # The same input through the JSON API is refused the same way.
    api = admin.post("/providers", json={"name": "typed-name", "server_url": "not a url", "timeout_s": "soon"})
    assert api.status_code == 400 and {"server_url", "timeout_s"} <= set(api.json()["error"]["details"])


def test_console_errors_are_pages_and_api_errors_stay_json(console: tuple[Browser, AdminClient]) -> None:
    browser, admin = console
    browser.sign_in()
    for path, status in (("/console/keys/999", 404), ("/console/no-such-page", 404), ("/?days=5", 400),
                         ("/console/usage?status=maybe", 400)):
        page = browser.get(path)
        assert page.status_code == status, path
        assert page.headers["Content-Type"].startswith("text/html") and "NexusAI console" in page.text
    assert admin.get("/keys/999").headers["Content-Type"].startswith("application/json")
    assert admin.get("/no-such-endpoint").json()["error"]["code"] == "not_found"


def test_a_key_made_in_the_console_is_shown_once_and_rotation_replaces_it(console: tuple[Browser, AdminClient]) -> None:
    browser, admin = console
    browser.sign_in()
    created = browser.post("/console/keys/new", {"name": "team-a", "rpm": "60", "token_quota": "1000",
                                                 "budget_usd": "2.50", "quota_period": "daily", "enabled": "true"})
    assert created.status_code == 200 and created.headers["Cache-Control"] == "no-store"
    value = re.search(r'id="issued-key" type="text" value="([^"]+)"', created.text).group(1)  # type: ignore[union-attr]
    (row,) = admin.ok("GET", "/keys")
    assert row["key_hint"] == "…" + value[-4:] and row["rpm"] == 60 and row["budget_usd"] == 2.5
    page = browser.get(f"/console/keys/{row['id']}")
    assert page.status_code == 200 and value not in page.text and "of 1,000" in page.text
    rotated = browser.post(f"/console/keys/{row['id']}/rotate", {})
    new_value = re.search(r'id="issued-key" type="text" value="([^"]+)"', rotated.text).group(1)  # type: ignore[union-attr]
    assert new_value != value and admin.ok("GET", f"/keys/{row['id']}")["key_hint"] == "…" + new_value[-4:]
    assert [e["action"] for e in admin.ok("GET", "/audit?resource=key")][:2] == ["rotate", "create"]


def test_the_provider_form_registers_gemini_and_azure_with_their_api_version(
    console: tuple[Browser, AdminClient]
) -> None:
    browser, admin = console
    browser.sign_in()
    form = browser.get("/console/providers/new").text
    for kind in ("openai", "anthropic", "gemini", "azure"):
        assert f'<option value="{kind}"' in form
    refused = browser.post("/console/providers/new", {"name": "azure-east", "kind": "azure", "enabled": "true",
                                                      "server_url": "https://east.openai.azure.com",
                                                      "api_version": "2024-10-21; drop"})
    assert refused.status_code == 400 and 'id="api_version-error"' in refused.text
    for name, kind, url, version in (("azure-east", "azure", "https://east.openai.azure.com", "2024-10-21"),
                                     ("gemini", "gemini", "https://generativelanguage.googleapis.com", "")):
        made = browser.post("/console/providers/new", {"name": name, "kind": kind, "server_url": url,
                                                       "server_key": "k-" + name + "-secret", "api_version": version,
                                                       "apis__present": "1", "enabled": "true"})
        assert made.status_code == 302, made.text
    by_name = {p["name"]: p for p in admin.ok("GET", "/providers")}
    assert by_name["azure-east"]["kind"] == "azure" and by_name["azure-east"]["api_version"] == "2024-10-21"
    assert by_name["gemini"]["kind"] == "gemini" and by_name["gemini"]["api_version"] is None
    assert by_name["gemini"]["apis"] == []  # everything reaches Gemini translated


def test_the_session_secret_is_made_once_private_and_shared(tmp_path: Path) -> None:
    first = installation_secret(tmp_path / "data")
    assert len(first) == 32 and installation_secret(tmp_path / "data") == first
    path = tmp_path / "data" / "console-session.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.write_bytes(b"short")
    again = installation_secret(tmp_path / "data")
    assert len(again) == 32 and again != first
    assert [p.name for p in path.parent.iterdir()] == ["console-session.key"]  # no staging file left
