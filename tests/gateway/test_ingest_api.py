"""POST /v1/events and the station WebSocket against a real gateway and a real PostgreSQL:
idempotency, per-event results, every bad input the issue names, and personal data kept out of
responses, logs and clear-text columns."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from screening.api import ingest as ingest_api
from screening.api.context import GATEWAY
from screening.api.problems import MAX_FIELD_ERRORS
from screening.api.schemas import EVENT_ADAPTER, IngestResponse
from screening.domain.access import Role
from screening.domain.identity import mask_document
from screening.protection import (
    PersonalDataError,
    PersonalDataVault,
    SealedValue,
    field_associated_data,
)
from screening.services import access
from screening.services.ingest import commit_events, prepare
from screening.settings import Settings
from tests.conftest import RunningGateway, gateway_with
from tests.gateway.events import event, parcel_flow, resident_id

PROBLEM_JSON = "application/problem+json"
DOCUMENT = resident_id()  # 11010519491231002X, valid under GB 11643 MOD 11-2
WRONG_CHECK = DOCUMENT[:-1] + ("0" if DOCUMENT[-1] != "0" else "1")


def waybill() -> str:
    return "SF" + uuid.uuid4().hex[:12].upper()


def received(site: str, waybill_no: str | None = None, **fields: Any) -> dict[str, Any]:
    return event(
        "parcel.received",
        site,
        waybill_no or waybill(),
        **({"carrier": "SF", "flow": "air"} | fields),
    )


async def post(
    gw: RunningGateway,
    body: Any = None,
    *,
    role: str = "station",
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, Any]:
    """POST /v1/events; returns (status, content type, decoded JSON body)."""
    hdrs = gw.auth(role) | (headers or {})
    if data is None:
        data = json.dumps(body, ensure_ascii=False).encode()
        hdrs.setdefault("Content-Type", "application/json")
    async with gw.http.post(f"{gw.url}/v1/events", data=data, headers=hdrs) as resp:
        return resp.status, resp.content_type, await resp.json(content_type=None)


def assert_problem(status: int, content_type: str, body: Any, want_status: int, code: str) -> None:
    assert status == want_status, body
    assert content_type == PROBLEM_JSON
    assert body["code"] == code, body
    assert body["status"] == want_status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]


async def assert_still_serves(gw: RunningGateway) -> None:
    status, _, body = await post(gw, received(gw.keys.site))
    assert status == 201, body
    assert body["accepted"] == 1


async def get_parcel(gw: RunningGateway, waybill_no: str, role: str = "admin") -> tuple[int, str]:
    async with gw.http.get(f"{gw.url}/v1/parcels/{waybill_no}", headers=gw.auth(role)) as resp:
        return resp.status, await resp.text()


async def timeline_ids(gw: RunningGateway, waybill_no: str) -> set[str]:
    status, text = await get_parcel(gw, waybill_no)
    assert status == 200, text
    return {e["event_id"] for e in json.loads(text)["events"]}


# --- idempotency -------------------------------------------------------------------------------


async def test_single_event_is_201_accepted_then_200_duplicate_then_409_conflict(
    gateway: RunningGateway,
) -> None:
    item = received(gateway.keys.site)

    status, ctype, body = await post(gateway, item)
    assert status == 201, body
    assert ctype == "application/json"
    assert body["results"] == [
        {"index": 0, "event_id": item["event_id"], "result": "accepted", "code": None, "errors": []}
    ]
    assert (body["accepted"], body["duplicate"], body["conflict"], body["rejected"]) == (1, 0, 0, 0)

    status, _, body = await post(gateway, item)
    assert status == 200, body
    assert body["results"][0]["result"] == "duplicate"
    assert body["duplicate"] == 1

    status, ctype, body = await post(gateway, item | {"carrier": "EMS"})
    assert_problem(status, ctype, body, 409, "conflict")


async def test_a_conflicting_retry_leaves_the_first_payload_in_place(
    gateway: RunningGateway,
) -> None:
    site, wb = gateway.keys.site, waybill()
    first = event("inspection.completed", site, wb, clerk_id="clerk-a", result="pass")
    assert (await post(gateway, [first]))[0] == 200
    status, _, body = await post(gateway, [first | {"clerk_id": "clerk-b", "result": "refused"}])
    assert status == 200, body
    assert body["results"][0]["result"] == "conflict"
    assert body["conflict"] == 1

    status, text = await get_parcel(gateway, wb)
    assert status == 200, text
    [stored] = json.loads(text)["events"]
    assert stored["event_id"] == first["event_id"]
    assert stored["payload"]["clerk_id"] == "clerk-a"
    assert stored["payload"]["result"] == "pass"


async def test_the_same_event_twice_in_one_batch_is_accepted_then_duplicate(
    gateway: RunningGateway,
) -> None:
    item = received(gateway.keys.site)
    status, _, body = await post(gateway, [item, item])
    assert status == 200, body
    assert [r["result"] for r in body["results"]] == ["accepted", "duplicate"]
    assert [r["event_id"] for r in body["results"]] == [item["event_id"]] * 2


async def test_one_event_id_with_two_payloads_in_one_batch_is_accepted_then_conflict(
    gateway: RunningGateway,
) -> None:
    item = received(gateway.keys.site)
    status, _, body = await post(gateway, [item, item | {"flow": "rail"}])
    assert status == 200, body
    assert [r["result"] for r in body["results"]] == ["accepted", "conflict"]
    assert (body["accepted"], body["conflict"]) == (1, 1)


async def test_copies_in_one_batch_are_judged_against_what_is_stored(
    gateway: RunningGateway,
) -> None:
    """Stored X; a batch carries Y twice: both copies conflict (the second is not a duplicate of
    the first, which was never stored), and a copy of X among them is a duplicate."""
    x = received(gateway.keys.site)
    assert (await post(gateway, [x]))[2]["accepted"] == 1
    y = x | {"flow": "rail"}
    status, _, body = await post(gateway, [y, y, x])
    assert status == 200, body
    assert [r["result"] for r in body["results"]] == ["conflict", "conflict", "duplicate"]


async def test_a_retried_batch_accepts_only_the_new_events(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    old = [received(site), received(site)]
    assert (await post(gateway, old))[2]["accepted"] == 2
    new = received(site)
    status, _, body = await post(gateway, [*old, new])
    assert status == 200, body
    assert [r["result"] for r in body["results"]] == ["duplicate", "duplicate", "accepted"]


async def test_a_retried_realname_event_is_a_duplicate_although_sealing_is_randomised(
    gateway: RunningGateway,
) -> None:
    realname = parcel_flow(gateway.keys.site, waybill())[1]
    assert realname["type"] == "realname.registered"
    assert (await post(gateway, realname))[0] == 201
    status, _, body = await post(gateway, realname)
    assert status == 200, body
    assert body["results"][0]["result"] == "duplicate"


async def test_a_retried_parcel_flow_is_counted_once_in_the_rates(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    flow = parcel_flow(site, waybill())
    assert (await post(gateway, flow))[2]["accepted"] == 6
    assert (await post(gateway, flow))[2]["duplicate"] == 6
    day = flow[0]["occurred_at"][:10]  # 10:00 Asia/Shanghai: the same calendar day
    async with gateway.http.get(
        f"{gateway.url}/v1/sites/{site}/rates",
        params={"from": day, "to": day},
        headers=gateway.auth("supervisor"),
    ) as resp:
        rates = await resp.json()
        assert resp.status == 200, rates
    assert rates["total"]["dispatched"] == 1
    assert rates["total"]["three_100_rate"] == 1.0


async def test_a_waybill_typed_in_lower_case_is_the_same_parcel(gateway: RunningGateway) -> None:
    """Scanners read capitals; a clerk may type lower case. Either way it is one parcel, and it
    is found by either spelling."""
    site, wb = gateway.keys.site, waybill()
    flow = parcel_flow(site, wb)
    for ev in flow[::2]:
        ev["waybill_no"] = wb.lower()
    status, _, body = await post(gateway, flow)
    assert status == 200, body
    assert body["accepted"] == 6
    for spelling in (wb, wb.lower()):
        status, text = await get_parcel(gateway, spelling)
        assert status == 200, text
        view = json.loads(text)
        assert view["waybill_no"] == wb
        assert view["compliant"] is True
        assert len(view["events"]) == 6


async def test_a_parcel_stored_in_lower_case_before_capitals_is_still_found(
    gateway: RunningGateway, vault: PersonalDataVault
) -> None:
    """Rows written before waybill numbers were kept in capitals keep their spelling (the
    ledger's hashes cover it); the parcel view still finds them as typed."""
    wb = waybill().lower()
    now = datetime.now(UTC)
    old = [
        prepare(EVENT_ADAPTER.validate_python(e).model_copy(update={"waybill_no": wb}), vault, now)
        for e in parcel_flow(gateway.keys.site, wb)
    ]
    async with gateway.pool.acquire() as conn, conn.transaction():
        await commit_events(conn, old, now)
    status, text = await get_parcel(gateway, wb)
    assert status == 200, text
    assert json.loads(text)["waybill_no"] == wb
    status, _ = await get_parcel(gateway, wb.upper())  # capitals are another parcel
    assert status == 404


# --- per-event results -------------------------------------------------------------------------


async def test_a_mixed_batch_commits_the_valid_events_and_rejects_the_rest(
    gateway: RunningGateway,
) -> None:
    site, wb = gateway.keys.site, waybill()
    good_first = received(site, wb)
    bad_type = received(site, wb, weight_g="heavy")
    good_second = event("parcel.sealed", site, wb, clerk_id="c1")
    bad_field = event("parcel.sealed", site, wb, clerk_id="c1", colour="red")
    items = [good_first, bad_type, good_second, bad_field, 42]

    status, _, body = await post(gateway, items)
    assert status == 200, body
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["result"] for r in results] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "rejected",
    ]
    assert (body["accepted"], body["rejected"]) == (2, 3)
    assert results[1]["event_id"] == bad_type["event_id"]
    assert results[1]["code"] == "wrong_type"
    assert [(e["code"], e["path"]) for e in results[1]["errors"]] == [("wrong_type", "weight_g")]
    assert results[3]["code"] == "unknown_field"
    assert [(e["code"], e["path"]) for e in results[3]["errors"]] == [("unknown_field", "colour")]
    assert results[4]["code"] == "wrong_type"
    assert results[4]["event_id"] is None
    # The body is built without the wire models; it must still be exactly what they describe
    # (the OpenAPI document publishes IngestResponse).
    assert IngestResponse.model_validate(body).model_dump(mode="json") == body

    assert await timeline_ids(gateway, wb) == {good_first["event_id"], good_second["event_id"]}


async def test_a_station_cannot_write_events_for_another_site(gateway: RunningGateway) -> None:
    site, other = gateway.keys.site, gateway.keys.other_site
    foreign_wb = waybill()
    foreign = received(other, foreign_wb)

    status, ctype, body = await post(gateway, foreign)
    assert_problem(status, ctype, body, 403, "forbidden_site")

    own = received(site)
    status, _, body = await post(gateway, [own, foreign])
    assert status == 200, body
    assert [r["result"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["code"] == "forbidden_site"
    assert body["results"][1]["errors"][0]["path"] == "site_id"

    status, text = await get_parcel(gateway, foreign_wb)
    assert status == 404, text
    await assert_still_serves(gateway)


async def test_an_event_for_an_unknown_site_is_rejected(gateway: RunningGateway) -> None:
    item = received(f"NOSUCH-{uuid.uuid4().hex[:8]}")
    status, ctype, body = await post(gateway, item, role="admin")
    assert_problem(status, ctype, body, 422, "unknown_site")
    assert body["errors"][0]["path"] == "site_id"

    status, _, body = await post(gateway, [item], role="admin")
    assert status == 200, body
    assert body["results"][0]["code"] == "unknown_site"
    await assert_still_serves(gateway)


async def test_requests_that_come_together_to_a_cold_gateway_look_their_site_up_once(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted gateway meets every station's first request at once: one query per site,
    not one per request queueing for the pool (the real query, counted)."""
    lookups: list[list[str]] = []
    real = ingest_api.site_store.get_sites

    async def counted(conn: Any, site_ids: Any) -> Any:
        lookups.append(list(site_ids))
        return await real(conn, site_ids)

    monkeypatch.setattr(ingest_api.site_store, "get_sites", counted)
    gateway.app[GATEWAY].known_sites.clear()
    nowhere = f"NOSUCH-{uuid.uuid4().hex[:8]}"
    answers = await asyncio.gather(
        *(post(gateway, received(gateway.keys.site)) for _ in range(30)),
        *(post(gateway, received(nowhere), role="admin") for _ in range(10)),
    )
    assert [a[0] for a in answers] == [201] * 30 + [422] * 10, answers
    assert sorted(lookups) == sorted([[gateway.keys.site], [nowhere]])
    assert not gateway.app[GATEWAY].site_lookups

    await post(gateway, received(gateway.keys.site))  # known now: no query
    assert len(lookups) == 2
    await assert_still_serves(gateway)


async def test_a_shared_site_lookup_that_fails_fails_each_request_and_is_not_kept(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[list[str]] = []
    real = ingest_api.site_store.get_sites

    async def down_once(conn: Any, site_ids: Any) -> Any:
        lookups.append(list(site_ids))
        if len(lookups) == 1:
            await asyncio.sleep(0.05)  # long enough for every request to join it
            raise ConnectionRefusedError("the database went away")
        return await real(conn, site_ids)

    monkeypatch.setattr(ingest_api.site_store, "get_sites", down_once)
    gateway.app[GATEWAY].known_sites.clear()
    answers = await asyncio.gather(*(post(gateway, received(gateway.keys.site)) for _ in range(10)))
    assert {(a[0], a[2]["code"]) for a in answers} == {(503, "database_unavailable")}, answers
    assert len(lookups) == 1
    assert not gateway.app[GATEWAY].site_lookups

    status, _, body = await post(gateway, received(gateway.keys.site))  # asked again, found
    assert status == 201, body
    assert len(lookups) == 2


# --- invalid events (422 alone, `rejected` in a batch) -----------------------------------------


@dataclass(frozen=True)
class BadEvent:
    build: Callable[[str], dict[str, Any]]
    code: str
    path: str


def _with(base: Callable[[str], dict[str, Any]], **changes: Any) -> Callable[[str], dict[str, Any]]:
    return lambda site: base(site) | changes


def _sealed(site: str) -> dict[str, Any]:
    return event("parcel.sealed", site, waybill(), clerk_id="c1")


def _without(field: str) -> Callable[[str], dict[str, Any]]:
    def build(site: str) -> dict[str, Any]:
        item = _sealed(site)
        del item[field]
        return item

    return build


def _realname(number: str) -> Callable[[str], dict[str, Any]]:
    return lambda site: event(
        "realname.registered",
        site,
        waybill(),
        sender={"document_type": "resident_id", "document_number": number, "name": "张三"},
    )


def _future(site: str) -> dict[str, Any]:
    return event(
        "parcel.sealed", site, waybill(), datetime.now(UTC) + timedelta(hours=1), clerk_id="c1"
    )


BAD_EVENTS = {
    "wrong type (string for an integer)": BadEvent(
        lambda site: received(site, weight_g="heavy"), "wrong_type", "weight_g"
    ),
    "wrong type (number for a string)": BadEvent(
        lambda site: received(site, carrier=123), "wrong_type", "carrier"
    ),
    "wrong type (nested)": BadEvent(
        lambda site: event(
            "xray.scanned",
            site,
            waybill(),
            scanner_id="x1",
            verdict="clear",
            detections=[{"class_name": "knife", "score": "high", "box": [0, 0, 1, 1]}],
        ),
        "wrong_type",
        "detections.0.score",
    ),
    # JSON's types, not Python's conversions: none of these is taken as the value it resembles.
    "wrong type (true for an integer)": BadEvent(
        lambda site: received(site, weight_g=True), "wrong_type", "weight_g"
    ),
    "wrong type (digits in a string for an integer)": BadEvent(
        lambda site: received(site, weight_g="500"), "wrong_type", "weight_g"
    ),
    "wrong type (a number with a fraction for an integer)": BadEvent(
        lambda site: received(site, weight_g=500.5), "wrong_type", "weight_g"
    ),
    "wrong type (a string for a score)": BadEvent(
        lambda site: event(
            "xray.scanned",
            site,
            waybill(),
            scanner_id="x1",
            verdict="flagged",
            detections=[{"class_name": "knife", "score": "0.9", "box": [0, 0, 1, 1]}],
        ),
        "wrong_type",
        "detections.0.score",
    ),
    "epoch seconds for a time (no offset)": BadEvent(
        _with(_sealed, occurred_at=1763604000), "invalid_timestamp", "occurred_at"
    ),
    "a number for the event id": BadEvent(
        _with(_sealed, event_id=12345), "invalid_uuid", "event_id"
    ),
    "unknown field": BadEvent(lambda site: received(site, colour="red"), "unknown_field", "colour"),
    "missing field": BadEvent(_without("clerk_id"), "missing_field", "clerk_id"),
    "naive timestamp": BadEvent(
        _with(_sealed, occurred_at="2026-11-20T10:00:00"), "naive_timestamp", "occurred_at"
    ),
    "unparseable timestamp": BadEvent(
        _with(_sealed, occurred_at="yesterday at ten"), "invalid_timestamp", "occurred_at"
    ),
    "future timestamp beyond the skew": BadEvent(_future, "future_timestamp", "occurred_at"),
    "timestamp before 2000 (a clock that lost its setting)": BadEvent(
        _with(_sealed, occurred_at="0001-01-01T00:00:00+14:00"), "timestamp_too_old", "occurred_at"
    ),
    "an offset no time zone has (ISO 8601 allows it; PostgreSQL refuses it)": BadEvent(
        _with(_sealed, occurred_at="2026-11-20T10:00:00+16:00"), "invalid_timestamp", "occurred_at"
    ),
    "neither sender nor contract customer": BadEvent(
        lambda site: event("realname.registered", site, waybill()),
        "sender_or_contract_required",
        "sender",
    ),
    "ID with a future birth date": BadEvent(
        _realname(resident_id("11010520991231002")), "invalid_birth_date", "sender.document_number"
    ),
    "invalid ID checksum": BadEvent(
        _realname(WRONG_CHECK), "invalid_checksum", "sender.document_number"
    ),
    "unknown event type": BadEvent(
        _with(_sealed, type="parcel.teleported"), "unknown_event_type", "type"
    ),
    "event_id not a UUID": BadEvent(_with(_sealed, event_id="evt-1"), "invalid_uuid", "event_id"),
    "sender name of spaces and a zero-width space": BadEvent(
        lambda site: event(
            "realname.registered",
            site,
            waybill(),
            sender={
                "document_type": "passport",
                "document_number": "E12345678",
                "name": " \u200b ",
            },
        ),
        "invalid_name",
        "sender.name",
    ),
}


@pytest.mark.parametrize("case", BAD_EVENTS.values(), ids=list(BAD_EVENTS))
async def test_an_invalid_event_is_rejected_with_a_stable_code_and_path(
    gateway: RunningGateway, case: BadEvent
) -> None:
    item = case.build(gateway.keys.site)

    status, ctype, body = await post(gateway, item)
    assert_problem(status, ctype, body, 422, case.code)
    assert [(e["code"], e["path"]) for e in body["errors"]] == [(case.code, case.path)]

    status, _, body = await post(gateway, [item])
    assert status == 200, body
    [result] = body["results"]
    assert result["result"] == "rejected"
    assert result["code"] == case.code
    assert [(e["code"], e["path"]) for e in result["errors"]] == [(case.code, case.path)]

    await assert_still_serves(gateway)


async def test_a_lone_surrogate_escape_in_text_is_rejected(
    gateway: RunningGateway,
) -> None:
    # Valid JSON (RFC 8259 allows any \\u escape) that is not Unicode text: PostgreSQL could not
    # store it. The code is the one this case had before events were validated as JSON.
    item = json.dumps(received(gateway.keys.site, carrier="SF"))
    broken = item.replace('"carrier":"SF"', '"carrier":"SF\\ud800"').replace(
        '"carrier": "SF"', '"carrier": "SF\\ud800"'
    )
    assert "\\ud800" in broken
    status, ctype, body = await post(gateway, data=broken.encode())
    assert_problem(status, ctype, body, 422, "string_unicode")
    assert [e["path"] for e in body["errors"]] == ["carrier"]
    status, _, body = await post(gateway, data=f"[{broken}, {item}]".encode())
    assert status == 200, body
    assert [r["result"] for r in body["results"]] == ["rejected", "accepted"]
    await assert_still_serves(gateway)


async def test_a_value_nested_deeper_than_the_event_validator_reads_is_rejected(
    gateway: RunningGateway,
) -> None:
    # Deep enough to pass the body's parser, too deep for the validator's (about 200 levels).
    item = json.dumps(received(gateway.keys.site)).replace(
        '"carrier"', '"declared_contents": ' + "[" * 250 + "]" * 250 + ', "carrier"', 1
    )
    status, ctype, body = await post(gateway, data=item.encode())
    assert_problem(status, ctype, body, 422, "nested_too_deeply")
    await assert_still_serves(gateway)


async def test_an_event_with_thousands_of_errors_lists_a_few_and_counts_the_rest(
    gateway: RunningGateway,
) -> None:
    """A scan whose 300 detections are each wrong in nine ways is answered with the first bad
    detection's errors, not 2,700 of them (per event, in a batch of hundreds)."""
    junk = {name: 1 for name in "abcdef"}  # six unknown fields, three missing
    item = event(
        "xray.scanned", gateway.keys.site, waybill(), scanner_id="x1", verdict="flagged",
        detections=[junk] * 300,
    )  # fmt: skip
    status, _, body = await post(gateway, [item] * 50)
    assert status == 200, str(body)[:500]
    for result in body["results"]:
        assert result["result"] == "rejected"
        assert 1 <= len(result["errors"]) <= MAX_FIELD_ERRORS
        assert {tuple(e["path"].split(".")[:2]) for e in result["errors"]} == {("detections", "0")}
    bad_event = _with(_sealed, occurred_at=1, event_id=2, site_id=3, waybill_no=4)(
        gateway.keys.site
    )
    bad_event.update({f"extra_{i}": i for i in range(40)})
    status, _, body = await post(gateway, bad_event)
    assert status == 422, body
    assert len(body["errors"]) == MAX_FIELD_ERRORS
    last = body["errors"][-1]
    assert last["code"] == "too_many_errors"
    assert last["message"].startswith(f"{44 - (MAX_FIELD_ERRORS - 1)} more")  # of 44


async def test_a_sender_with_a_hong_kong_phone_is_registered(gateway: RunningGateway) -> None:
    """The law asks for the sender's phone, not a mainland mobile one."""
    item = event(
        "realname.registered", gateway.keys.site, waybill(),
        sender={"document_type": "hk_macao_travel_permit", "document_number": "H12345678",
                "name": "陳大文", "phone": "+852 9123 4567"},
    )  # fmt: skip
    status, _, body = await post(gateway, item)
    assert status == 201, body
    bad = _with(lambda site: item, event_id=str(uuid.uuid4()))(gateway.keys.site)
    bad["sender"] = {**item["sender"], "phone": "+852"}
    status, _, body = await post(gateway, bad)
    assert status == 422, body
    assert [(e["code"], e["path"]) for e in body["errors"]] == [("invalid_phone", "sender.phone")]


async def test_a_rejected_event_gives_its_id_in_the_form_an_accepted_one_would(
    gateway: RunningGateway,
) -> None:
    upper = str(uuid.uuid4()).upper()
    good = _with(_sealed, event_id=upper)(gateway.keys.site)
    bad = _with(_sealed, event_id="{" + upper + "}", clerk_id="")(gateway.keys.site)
    status, _, body = await post(gateway, [good, bad])
    assert status == 200, body
    assert [(r["result"], r["event_id"]) for r in body["results"]] == [
        ("accepted", upper.lower()), ("rejected", upper.lower()),
    ]  # fmt: skip


async def test_an_unknown_event_type_is_not_quoted_back(gateway: RunningGateway) -> None:
    status, _, body = await post(gateway, _with(_sealed, type="110101199003074258")(
        gateway.keys.site))  # fmt: skip
    assert status == 422, body
    assert "110101199003074258" not in json.dumps(body)


async def test_a_utf16_body_is_read_like_a_utf8_one(gateway: RunningGateway) -> None:
    item = received(gateway.keys.site)
    status, _, body = await post(gateway, data=json.dumps([item]).encode("utf-16"))
    assert status == 200, body
    assert body["accepted"] == 1


async def test_an_unforeseen_failure_is_still_a_problem_document(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(key: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.app[GATEWAY].authenticator, "authenticate", broken)
    status, ctype, body = await post(gateway, received(gateway.keys.site))
    assert_problem(status, ctype, body, 500, "internal_error")
    assert "a bug" not in body["detail"]  # nothing internal leaks to the client
    monkeypatch.undo()
    await assert_still_serves(gateway)


async def test_a_timestamp_slightly_ahead_within_the_skew_is_accepted(
    gateway: RunningGateway,
) -> None:
    ahead = datetime.now(UTC) + timedelta(seconds=60)
    status, _, body = await post(
        gateway, event("parcel.sealed", gateway.keys.site, waybill(), ahead, clerk_id="c1")
    )
    assert status == 201, body


async def test_error_messages_are_rendered_not_templates(gateway: RunningGateway) -> None:
    status, _, body = await post(gateway, _future(gateway.keys.site))
    assert status == 422, body
    message = body["errors"][0]["message"]
    assert "{" not in message, message
    assert "in the future" in message


# Values that pass a naive schema but that PostgreSQL cannot store (jsonb refuses non-finite
# numbers and NUL characters). They must be refused one by one, not fail the group commit they
# share with other events (which answers 503 to every request in the group).

INFINITE = "__infinite__"


def _scan_with_box(corner: Any) -> Callable[[str], dict[str, Any]]:
    return lambda site: event(
        "xray.scanned",
        site,
        waybill(),
        scanner_id="x1",
        verdict="flagged",
        detections=[{"class_name": "knife", "score": 0.9, "box": [corner, 0, 10, 10]}],
    )


def _inspection(**fields: Any) -> Callable[[str], dict[str, Any]]:
    return lambda site: event(
        "inspection.completed", site, waybill(), **({"clerk_id": "c1", "result": "pass"} | fields)
    )


UNSTORABLE = {
    "infinite box coordinate (1e999)": (_scan_with_box(INFINITE), "detections.0.box.0"),
    "NUL in a free-text note": (_inspection(note="ok\u0000"), "note"),
    "NUL in a clerk id": (_inspection(clerk_id="c\u00001"), "clerk_id"),
}


def _raw(items: Any) -> bytes:
    return json.dumps(items, ensure_ascii=False).replace(f'"{INFINITE}"', "1e999").encode()


@pytest.mark.parametrize(("build", "path"), UNSTORABLE.values(), ids=list(UNSTORABLE))
async def test_a_value_the_database_cannot_store_is_rejected_not_a_503(
    gateway: RunningGateway, build: Callable[[str], dict[str, Any]], path: str
) -> None:
    site = gateway.keys.site
    status, ctype, body = await post(gateway, data=_raw(build(site)))
    assert status == 422, body
    assert ctype == PROBLEM_JSON
    assert body["errors"][0]["path"] == path

    neighbour = received(site)
    status, _, body = await post(gateway, data=_raw([neighbour, build(site)]))
    assert status == 200, body
    assert [r["result"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["errors"][0]["path"] == path
    await assert_still_serves(gateway)


async def test_an_unstorable_event_does_not_fail_other_stations_events(
    gateway: RunningGateway,
) -> None:
    site = gateway.keys.site
    poison = _raw(_inspection(note="ok\u0000")(site))

    async def good() -> int:
        return (await post(gateway, received(site)))[0]

    async def bad() -> int:
        return (await post(gateway, data=poison))[0]

    statuses = await asyncio.gather(
        *(good() for _ in range(20)), bad(), *(good() for _ in range(20))
    )
    neighbours = statuses[:20] + statuses[21:]
    assert neighbours == [201] * 40, f"{neighbours.count(503)} of 40 neighbours got 503"
    assert statuses[20] == 422


async def test_a_nan_literal_is_refused_with_a_4xx(gateway: RunningGateway) -> None:
    raw = _raw(_scan_with_box(INFINITE)(gateway.keys.site)).replace(b"1e999", b"NaN")
    status, ctype, body = await post(gateway, data=raw)
    assert status in (400, 422), body
    assert ctype == PROBLEM_JSON
    await assert_still_serves(gateway)


# --- malformed requests (whole request refused) ------------------------------------------------

MALFORMED = {
    "truncated JSON": (b'{"type": "parcel.received", "event_id": ', 400, "malformed_json"),
    "not UTF-8": (b'\xff\xfe{"a": 1}', 400, "malformed_json"),
    "empty body": (b"", 400, "malformed_json"),
    "a number": (b"42", 400, "invalid_body"),
    "a string": (b'"parcel.received"', 400, "invalid_body"),
    "null": (b"null", 400, "invalid_body"),
    "empty batch": (b"[]", 400, "empty_batch"),
    "nested deeper than the parser's stack": (
        b"[" * 100_000 + b"]" * 100_000,
        400,
        "malformed_json",
    ),
    "1,001 events (default limit 1,000)": (
        json.dumps([{}] * 1001).encode(),
        413,
        "too_many_events",
    ),
}


@pytest.mark.parametrize(("raw", "status", "code"), MALFORMED.values(), ids=list(MALFORMED))
async def test_a_malformed_request_is_refused_and_the_server_keeps_serving(
    gateway: RunningGateway, raw: bytes, status: int, code: str
) -> None:
    got, ctype, body = await post(gateway, data=raw, headers={"Content-Type": "application/json"})
    assert_problem(got, ctype, body, status, code)
    await assert_still_serves(gateway)


@pytest.fixture
async def small_gateway(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> AsyncIterator[RunningGateway]:
    """A gateway with tight limits: 2 KiB bodies, 3 events per request."""
    settings = Settings(
        data_dir=tmp_path, api_key_cache_s=0.0, max_body_bytes=2048, max_batch_events=3
    )
    async with gateway_with(settings, pool, vault) as gw:
        yield gw


async def test_a_body_over_the_limit_is_413_body_too_large(small_gateway: RunningGateway) -> None:
    padding = "x" * 500
    items = [received(small_gateway.keys.site, declared_contents=padding) for _ in range(3)]
    raw = json.dumps(items).encode()
    assert len(raw) > 2048
    status, ctype, body = await post(small_gateway, data=raw)
    assert_problem(status, ctype, body, 413, "body_too_large")
    await assert_still_serves(small_gateway)


async def test_a_chunked_body_over_the_limit_is_413_body_too_large(
    small_gateway: RunningGateway,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit bites while reading
        yield b"["
        for i in range(10):
            yield (b"," if i else b"") + json.dumps(received(small_gateway.keys.site)).encode()
        yield b"]"

    status, ctype, body = await post(small_gateway, data=chunks())
    assert_problem(status, ctype, body, 413, "body_too_large")
    await assert_still_serves(small_gateway)


async def test_more_events_than_the_configured_limit_is_413_too_many_events(
    small_gateway: RunningGateway,
) -> None:
    site = small_gateway.keys.site
    status, ctype, body = await post(small_gateway, [{"type": "parcel.sealed"}] * 4)
    assert_problem(status, ctype, body, 413, "too_many_events")
    status, _, body = await post(small_gateway, [_sealed(site) for _ in range(3)])
    assert status == 200, body
    assert body["accepted"] == 3


# --- personal data -----------------------------------------------------------------------------


def _assert_no_clear_text(row: asyncpg.Record, secrets: list[str]) -> None:
    for column, value in row.items():
        haystack = value if isinstance(value, bytes) else str(value).encode()
        for secret in secrets:
            assert secret.encode() not in haystack, f"{secret!r} in clear in column {column}"


async def test_the_document_number_never_leaves_in_clear(
    gateway: RunningGateway, vault: PersonalDataVault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    site, wb = gateway.keys.site, waybill()
    flow = parcel_flow(site, wb)
    realname = flow[1]
    secrets = [DOCUMENT, "13812345678", "张三"]
    assert realname["sender"]["document_number"] == DOCUMENT

    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=flow, headers=gateway.auth()
    ) as resp:
        text = await resp.text()
        assert resp.status == 200, text
    for secret in secrets:
        assert secret not in text

    for role in ("station", "reviewer", "supervisor", "police", "admin"):
        status, text = await get_parcel(gateway, wb, role)
        assert status == 200, text
        for secret in secrets:
            assert secret not in text, f"{role} sees {secret!r}"
        sender = next(
            e["payload"]["sender"]
            for e in json.loads(text)["events"]
            if e["type"] == realname["type"]
        )
        assert sender["document_masked"] == mask_document(DOCUMENT) == "1101**********002X"
        assert sender["phone_masked"] == "138****5678"
        assert sender["name_masked"] == "张*"

    async with gateway.pool.acquire() as conn:
        events = await conn.fetch("SELECT * FROM events WHERE site_id = $1", site)
        records = await conn.fetch("SELECT * FROM realname_records WHERE site_id = $1", site)
    assert any(r["waybill_no"] == wb for r in events)
    for row in [*events, *records]:
        _assert_no_clear_text(row, secrets)

    [record] = [r for r in records if r["waybill_no"] == wb]
    assert record["document_masked"] == "1101**********002X"
    sealed = SealedValue(record["pii_key_id"], record["document_sealed"])
    aad = field_associated_data(site, realname["event_id"], "document_number")
    assert vault.open(sealed, aad=aad) == DOCUMENT  # bound to its row and its column
    with pytest.raises(PersonalDataError):  # so it does not open as another field of the row
        vault.open(sealed, aad=field_associated_data(site, realname["event_id"], "name"))

    for log_record in caplog.records:
        line = log_record.getMessage() + repr(log_record.__dict__)
        for secret in secrets:
            assert secret not in line, f"{secret!r} logged by {log_record.name}"


async def test_a_rejected_document_number_is_not_echoed(gateway: RunningGateway) -> None:
    status, _, body = await post(gateway, _realname(WRONG_CHECK)(gateway.keys.site))
    assert status == 422, body
    assert WRONG_CHECK not in json.dumps(body, ensure_ascii=False)


# --- station WebSocket -------------------------------------------------------------------------


async def test_the_station_stream_acks_each_event_with_its_result(gateway: RunningGateway) -> None:
    site, wb = gateway.keys.site, waybill()
    first = received(site, wb)
    second = event("parcel.sealed", site, wb, clerk_id="c1")
    invalid = event("parcel.sealed", site, wb, clerk_id="c1", colour="red")
    async with gateway.http.ws_connect(
        f"{gateway.url}/v1/stations/stream", headers=gateway.auth()
    ) as ws:
        await ws.send_str(json.dumps(first))
        ack = await ws.receive_json(timeout=10)
        assert ack["type"] == "ack"
        assert (ack["index"], ack["event_id"], ack["result"]) == (0, first["event_id"], "accepted")

        await ws.send_str(json.dumps([first, second, invalid]))
        acks = [await ws.receive_json(timeout=10) for _ in range(3)]
        assert [a["type"] for a in acks] == ["ack"] * 3
        assert [a["index"] for a in acks] == [0, 1, 2]
        assert [a["event_id"] for a in acks] == [e["event_id"] for e in (first, second, invalid)]
        assert [a["result"] for a in acks] == ["duplicate", "accepted", "rejected"]
        assert acks[2]["code"] == "unknown_field"
        assert acks[2]["errors"][0]["path"] == "colour"

    assert await timeline_ids(gateway, wb) == {first["event_id"], second["event_id"]}


async def test_a_batch_of_bad_size_on_the_stream_gets_the_codes_http_gives_it(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> None:
    settings = Settings(data_dir=tmp_path, max_batch_events=2)
    async with gateway_with(settings, pool, vault) as gw:
        item = received(gw.keys.site)
        async with gw.http.ws_connect(f"{gw.url}/v1/stations/stream", headers=gw.auth()) as ws:
            for body, code in (([], "empty_batch"), ([item, item, item], "too_many_events")):
                await ws.send_str(json.dumps(body))
                error = await ws.receive_json(timeout=10)
                assert (error["type"], error["code"]) == ("error", code)
            await ws.send_str(json.dumps(item))
            assert (await ws.receive_json(timeout=10))["result"] == "accepted"


async def test_malformed_json_on_the_station_stream_gets_an_error_and_the_socket_stays_open(
    gateway: RunningGateway,
) -> None:
    item = received(gateway.keys.site)
    async with gateway.http.ws_connect(
        f"{gateway.url}/v1/stations/stream", headers=gateway.auth()
    ) as ws:
        await ws.send_str('{"type": "parcel.received", ')
        error = await ws.receive_json(timeout=10)
        assert error["type"] == "error"
        assert error["code"] == "malformed_json"

        await ws.send_str(json.dumps(item))
        ack = await ws.receive_json(timeout=10)
        assert (ack["type"], ack["result"]) == ("ack", "accepted")
        assert not ws.closed


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param('{"type": ["hold.ack"]}', None, id="a list where the type goes"),
        pytest.param("[" * 100_000, "malformed_json", id="nested deeper than the parser's stack"),
    ],
)
async def test_an_odd_frame_on_the_station_stream_never_closes_it(
    gateway: RunningGateway, frame: str, code: str | None
) -> None:
    async with gateway.http.ws_connect(
        f"{gateway.url}/v1/stations/stream", headers=gateway.auth()
    ) as ws:
        await ws.send_str(frame)
        if code is not None:
            error = await ws.receive_json(timeout=10)
            assert (error["type"], error["code"]) == ("error", code)
        else:  # not a control message: judged as an event, and rejected
            ack = await ws.receive_json(timeout=10)
            assert (ack["type"], ack["result"]) == ("ack", "rejected")
        await ws.send_str(json.dumps(received(gateway.keys.site)))
        ack = await ws.receive_json(timeout=10)
        assert (ack["type"], ack["result"]) == ("ack", "accepted")
        assert not ws.closed


async def test_a_database_outage_at_the_streams_key_check_keeps_the_stream(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic re-check of a station's key, and the recording of its hold acks, meet a
    database outage: that message is answered with an error frame and not taken; the stream
    stays, and the next message goes through."""
    site = gateway.keys.site
    async with gateway.http.ws_connect(
        f"{gateway.url}/v1/stations/stream", headers=gateway.auth()
    ) as ws:
        monkeypatch.setattr(ingest_api, "STREAM_REAUTH_S", 0.0)

        async def down(*args: Any, **kwargs: Any) -> None:
            raise asyncpg.CannotConnectNowError("the database system is starting up")

        monkeypatch.setattr(gateway.app[GATEWAY].authenticator, "authenticate", down)
        await ws.send_str(json.dumps(received(site)))
        error = await ws.receive_json(timeout=10)
        assert (error["type"], error["code"]) == ("error", "unavailable")
        monkeypatch.setattr(ingest_api, "acknowledge_hold", down)
        monkeypatch.setattr(ingest_api, "STREAM_REAUTH_S", 3600.0)
        await ws.send_str(json.dumps({"type": "hold.ack", "hold_id": str(uuid.uuid4())}))
        error = await ws.receive_json(timeout=10)
        assert (error["type"], error["code"]) == ("error", "unavailable")
        monkeypatch.undo()
        await ws.send_str(json.dumps(received(site)))
        ack = await ws.receive_json(timeout=10)
        assert (ack["type"], ack["result"]) == ("ack", "accepted")
        assert not ws.closed


async def test_a_station_whose_key_is_revoked_loses_its_stream(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_api, "STREAM_REAUTH_S", 0.0)
    site = gateway.keys.site
    key_id, key = await access.create_key(gateway.pool, Role.STATION, [site])
    async with gateway.http.ws_connect(
        f"{gateway.url}/v1/stations/stream", headers={"Authorization": f"Bearer {key}"}
    ) as ws:
        await ws.send_str(json.dumps(received(site)))
        assert (await ws.receive_json(timeout=10))["result"] == "accepted"
        await access.revoke_key(gateway.pool, key_id)
        late = received(site)
        await ws.send_str(json.dumps(late))
        assert await ws.receive_json(timeout=10) == {
            "type": "error",
            "code": "revoked",
            "detail": "the key was revoked",
        }
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert (await get_parcel(gateway, late["waybill_no"]))[0] == 404  # nothing was written


async def test_a_station_that_only_listens_loses_its_stream_when_its_key_is_revoked(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A terminal that sends nothing is checked too: otherwise it would go on receiving hold
    orders (which parcels are held, and why) with a revoked key."""
    monkeypatch.setattr(ingest_api, "STREAM_REAUTH_S", 0.2)
    site = gateway.keys.site
    key_id, key = await access.create_key(gateway.pool, Role.STATION, [site])
    async with gateway.http.ws_connect(
        f"{gateway.url}/v1/stations/stream", headers={"Authorization": f"Bearer {key}"}
    ) as ws:
        await asyncio.sleep(0.5)  # checked again meanwhile, and still good: nothing said
        await access.revoke_key(gateway.pool, key_id)
        told = await ws.receive_json(timeout=10)
        assert (told["type"], told["code"]) == ("error", "revoked")
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


class FailsFirst:
    """A stand-in for an async function: its first call raises an unforeseen error (a bug),
    every later one is ``then``'s; ``calls`` counts them."""

    def __init__(self, then: Callable[..., Awaitable[Any]]) -> None:
        self.then = then
        self.calls = 0

    async def __call__(self, *args: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug")
        return await self.then(*args, **kw)


async def test_a_listening_stream_whose_key_cannot_be_checked_waits_a_period_to_try_again(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a database outage each idle stream checks its key once a period, not in a tight
    loop (a thousand stations would otherwise hammer a database that is recovering); an
    unforeseen failure of the check does not end the watching either."""
    monkeypatch.setattr(ingest_api, "STREAM_REAUTH_S", 0.25)
    async with gateway.http.ws_connect(
        f"{gateway.url}/v1/stations/stream", headers=gateway.auth()
    ) as ws:

        async def away(*_: Any, **__: Any) -> None:
            raise asyncpg.CannotConnectNowError("the database system is starting up")

        check = FailsFirst(away)
        monkeypatch.setattr(ingest_api, "principal_of", check)
        await asyncio.sleep(1.4)
        assert 2 <= check.calls <= 7, check.calls  # about one per 0.25 s (and on after the bug)
        assert not ws.closed


async def test_an_unforeseen_failure_on_the_station_stream_keeps_it_open(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_api, "ingest_items", FailsFirst(ingest_api.ingest_items))
    item = received(gateway.keys.site)
    async with gateway.http.ws_connect(
        f"{gateway.url}/v1/stations/stream", headers=gateway.auth()
    ) as ws:
        await ws.send_str(json.dumps(item))
        error = await ws.receive_json(timeout=10)
        assert (error["type"], error["code"]) == ("error", "internal_error")
        await ws.send_str(json.dumps(item))  # the station retries the same event
        ack = await ws.receive_json(timeout=10)
        assert (ack["type"], ack["result"]) == ("ack", "accepted")


async def test_the_station_stream_refuses_a_connection_without_a_key(
    gateway: RunningGateway,
) -> None:
    url = f"{gateway.url}/v1/stations/stream"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.http.ws_connect(url)
    assert refused.value.status == 401

    async with gateway.http.get(url) as resp:
        assert resp.status == 401
        assert resp.content_type == PROBLEM_JSON
        assert (await resp.json(content_type=None))["code"] == "missing_credentials"


async def test_the_station_stream_refuses_a_role_that_may_not_write(
    gateway: RunningGateway,
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.http.ws_connect(
            f"{gateway.url}/v1/stations/stream", headers=gateway.auth("reviewer")
        )
    assert refused.value.status == 403


async def test_a_client_that_hangs_up_mid_body_is_not_logged_as_a_database_failure(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A station on a flaky line drops mid-request: the gateway says so, without a traceback
    blaming the database, and goes on serving."""
    host, port = gateway.url.removeprefix("http://").split(":")
    body = json.dumps(received(gateway.keys.site)).encode()
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: {gateway.auth()['Authorization']}\r\n"
        f"Content-Length: {len(body) + 1000}\r\n\r\n"
    ).encode()
    with caplog.at_level(logging.INFO, logger="screening"):
        for _ in range(3):
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)  # the handler is reading the body when the line drops
            writer.transport.abort()
        await assert_still_serves(gateway)
    assert "database unreachable" not in caplog.text
    assert "client went away during POST /v1/events" in caplog.text


async def test_a_value_the_driver_cannot_encode_is_a_400_not_an_outage(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg's client-side DataError (an InterfaceError and a ValueError) is raised for a
    request value it cannot encode; it was answered 503 'database unreachable' and logged so."""
    from asyncpg.exceptions._base import DataError as ClientDataError

    async def unencodable(key: str) -> None:
        raise ClientDataError("value out of int64 range")

    monkeypatch.setattr(gateway.app[GATEWAY].authenticator, "authenticate", unencodable)
    with caplog.at_level(logging.INFO, logger="screening"):
        status, ctype, body = await post(gateway, received(gateway.keys.site))
    assert_problem(status, ctype, body, 400, "invalid_value")
    assert "database unreachable" not in caplog.text
    monkeypatch.undo()
    await assert_still_serves(gateway)


async def test_a_value_the_database_refuses_is_a_422_that_does_not_quote_it(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's message for a refused value may quote it (an ID number in a note, say):
    neither the answer nor the log repeats it."""
    from screening.storage import events as event_store

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise asyncpg.DataError('invalid input syntax for type json: "110101199003074258"')

    monkeypatch.setattr(event_store, "insert_events", refuse)
    with caplog.at_level(logging.INFO, logger="screening"):
        status, ctype, body = await post(gateway, received(gateway.keys.site))
    assert_problem(status, ctype, body, 422, "unstorable_value")
    assert "110101199003074258" not in json.dumps(body)
    assert "110101199003074258" not in caplog.text
    monkeypatch.undo()
    await assert_still_serves(gateway)


@pytest.mark.parametrize(
    "outage",
    [
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        TimeoutError(),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=lambda e: e.__class__.__name__,
)
async def test_an_outage_met_before_the_writer_is_a_503_not_a_500(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch, outage: Exception
) -> None:
    """The key, site and agreement lookups meet a database that is starting, stopping, out of
    connections or unreachable as the writer does: 503 with Retry-After, nothing written."""

    async def down(key: str) -> None:
        raise outage

    monkeypatch.setattr(gateway.app[GATEWAY].authenticator, "authenticate", down)
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=received(gateway.keys.site), headers=gateway.auth()
    ) as resp:
        body = await resp.json()
        assert (resp.status, body["code"]) == (503, "database_unavailable"), body
        assert resp.headers.get("Retry-After")
    monkeypatch.undo()
    await assert_still_serves(gateway)
