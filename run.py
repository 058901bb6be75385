"""Start NexusAI.

    python run.py          # admin + proxy, each a supervised child process
    python run.py admin    # only the admin API (gunicorn)
    python run.py proxy    # only the proxy (aiohttp; PROXY_WORKERS processes on one port)
    python run.py recorder # only the usage recorder (USAGE_RECORDER=process)
    python run.py reseal-secrets  # re-store provider secrets under SECRET_KEY (or in clear)

Settings come from the environment (and `.env`), see `shared/settings.py`.
Migrations are applied before anything listens. Each server prints
`NexusAI <name> listening on <url> (pid <pid>)` on stdout once it is bound.
SIGINT/SIGTERM stop everything gracefully.

Exit codes: 0 clean stop; 1 a server died or could not start; 2 refused to
start (bad setting, admin exposed without ADMIN_TOKEN, port already in use).
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.metrics_dir import ENV as METRICS_DIR_ENV
from shared.metrics_dir import share_metrics_dir
from shared.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent
MODES = ("all", "admin", "proxy", "recorder")
# Set by the supervisor in its children: the supervisor's pid. A child with it
# skips migrations (already applied) and dies with its parent.
SUPERVISOR_ENV = "NEXUSAI_SUPERVISOR_PID"
# Set in each of PROXY_WORKERS > 1 proxy children: its number (1..N), for its log file.
WORKER_ENV = "NEXUSAI_PROXY_WORKER"
SHUTDOWN_TIMEOUT_S = 10.0  # per server: in-flight requests get this long to finish
PROXY_SWITCH_INTERVAL_S = 0.0002  # see serve_proxy
# Supervisor: then SIGKILL. Covers in-flight requests (10 s) plus the proxy's drains (5 + 20 + 5 s).
STOP_TIMEOUT_S = 60.0
RECORDER_STOP_S = 50.0  # the recorder's share: it outlives the proxies' own shutdown
POLL_INTERVAL_S = 0.2
GUNICORN_EXIT_REASONS = {3: "a gunicorn worker failed to boot", 4: "the admin app failed to load"}

log = logging.getLogger("nexusai.run")


class StartupError(Exception):
    """A reason to refuse to start: printed as one line, exit code 2."""


# --- checks -----------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_admin_exposure(settings: Settings) -> None:
    """Refuse an admin bound beyond loopback without ADMIN_TOKEN."""
    if settings.admin_token is None and not is_loopback(settings.admin_host):
        raise StartupError(
            f"ADMIN_HOST={settings.admin_host} is not a loopback address and ADMIN_TOKEN is not set; "
            "set ADMIN_TOKEN or bind the admin to 127.0.0.1"
        )


def bind_listener(name: str, host: str, port: int, *, share_port: bool = False) -> socket.socket:
    """A listening TCP socket on host:port, or a StartupError saying why not.

    `share_port`: SO_REUSEPORT, so several proxy workers listen on one port and the kernel
    spreads connections over them.
    """
    where = format_hostport(host, port)
    if not 0 <= port <= 65535:
        raise StartupError(f"{name}: cannot listen on {where}: ports go from 0 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(f"{name}: cannot listen on {where}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
        # Only a listening socket holds the port against another SO_REUSEADDR bind (admin == proxy port).
        sock.listen()
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise StartupError(f"{name}: cannot listen on {where}: {reason}") from None
    return sock


def check_ports_free(targets: Sequence[tuple[str, str, int]]) -> None:
    """Fail fast with one clear line if any (name, host, port) cannot be bound."""
    held: list[socket.socket] = []
    try:
        for name, host, port in targets:
            held.append(bind_listener(name, host, port))
    finally:
        for sock in held:
            sock.close()


def format_hostport(host: str, port: int) -> str:
    """`host:port`, bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def announce(name: str, url: str) -> None:
    """Tell the operator (stdout) and the log where a server listens."""
    from shared.logs import log_to_file_only

    print(f"NexusAI {name} listening on {url} (pid {os.getpid()})", flush=True)
    log_to_file_only(log, "%s listening on %s (pid %d)", name, url, os.getpid())  # stderr has it from stdout


def check_workers(settings: Settings) -> None:
    """Refuse PROXY_WORKERS > 1 on a port the kernel picks (each worker would get its own)."""
    if settings.proxy_workers > 1 and settings.proxy_port == 0:
        raise StartupError("PROXY_WORKERS > 1 needs a fixed PROXY_PORT (0 would give each worker its own port)")


def warn_if_limits_multiply(settings: Settings) -> None:
    """Say that per-process limits multiply with the workers unless Redis shares them."""
    if settings.proxy_workers > 1 and not settings.redis_url:
        log.warning(
            "PROXY_WORKERS=%d without REDIS_URL: each worker enforces every key's rpm, tpm, concurrency, quota and "
            "budget on its own, so a key gets up to %d times its limits; set REDIS_URL to share them",
            settings.proxy_workers, settings.proxy_workers,
        )


def warn_if_unauthenticated(settings: Settings) -> None:
    """Say loudly that the admin API has no token."""
    if settings.admin_token is None:
        log.warning(
            "ADMIN_TOKEN is not set: the admin API is unauthenticated and bound to loopback (%s) only",
            format_hostport(settings.admin_host, settings.admin_port),
        )


def migrate(settings: Settings) -> list[str]:
    """Bring the database schema to the newest revision; what happened, one line per step."""
    from shared.migrate import upgrade_database

    return upgrade_database(settings.database_url)


def log_migration(settings: Settings, lines: Sequence[str]) -> None:
    """Say which database the schema lines are about, once, then the steps."""
    from sqlalchemy.engine import make_url

    where = make_url(settings.database_url).render_as_string(hide_password=True)
    for i, line in enumerate(lines):
        if i == 0:
            log.info("database %s: %s", where, line)
        else:
            log.info("%s", line)


def migrate_in_child(settings: Settings) -> list[str]:
    """Migrate from a short-lived interpreter, so a lone server does not keep Alembic in memory."""
    result = subprocess.run(
        [sys.executable, "-c", "import run, sys; sys.exit(run.migrate_child_main())"], cwd=ROOT,
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise MigrationError(lines[-1] if lines else f"migration exited with code {result.returncode}")
    return result.stdout.splitlines()


class MigrationError(RuntimeError):
    """The migration child failed; its message is the child's one-line reason."""


def migrate_child_main() -> int:
    """Entry point of the migration child: migrate, or print one line saying why not."""
    try:
        print("\n".join(migrate(Settings.from_env())), flush=True)
    except Exception as exc:  # reported to the parent as one line
        print(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}", file=sys.stderr)
        return 1
    return 0


def die_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when the parent dies (Linux prctl); exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        sys.exit(1)


# --- admin: gunicorn --------------------------------------------------------


def serve_admin(settings: Settings) -> int:
    """Run the admin app under gunicorn until a signal stops it."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter
    from gunicorn.glogging import Logger as GunicornLogger

    from shared.logs import library_level

    if settings.metrics_enabled and not os.environ.get(METRICS_DIR_ENV):
        # Gunicorn's workers count into files there; any worker's /metrics adds them all up.
        share_metrics_dir(settings.data_dir / "metrics" / "admin")
    from prometheus_client import multiprocess

    from admin_app.serving import (
        KEEPALIVE_S,
        LIMIT_REQUEST_FIELD_SIZE,
        LIMIT_REQUEST_FIELDS,
        LIMIT_REQUEST_LINE,
        JsonErrorWorker,
    )

    class RoutedLogger(GunicornLogger):
        """Gunicorn's own logs, propagated into our handlers (logs/admin.log, stderr)."""

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                for handler in list(logger.handlers):
                    logger.removeHandler(handler)
                logger.propagate = True
            # Propagation skips the root's level, so honour LOG_LEVEL here; gunicorn's own INFO lines
            # (its version, worker boots) are library noise below DEBUG, as in shared/logs.
            self.access_log.setLevel(max(logging.INFO, logging.getLogger().level))
            self.error_log.setLevel(library_level(settings))

    class GracefulArbiter(Arbiter):  # type: ignore[misc]
        """SIGINT stops gracefully too (gunicorn's default is an abrupt stop)."""

        def handle_int(self) -> None:
            raise StopIteration

    def when_ready(server: Any) -> None:
        for listener in server.LISTENERS:
            announce("admin", str(listener))

    def post_fork(server: Any, worker: Any) -> None:
        # Workers must not outlive an arbiter that was killed outright.
        die_with_parent(server.pid)

    def child_exit(server: Any, worker: Any) -> None:
        if os.environ.get(METRICS_DIR_ENV):
            multiprocess.mark_process_dead(worker.pid)  # its live gauges go; its counters stay summed

    def post_worker_init(worker: Any) -> None:
        # A Ctrl-C in a terminal reaches the workers too: finish the request first.
        signal.signal(signal.SIGINT, worker.handle_exit)
        signal.siginterrupt(signal.SIGINT, False)

    class AdminServer(BaseApplication):  # type: ignore[misc]
        """Gunicorn application that builds the admin app from our Settings."""

        def load_config(self) -> None:
            options = {
                "bind": [format_hostport(settings.admin_host, settings.admin_port)],
                "workers": settings.admin_workers,
                # Threads, not sync workers: a sync worker busy streaming a large /usage/export for
                # more than `timeout` seconds is killed mid-file; a gthread worker keeps heartbeating.
                "worker_class": JsonErrorWorker,
                "threads": 4,
                # Request limits; gunicorn answers past them in our JSON shape (admin_app/serving.py).
                "limit_request_line": LIMIT_REQUEST_LINE,
                "limit_request_fields": LIMIT_REQUEST_FIELDS,
                "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
                "keepalive": KEEPALIVE_S,
                "timeout": 30,
                "graceful_timeout": int(SHUTDOWN_TIMEOUT_S),
                "proc_name": "nexusai-admin",
                "logger_class": RoutedLogger,
                "loglevel": settings.log_level.lower(),
                "accesslog": None,  # admin_app writes its own access line (no query strings)
                "control_socket_disable": True,
                "when_ready": when_ready,
                "post_fork": post_fork,
                "post_worker_init": post_worker_init,
                "child_exit": child_exit,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from admin_app import create_app

            return create_app(settings, warn_unauthenticated=False)  # run.py said it once already

        def run(self) -> None:
            GracefulArbiter(self).run()

    try:
        AdminServer().run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RuntimeError as exc:
        log.error("admin: %s", exc)
        return 1
    return 0


# --- proxy: aiohttp ---------------------------------------------------------


def serve_proxy(settings: Settings) -> int:
    """Run the proxy on aiohttp's runner until SIGINT/SIGTERM (graceful shutdown)."""
    import asyncio

    from proxy_app import create_app
    from proxy_app.serving import serve

    # The usage and log writer threads run Python between their I/O calls; with the default
    # 5 ms switch interval the event loop, woken by a client, may wait that long for the GIL.
    sys.setswitchinterval(PROXY_SWITCH_INTERVAL_S)
    sock = bind_listener("proxy", settings.proxy_host, settings.proxy_port, share_port=settings.proxy_workers > 1)
    port = sock.getsockname()[1]
    url = f"http://{format_hostport(settings.proxy_host, port)}"
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    serve(
        create_app(settings), settings, sock, loop,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S, on_ready=lambda: announce("proxy", url),
    )
    log.info("proxy stopped")
    return 0


def serve_recorder(settings: Settings) -> int:
    """Move the usage journal into the database until SIGINT/SIGTERM (USAGE_RECORDER=process)."""
    import threading

    from shared.db import make_engine
    from shared.usage_journal import JournalError, JournalRecorder

    engine = make_engine(settings.database_url, settings.db_connect_timeout_s, settings.db_statement_timeout_s)
    recorder = JournalRecorder(engine, settings.journal_dir, flush_interval_s=settings.usage_flush_interval_s,
                               batch_size=settings.usage_batch_size)
    try:
        recorder.claim()
    except JournalError as exc:
        raise StartupError(str(exc)) from None
    # The proxies stop at the same signal; the recorder keeps going until they have let go of
    # their slots and everything they journaled is recorded (or its share of the stop budget ends).
    signal.signal(signal.SIGTERM, lambda *_: recorder.stop(RECORDER_STOP_S))
    signal.signal(signal.SIGINT, lambda *_: recorder.stop(RECORDER_STOP_S))
    log.info("usage recorder recording %s", settings.journal_dir)
    worker = threading.Thread(target=recorder.run, name="usage-recorder")
    worker.start()
    while worker.is_alive():
        worker.join(POLL_INTERVAL_S)  # the main thread stays free for the signal handlers
    engine.dispose()
    log.info("usage recorder stopped: usage rows recorded this run: %d", recorder.written)
    return 0


def server_names(mode: str, settings: Settings) -> tuple[str, ...]:
    """The children a supervising run.py starts for `mode` (PROXY_WORKERS > 1: proxy-1 .. proxy-N)."""
    names: tuple[str, ...] = ("admin", "proxy") if mode == "all" else (mode,)
    if "proxy" in names and settings.proxy_workers > 1:
        workers = tuple(f"proxy-{i}" for i in range(1, settings.proxy_workers + 1))
        names = tuple(n for part in names for n in (workers if part == "proxy" else (part,)))
    if mode in ("all", "proxy") and settings.usage_recorder == "process":
        names += ("recorder",)
    return names


def serves_proxy(names: Sequence[str]) -> bool:
    """Whether these children journal usage rows (proxies, the recorder)."""
    return any(n == "recorder" or n.startswith("proxy") for n in names)


# --- supervisor -------------------------------------------------------------


def describe_exit(name: str, code: int) -> str:
    """Human words for a child's return code."""
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    reason = f"exit code {code}"
    if name == "admin" and code in GUNICORN_EXIT_REASONS:
        reason += f": {GUNICORN_EXIT_REASONS[code]}"
    elif code == 2:
        reason += ": refused to start (see the message above)"
    return reason


def spawn(name: str) -> subprocess.Popen[bytes]:
    """Start `run.py <name>` as a child in its own process group (`proxy-<i>`: proxy worker i)."""
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    mode, _, worker = name.partition("-")
    if worker:
        env[WORKER_ENV] = worker
    # Own process group: a terminal's Ctrl-C reaches only us, and we stop the
    # children gracefully with SIGTERM instead of each reacting on its own.
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), mode],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        process_group=0,
    )


def stop_children(children: dict[str, subprocess.Popen[bytes]], signals_seen: list[int]) -> bool:
    """SIGTERM every live child, wait (bounded), SIGKILL stragglers; True when all stopped cleanly."""
    clean = True
    for name, proc in children.items():
        if proc.poll() is None:
            log.info("stopping %s (pid %d)", name, proc.pid)
            proc.send_signal(signal.SIGTERM)
    first_signals = len(signals_seen)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(p.poll() is None for p in children.values()):
        # A second Ctrl-C means "now".
        if time.monotonic() >= deadline or len(signals_seen) > first_signals:
            for name, proc in children.items():
                if proc.poll() is None:
                    log.error("%s (pid %d) did not stop in time: killing it", name, proc.pid)
                    proc.kill()
                    proc.wait()
                    clean = False
            break
        time.sleep(POLL_INTERVAL_S)
    for name, proc in children.items():
        code = proc.returncode
        if code not in (0, -signal.SIGTERM):
            log.error("%s (pid %d) stopped badly: %s", name, proc.pid, describe_exit(name, code))
            clean = False
    return clean


def report_journal_backlog(settings: Settings) -> None:
    """Say how many usage rows wait in the journal for the database (none are dropped)."""
    from shared.usage_journal import backlog

    waiting = backlog(settings.journal_dir)
    if waiting:
        log.warning("%d usage rows are waiting in the journal (%s): the database did not take them in time; "
                    "they are recorded at the next start", waiting, settings.journal_dir)


def supervise(names: Sequence[str], settings: Settings) -> int:
    """Run each named server as a child; stop all when signalled or when one dies."""
    signals_seen: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        signals_seen.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name in names:
        children[name] = spawn(name)
        log.info("started %s (pid %d)", name, children[name].pid)
    while True:
        if signals_seen:
            log.info("received %s: stopping %s", signal.Signals(signals_seen[0]).name, ", ".join(names))
            clean = stop_children(children, signals_seen)
            if serves_proxy(names):
                report_journal_backlog(settings)
            log.info("stopped %s", "cleanly" if clean else "with errors")
            return 0 if clean else 1
        for name, proc in children.items():
            code = proc.poll()
            if code is not None:
                others = {n: p for n, p in children.items() if n != name}
                log.error(
                    "%s (pid %d) stopped unexpectedly: %s; stopping %s",
                    name,
                    proc.pid,
                    describe_exit(name, code),
                    ", ".join(others) or "nothing else",
                )
                stop_children(others, signals_seen)
                if serves_proxy(names):
                    report_journal_backlog(settings)
                return 1
        time.sleep(POLL_INTERVAL_S)


# --- secrets at rest ----------------------------------------------------------

RESEAL_COMMAND = "reseal-secrets"


def reseal_secrets() -> int:
    """Migrate, then re-store every provider secret as SECRET_KEY says: sealed with it, or in clear."""
    from shared.db import make_engine
    from shared.secret_box import SecretUnavailable, reseal_provider_secrets

    try:
        settings = Settings.from_env()
        migrate(settings)
        engine = make_engine(settings.database_url, statement_timeout_s=0)
        try:
            with engine.begin() as connection:
                changed = reseal_provider_secrets(connection, settings.secret_box())
        finally:
            engine.dispose()
    except (SettingsError, SecretUnavailable) as exc:
        print(f"run.py reseal-secrets: {exc}; nothing was changed", file=sys.stderr)
        return 2
    how = "encrypted with SECRET_KEY" if settings.secret_key else "in clear (SECRET_KEY is not set)"
    print(f"{changed} provider(s) re-stored; every provider secret is now {how}")
    return 0


# --- entry point ------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    """Parse the mode, check the configuration, migrate, and run."""
    mode = argv[0] if argv else "all"
    if mode in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if mode == RESEAL_COMMAND and len(argv) == 1:
        return reseal_secrets()
    if mode not in MODES or len(argv) > 1:
        print(f"usage: python run.py [{'|'.join((*MODES[1:], RESEAL_COMMAND))}]", file=sys.stderr)
        return 2
    supervisor_pid = int(os.environ.get(SUPERVISOR_ENV, "0") or 0)
    if supervisor_pid and mode != "all":
        die_with_parent(supervisor_pid)

    try:
        settings = Settings.from_env()
        if mode in ("all", "admin"):
            check_admin_exposure(settings)
        if mode in ("all", "proxy"):
            check_workers(settings)
        targets = []
        if mode in ("all", "admin"):
            targets.append(("admin", settings.admin_host, settings.admin_port))
        if mode in ("all", "proxy"):
            targets.append(("proxy", settings.proxy_host, settings.proxy_port))
        if not supervisor_pid:
            # Before migrating; the servers bind for real later. Not in a supervised child: the
            # supervisor checked, and a worker's check would collide with its siblings' sockets.
            check_ports_free(targets)
    except (SettingsError, StartupError) as exc:
        print(f"run.py: refusing to start: {exc}", file=sys.stderr)
        return 2

    names = server_names(mode, settings)
    supervising = mode == "all" or (len(names) > 1 and not supervisor_pid)
    if mode == "proxy" and not supervising:
        from proxy_app.memory import limit_malloc_arenas

        limit_malloc_arenas()  # before the first thread (the log writer) makes an arena of its own
    from shared.logs import setup_logging

    worker = os.environ.get(WORKER_ENV, "") if supervisor_pid else ""
    setup_logging(settings, "run" if supervising else f"{mode}-{worker}" if worker else mode)
    if not supervisor_pid:
        from shared.file_modes import private_dir

        private_dir(settings.data_dir)  # the database, the usage journal, the metrics: ours alone
        if mode in ("all", "admin"):
            warn_if_unauthenticated(settings)
        if mode in ("all", "proxy"):
            warn_if_limits_multiply(settings)
        try:
            log_migration(settings, migrate(settings) if mode == "all" else migrate_in_child(settings))
        except Exception as exc:  # any failure here means we must not serve
            first_line = (str(exc).strip().splitlines() or [""])[0]
            log.error("cannot apply migrations: %s: %s", type(exc).__name__, first_line)
            return 1

    if supervising:
        if settings.proxy_workers > 1:
            # Figures the workers of an earlier run published must not be added to this run's.
            shutil.rmtree(settings.data_dir / "metrics" / "proxy", ignore_errors=True)
        return supervise(names, settings)
    try:
        if mode == "recorder":
            return serve_recorder(settings)
        return serve_admin(settings) if mode == "admin" else serve_proxy(settings)
    except StartupError as exc:
        print(f"run.py: refusing to start: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
