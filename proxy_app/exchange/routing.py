"""Choosing the upstream candidates for a requested model, key and client API."""

from __future__ import annotations

import random
from collections.abc import Callable

from proxy_app.backs import adapter_for
from proxy_app.config import KeyCfg, ProviderCfg, Route, Snapshot
from proxy_app.errors import ProxyError, echo

LISTED_MODELS = 5


def allowed_models(snapshot: Snapshot, key: KeyCfg) -> list[Route]:
    """The first (highest-priority) route of each model the key may use, by name."""
    out: list[Route] = []
    for name in sorted(snapshot.routes_by_model):
        for route in snapshot.routes_by_model[name]:
            if key.allows(route):
                out.append(route)
                break
    return out


def _explicit(snapshot: Snapshot, model: str) -> tuple[str, tuple[Route, ...]] | None:
    provider_name, sep, rest = model.partition("/")
    if not sep or provider_name not in snapshot.providers_by_name:
        return None
    routes = tuple(r for r in snapshot.routes_by_model.get(rest, ()) if r.provider.name == provider_name)
    return (rest, routes) if routes else None


Rank = Callable[[Route], float]


def _order(routes: tuple[Route, ...], rank: Rank | None = None) -> list[Route]:
    # Equal priorities share load by weight (or go by `rank`, lowest first, weight breaking
    # ties); higher priorities always go first.
    if len(routes) < 2:
        return list(routes)
    ordered: list[Route] = []
    i = 0
    while i < len(routes):
        j = i
        while j < len(routes) and routes[j].provider.priority == routes[i].provider.priority:
            j += 1
        group = list(routes[i:j])
        shuffled: list[Route] = []
        while len(group) > 1:
            pick = random.choices(range(len(group)), weights=[r.provider.weight for r in group])[0]
            shuffled.append(group.pop(pick))
        shuffled.extend(group)
        if rank is not None and len(shuffled) > 1:
            shuffled.sort(key=rank)  # stable: equal ranks keep the weighted order
        ordered.extend(shuffled)
        i = j
    return ordered


def speaks(provider: ProviderCfg, api: str) -> bool:
    """Whether a provider takes `api` requests as they are: natively, or through its adapter's translation."""
    return api in provider.apis or api in adapter_for(provider.kind).translated_apis


def serves(provider: ProviderCfg, api: str, via_chat: bool = False) -> bool:
    """Whether a provider can take a request of `api`; `via_chat`: also as chat completions."""
    return speaks(provider, api) or (via_chat and speaks(provider, "chat"))


def resolve(snapshot: Snapshot, key: KeyCfg, model: str, api: str = "chat", via_chat: bool = False,
            rank: Rank | None = None) -> list[Route]:
    """Candidates in try order, or 404 (unknown model, or no provider of it serves `api`) / 403 (scope).

    `rank` orders providers of equal priority (least_latency, least_busy); None shares by weight.
    """
    explicit = _explicit(snapshot, model)
    if explicit is not None:
        _, routes = explicit
    else:
        routes = snapshot.routes_by_model.get(model, ())
    if not routes:
        names = [r.model_name for r in allowed_models(snapshot, key)[:LISTED_MODELS]]
        hint = f" Models available to this key include: {', '.join(names)}." if names else ""
        raise ProxyError(
            404, f"The model '{echo(model)}' does not exist or is not enabled.{hint}",
            code="model_not_found", param="model",
        )
    permitted = tuple(r for r in routes if key.allows(r))
    if not permitted:
        raise ProxyError(
            403, f"This API key is not allowed to use the model '{echo(model)}'.",
            type="permission_error", code="model_not_allowed", param="model",
        )
    serving = tuple(r for r in permitted if serves(r.provider, api, via_chat))
    if not serving:
        raise ProxyError(
            404, f"No provider of the model '{echo(model)}' serves the {api} API.",
            code="model_not_found", param="model",
        )
    return _order(serving, rank)
