"""Fixtures that run the real `python run.py` against the test database.

`nexus_factory(env=None, *, mode="all", admin_token=DEFAULT_ADMIN_TOKEN, start=True)`
returns a `NexusProcess` (see tests/support/nexus_process.py), started unless
start=False; every process it made is stopped at teardown. Processes made in one
test share the `database_url` database and get their own directories
(tmp_path/nexus-1, nexus-2, ...). `nexus` is one started process with an admin
token. Tests using them should be marked `@pytest.mark.db`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL, throwaway_postgres_database
from tests.support.nexus_process import DEFAULT_ADMIN_TOKEN, NexusProcess

NexusFactory = Callable[..., NexusProcess]


@pytest.fixture
def nexus_factory(tmp_path: Path, database_url: str) -> Iterator[NexusFactory]:
    """Make run.py processes on the test database; all are stopped at teardown."""
    made: list[NexusProcess] = []

    def make(
        env: Mapping[str, str] | None = None,
        *,
        mode: str = "all",
        admin_token: str | None = DEFAULT_ADMIN_TOKEN,
        start: bool = True,
    ) -> NexusProcess:
        proc = NexusProcess(
            database_url, tmp_path / f"nexus-{len(made) + 1}", mode=mode, admin_token=admin_token, env=env
        )
        made.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in made:
        proc.close()


@pytest.fixture
def fresh_database_url(tmp_path: Path) -> Iterator[str]:
    """A database nothing has touched (SQLite under tmp_path/first, or a new PostgreSQL one)."""
    if not PG_ADMIN_URL:
        yield f"sqlite:///{tmp_path / 'first' / 'nexusai.db'}"
        return
    with throwaway_postgres_database("nx_first_") as url:
        yield url


@pytest.fixture
def nexus(nexus_factory: NexusFactory) -> NexusProcess:
    """`python run.py` (admin + proxy) running with an admin token."""
    return nexus_factory()
