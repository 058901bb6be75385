"""Settings read from the environment: defaults, validation, normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings, SettingsError


def test_defaults_follow_spec(tmp_path: Path) -> None:
    s = Settings.from_env({}, root=tmp_path)
    assert (s.admin_host, s.admin_port, s.proxy_host, s.proxy_port) == ("127.0.0.1", 8000, "0.0.0.0", 5231)
    assert s.database_url == f"sqlite:///{tmp_path / 'data' / 'nexusai.db'}"
    assert s.admin_token is None and s.archive_messages is False and s.log_level == "INFO"
    assert (s.data_dir, s.log_dir, s.messages_dir) == (tmp_path / "data", tmp_path / "logs", tmp_path / "messages")


def test_postgres_url_uses_psycopg3_and_sqlite_is_relative_to_root(tmp_path: Path) -> None:
    pg = Settings.from_env({"DATABASE_URL": "postgresql://u:p@db:5432/nx"}, root=tmp_path)
    assert pg.database_url == "postgresql+psycopg://u:p@db:5432/nx"
    lite = Settings.from_env({"DATABASE_URL": "sqlite:///var/x.db"}, root=tmp_path)
    assert lite.database_url == f"sqlite:///{tmp_path / 'var' / 'x.db'}"


@pytest.mark.parametrize("raw", ["  ", "\t"])
def test_blank_admin_token_is_no_token(tmp_path: Path, raw: str) -> None:
    # A blank token could never match a presented one, yet would pass the "exposed admin" check.
    assert Settings.from_env({"ADMIN_TOKEN": raw}, root=tmp_path).admin_token is None


def test_padded_admin_token_is_stripped(tmp_path: Path) -> None:
    assert Settings.from_env({"ADMIN_TOKEN": " s3cret \n"}, root=tmp_path).admin_token == "s3cret"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ADMIN_PORT": "70000"}, "ADMIN_PORT must be between 0 and 65535"),
        ({"PROXY_PORT": "x"}, "PROXY_PORT must be an integer"),
        ({"ARCHIVE_MESSAGES": "maybe"}, "ARCHIVE_MESSAGES must be a boolean"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be"),
        ({"CONFIG_POLL_INTERVAL": "0"}, "CONFIG_POLL_INTERVAL must be > 0"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env, root=tmp_path)


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("PROXY_PORT=6000\nADMIN_PORT=6001\n")
    monkeypatch.setenv("ADMIN_PORT", "7001")
    monkeypatch.delenv("PROXY_PORT", raising=False)
    s = Settings.from_env(root=tmp_path)
    assert (s.proxy_port, s.admin_port) == (6000, 7001)
