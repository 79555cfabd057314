"""Police alerts over HTTP: list, details (masked sender), acknowledge / assign / close, the audited
identity read, the live SSE feed, and the admin's endpoints, dead letters, watchlist and policy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import datetime
from typing import Any, Literal, TypeVar

import yarl
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from screening.alerts import ALERTS
from screening.alerts.feed import parse_cursor
from screening.alerts.police import scope
from screening.alerts.webhooks import (
    MAX_ROTATION_OVERLAP_S,
    ROTATION_OVERLAP_S,
    check_secret,
    confirmation_json,
)
from screening.api.auth import principal_of, unscoped_principal_of
from screening.api.context import public_base
from screening.api.endpoints import Param, Route
from screening.api.jsonbody import read_json
from screening.api.problems import field_errors
from screening.domain.access import Permission
from screening.errors import (
    AuthenticationError,
    BadRequestError,
    ForbiddenError,
    InvalidEventError,
    NotFoundError,
)
from screening.storage import alerts as store
from screening.storage.alerts import Alert, Hold
from screening.storage.errors import StorageError
from screening.storage.scans import scan_image_url

FEED_POLL_S = 1.0  # re-read even without a NOTIFY (a withheld alert becomes visible on its own)
FEED_KEEPALIVE_S = 15.0  # an SSE comment keeps proxies from closing an idle stream
FEED_BATCH = 100
FEED_REAUTH_S = 5.0  # a revoked key's open feed closes within this (plus the key cache's lag)

M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AssignIn(_Body):
    assignee: str = Field(min_length=1, max_length=128)
    note: str = Field(default="", max_length=1000)


class CloseIn(_Body):
    disposition: Literal["seized", "released", "false_alarm"]
    note: str = Field(default="", max_length=1000)


class NoteIn(_Body):
    note: str = Field(default="", max_length=1000)


class PurposeIn(_Body):
    purpose: str = Field(min_length=8, max_length=500, description="Why the identity is read")


class WatchlistEntryIn(_Body):
    digest: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="hex HMAC-SHA256 of the document number under the shared matching key",
    )
    label: str = Field(default="", max_length=200)


class WatchlistIn(_Body):
    entries: list[WatchlistEntryIn] = Field(min_length=1, max_length=10000)

    @field_validator("entries")
    @classmethod
    def _each_digest_once(cls, entries: list[WatchlistEntryIn]) -> list[WatchlistEntryIn]:
        first: dict[str, int] = {}
        for i, entry in enumerate(entries):
            if entry.digest in first:  # which label would stand is not for us to guess
                raise PydanticCustomError(
                    "duplicate_entry",
                    "entries {a} and {b} name the same digest",
                    {"a": first[entry.digest], "b": i},
                )
            first[entry.digest] = i
        return entries


class WatchlistRemoveIn(_Body):
    digests: list[str] = Field(min_length=1, max_length=10000)


class RotateSecretIn(_Body):
    secret: str | None = Field(
        default=None,
        pattern=r"^whsec_[A-Za-z0-9+/=]{32,}$",
        description="the new secret (whsec_ and base64 of 24 to 64 bytes); empty: one is made",
    )
    overlap_s: int = Field(
        default=ROTATION_OVERLAP_S,
        ge=0,
        le=MAX_ROTATION_OVERLAP_S,
        description="seconds the old secret is still signed with beside the new one; 0: none",
    )

    @field_validator("secret")
    @classmethod
    def _secret_decodes(cls, value: str | None) -> str | None:
        return check_secret(value) if value is not None else None


def deliverable_url(value: str) -> str:
    """An http(s) URL a delivery can be made to: it parses, names a host, and each label of
    that host is one a name lookup takes (IDNA, 1 to 63 characters). Checked when the endpoint
    is registered; otherwise every alert's delivery to it fails with the same error."""
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise PydanticCustomError("invalid_url", "the URL has spaces or control characters")
    try:
        url = yarl.URL(value)
        host = url.raw_host
        if host and ":" not in host:  # a name (an IPv6 literal has colons)
            host.encode("idna")
    except (ValueError, UnicodeError):
        raise PydanticCustomError("invalid_url", "the URL cannot be parsed") from None
    if url.scheme not in ("http", "https") or not host or "%" in host:
        raise PydanticCustomError("invalid_url", "an http or https URL with a host is needed")
    if url.explicit_port is not None and not 1 <= url.explicit_port <= 65535:
        raise PydanticCustomError("invalid_url", "the port is not 1 to 65535")
    return value


class EndpointIn(_Body):
    url: str = Field(pattern=r"^https?://", max_length=2000)
    site_ids: list[str] = Field(default_factory=list, description="empty: every site")
    secret: str | None = Field(
        default=None,
        pattern=r"^whsec_[A-Za-z0-9+/=]{32,}$",
        description="whsec_ and standard base64 of a 24 to 64 byte key; empty: one is made",
    )

    @field_validator("url")
    @classmethod
    def _deliverable(cls, value: str) -> str:
        return deliverable_url(value)

    @field_validator("secret")
    @classmethod
    def _secret_decodes(cls, value: str | None) -> str | None:
        return check_secret(value) if value is not None else None


class ReplayIn(_Body):
    alert_ids: list[uuid.UUID] | None = None
    endpoint_id: uuid.UUID | None = None


class PolicyIn(_Body):
    categories: dict[str, dict[str, float | None]]
    default: dict[str, float | None] | None = None
    inspection_prohibited_found: bool = True
    watchlist: bool = True


def alert_json(alert: Alert, base: str) -> dict[str, Any]:
    return {
        "alert_id": str(alert.alert_id),
        "site_id": alert.site_id,
        "cause": alert.cause,
        "category": alert.category,
        "score": None if alert.score is None else round(float(alert.score), 4),
        "waybill_no": alert.waybill_no,
        "scan_id": str(alert.scan_id) if alert.scan_id else None,
        "policy_version": alert.policy_version,
        "occurred_at": alert.occurred_at.isoformat(),
        "created_at": alert.created_at.isoformat(),
        "status": alert.status,
        "assignee": alert.assignee,
        "disposition": alert.disposition,
        "closed_at": alert.closed_at.isoformat() if alert.closed_at else None,
        "revision": alert.revision,
        "confirmation": confirmation_json(alert),
        "details_url": f"{base}/v1/alerts/{alert.alert_id}",
        "image_url": (
            scan_image_url(base, alert.scan_id, alert.site_id) if alert.scan_id else None
        ),
    }


def hold_json(hold: Hold) -> dict[str, Any]:
    return {
        "hold_id": str(hold.hold_id),
        "site_id": hold.site_id,
        "waybill_no": hold.waybill_no,
        "reason": hold.reason,
        "scan_id": str(hold.scan_id) if hold.scan_id else None,
        "status": hold.status,
        "created_at": hold.created_at.isoformat(),
        "acked_at": hold.acked_at.isoformat() if hold.acked_at else None,
        "closed_at": hold.closed_at.isoformat() if hold.closed_at else None,
        "closed_by": hold.closed_by,
    }


def _uuid(request: web.Request, name: str, code: str = "unknown_alert") -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError as exc:
        raise NotFoundError(f"no such {name.removesuffix('_id')}", code=code) from exc


def _limit(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
        raise BadRequestError("limit is 1..1000", code="invalid_query")
    return int(raw)


async def read_body(request: web.Request, model: type[M]) -> M:
    try:
        raw = await read_json(request)
    except ValueError as exc:  # every failure of parse_json
        raise BadRequestError(f"the body is not valid JSON: {exc}", code="malformed_json") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEventError("invalid request body", field_errors(exc)) from None


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return json.loads(json.dumps(rows, default=_json_value))  # type: ignore[no-any-return]


def _json_value(value: Any) -> str:
    """Times in ISO 8601, as everywhere else in the API; ids and the rest as their text."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


# -- alerts --------------------------------------------------------------------------------------


async def list_alerts(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.READ_ALERTS)
    status = request.query.get("status")
    alerts = await request.app[ALERTS].police.find(principal, status, _limit(request))
    base = public_base(request)
    return web.json_response({"alerts": [alert_json(a, base) for a in alerts]})


async def get_alert(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.READ_ALERTS)
    alert, sender, actions = await request.app[ALERTS].police.details(
        principal, _uuid(request, "alert_id")
    )
    body = alert_json(alert, public_base(request))
    body["sender"] = (
        None
        if sender is None
        else {
            "document_type": sender.document_type,
            "document_masked": sender.document_masked,
            "name_masked": sender.name_masked,
            "phone_masked": sender.phone_masked,
            "contract_customer": sender.contract_customer_ref is not None,
        }
    )
    body["actions"] = _jsonable(actions)
    return web.json_response(body)


async def _act(request: web.Request, action: str) -> web.Response:
    principal = await principal_of(request, Permission.HANDLE_ALERTS)
    alert_id = _uuid(request, "alert_id")
    police = request.app[ALERTS].police
    if action == "assign":
        a = await read_body(request, AssignIn)
        alert = await police.act(principal, alert_id, action, assignee=a.assignee, note=a.note)
    elif action == "close":
        c = await read_body(request, CloseIn)
        alert = await police.act(
            principal, alert_id, action, disposition=c.disposition, note=c.note
        )
    else:
        note = (await read_body(request, NoteIn)).note if request.can_read_body else ""
        alert = await police.act(principal, alert_id, action, note=note)
    return web.json_response(alert_json(alert, public_base(request)))


async def acknowledge_alert(request: web.Request) -> web.Response:
    return await _act(request, "acknowledge")


async def assign_alert(request: web.Request) -> web.Response:
    return await _act(request, "assign")


async def close_alert(request: web.Request) -> web.Response:
    return await _act(request, "close")


async def read_alert_identity(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.READ_IDENTITY)
    body = await read_body(request, PurposeIn)
    alert, who = await request.app[ALERTS].police.identity(
        principal, _uuid(request, "alert_id"), body.purpose
    )
    return web.json_response(
        {
            "alert_id": str(alert.alert_id),
            "record_event_id": str(who.record_event_id),
            "document_type": who.document_type,
            "document_number": who.document_number,
            "name": who.name,
            "phone": who.phone,
            "contract_customer_ref": who.contract_customer_ref,
        },
        headers={"Cache-Control": "no-store"},
    )


async def list_identity_reads(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.HANDLE_ALERTS)
    reads = await request.app[ALERTS].police.reads(principal, _uuid(request, "alert_id"))
    return web.json_response({"reads": _jsonable(reads)})


async def alert_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events; ``id`` is a resumable cursor (send it back as Last-Event-ID). Each
    ``alert`` event carries an alert's current state. An update (a review confirming an alert
    raised on score; a police action: acknowledged, assigned, closed) moves the alert to the
    feed's end, so it comes again with a higher ``revision``: a consumer keeps one row per
    ``alert_id``. Always the same
    event name, so a consumer that missed the first message (or never resumed) still hears of
    the alert from the update alone."""
    principal = await principal_of(request, Permission.READ_ALERTS)
    component = request.app[ALERTS]
    sites = scope(principal)
    last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if last:
        try:
            cursor = parse_cursor(last)
        except StorageError as exc:
            raise BadRequestError(str(exc), code="invalid_last_event_id") from None
    else:
        async with component.pool.acquire() as conn:
            cursor = await store.feed_horizon(conn)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    base = public_base(request)
    loop = asyncio.get_running_loop()
    try:
        # The starting position as an id-only event: a console that loses the stream before the
        # first alert resumes from here (its Last-Event-ID) instead of from a later horizon.
        await resp.write(f"retry: 2000\nid: {cursor[0]}-{cursor[1]}\n\n".encode())
        quiet_since = authenticated_at = loop.time()
        with component.feed.subscription() as woke:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woke.wait(), FEED_POLL_S)
                woke.clear()
                if component.feed.closing:
                    break
                if loop.time() - authenticated_at >= FEED_REAUTH_S:
                    # A key revoked (or a console session ended) while its feed is open.
                    try:
                        await principal_of(request, Permission.READ_ALERTS)
                    except (AuthenticationError, ForbiddenError):
                        await resp.write(b"event: revoked\ndata: {}\n\n")
                        break
                    authenticated_at = loop.time()
                async with component.pool.acquire() as conn:
                    alerts = await store.feed_after(conn, cursor, sites, FEED_BATCH)
                for a in alerts:
                    data = json.dumps(alert_json(a, base), separators=(",", ":"))
                    await resp.write(f"id: {a.cursor}\nevent: alert\ndata: {data}\n\n".encode())
                    cursor = (a.txid, a.seq)
                if len(alerts) == FEED_BATCH:
                    woke.set()
                if alerts:
                    quiet_since = loop.time()
                elif loop.time() - quiet_since >= FEED_KEEPALIVE_S:
                    await resp.write(b": keepalive\n\n")
                    quiet_since = loop.time()
    except (ConnectionError, asyncio.CancelledError):
        pass  # the console went away (or the gateway stops); it resumes with Last-Event-ID
    return resp


# -- policy, watchlist, endpoints, dead letters --------------------------------------------------


async def get_alert_policy(request: web.Request) -> web.Response:
    await principal_of(request, Permission.READ_ALERTS)
    policy = await request.app[ALERTS].police.policy()
    return web.json_response({"version": policy.version, **policy.rules_json()})


async def put_alert_policy(request: web.Request) -> web.Response:
    principal = await unscoped_principal_of(request, Permission.MANAGE_ALERTING)
    body = await read_body(request, PolicyIn)
    policy = await request.app[ALERTS].police.set_policy(principal, body.model_dump())
    return web.json_response({"version": policy.version, **policy.rules_json()}, status=201)


def _digest(hex_digest: str) -> bytes:
    try:
        raw = bytes.fromhex(hex_digest)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise BadRequestError("a digest is 64 hex characters (HMAC-SHA256)", code="invalid_digest")
    return raw


async def add_watchlist(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.MANAGE_WATCHLIST)
    body = await read_body(request, WatchlistIn)
    size = await request.app[ALERTS].police.add_watchlist(
        principal, [(_digest(e.digest), e.label) for e in body.entries]
    )
    return web.json_response({"entries": size})


async def remove_watchlist(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.MANAGE_WATCHLIST)
    body = await read_body(request, WatchlistRemoveIn)
    size = await request.app[ALERTS].police.remove_watchlist(
        principal, [_digest(d) for d in body.digests]
    )
    return web.json_response({"entries": size})


async def add_webhook_endpoint(request: web.Request) -> web.Response:
    await unscoped_principal_of(request, Permission.MANAGE_ALERTING)
    body = await read_body(request, EndpointIn)
    endpoint_id, secret = await request.app[ALERTS].police.add_endpoint(
        body.url, sorted(set(body.site_ids)), body.secret
    )
    # The secret is shown once, like an API key.
    return web.json_response({"endpoint_id": str(endpoint_id), "secret": secret}, status=201)


async def list_webhook_endpoints(request: web.Request) -> web.Response:
    await unscoped_principal_of(request, Permission.MANAGE_ALERTING)
    rows = await request.app[ALERTS].police.endpoints()
    return web.json_response({"endpoints": _jsonable(rows)})


async def _set_endpoint(request: web.Request, enabled: bool) -> web.Response:
    await unscoped_principal_of(request, Permission.MANAGE_ALERTING)
    endpoint_id = _uuid(request, "endpoint_id", "unknown_endpoint")
    await request.app[ALERTS].police.enable_endpoint(endpoint_id, enabled)
    return web.json_response({"endpoint_id": str(endpoint_id), "enabled": enabled})


async def rotate_webhook_secret(request: web.Request) -> web.Response:
    await unscoped_principal_of(request, Permission.MANAGE_ALERTING)
    endpoint_id = _uuid(request, "endpoint_id", "unknown_endpoint")
    body = await read_body(request, RotateSecretIn) if request.body_exists else RotateSecretIn()
    secret, until = await request.app[ALERTS].police.rotate_secret(
        endpoint_id, body.secret, body.overlap_s
    )
    # Like the first secret, the new one is shown once.
    return web.json_response(
        {
            "endpoint_id": str(endpoint_id),
            "secret": secret,
            "previous_secret_until": until.isoformat() if until else None,
        }
    )


async def enable_webhook_endpoint(request: web.Request) -> web.Response:
    return await _set_endpoint(request, True)


async def disable_webhook_endpoint(request: web.Request) -> web.Response:
    return await _set_endpoint(request, False)


async def list_dead_letters(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.MANAGE_ALERTING)
    rows = await request.app[ALERTS].police.dead_letters(principal, _limit(request))
    return web.json_response({"dead_letters": _jsonable(rows)})


async def replay_dead_letters(request: web.Request) -> web.Response:
    await unscoped_principal_of(request, Permission.MANAGE_ALERTING)
    body = await read_body(request, ReplayIn)
    n = await request.app[ALERTS].police.replay(body.alert_ids, body.endpoint_id)
    return web.json_response({"replayed": n})


# -- holds ---------------------------------------------------------------------------------------


async def list_holds(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.READ_HOLDS)
    status = request.query.get("status")
    holds = await request.app[ALERTS].police.holds(principal, status, _limit(request))
    return web.json_response({"holds": [hold_json(h) for h in holds]})


async def _close_hold(request: web.Request, status: str) -> web.Response:
    principal = await principal_of(request, Permission.CLOSE_HOLDS)
    hold = await request.app[ALERTS].police.close_hold(
        principal, _uuid(request, "hold_id", "unknown_hold"), status
    )
    return web.json_response(hold_json(hold))


async def release_hold(request: web.Request) -> web.Response:
    return await _close_hold(request, "released")


async def seize_hold(request: web.Request) -> web.Response:
    return await _close_hold(request, "seized")


_UUID = {"type": "string", "format": "uuid"}
_ALERT = Param("alert_id", "path", "Alert id", _UUID, True)
_ENDPOINT = Param("endpoint_id", "path", "Webhook endpoint id", _UUID, True)
_HOLD = Param("hold_id", "path", "Hold id", _UUID, True)
_LIMIT = Param("limit", "query", "Page size, 1-1000", {"type": "integer", "default": 100})
_POLICE = ("police", "admin")
_READERS = ("supervisor", "police", "admin")
_ADMIN = ("admin",)

# Static paths before /v1/alerts/{alert_id}: aiohttp matches in registration order.
ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/alerts",
        list_alerts,
        "Alerts in your sites, newest first",
        roles=_READERS,
        params=(Param("status", "query", "open, acknowledged, assigned or closed"), _LIMIT),
    ),
    Route(
        "GET",
        "/v1/alerts/stream",
        alert_stream,
        "Live feed of new and updated alerts (server-sent events; resume with Last-Event-ID)",
        roles=_READERS,
        raw_response="text/event-stream",
    ),
    Route(
        "GET", "/v1/alerts/policy", get_alert_policy, "The alert policy in force", roles=_READERS
    ),
    Route(
        "PUT",
        "/v1/alerts/policy",
        put_alert_policy,
        "Store a new version of the alert policy",
        roles=_ADMIN,
        body=PolicyIn,
        success=(("201", "The new version"),),
    ),
    Route(
        "GET",
        "/v1/alerts/dead-letters",
        list_dead_letters,
        "Webhook deliveries that exhausted their retries or hit a 410",
        roles=_ADMIN,
        params=(_LIMIT,),
    ),
    Route(
        "POST",
        "/v1/alerts/dead-letters/replay",
        replay_dead_letters,
        "Send dead-lettered deliveries again (all, some alerts, or one endpoint)",
        roles=_ADMIN,
        body=ReplayIn,
    ),
    Route(
        "GET",
        "/v1/alerts/{alert_id}",
        get_alert,
        "One alert with its actions and the sender in masked form",
        roles=_READERS,
        params=(_ALERT,),
    ),
    Route(
        "POST",
        "/v1/alerts/{alert_id}/acknowledge",
        acknowledge_alert,
        "Acknowledge an alert",
        roles=_POLICE,
        body=NoteIn,
        params=(_ALERT,),
    ),
    Route(
        "POST",
        "/v1/alerts/{alert_id}/assign",
        assign_alert,
        "Assign an alert to an officer",
        roles=_POLICE,
        body=AssignIn,
        params=(_ALERT,),
    ),
    Route(
        "POST",
        "/v1/alerts/{alert_id}/close",
        close_alert,
        "Close an alert with a disposition (seized, released, false_alarm); closes the hold",
        roles=_POLICE,
        body=CloseIn,
        params=(_ALERT,),
    ),
    Route(
        "POST",
        "/v1/alerts/{alert_id}/identity",
        read_alert_identity,
        "The sender's full identity (police only; the read and its stated purpose are recorded)",
        roles=("police",),
        body=PurposeIn,
        params=(_ALERT,),
    ),
    Route(
        "GET",
        "/v1/alerts/{alert_id}/identity-reads",
        list_identity_reads,
        "Who read this alert's sender identity, when and why",
        roles=_POLICE,
        params=(_ALERT,),
    ),
    Route(
        "POST",
        "/v1/watchlist",
        add_watchlist,
        "Add keyed-HMAC digests of document numbers to the watchlist (never plaintext)",
        roles=_POLICE,
        body=WatchlistIn,
    ),
    Route(
        "POST",
        "/v1/watchlist/remove",
        remove_watchlist,
        "Remove digests from the watchlist",
        roles=_POLICE,
        body=WatchlistRemoveIn,
    ),
    Route(
        "GET",
        "/v1/webhook-endpoints",
        list_webhook_endpoints,
        "Police webhook endpoints",
        roles=_ADMIN,
    ),
    Route(
        "POST",
        "/v1/webhook-endpoints",
        add_webhook_endpoint,
        "Register a police webhook endpoint; its secret is returned once",
        roles=_ADMIN,
        body=EndpointIn,
        success=(("201", "Created"),),
    ),
    Route(
        "POST",
        "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
        rotate_webhook_secret,
        "Give an endpoint a new secret, returned once; the old one is signed with beside it for "
        "overlap_s seconds (default a day)",
        roles=_ADMIN,
        params=(_ENDPOINT,),
        body=RotateSecretIn,
    ),
    Route(
        "POST",
        "/v1/webhook-endpoints/{endpoint_id}/enable",
        enable_webhook_endpoint,
        "Enable an endpoint (after a 410 or a manual disable)",
        roles=_ADMIN,
        params=(_ENDPOINT,),
    ),
    Route(
        "POST",
        "/v1/webhook-endpoints/{endpoint_id}/disable",
        disable_webhook_endpoint,
        "Disable an endpoint; its deliveries wait",
        roles=_ADMIN,
        params=(_ENDPOINT,),
    ),
    Route(
        "GET",
        "/v1/holds",
        list_holds,
        "Hold orders in your sites",
        roles=("station", "supervisor", "police", "admin"),
        params=(Param("status", "query", "open, released or seized"), _LIMIT),
    ),
    Route(
        "POST",
        "/v1/holds/{hold_id}/release",
        release_hold,
        "Release a held parcel",
        roles=_POLICE,
        params=(_HOLD,),
    ),
    Route(
        "POST",
        "/v1/holds/{hold_id}/seize",
        seize_hold,
        "Seize a held parcel",
        roles=_POLICE,
        params=(_HOLD,),
    ),
)
