"""POST /v1/events and the station WebSocket: validate, authorise, then group-commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from screening.alerts import acknowledge_hold
from screening.api.auth import principal_of
from screening.api.context import GATEWAY, Gateway
from screening.api.jsonbody import parse_json
from screening.api.problems import DATABASE_OUTAGE, field_errors
from screening.api.schemas import (
    EventBase,
    EventIn,
    RealnameRegisteredIn,
    validate_event,
    validate_whole_body,
    validation_context,
)
from screening.background import cancel_and_wait
from screening.domain.access import Permission, Principal
from screening.domain.records import ContractAgreement
from screening.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    ForbiddenError,
    InvalidEventError,
    PayloadTooLargeError,
)
from screening.services.ingest import prepare
from screening.storage import contracts as contract_store
from screening.storage import sites as site_store
from screening.storage.errors import DatabaseUnavailableError, UnstorableEventError

log = logging.getLogger(__name__)

PACING_BYTES = 8192  # a body's pacing units: one, plus one per this many bytes
STREAM_REAUTH_S = 5.0  # a station's stream re-checks its key this often, idle or not
MIN_REAUTH_WAIT_S = 0.05
# Control messages a station sends on its stream, and the id field each acknowledges: a hold once
# the belt is stopped, a release once it is shown at the tunnel (firmware_bridge/PROTOCOL.md).
CONTROL_MESSAGES: dict[str, str | None] = {
    "hold.ack": "hold_id",
    "hold.release.ack": "release_id",
    "ping": None,
}


async def _pace(gw: Gateway, raw: bytes | str) -> None:
    """Wait for this body's turn to be parsed and validated (screening.api.pacing). A
    WebSocket text frame is measured in characters, not bytes: near enough for a budget."""
    if gw.pacer is not None:
        await gw.pacer.turn(1 + len(raw) // PACING_BYTES)


async def _site_known(gw: Gateway, site_id: str) -> bool:
    if site_id in gw.known_sites:
        return True
    return await gw.site_lookups.run(site_id, lambda: _look_up_site(gw, site_id))


async def _look_up_site(gw: Gateway, site_id: str) -> bool:
    async with gw.pool.acquire() as conn:
        found = await site_store.get_sites(conn, [site_id])
    gw.known_sites.update(found)
    return site_id in found


async def _site_refusal(gw: Gateway, principal: Principal, site_id: str) -> FieldError | None:
    """Why events for ``site_id`` are refused to this key, if they are."""
    if not principal.covers(site_id):
        return FieldError("forbidden_site", "site_id", "this key may not write here")
    if not await _site_known(gw, site_id):
        return FieldError("unknown_site", "site_id", "no such site")
    return None


def _event_id_of(item: Any) -> str | None:
    if isinstance(item, EventBase):  # validated already (all_valid)
        return str(item.event_id)
    if isinstance(item, dict):
        value = item.get("event_id")
        if not isinstance(value, str) or len(value) > 64:
            return None
        try:  # in the form every other result gives it (upper case, braces, no hyphens: as sent)
            return str(UUID(value))
        except ValueError:
            return value
    return None


# A per-event result as it goes on the wire: the fields of schemas.EventResultOut, in its order.
# Built as plain dicts on the hot path (one per event) rather than as pydantic models that are
# dumped straight back to dicts; tests hold the two shapes together.
EventResult = dict[str, Any]


def _result(index: int, event_id: str | None, outcome: str) -> EventResult:
    return {"index": index, "event_id": event_id, "result": outcome, "code": None, "errors": []}


def _rejected(index: int, item: Any, errors: list[FieldError]) -> EventResult:
    return {
        "index": index,
        "event_id": _event_id_of(item),
        "result": "rejected",
        "code": errors[0].code,
        "errors": [e.as_dict() for e in errors],
    }


async def _agreements(
    gw: Gateway, events: list[EventIn]
) -> dict[tuple[str, str], list[ContractAgreement]]:
    """The security agreements on file for the contract customers these events name."""
    keys = [
        (e.site_id, e.contract_customer_ref)
        for e in events
        if isinstance(e, RealnameRegisteredIn) and e.contract_customer_ref is not None
    ]
    if not keys:
        return {}
    async with gw.pool.acquire() as conn:
        return await contract_store.find_agreements(conn, keys)


def _context(gw: Gateway, now: datetime) -> dict[str, Any]:
    return validation_context(now, gw.settings.max_future_skew_s)


def all_valid(gw: Gateway, text: bytes | str, now: datetime) -> tuple[bool, list[EventIn]] | None:
    """``schemas.validate_whole_body`` with this gateway's limits."""
    return validate_whole_body(text, _context(gw, now), gw.settings.max_batch_events)


async def ingest_items(
    gw: Gateway,
    principal: Principal,
    items: list[Any],
    now: datetime,
    *,
    validated: bool = False,
) -> list[EventResult]:
    """Validate and commit a list of raw JSON events (or of events ``all_valid`` already
    validated); one result per item, in order."""
    context = None if validated else _context(gw, now)
    results: list[EventResult | None] = [None] * len(items)
    valid: list[tuple[int, EventIn]] = []
    refusals: dict[str, FieldError | None] = {}  # each site named: why its events are refused
    for i, item in enumerate(items):
        if validated:
            event = item
        else:
            try:
                event = validate_event(item, context)
            except ValidationError as exc:
                results[i] = _rejected(i, item, field_errors(exc))
                continue
        site = event.site_id
        if site not in refusals:  # once per site and request, not once per event
            refusals[site] = await _site_refusal(gw, principal, site)
        if (refusal := refusals[site]) is not None:
            results[i] = _rejected(i, item, [refusal])
            continue
        valid.append((i, event))
    agreements = await _agreements(gw, [e for _, e in valid])
    ready = [(i, prepare(event, gw.vault, now, agreements)) for i, event in valid]

    outcomes = await gw.writer.submit([p for _, p in ready]) if ready else []
    counted: dict[tuple[str, str], int] = {}  # a dict, not a Counter: this runs per request
    for (i, p), outcome in zip(ready, outcomes, strict=True):
        # The id as the payload has it: str(p.event_id), without a Python-level UUID.__str__.
        results[i] = _result(i, p.payload["event_id"], outcome.value)
        labels = (p.event_type.value, outcome.value)
        counted[labels] = counted.get(labels, 0) + 1
    final = [r for r in results if r is not None]
    if rejected := len(final) - len(ready):
        counted[("unknown", "rejected")] = rejected
    for labels, n in counted.items():  # one metric update per label set, not per event
        gw.metrics.count_events(*labels, n)
    return final


def _summary(results: list[EventResult]) -> dict[str, Any]:
    """The body of schemas.IngestResponse."""
    # Counted in a plain loop: a Counter over a generator costs 1.8 µs for a single result,
    # this 0.45 (and every single-event POST pays it).
    counts = dict.fromkeys(("accepted", "duplicate", "conflict", "rejected"), 0)
    for r in results:
        counts[r["result"]] += 1
    return {"results": results, **counts}


def _items_of(raw: bytes, max_events: int) -> tuple[bool, list[Any]]:
    """A body's events as parsed JSON (whether it was one event), or its body-level error."""
    try:
        body = parse_json(raw)
    except ValueError as exc:  # every failure of parse_json
        raise BadRequestError(f"the body is not valid JSON: {exc}", code="malformed_json") from None
    if isinstance(body, dict):
        return True, [body]
    if not isinstance(body, list):
        raise BadRequestError("send one event object or an array of them", code="invalid_body")
    if not body:
        raise BadRequestError("the batch is empty", code="empty_batch")
    if len(body) > max_events:
        raise PayloadTooLargeError(
            f"at most {max_events} events per request", code="too_many_events"
        )
    return False, body


async def post_events(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal = await principal_of(request, Permission.WRITE_EVENTS)
    if request.content_length is not None and request.content_length > gw.settings.max_body_bytes:
        raise PayloadTooLargeError(
            f"body exceeds {gw.settings.max_body_bytes} bytes", code="body_too_large"
        )
    raw = await request.read()  # aiohttp enforces client_max_size while reading
    await _pace(gw, raw)
    now = datetime.now(UTC)
    if (whole := all_valid(gw, raw, now)) is not None:
        single, events = whole
        results = await ingest_items(gw, principal, events, now, validated=True)
    else:
        single, items = _items_of(raw, gw.settings.max_batch_events)
        results = await ingest_items(gw, principal, items, now)
    summary = _summary(results)
    if single:
        only = results[0]
        if only["result"] == "rejected":
            errors = [FieldError(e["code"], e["path"], e["message"]) for e in only["errors"]]
            if only["code"] == "forbidden_site":
                raise ForbiddenError(
                    "this key may not write events for that site", code="forbidden_site"
                )
            raise InvalidEventError("the event is invalid", errors)
        if only["result"] == "conflict":
            raise ConflictError(
                "an event with this event_id and a different payload was already accepted",
                code="conflict",
                event_id=only["event_id"],
            )
        status = 201 if only["result"] == "accepted" else 200
        return web.json_response(summary, status=status)
    return web.json_response(summary)


async def _unavailable(ws: web.WebSocketResponse, detail: str) -> None:
    """A station's message that met a database outage: not taken; the stream stays."""
    await ws.send_json({"type": "error", "code": "unavailable", "detail": detail})


async def station_stream(request: web.Request) -> web.WebSocketResponse:
    """WebSocket for stations: send events (object or array), get one ack per event back."""
    gw = request.app[GATEWAY]
    principal = await principal_of(request, Permission.WRITE_EVENTS, bearer_only=True)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=gw.settings.max_body_bytes)
    await ws.prepare(request)
    sites = sorted(principal.sites or [])
    for site in sites:
        gw.station_streams.setdefault(site, set()).add(ws)
    gw.metrics.station_streams.inc()
    loop = asyncio.get_running_loop()
    authenticated_at = loop.time()
    revoked = False

    async def recheck() -> bool | None:
        """Check the stream's key again: whether it still holds (None: it could not be
        checked); a revoked key's stream is told so, once, and closed."""
        nonlocal authenticated_at, revoked
        try:  # a key revoked while its station stays connected
            await principal_of(request, Permission.WRITE_EVENTS, bearer_only=True)
        except (AuthenticationError, ForbiddenError):
            if not revoked:  # set before any await: the watcher and a message may both ask
                revoked = True
                with contextlib.suppress(ConnectionResetError):  # the station may be gone
                    await ws.send_json(
                        {"type": "error", "code": "revoked", "detail": "the key was revoked"}
                    )
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION)
            return False
        except (*DATABASE_OUTAGE, DatabaseUnavailableError) as exc:
            log.warning("station stream could not check its key: %s", type(exc).__name__)
            return None
        authenticated_at = loop.time()
        return True

    async def watch_key() -> None:
        """Check the key of a stream that only listens too: it would otherwise go on being
        sent hold orders (which parcels are held, and why) after its key was revoked. A check
        that fails (the database away) is tried again a full period later, not at once."""
        next_check = authenticated_at + STREAM_REAUTH_S
        while not ws.closed and not revoked:
            await asyncio.sleep(max(next_check - loop.time(), MIN_REAUTH_WAIT_S))
            next_check = authenticated_at + STREAM_REAUTH_S  # a message's check moves it
            if loop.time() < next_check:
                continue
            try:
                if await recheck() is False:
                    return
            except Exception:  # unforeseen: the stream keeps its watcher
                log.exception("station stream key check raised")
            next_check = loop.time() + STREAM_REAUTH_S

    watcher = asyncio.create_task(watch_key(), name="station-stream-key")
    try:
        async for msg in ws:
            if loop.time() - authenticated_at >= STREAM_REAUTH_S:
                checked = await recheck()
                if checked is False:
                    break
                if checked is None:
                    # The key could not be checked: this message is not taken, the stream
                    # stays, and the next message checks again.
                    await _unavailable(ws, "the key could not be checked; nothing committed, retry")
                    continue
            if msg.type is not WSMsgType.TEXT:
                if msg.type is WSMsgType.BINARY:
                    await ws.send_json({"type": "error", "code": "text_frames_only"})
                continue
            await _pace(gw, msg.data)
            now = datetime.now(UTC)
            whole = all_valid(gw, msg.data, now)
            if whole is None:  # a control message, or events not all valid
                try:
                    body = parse_json(msg.data)
                except ValueError:
                    await ws.send_json({"type": "error", "code": "malformed_json"})
                    continue
                kind = body.get("type") if isinstance(body, dict) else None
                if isinstance(kind, str) and kind in CONTROL_MESSAGES:
                    order_key = CONTROL_MESSAGES[kind]  # the id field an ack carries
                    if order_key is not None:
                        try:
                            await acknowledge_hold(request.app, sites, body.get(order_key))
                        except (*DATABASE_OUTAGE, DatabaseUnavailableError) as exc:
                            log.warning("hold ack not recorded: %s", type(exc).__name__)
                            await _unavailable(
                                ws, "the acknowledgement was not recorded; send it again"
                            )
                    continue
                items = body if isinstance(body, list) else [body]
                if not items or len(items) > gw.settings.max_batch_events:  # codes as over HTTP
                    limit = gw.settings.max_batch_events
                    await ws.send_json(
                        {"type": "error", "code": "empty_batch", "detail": "the batch is empty"}
                        if not items
                        else {"type": "error", "code": "too_many_events",
                              "detail": f"at most {limit} events per message"}
                    )  # fmt: skip
                    continue
            try:
                if whole is not None:
                    results = await ingest_items(gw, principal, whole[1], now, validated=True)
                else:
                    results = await ingest_items(gw, principal, items, now)
            except UnstorableEventError:
                await ws.send_json(
                    {"type": "error", "code": "unstorable_value", "detail": "nothing committed"}
                )
                continue
            except DatabaseUnavailableError as exc:
                log.warning("station stream ingest failed: %s", exc)
                await _unavailable(ws, str(exc))
                continue
            except DATABASE_OUTAGE as exc:  # met by a lookup before the writer
                log.warning("station stream ingest failed: %s", type(exc).__name__)
                await _unavailable(ws, "the database is unreachable; nothing committed, retry")
                continue
            except Exception:  # unforeseen: answer this message, keep the station's stream
                log.exception("station stream ingest raised")
                await ws.send_json(
                    {"type": "error", "code": "internal_error", "detail": "retry this message"}
                )
                continue
            for r in results:
                await ws.send_json({"type": "ack", **r})
    except ConnectionResetError:  # the station went away, or its key was revoked meanwhile
        pass
    finally:
        for site in sites:
            gw.station_streams.get(site, set()).discard(ws)
        gw.metrics.station_streams.dec()
        await cancel_and_wait(watcher)
    return ws
