"""Writer threads give way to the event loop: they run only on CPU time the loop does not want."""

from __future__ import annotations

import os
import sys


def run_in_background() -> None:
    """Move the calling thread to SCHED_IDLE (Linux threads have their own policy); a no-op elsewhere.

    With the proxy on one core, a usage batch that held the CPU when a client's request arrived
    kept that request waiting for the rest of the writer's time slice (a nice value does not
    preempt it under EEVDF): 2-6 ms for 1-2% of requests at low load. A SCHED_IDLE thread is
    preempted the moment the loop wakes. It can starve when the loop never rests, so the usage
    writer starts a normal-priority helper when its backlog grows (see UsageWriter.submit).
    """
    if sys.platform != "linux":
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        pass  # priority is an optimisation here, never a requirement
