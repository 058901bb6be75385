"""The guardrails `.ci/run` runs catch what they are for: a layer-breaking import, a type error.

Each test copies the three packages and pyproject.toml into a temporary directory, breaks one
rule there, and runs the same command `.ci/run` runs; the real tree must pass it unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("admin_app", "proxy_app", "shared")


def _copy(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
                               "PYTHONPATH": str(cwd), "HOME": str(cwd)})


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_the_tree_keeps_its_layer_contracts() -> None:
    result = _run(ROOT, "lint-imports", "--no-cache")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "broken" in result.stdout and " 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("proxy_app/backs/openai.py", "import proxy_app.fronts.chat  # noqa\n", "The proxy's layers"),
    ("proxy_app/fronts/models.py", "import proxy_app.transport.http  # noqa\n", "Fronts never reach the upstreams"),
    ("proxy_app/transport/http.py", "import proxy_app.exchange.runner  # noqa\n", "The proxy's layers"),
    ("shared/db.py", "import aiohttp  # noqa\n", "shared/ imports neither web framework"),
    ("admin_app/stats.py", "import proxy_app.config  # noqa\n", "The two apps never import each other"),
])
def test_an_import_across_a_layer_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy(tmp_path)
    _append(tree / module, line)
    result = _run(tree, "lint-imports", "--no-cache")
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout


def test_a_type_error_fails_mypy(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    _append(tree / "proxy_app/hub.py", "\n\ndef _broken() -> int:\n    return 'not an int'\n")
    result = _run(tree, sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / ".mypy_cache"),
                  "proxy_app", "shared")
    assert result.returncode != 0
    assert "proxy_app/hub.py" in result.stdout and "Incompatible return value type" in result.stdout
