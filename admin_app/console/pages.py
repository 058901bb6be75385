"""Console pages that read: sign-in, the dashboard, usage records, the audit log, provider health."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from flask import Response, redirect, render_template, request, url_for
from marshmallow import ValidationError
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from admin_app.console import bp, settings
from admin_app.console import session as console_session
from admin_app.console.charts import BarChart, bar_chart
from admin_app.errors import ValidationFailed
from admin_app.extensions import db
from admin_app.provider_health import fresh_rows, merged_health
from admin_app.schemas.audit import RESOURCES
from admin_app.schemas.usage import RecordsQuerySchema
from admin_app.stats import window_from
from admin_app.usage import daily_sums, export_record, export_response, midnight, record_conditions, utcnow
from admin_app.usage_figures import (
    Group,
    Sums,
    Window,
    begin_snapshot,
    breakdown,
    cells,
    cost_text,
    date_day,
    day_date,
    p95,
    provider_names,
)
from shared.models import ApiKey, AuditLog, Provider, UsageRecord

DASHBOARD_DAYS = (7, 30, 90)
TOP_N = 5
RECORDS_PER_PAGE = 50
AUDIT_PER_PAGE = 50
records_query = RecordsQuerySchema()


# --- figures shown as text ----------------------------------------------------------------------

def money(value: Decimal | float | int) -> str:
    """USD for people: cents above a dollar, more places below."""
    amount = Decimal(str(value))
    if amount == 0:
        return "$0"
    if amount >= 1:
        return f"${amount:,.2f}"
    return "$" + format(amount.quantize(Decimal("0.000001")).normalize(), "f")


def count(value: float | int) -> str:
    """An integer with thousands separators."""
    return f"{int(value):,}"


@dataclass
class Line:
    """One row of a top-N table."""

    label: str
    sums: Sums
    href: str | None = None


def key_label_of(key_id: int | None) -> str:
    """How a key id with no key row is shown (usage with no key: the console's provider tests)."""
    if key_id is None:
        return "(provider tests)"
    return f"key {key_id} (deleted)"


# --- sign-in ------------------------------------------------------------------------------------

@bp.route("/console/sign-in", methods=["GET", "POST"])
def sign_in() -> str | BaseResponse | tuple[str, int]:
    """Ask for the admin token; on a match, start a session and go on."""
    s = settings()
    target = console_session.safe_next(request.values.get("next"), url_for("console.dashboard"))
    if not console_session.sign_in_required(s):
        return redirect(target)
    if request.method == "POST":
        if console_session.token_matches(s, request.form.get("token", "")):
            console_session.start_session()
            return redirect(target)
        return render_template("console/sign_in.html", next=target, error="That is not the admin token."), 401
    return render_template("console/sign_in.html", next=target, error=None)


@bp.post("/console/sign-out")
def sign_out() -> BaseResponse:
    """End the session."""
    console_session.end_session()
    return redirect(url_for("console.sign_in"))


# --- dashboard ----------------------------------------------------------------------------------

def daily_charts(window: Window, first: date, days: int) -> tuple[list[BarChart], Any, Sums]:
    """Per-day charts (requests, tokens, cost, errors), the breakdown and the totals of `window`."""
    # Two summaries, each grouped in SQL: per day alone, and per dimension over the window. One
    # grouped by both would hand Python days x keys x models x providers cells (7,200 for 90 days).
    per_day = daily_sums(cells(db.session, window, by_day=True, dims=()))
    report = breakdown(cells(db.session, window), provider_names(db.session))
    first_day = date_day(first)
    dates = [day_date(d) for d in range(first_day, first_day + days)]
    series = [per_day.get(d, Sums()) for d in range(first_day, first_day + days)]
    charts = [
        bar_chart("Requests", dates, [s.requests for s in series], count),
        bar_chart("Tokens", dates, [s.total_tokens for s in series], count),
        bar_chart("Cost", dates, [float(s.cost) for s in series], money),
        bar_chart("Errors", dates, [s.errors for s in series], count),
    ]
    return charts, report, report.total.sums


def _top(groups: dict[str, Group], label: Any, href: Any = None) -> list[Line]:
    ordered = sorted(groups.items(), key=lambda item: (-item[1].sums.requests, item[0]))[:TOP_N]
    return [Line(label(name, g), g.sums, href(name, g) if href else None) for name, g in ordered]


@bp.get("/")
def dashboard() -> str:
    """Requests, tokens, cost and errors per day; top models, providers and keys; latency."""
    days = request.args.get("days", type=int) or DASHBOARD_DAYS[0]
    if days not in DASHBOARD_DAYS:
        raise ValidationFailed(f"days must be one of {', '.join(map(str, DASHBOARD_DAYS))}", code="invalid_parameter")
    now = utcnow()
    first = now.date() - timedelta(days=days - 1)
    begin_snapshot(db.session)
    window = Window(start=midnight(first))
    charts, report, total = daily_charts(window, first, days)
    p50_ms = p95(db.session, window, report.total, 50)
    p95_ms = p95(db.session, window, report.total)
    key_names = {str(kid): name for kid, name in db.session.execute(select(ApiKey.id, ApiKey.name))}
    health = fresh_rows()
    return render_template(
        "console/dashboard.html",
        days=days, choices=DASHBOARD_DAYS, charts=charts, total=total, p50_ms=p50_ms, p95_ms=p95_ms,
        in_flight=sum(r.in_flight for r in health) if health else None,
        top_models=_top(report.by_model, lambda name, g: name),
        top_providers=_top(report.by_provider, lambda name, g: name),
        top_keys=_top(
            report.by_key,
            lambda name, g: key_names.get(name, key_label_of(g.key_id)),
            lambda name, g: url_for("console.key", key_id=g.key_id) if name in key_names else None,
        ),
        money=money, count=count,
    )


# --- usage records ------------------------------------------------------------------------------

def _records_args() -> dict[str, Any]:
    raw = {k: v for k, v in request.args.items() if v != ""}
    try:
        return dict(records_query.load(raw))
    except ValidationError as exc:
        raise ValidationFailed("Invalid filter", code="invalid_parameter", details=exc.messages) from None  # type: ignore[arg-type]


@bp.get("/console/usage")
def usage() -> str:
    """Usage records, newest first, filtered and paginated on the server."""
    args = _records_args()
    page = args["page"]
    window = window_from(args)
    u = UsageRecord
    query = (
        select(u).where(*record_conditions(window, args.get("api"), args.get("status")))
        .order_by(u.created_at.desc(), u.id.desc())
        .limit(RECORDS_PER_PAGE + 1).offset((page - 1) * RECORDS_PER_PAGE)
    )
    rows = list(db.session.scalars(query))
    key_names = {int(kid): name for kid, name in db.session.execute(select(ApiKey.id, ApiKey.name))}
    filters = {k: v for k, v in request.args.items() if k != "page" and v != ""}
    return render_template(
        "console/usage.html",
        records=[export_record(r, key_names) for r in rows[:RECORDS_PER_PAGE]],
        page=page, has_next=len(rows) > RECORDS_PER_PAGE, filters=filters,
        keys=db.session.execute(select(ApiKey.id, ApiKey.name).order_by(ApiKey.name)).all(),
        providers=db.session.execute(select(Provider.id, Provider.name).order_by(Provider.name)).all(),
        apis=records_query.fields["api"].validate.choices,  # type: ignore[union-attr]
        money=money, cost_text=cost_text, key_label_of=key_label_of,
    )


@bp.get("/console/usage/export")
def usage_export() -> Response:
    """The filtered records as CSV or JSON Lines (the JSON API's export, behind the console's session)."""
    args = _records_args()
    args.pop("page", None)
    return export_response(args)


# --- audit log ----------------------------------------------------------------------------------

@bp.get("/console/audit")
def audit() -> str:
    """Admin changes, newest first."""
    page = max(1, request.args.get("page", type=int) or 1)
    resource = request.args.get("resource") or None
    if resource is not None and resource not in RESOURCES:
        raise ValidationFailed(f"resource must be one of {', '.join(RESOURCES)}", code="invalid_parameter")
    query = select(AuditLog).order_by(AuditLog.id.desc()).limit(AUDIT_PER_PAGE + 1).offset((page - 1) * AUDIT_PER_PAGE)
    if resource is not None:
        query = query.where(AuditLog.resource == resource)
    rows = list(db.session.scalars(query))
    return render_template(
        "console/audit.html", entries=rows[:AUDIT_PER_PAGE], page=page,
        has_next=len(rows) > AUDIT_PER_PAGE, resource=resource, resources=RESOURCES,
    )


# --- provider health ----------------------------------------------------------------------------

@bp.get("/console/health")
def health() -> str:
    """Every provider's circuit state, error rate and latency as the live proxies report them."""
    rows = fresh_rows()
    by_provider: dict[int, list[Any]] = {}
    for row in rows:
        by_provider.setdefault(row.provider_id, []).append(row)
    providers = list(db.session.scalars(select(Provider).order_by(Provider.name)))
    return render_template(
        "console/health.html",
        reports=[(p, merged_health(p, by_provider.get(p.id, []))) for p in providers],
        reporting=bool(rows),
    )
