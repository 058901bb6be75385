"""The admin API's fuzzing leg: schemathesis against a live admin, every check, a fixed and a random seed.

    python -m tests.fuzz.admin_api                 # SQLite in a temporary directory
    python -m tests.fuzz.admin_api --seed 1234     # replay one seed only
    DATABASE_URL=postgresql://... python -m tests.fuzz.admin_api

Each seed gets a fresh `python run.py admin` (ADMIN_TOKEN set, loopback, a new
database) so a run replays exactly. The leg fails if schemathesis reports any
failure or error, or if the admin token shows up in anything the admin wrote.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.nexus_process import REPO_ROOT, NexusProcess

FIXED_SEED = 20261202
CONFIG = Path(__file__).with_name("schemathesis.toml")


def fuzz_once(seed: int, database_url: str | None, base_dir: Path, max_examples: int | None) -> int:
    """Fuzz a fresh admin with `seed`; schemathesis's exit code (1 as well when the token leaked)."""
    token = "nx-fuzz-" + secrets.token_urlsafe(24)
    url = database_url or f"sqlite:///{base_dir / 'fuzz.db'}"
    with NexusProcess(url, base_dir / "nx", mode="admin", admin_token=token) as admin:
        command = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
            f"{admin.admin_url}/openapi.json", "--seed", str(seed),
            "--header", f"Authorization: Bearer {token}",
        ]
        if max_examples is not None:
            command += ["--max-examples", str(max_examples)]
        print(f"fuzzing the admin API with seed {seed} (replay: python -m tests.fuzz.admin_api --seed {seed})",
              flush=True)
        code = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "NO_COLOR": "1"}, check=False).returncode
        admin.stop()
        written = admin.stdout + admin.stderr + "".join(
            p.read_text(errors="replace") for p in admin.log_dir.glob("*.log")
        )
    if token in written:
        print("the admin token appears in the admin's output or logs", file=sys.stderr)
        return code or 1
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the leg; non-zero if any seed found anything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", help="seed(s) to run (default: fixed + random)")
    parser.add_argument("--max-examples", type=int, help="examples per operation (default: the config's)")
    args = parser.parse_args(argv)
    seeds = args.seed or [FIXED_SEED, random.SystemRandom().randrange(1, 2**31)]
    database_url = os.environ.get("DATABASE_URL") or None
    failed = []
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="nexusai-fuzz-") as tmp:
            if fuzz_once(seed, database_url, Path(tmp), args.max_examples) != 0:
                failed.append(seed)
    if failed:
        print(f"fuzzing failed for seed(s) {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    print(f"fuzzing passed for seed(s) {', '.join(map(str, seeds))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
