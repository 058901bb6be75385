"""Calling the upstream provider, with bounded failover across candidates."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from proxy_app.config import Route
from proxy_app.errors import ProxyError, upstream_timeout, upstream_unreachable
from proxy_app.upstream_http import UpstreamClient, UpstreamHTTPError, UpstreamResponse

log = logging.getLogger("nexusai.proxy.upstream")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class UpstreamFailure(ProxyError):
    """No candidate answered; `route` is the last one tried, the provider the failure is recorded for."""

    def __init__(self, error: ProxyError, route: Route) -> None:
        super().__init__(error.status, error.message, type=error.type, code=error.code)
        self.route = route


@dataclass(slots=True)
class UpstreamReply:
    """An upstream response whose headers have arrived; the body is still unread."""

    route: Route
    response: UpstreamResponse
    attempts: int


def _headers(route: Route, stream: bool) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
    if route.provider.server_key:
        headers["Authorization"] = f"Bearer {route.provider.server_key}"
    return headers


def _proxy_url(route: Route) -> str | None:
    proxy = route.provider.http_proxy
    if proxy and not proxy.startswith(("http://", "https://")):
        raise UpstreamHTTPError(f"unsupported proxy scheme for provider {route.provider.name}")
    return proxy or None


async def open_upstream(
    client: UpstreamClient,
    routes: list[Route],
    body: dict[str, object],
    stream: bool,
    request_id: str,
    max_attempts: int,
) -> UpstreamReply:
    """POST the chat request to the first candidate that answers usefully.

    A candidate is skipped when it cannot be reached, times out before its
    headers, or answers 429/5xx; the last candidate's answer is returned as is.
    """
    candidates = routes[:max_attempts]
    last_error: UpstreamFailure | None = None
    for attempt, route in enumerate(candidates, start=1):
        is_last = attempt == len(candidates)
        payload = orjson.dumps({**body, "model": route.upstream_name})
        timeout = route.provider.timeout_s
        try:
            response = await client.request(
                "POST",
                route.provider.base_url + "/chat/completions",
                body=payload,
                headers=_headers(route, stream),
                proxy=_proxy_url(route),
                connect_timeout=timeout,
                read_timeout=timeout,
            )
        except TimeoutError:
            log.warning("request %s attempt %d: provider %s timed out", request_id, attempt, route.provider.name)
            last_error = UpstreamFailure(upstream_timeout(
                f"Upstream provider '{route.provider.name}' did not answer within {route.provider.timeout_s:g} s."
            ), route)
            continue
        except UpstreamHTTPError as exc:
            log.warning("request %s attempt %d: provider %s unreachable: %s",
                        request_id, attempt, route.provider.name, type(exc).__name__)
            last_error = UpstreamFailure(
                upstream_unreachable(f"Upstream provider '{route.provider.name}' is unreachable."), route
            )
            continue
        if response.status in RETRY_STATUSES and not is_last:
            log.warning("request %s attempt %d: provider %s answered %d, trying next",
                        request_id, attempt, route.provider.name, response.status)
            response.release()
            continue
        if attempt > 1:
            log.info("request %s served by provider %s on attempt %d", request_id, route.provider.name, attempt)
        return UpstreamReply(route=route, response=response, attempts=attempt)
    assert last_error is not None
    raise last_error
