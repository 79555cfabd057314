"""Read endpoints: parcel status, site rates, violations; and the operational endpoints."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from screening.api.auth import principal_of
from screening.api.context import GATEWAY
from screening.api.schemas import (
    HealthOut,
    ParcelOut,
    RateOut,
    RatesOut,
    RuleStateOut,
    ViolationOut,
    ViolationsOut,
)
from screening.domain.access import Permission
from screening.domain.rates import RateCounts
from screening.errors import BadRequestError, NotFoundError
from screening.services import queries


def text_param(request: web.Request, name: str) -> str | None:
    """A query parameter's value; an empty one (a form's blank filter) is the same as none."""
    return request.query.get(name) or None


def date_param(request: web.Request, name: str) -> date | None:
    raw = text_param(request, name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequestError(f"{name} must be a date (YYYY-MM-DD)", code="invalid_query") from exc


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = text_param(request, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise BadRequestError(f"{name} must be an integer", code="invalid_query") from exc


async def get_parcel(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal = await principal_of(request, Permission.READ_PARCELS)
    typed, site_id = request.match_info["waybill_no"], request.query.get("site_id")
    try:
        view = await queries.parcel_status(gw.pool, principal, typed.upper(), site_id)
    except NotFoundError:
        if typed == typed.upper():
            raise
        # Stored before waybill numbers were kept in capitals (the ledger's hashes cover the
        # spelling, so old rows keep theirs): found as typed.
        view = await queries.parcel_status(gw.pool, principal, typed, site_id)
    dispatched = view.dispatched_at is not None
    out = ParcelOut(
        site_id=view.site_id,
        waybill_no=view.waybill_no,
        flow=view.flow,
        carrier=view.carrier,
        xray_required=view.xray_required,
        dispatched=dispatched,
        dispatched_at=view.dispatched_at,
        compliant=(not view.problems) if dispatched else None,
        rules={k: RuleStateOut(ok=ok, reasons=reasons) for k, (ok, reasons) in view.rules.items()},
        violations=list(view.problems) if dispatched else [],
        missing_before_dispatch=[] if dispatched else list(view.problems),
        events=view.timeline,
    )
    return web.json_response(out.model_dump(mode="json"))


def _rate(
    counts: RateCounts, day: date | None = None, flow: str | None = None, unbound: int = 0
) -> RateOut:
    return RateOut(
        unbound_scans=unbound,
        day=day,
        flow=flow,
        dispatched=counts.dispatched,
        realname_rate=counts.rate("realname_ok"),
        inspection_rate=counts.rate("inspection_ok"),
        xray_rate=counts.rate("xray_ok"),
        three_100_rate=counts.rate("all_ok"),
        xray_required=counts.xray_required,
        xray_screened_rate=counts.screened_rate(),
    )


async def get_rates(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal = await principal_of(request, Permission.READ_RATES)
    site_id = request.match_info["site_id"]
    queries.require_cover(principal, site_id)  # before the query's parameters are judged
    view = await queries.site_rates(
        gw.pool,
        principal,
        site_id,
        date_param(request, "from"),
        date_param(request, "to"),
        text_param(request, "group_by") or "day",
        datetime.now(UTC),
    )
    out = RatesOut(
        site_id=view.site.site_id,
        timezone=view.site.policy.timezone,
        from_day=view.first,
        to_day=view.last,
        group_by="day" if view.group_by == "day" else "flow",
        total=_rate(view.total, unbound=sum(view.unbound_scans.values())),
        rows=[
            _rate(r.counts, r.day, r.flow, view.unbound_scans.get(r.day, 0) if r.day else 0)
            for r in view.rows
        ],
    )
    return web.json_response(out.model_dump(mode="json", by_alias=True))


async def get_violations(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal = await principal_of(request, Permission.READ_VIOLATIONS)
    site_id = request.match_info["site_id"]
    queries.require_cover(principal, site_id)  # before the query's parameters are judged
    page = await queries.site_violations(
        gw.pool,
        principal,
        site_id,
        first=date_param(request, "from"),
        last=date_param(request, "to"),
        reason=text_param(request, "reason"),
        rule=text_param(request, "rule"),
        flow=text_param(request, "flow"),
        cursor=text_param(request, "cursor"),
        limit=_int_param(request, "limit", 100),
        now=datetime.now(UTC),
    )
    out = ViolationsOut(
        site_id=site_id,
        items=[
            ViolationOut(
                waybill_no=r.waybill_no,
                reason=r.reason,
                rule=r.rule,
                flow=r.flow,
                dispatch_day=r.dispatch_day,
                dispatched_at=r.dispatched_at,
                detected_at=r.detected_at,
            )
            for r in page.rows
        ],
        next_cursor=page.cursor,
    )
    return web.json_response(out.model_dump(mode="json"))


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves requests."""
    return web.json_response(HealthOut(status="ok").model_dump())


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers and the writer is running."""
    gw = request.app[GATEWAY]
    checks: dict[str, str] = {}
    try:
        async with gw.pool.acquire(timeout=2.0) as conn:
            await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    checks["writer"] = "ok" if gw.writer.running else "stopped"
    ok = all(v == "ok" for v in checks.values())
    body = HealthOut(status="ok" if ok else "unavailable", checks=checks)
    return web.json_response(body.model_dump(), status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    gw.metrics.writer_depth.set(gw.writer.depth)
    registry = gw.metrics.registry
    if gw.settings.prometheus_multiproc_dir is not None:
        # One of several workers (screening.workers): report the sum over all of them, from
        # the files every worker's metrics write their values to.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, str(gw.settings.prometheus_multiproc_dir)
        )
    body = generate_latest(registry)
    resp = web.Response(body=body)
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp
