"""Circuit breakers and health of the upstreams, shared by every request of a process.

Two circuits stand in front of each candidate: its provider's, opened by failures
that say the provider itself is in trouble (no connection, no first byte in time, a
stream that stalls or breaks), and its provider+model's, opened by error answers
(5xx, 429) that may concern one model only. A circuit opens after `failures`
consecutive failures, or at once for a 429 with Retry-After (for that long); after
its cooldown it is half-open and lets one probe through; the probe's success closes
it, its failure opens it again. A candidate is skipped while either circuit is open
(or half-open with its probe out); when every candidate would be skipped, the one
that failed least recently is tried anyway, so a request is never refused for
health alone.

Each provider also keeps its recent attempts (time to response headers, success) for
`GET /providers/{id}/health`, its latency average for `least_latency` routing and its
attempts in flight for `least_busy`. Everything here is plain in-process state,
touched only from the event loop.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from proxy_app.config import Route

log = logging.getLogger("nexusai.proxy.breaker")

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
RECENT_ATTEMPTS = 200  # per provider, for its error rate and latency percentiles
RECENT_WINDOW_S = 300.0
LATENCY_EWMA = 0.2  # weight of the newest sample in the latency average


@dataclass(slots=True)
class Circuit:
    """One circuit: its state and why."""

    name: str  # "provider" or "provider/model", for log lines
    state: str = CLOSED
    failures: int = 0  # consecutive
    open_until: float = 0.0
    probing: bool = False
    last_failure_at: float = float("-inf")
    last_error: str | None = None
    trips: int = 0


@dataclass(slots=True)
class ProviderHealth:
    """The recent attempts of one provider, and its circuits."""

    circuit: Circuit
    models: dict[str, Circuit] = field(default_factory=dict)
    recent: deque[tuple[float, bool, float]] = field(default_factory=lambda: deque(maxlen=RECENT_ATTEMPTS))
    latency_ms: float | None = None  # moving average of time to headers, successes only
    busy: int = 0  # attempts and replies in flight
    last_error_wall: float | None = None  # time.time() of the last failure, for reports
    clean: bool = True  # every circuit closed, with no failure counted: the per-request checks are skipped


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds <= 0:  # NaN or in the past
        return None
    return seconds


class Breakers:
    """The circuits and health of every provider this process has called."""

    def __init__(self, failures: int, cooldown_s: float, retry_after_max_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures  # 0: circuits never open on failures (Retry-After still cools down)
        self.cooldown_s = cooldown_s
        self.retry_after_max_s = retry_after_max_s
        self.clock = clock
        self.providers: dict[int, ProviderHealth] = {}
        self.names: dict[int, str] = {}
        self.attempts: Counter[tuple[str, str]] = Counter()  # (provider name, result) -> attempts so far

    def health(self, route: Route) -> ProviderHealth:
        """The health record of a route's provider (created on first use)."""
        provider = route.provider
        found = self.providers.get(provider.id)
        if found is None:
            found = self.providers[provider.id] = ProviderHealth(Circuit(provider.name))
        self.names[provider.id] = provider.name
        return found

    def _model_circuit(self, health: ProviderHealth, route: Route) -> Circuit:
        circuit = health.models.get(route.model_name)
        if circuit is None:
            circuit = health.models[route.model_name] = Circuit(f"{route.provider.name}/{route.model_name}")
        return circuit

    # --- choosing -----------------------------------------------------------------------------

    def _passable(self, circuit: Circuit | None, now: float) -> bool:
        if circuit is None or circuit.state == CLOSED:
            return True
        if circuit.state == OPEN and now >= circuit.open_until:
            return True  # due for its probe
        return circuit.state == HALF_OPEN and not circuit.probing

    def usable(self, routes: list[Route]) -> list[Route]:
        """The routes whose circuits let a request through now, in order; never empty for a non-empty input."""
        providers = self.providers
        for route in routes:
            health = providers.get(route.provider.id)
            if health is not None and not health.clean:
                break
        else:
            return routes  # the usual case: nothing has failed lately
        now = self.clock()
        out: list[Route] = []
        skipped: list[Route] = []
        for route in routes:
            health = providers.get(route.provider.id)
            if health is None or (
                self._passable(health.circuit, now) and self._passable(health.models.get(route.model_name), now)
            ):
                out.append(route)
            else:
                skipped.append(route)
        if not out and skipped:
            out.append(min(skipped, key=lambda r: self._last_failure(r)))
        return out

    def _last_failure(self, route: Route) -> float:
        health = self.providers[route.provider.id]
        model = health.models.get(route.model_name)
        return max(health.circuit.last_failure_at, model.last_failure_at if model else float("-inf"))

    def begin(self, route: Route) -> tuple[Circuit, ...]:
        """An attempt on `route` starts: claim the probe of each circuit due for one (returned, for `end`)."""
        health = self.health(route)
        health.busy += 1
        if health.clean:
            return ()
        now = self.clock()
        claimed: tuple[Circuit, ...] = ()
        for circuit in (health.circuit, health.models.get(route.model_name)):
            if circuit is not None and circuit.state != CLOSED and not circuit.probing and now >= circuit.open_until:
                if circuit.state == OPEN:
                    circuit.state = HALF_OPEN
                    log.info("circuit %s half-open: letting one probe through", circuit.name)
                circuit.probing = True
                claimed += (circuit,)
        return claimed

    def end(self, route: Route, claimed: tuple[Circuit, ...] = ()) -> None:
        """The attempt (or the reply it opened) is over; a probe it claimed and never settled is given back."""
        health = self.providers.get(route.provider.id)
        if health is not None and health.busy > 0:
            health.busy -= 1
        for circuit in claimed:
            circuit.probing = False  # a cancelled probe: the next request may probe instead

    # --- outcomes -----------------------------------------------------------------------------

    def succeeded(self, route: Route, latency_ms: float) -> None:
        """The upstream answered usefully (headers of a non-failing status) after `latency_ms`."""
        health = self.health(route)
        now = self.clock()
        self.attempts[(route.provider.name, "ok")] += 1
        health.recent.append((now, True, latency_ms))
        previous = health.latency_ms
        health.latency_ms = latency_ms if previous is None else previous + LATENCY_EWMA * (latency_ms - previous)
        if health.clean:
            return
        for circuit in (health.circuit, health.models.get(route.model_name)):
            if circuit is None:
                continue
            circuit.failures = 0
            circuit.probing = False
            if circuit.state != CLOSED:
                circuit.state = CLOSED
                log.warning("circuit %s closed: the upstream answered again", circuit.name)
        health.clean = all(c.state == CLOSED and c.failures == 0 and not c.probing
                           for c in (health.circuit, *health.models.values()))

    def failed(self, route: Route, error: str, *, kind: str, provider_wide: bool, latency_ms: float | None = None,
               retry_after_s: float | None = None) -> None:
        """An attempt failed (`kind`: a short fixed label); `provider_wide` for connection, timeout and
        stream failures, else this model's."""
        health = self.health(route)
        health.clean = False
        now = self.clock()
        self.attempts[(route.provider.name, kind)] += 1
        health.recent.append((now, False, latency_ms if latency_ms is not None else -1.0))
        health.last_error_wall = time.time()
        circuit = health.circuit if provider_wide else self._model_circuit(health, route)
        circuit.failures += 1
        circuit.last_failure_at = now
        circuit.last_error = error
        probe_failed = circuit.probing
        circuit.probing = False
        other = health.models.get(route.model_name) if provider_wide else health.circuit
        if other is not None and other.probing:
            other.probing = False  # the probe of the other circuit is over too, unanswered
        if retry_after_s is not None:
            cooldown = min(retry_after_s, self.retry_after_max_s)
            self._open(circuit, now, cooldown, f"Retry-After {retry_after_s:g} s")
        elif probe_failed or (self.failures and circuit.failures >= self.failures):
            self._open(circuit, now, self.cooldown_s, f"{circuit.failures} consecutive failure(s), last: {error}")

    def _open(self, circuit: Circuit, now: float, cooldown_s: float, why: str) -> None:
        until = now + cooldown_s
        if circuit.state == OPEN and circuit.open_until >= until:
            return
        circuit.state = OPEN
        circuit.open_until = until
        circuit.trips += 1
        log.warning("circuit %s open for %g s: %s", circuit.name, cooldown_s, why)

    # --- reading ------------------------------------------------------------------------------

    def rank_latency(self, route: Route) -> float:
        """The route's provider's average time to headers (0 before any: try unknown providers first)."""
        health = self.providers.get(route.provider.id)
        return (health.latency_ms or 0.0) if health is not None else 0.0

    def rank_busy(self, route: Route) -> int:
        """The route's provider's attempts and replies in flight in this process."""
        health = self.providers.get(route.provider.id)
        return health.busy if health is not None else 0

    def report(self) -> dict[int, dict[str, object]]:
        """Each provider's circuits and recent figures (for health rows and metrics)."""
        now = self.clock()
        out: dict[int, dict[str, object]] = {}
        for provider_id, health in self.providers.items():
            recent = [entry for entry in health.recent if now - entry[0] <= RECENT_WINDOW_S]
            latencies = sorted(entry[2] for entry in recent if entry[1])
            out[provider_id] = {
                "name": self.names.get(provider_id, ""),
                "state": self._state(health.circuit, now),
                "models": {name: self._state(c, now) for name, c in health.models.items()},
                "requests": len(recent),
                "errors": sum(1 for entry in recent if not entry[1]),
                "latencies_ms": latencies,
                "last_error": _last_error(health),
                "last_error_at": health.last_error_wall,
                "busy": health.busy,
            }
        return out

    def circuit_states(self) -> dict[tuple[str, str], str]:
        """Every circuit's state by (provider name, model name); model '' is the provider's own circuit."""
        now = self.clock()
        out: dict[tuple[str, str], str] = {}
        for provider_id, health in self.providers.items():
            name = self.names.get(provider_id, "")
            out[(name, "")] = self._state(health.circuit, now)
            for model, circuit in health.models.items():
                out[(name, model)] = self._state(circuit, now)
        return out

    def _state(self, circuit: Circuit, now: float) -> str:
        if circuit.state == OPEN and now >= circuit.open_until:
            return HALF_OPEN  # due for its probe: the next request will be let through
        return circuit.state


def _last_error(health: ProviderHealth) -> str | None:
    circuits = [health.circuit, *health.models.values()]
    latest = max(circuits, key=lambda c: c.last_failure_at)
    return latest.last_error if latest.last_failure_at != float("-inf") else None
