"""The one background-thread base the writers stand on: the usage recorder, the archive, the log.

Each writer keeps its own buffer and loop; this holds what they all need around it: a
daemon thread, a wake-up a caller can give without blocking, a stop request the loop
sees, and a failure in the loop logged instead of killing the thread silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("nexusai.background")


class BackgroundThread:
    """A daemon thread running `loop()`; the loop waits with `wait`/`sleep` and ends when `stopping`."""

    def __init__(self, name: str, loop: Callable[[], None]) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._woken = threading.Event()
        self._stop = threading.Event()

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether the loop is still running."""
        return self._thread.is_alive()

    def wake(self) -> None:
        """Have the loop look at its buffer now (cheap when it is already awake)."""
        if not self._woken.is_set():
            self._woken.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the loop to finish and wait for it (bounded); whether it has ended."""
        self._stop.set()
        self._woken.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait(self, timeout: float | None) -> None:
        """Until woken, asked to stop, or `timeout`; the wake-up is consumed."""
        self._woken.wait(timeout)
        self._woken.clear()

    def sleep(self, seconds: float) -> None:
        """`seconds`, cut short only by a stop request (not by wake-ups)."""
        self._stop.wait(seconds)

    def _main(self) -> None:
        try:
            self._loop()
        except Exception:  # noqa: BLE001 - a dead writer must be loud; its buffer says what is left
            log.exception("background thread %s stopped unexpectedly", self._thread.name)
