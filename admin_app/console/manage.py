"""Console pages that change things: providers, their models, and client keys.

Every write goes through the function the JSON API's handler uses (validation,
audit row, config-version bump, commit); a refused form comes back with the
API's field errors next to its fields and what was typed, secrets excepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

from flask import Response, make_response, redirect, render_template, request, url_for
from sqlalchemy import func, select
from werkzeug.wrappers import Response as BaseResponse

from admin_app.console import bp, settings
from admin_app.console.forms import decimal_text, form_body
from admin_app.console.pages import count, daily_charts, money
from admin_app.errors import ApiError
from admin_app.extensions import db
from admin_app.key_quota import key_with_consumption
from admin_app.keys import (
    create_key_from,
    delete_key_row,
    key_in,
    key_update,
    rotate_key_from,
    update_key_from,
)
from admin_app.lookups import get_or_404
from admin_app.provider_models import create_model_from, delete_model_row, model_in, update_model_from
from admin_app.providers import create_provider_from, delete_provider_row, provider_in, update_provider_from
from admin_app.usage import midnight, utcnow
from admin_app.usage_figures import Window, begin_snapshot
from shared.models import ApiKey, Provider, ProviderModel
from shared.provider_kinds import CLIENT_APIS, PROVIDER_KINDS, TRANSLATED_ONLY

KEY_USAGE_DAYS = 30
# Typed into forms but never sent back to the browser when a form is shown again.
SECRET_INPUTS = frozenset({"server_key", "personalized_key", "key", "csrf_token"})
T = TypeVar("T")


def _attempt(write: Callable[[], T]) -> tuple[T | None, ApiError | None]:
    """Run a write; a refusal (bad field, conflict, gone) comes back instead of raising."""
    try:
        return write(), None
    except ApiError as exc:
        db.session.rollback()
        return None, exc


def _typed() -> dict[str, Any]:
    """What the form held, for showing it again: lists kept, secrets dropped."""
    return {name: (request.form.getlist(name) if len(request.form.getlist(name)) > 1 else value)
            for name, value in request.form.items() if name not in SECRET_INPUTS}


def _refused(template: str, status: int, exc: ApiError, **context: Any) -> tuple[str, int]:
    errors = {field: msgs if isinstance(msgs, list) else [str(msgs)] for field, msgs in exc.details.items()}
    return render_template(template, values=_typed(), errors=errors, problem=exc.message, **context), exc.status


def _shown_once(title: str, key_row: ApiKey, value: str) -> Response:
    """The page that shows a new key's value: the only time it is ever sent."""
    response = make_response(render_template("console/key_issued.html", title=title, key=key_row, value=value))
    response.headers["Cache-Control"] = "no-store"
    return response


# --- providers ----------------------------------------------------------------------------------

def _provider_values(p: Provider) -> dict[str, Any]:
    return {
        "name": p.name, "kind": p.kind, "server_url": p.server_url, "api_version": p.api_version or "",
        "description": p.description or "", "enabled": p.enabled, "http_proxy": p.http_proxy_display or "",
        "timeout_s": p.timeout_s, "connect_timeout_s": p.connect_timeout_s, "priority": p.priority,
        "weight": p.weight, "apis": list(p.apis or []),
    }


def _provider_form(**context: Any) -> dict[str, Any]:
    return {"kinds": PROVIDER_KINDS, "apis": CLIENT_APIS, "translated_only": TRANSLATED_ONLY, **context}


@bp.get("/console/providers")
def providers() -> str:
    """Every provider with its model count."""
    counts = dict(db.session.execute(
        select(ProviderModel.provider_id, func.count(ProviderModel.id)).group_by(ProviderModel.provider_id)
    ).all())
    rows = list(db.session.scalars(select(Provider).order_by(Provider.priority.desc(), Provider.name)))
    return render_template("console/providers.html", providers=rows, model_counts=counts)


@bp.route("/console/providers/new", methods=["GET", "POST"])
def provider_new() -> str | BaseResponse | tuple[str, int]:
    """Create a provider."""
    context = _provider_form(provider=None)
    if request.method == "GET":
        return render_template("console/provider_form.html", values={"enabled": True, "kind": "openai"},
                               errors={}, problem=None, **context)
    created, refusal = _attempt(lambda: create_provider_from(
        form_body(provider_in, request.form, skip_blank=("server_key", "personalized_key"))
    ))
    if refusal is not None:
        return _refused("console/provider_form.html", refusal.status, refusal, **context)
    assert created is not None
    return redirect(url_for("console.provider", provider_id=created[0].id, saved="created"))


@bp.route("/console/providers/<int:provider_id>", methods=["GET", "POST"])
def provider(provider_id: int) -> str | BaseResponse | tuple[str, int]:
    """A provider's settings and its models."""
    row = get_or_404(Provider, provider_id, "Provider")
    models = list(db.session.scalars(
        select(ProviderModel).where(ProviderModel.provider_id == provider_id).order_by(ProviderModel.model_name)
    ))
    context = _provider_form(provider=row, models=models, decimal_text=decimal_text,
                             saved=request.args.get("saved"), model_values={}, model_errors={})
    if request.method == "GET":
        return render_template("console/provider_form.html", values=_provider_values(row), errors={},
                               problem=None, **context)
    body = form_body(provider_in, request.form, skip_blank=("server_key", "personalized_key"))
    _, refusal = _attempt(lambda: update_provider_from(provider_id, body))
    if refusal is not None:
        return _refused("console/provider_form.html", refusal.status, refusal, **context)
    return redirect(url_for("console.provider", provider_id=provider_id, saved="saved"))


@bp.post("/console/providers/<int:provider_id>/enabled")
def provider_enabled(provider_id: int) -> BaseResponse:
    """Enable or disable a provider."""
    update_provider_from(provider_id, {"enabled": request.form.get("enabled") == "true"})
    return redirect(request.form.get("back") == "list" and url_for("console.providers")
                    or url_for("console.provider", provider_id=provider_id, saved="saved"))


@bp.route("/console/providers/<int:provider_id>/delete", methods=["GET", "POST"])
def provider_delete(provider_id: int) -> str | BaseResponse:
    """Ask, then delete a provider with its models (keys scoped to it lose it)."""
    row = get_or_404(Provider, provider_id, "Provider")
    if request.method == "POST":
        delete_provider_row(provider_id)
        return redirect(url_for("console.providers"))
    models = db.session.scalar(select(func.count(ProviderModel.id)).where(ProviderModel.provider_id == provider_id))
    scoped = [k for k in db.session.scalars(select(ApiKey).order_by(ApiKey.name)) if provider_id in k.provider_ids]
    return render_template("console/confirm_delete.html", what=f"provider {row.name}",
                           consequences=[f"its {models} model(s) are deleted with it"]
                           + [f"key {k.name} loses it" + (" and is disabled (no provider left)"
                                                          if k.provider_ids == [provider_id] else "")
                              for k in scoped],
                           back=url_for("console.provider", provider_id=provider_id))


# --- models -------------------------------------------------------------------------------------

def _model_values(m: ProviderModel) -> dict[str, Any]:
    return {
        "model_name": m.model_name, "upstream_name": m.upstream_name or "", "description": m.description or "",
        "enabled": m.enabled, "input_price": decimal_text(m.input_price), "output_price": decimal_text(m.output_price),
        "cached_input_price": decimal_text(m.cached_input_price),
        "cache_write_price": decimal_text(m.cache_write_price),
        "context_length": m.context_length or "",
    }


@bp.post("/console/providers/<int:provider_id>/models")
def model_new(provider_id: int) -> BaseResponse | tuple[str, int]:
    """Add a model to a provider (prices left blank take the built-in list price, when known)."""
    row = get_or_404(Provider, provider_id, "Provider")
    body = form_body(model_in, request.form)
    body = {k: v for k, v in body.items() if v is not None}  # blank: list price or none, not "null"
    body["provider_id"] = provider_id
    _, refusal = _attempt(lambda: create_model_from(body))
    if refusal is None:
        return redirect(url_for("console.provider", provider_id=provider_id, saved="model added") + "#models")
    models = list(db.session.scalars(
        select(ProviderModel).where(ProviderModel.provider_id == provider_id).order_by(ProviderModel.model_name)
    ))
    errors = {f: m if isinstance(m, list) else [str(m)] for f, m in refusal.details.items()}
    page = render_template(
        "console/provider_form.html", values=_provider_values(row), errors={}, problem=None,
        **_provider_form(provider=row, models=models, decimal_text=decimal_text, saved=None,
                         model_values=_typed(), model_errors=errors, model_problem=refusal.message),
    )
    return page, refusal.status


@bp.route("/console/models/<int:model_id>", methods=["GET", "POST"])
def model(model_id: int) -> str | BaseResponse | tuple[str, int]:
    """Edit one model: names, prices, enabled."""
    row = get_or_404(ProviderModel, model_id, "Provider model")
    context = {"model": row, "provider": row.provider}
    if request.method == "GET":
        return render_template("console/model_form.html", values=_model_values(row), errors={}, problem=None,
                               **context)
    _, refusal = _attempt(lambda: update_model_from(model_id, form_body(model_in, request.form)))
    if refusal is not None:
        return _refused("console/model_form.html", refusal.status, refusal, **context)
    return redirect(url_for("console.provider", provider_id=row.provider_id, saved="model saved") + "#models")


@bp.route("/console/models/<int:model_id>/delete", methods=["GET", "POST"])
def model_delete(model_id: int) -> str | BaseResponse:
    """Ask, then delete a model."""
    row = get_or_404(ProviderModel, model_id, "Provider model")
    back = url_for("console.provider", provider_id=row.provider_id)
    if request.method == "POST":
        delete_model_row(model_id)
        return redirect(back + "#models")
    return render_template("console/confirm_delete.html", what=f"model {row.model_name} of {row.provider.name}",
                           consequences=["requests for it stop being routed to this provider"], back=back)


# --- keys ---------------------------------------------------------------------------------------

def _key_values(k: ApiKey) -> dict[str, Any]:
    return {
        "name": k.name, "provider_ids": [str(i) for i in k.provider_ids], "models": ", ".join(k.models),
        "rpm": k.rpm or "", "tpm": k.tpm or "", "max_concurrency": k.max_concurrency or "",
        "token_quota": k.token_quota or "", "budget_usd": decimal_text(k.budget_usd),
        "quota_period": k.quota_period, "enabled": k.enabled,
        "expires_at": k.expires_at.strftime("%Y-%m-%dT%H:%M") if k.expires_at else "",
        "archive_messages": "" if k.archive_messages is None else str(k.archive_messages).lower(),
    }


def _key_form(**context: Any) -> dict[str, Any]:
    providers = db.session.execute(select(Provider.id, Provider.name).order_by(Provider.name)).all()
    periods = key_update.fields["quota_period"].validate.choices  # type: ignore[union-attr]
    return {"providers": providers, "period_options": [(p, p) for p in periods], **context}


@bp.get("/console/keys")
def keys() -> str:
    """Every client key, by name."""
    rows = list(db.session.scalars(select(ApiKey).order_by(ApiKey.name, ApiKey.id)))
    names = dict(db.session.execute(select(Provider.id, Provider.name)).all())
    return render_template("console/keys.html", keys=rows, provider_names=names, now=utcnow().replace(tzinfo=None))


@bp.route("/console/keys/new", methods=["GET", "POST"])
def key_new() -> str | Response | tuple[str, int]:
    """Create a key; its value is shown once, on the page this answers with."""
    context = _key_form(key=None)
    if request.method == "GET":
        return render_template("console/key_form.html", values={"enabled": True, "quota_period": "total"},
                               errors={}, problem=None, **context)
    created, refusal = _attempt(lambda: create_key_from(form_body(key_in, request.form, skip_blank=("key",))))
    if refusal is not None:
        return _refused("console/key_form.html", refusal.status, refusal, **context)
    assert created is not None
    row, generated = created
    if generated is None:
        return redirect(url_for("console.key", key_id=row.id, saved="created with the value you chose"))
    return _shown_once("Key created", row, generated)


@bp.route("/console/keys/<int:key_id>", methods=["GET", "POST"])
def key(key_id: int) -> str | BaseResponse | tuple[str, int]:
    """A key's settings, its usage over the last 30 days and its quota."""
    row = get_or_404(ApiKey, key_id, "Key")
    if request.method == "POST":
        _, refusal = _attempt(lambda: update_key_from(key_id, form_body(key_update, request.form)))
        if refusal is None:
            return redirect(url_for("console.key", key_id=key_id, saved="saved"))
        context = _key_form(key=row, saved=None, **_key_usage(row))
        return _refused("console/key_form.html", refusal.status, refusal, **context)
    context = _key_form(key=row, saved=request.args.get("saved"), **_key_usage(row))
    return render_template("console/key_form.html", values=_key_values(row), errors={}, problem=None, **context)


def _key_usage(row: ApiKey) -> dict[str, Any]:
    first = utcnow().date() - timedelta(days=KEY_USAGE_DAYS - 1)
    db.session.rollback()  # the report's snapshot begins with its first read
    begin_snapshot(db.session)
    charts, report, total = daily_charts(Window(start=midnight(first), key_id=row.id), first, KEY_USAGE_DAYS)
    quota = key_with_consumption(db.session.get(ApiKey, row.id) or row)
    bars = []
    if row.token_quota:
        bars.append(("Tokens", count(quota["used_tokens"]), count(row.token_quota),
                     min(100.0, 100.0 * quota["used_tokens"] / row.token_quota)))
    if row.budget_usd is not None:
        used = float(quota["used_usd"])
        bars.append(("Budget", money(used), money(row.budget_usd),
                     min(100.0, 100.0 * used / float(row.budget_usd)) if row.budget_usd else 100.0))
    return {"charts": charts[:3], "usage_total": total, "quota": quota, "quota_bars": bars,
            "usage_days": KEY_USAGE_DAYS,
            "by_model": sorted(report.by_model.items(), key=lambda kv: -kv[1].sums.requests),
            "money": money, "count": count}


@bp.post("/console/keys/<int:key_id>/rotate")
def key_rotate(key_id: int) -> Response:
    """Give a key a new generated value, shown once; the old one stops working."""
    row, value = rotate_key_from(key_id, {})
    assert value is not None
    return _shown_once("Key rotated", row, value)


@bp.post("/console/keys/<int:key_id>/enabled")
def key_enabled(key_id: int) -> BaseResponse:
    """Enable or disable a key."""
    update_key_from(key_id, {"enabled": request.form.get("enabled") == "true"})
    return redirect(url_for("console.key", key_id=key_id, saved="saved"))


@bp.route("/console/keys/<int:key_id>/delete", methods=["GET", "POST"])
def key_delete(key_id: int) -> str | BaseResponse:
    """Ask, then delete a key."""
    row = get_or_404(ApiKey, key_id, "Key")
    if request.method == "POST":
        delete_key_row(key_id)
        return redirect(url_for("console.keys"))
    return render_template("console/confirm_delete.html", what=f"key {row.name} ({row.key_hint})",
                           consequences=["clients using it are refused from the next config reload (within 2 s)",
                                         "its usage records stay, under its id"],
                           back=url_for("console.key", key_id=key_id))


# --- provider test ------------------------------------------------------------------------------

TEST_TIMEOUT_CAP_S = 120.0


@bp.post("/console/providers/<int:provider_id>/test")
def provider_test(provider_id: int) -> str:
    """Ask the proxy to send the provider one tiny request; show what came back."""
    row = get_or_404(Provider, provider_id, "Provider")
    result = ask_proxy_to_test(row, request.form.get("model") or None)
    models = list(db.session.scalars(
        select(ProviderModel).where(ProviderModel.provider_id == provider_id).order_by(ProviderModel.model_name)
    ))
    return render_template(
        "console/provider_form.html", values=_provider_values(row), errors={}, problem=None, test=result,
        **_provider_form(provider=row, models=models, decimal_text=decimal_text, saved=None, model_values={},
                         model_errors={}),
    )


def ask_proxy_to_test(provider: Provider, model: str | None) -> dict[str, Any]:
    """The proxy's answer to `POST /admin/providers/{id}/test` (the proxy holds the decrypted key)."""
    s = settings()
    query = f"?{urlencode({'model': model})}" if model else ""
    url = f"{s.proxy_url_for_admin}/admin/providers/{provider.id}/test{query}"
    headers = {"Authorization": f"Bearer {s.admin_token}"} if s.admin_token else {}
    timeout = min(TEST_TIMEOUT_CAP_S, (provider.timeout_s or 60.0) + (provider.connect_timeout_s or 5.0) + 5.0)
    try:
        with urlopen(Request(url, data=b"", method="POST", headers=headers), timeout=timeout) as answer:
            return dict(json.loads(answer.read()))
    except HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {}
        message = body.get("error") if isinstance(body.get("error"), str) else (body.get("error") or {}).get("message")
        return {"ok": False, "status": exc.code, "error": message or f"the proxy answered {exc.code}"}
    except (URLError, TimeoutError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"ok": False, "status": None,
                "error": f"the proxy at {s.proxy_url_for_admin} could not be reached ({reason}); is it running?"}
