"""The directory several processes' Prometheus metrics share (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics_dir(path: Path) -> Path:
    """Empty `path` of a previous run's values, make it private, and point this process (and its children) at it.

    Must run before prometheus_client is imported: it picks its value store at import.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    return path
