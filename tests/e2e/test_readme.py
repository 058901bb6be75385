"""The README stays true: its opening commands, its settings table, and its admin curl examples."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from shared.settings import Settings
from tests.support.nexus_process import REPO_ROOT, NexusProcess

README = (REPO_ROOT / "README.md").read_text()
EXAMPLE_BASE = "http://127.0.0.1:8000"
# Expected failures among the examples: a conversation nobody has had yet.
EXPECTED_STATUS = {"/stats/conversation/my-conversation-1": 404}


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _curl_commands(text: str) -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("curl "):
                commands.append(line.strip())
    return commands


def _method_and_path(command: str) -> tuple[str, str]:
    method = re.search(r"-X (\w+)", command)
    url = re.search(re.escape(EXAMPLE_BASE) + r"(/[^\s\"'?]*)", command)
    assert url, command
    return (method.group(1) if method else "GET"), url.group(1)


def test_readme_opens_with_the_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block
    assert first_block.group(1).strip().splitlines() == [
        "pip install -r requirements.txt && python run.py",
        "pip install -r requirements-dev.txt && python -m pytest",
    ]
    assert README.index("```bash") < README.index("\n## ")  # before any section


def test_readme_configuration_table_lists_every_setting() -> None:
    source = (REPO_ROOT / "shared" / "settings.py").read_text()
    names = set(re.findall(r"""get\(\s*"([A-Z][A-Z0-9_]+)\"""", source))
    assert {"DATABASE_URL", "ADMIN_TOKEN", "PROXY_PORT"} <= names
    table = _section("Configuration")
    missing = sorted(n for n in names if f"| `{n}` |" not in table)
    assert not missing, f"README configuration table lacks {missing}"


@pytest.mark.db
def test_readme_has_a_curl_example_for_every_admin_endpoint(settings: Settings) -> None:
    from admin_app import create_app

    app = create_app(settings)
    documented = [_method_and_path(c) for c in _curl_commands(_section("Admin API"))]
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("console."):
            continue  # the console's pages are HTML, described in "Web console"
        pattern = re.compile("^" + re.sub(r"<(?:[^:>]+:)?[^>]+>", "[^/]+", rule.rule) + "$")
        methods = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        if {"PUT", "PATCH"} <= methods:
            methods.discard("PATCH")  # documented as "PATCH works like PUT"
        for method in sorted(methods):
            if not any(m == method and pattern.match(p) for m, p in documented):
                missing.append(f"{method} {rule.rule}")
    assert not missing, f"README has no curl example for {missing}"


@pytest.mark.db
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_admin_examples_work_verbatim(nexus: NexusProcess) -> None:
    commands = _curl_commands(_section("Admin API"))
    assert len(commands) >= 20
    env = {**os.environ, "ADMIN_TOKEN": nexus.admin_token or ""}
    for command in commands:
        _method, path = _method_and_path(command)
        runnable = command.replace(EXAMPLE_BASE, nexus.admin_url) + " -sS -w '\\n%{http_code}'"
        result = subprocess.run(
            ["bash", "-c", runnable], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        body, _, status = result.stdout.rpartition("\n")
        expected = EXPECTED_STATUS.get(path)
        if expected is not None:
            assert int(status) == expected, f"{command}\n{status} {body}"
        else:
            assert int(status) < 400, f"{command}\n{status} {body}"
        assert "sk-test..." not in body and "my-key-123" not in body
