"""Screenshots of every console page at 1280x800 and 390x844 for docs/console/ (run by hand).

    python -m tests.e2e.console_screenshots            # writes docs/console/*.png
    python -m tests.e2e.console_screenshots --out /tmp/shots

Starts `python run.py` on a new SQLite database in a temporary directory, a fake
upstream, registers providers, models and keys through the admin API, sends real
requests through the proxy, adds 30 days of plausible usage history straight into the
database (so the charts have a shape), then signs in with Debian's Chromium and
photographs each page. Nothing here leaves loopback.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.models import UsageRecord
from tests.support.browser import DESKTOP, PHONE, chromium
from tests.support.fake_upstream import FakeUpstream
from tests.support.nexus_process import DEFAULT_ADMIN_TOKEN, REPO_ROOT, NexusProcess

OUT = REPO_ROOT / "docs" / "console"
MODELS = {"gpt-4o": ("2.50", "10.00"), "gpt-4o-mini": ("0.15", "0.60"), "claude-sonnet-4": ("3.00", "15.00"),
          "gemini-2.5-flash": ("0.30", "2.50")}
PAGES = (  # (file name, path or action, title)
    ("sign-in", "/console/sign-in", "Sign-in"),
    ("dashboard", "/?days=30", "Dashboard (30 days)"),
    ("providers", "/console/providers", "Providers"),
    ("provider", "/console/providers/1", "A provider and its models"),
    ("keys", "/console/keys", "Keys"),
    ("key", "/console/keys/1", "A key: usage, quota, limits"),
    ("key-created", "create-key", "A new key, shown once"),
    ("usage", "/console/usage", "Usage records"),
    ("audit", "/console/audit", "Audit log"),
    ("health", "/console/health", "Provider health"),
    ("error", "/console/keys/999", "An error page"),
)


def _configure(nx: NexusProcess, upstream: FakeUpstream) -> list[str]:
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = nx.admin("POST", path, json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    openai_p = post("/providers", {"name": "openai", "server_url": upstream.base_url, "server_key": "sk-shot-0001",
                                   "description": "OpenAI official API", "priority": 10})
    anthropic_p = post("/providers", {"name": "anthropic", "kind": "anthropic", "server_url": upstream.base_url[:-3],
                                      "server_key": "sk-ant-shot-0002"})
    gemini_p = post("/providers", {"name": "gemini", "kind": "gemini", "server_url": "https://generativelanguage.googleapis.com",
                                   "server_key": "AIza-shot-0003", "enabled": False})
    for model, provider in (("gpt-4o", openai_p), ("gpt-4o-mini", openai_p), ("claude-sonnet-4", anthropic_p),
                            ("gemini-2.5-flash", gemini_p)):
        price_in, price_out = MODELS[model]
        post("/provider_models", {"provider_id": provider["id"], "model_name": model,
                                  "input_price": price_in, "output_price": price_out})
    keys = [
        post("/keys", {"name": "web-app", "rpm": 600, "token_quota": 5_000_000, "quota_period": "monthly",
                       "budget_usd": 50})["key"],
        post("/keys", {"name": "data-team", "provider_ids": [openai_p["id"]], "tpm": 200_000})["key"],
        post("/keys", {"name": "ci-bot", "models": ["gpt-4o-mini"], "max_concurrency": 4})["key"],
    ]
    return [str(k) for k in keys]


def _traffic(nx: NexusProcess, keys: list[str]) -> None:
    deadline = time.monotonic() + 10
    while True:  # the proxy loads new keys within its config poll interval
        try:
            openai.OpenAI(base_url=nx.proxy_url + "/v1", api_key=keys[-1], max_retries=0).models.list()
            break
        except openai.AuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for i in range(24):
        client = openai.OpenAI(base_url=nx.proxy_url + "/v1", api_key=keys[i % 3], max_retries=0, timeout=10)
        model = ("gpt-4o-mini", "gpt-4o", "gpt-4o-mini")[i % 3]
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"hello {i}"}])


def _history(database_url: str, days: int = 30, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    rows = []
    for day in range(days, 0, -1):
        volume = int(120 + 90 * rng.random() + (40 if (now - timedelta(days=day)).weekday() < 5 else -60))
        for n in range(volume):
            model = rng.choices(list(MODELS), weights=(4, 9, 3, 1))[0]
            price_in, price_out = (Decimal(p) for p in MODELS[model])
            prompt, completion = rng.randint(40, 2400), rng.randint(10, 900)
            failed = rng.random() < 0.03
            rows.append(UsageRecord(
                request_id=f"hist-{day}-{n}", key_id=rng.choice((1, 1, 2, 3)),
                provider_id={"claude-sonnet-4": 2, "gemini-2.5-flash": 3}.get(model, 1),
                provider_name={"claude-sonnet-4": "anthropic", "gemini-2.5-flash": "gemini"}.get(model, "openai"),
                model=model, upstream_model=model, conversation_id=f"conv-{day}-{n // 3}", api="chat",
                prompt_tokens=0 if failed else prompt, completion_tokens=0 if failed else completion,
                total_tokens=0 if failed else prompt + completion,
                cost_usd=Decimal(0) if failed else (price_in * prompt + price_out * completion) / 1_000_000,
                latency_ms=round(rng.lognormvariate(6.4, 0.5), 1),
                status_code=rng.choice((429, 502)) if failed else 200,
                error_type="upstream_error" if failed else None,
                created_at=now - timedelta(days=day, seconds=rng.randint(0, 86_399)),
            ))
    engine = make_engine(database_url)
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
    engine.dispose()


def capture(out: Path) -> list[Path]:
    """Run everything and write the PNGs; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'data' / 'nexusai.db'}"
        upstream = FakeUpstream().start()
        try:
            with NexusProcess(url, Path(tmp) / "nx") as nx, chromium() as browser:
                keys = _configure(nx, upstream)
                _traffic(nx, keys)
                _history(url)
                # The live traffic's usage rows, and a health report from the proxy (every 5 s).
                deadline = time.monotonic() + 12
                while time.monotonic() < deadline and not nx.admin("GET", "/providers/1/health").json()["instances"]:
                    time.sleep(0.5)
                for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                    context = browser.new_context(viewport=viewport, device_scale_factor=1,
                                                  is_mobile=size_name == "phone")
                    page = context.new_page()
                    for name, target, _title in PAGES:
                        if target == "create-key":
                            page.goto(nx.admin_url + "/console/keys/new")
                            page.get_by_label("Name", exact=True).fill("mobile-app")
                            page.get_by_label("Requests per minute").fill("120")
                            page.get_by_role("button", name="Create key").click()
                        else:
                            page.goto(nx.admin_url + target)
                        path = out / f"{name}-{size_name}.png"
                        page.screenshot(path=str(path), full_page=True)
                        written.append(path)
                        if name == "sign-in":
                            page.get_by_label("Admin token").fill(DEFAULT_ADMIN_TOKEN)
                            page.get_by_role("button", name="Sign in").click()
                            page.wait_for_load_state()
                    context.close()
        finally:
            upstream.stop()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    for path in capture(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
