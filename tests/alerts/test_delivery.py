"""Police alerts leave through the outbox as signed Standard Webhooks, and none is lost: receiver
down, relay killed mid-send, two gateway processes, 410 and dead letters."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from screening.alerts.relay import OutboxRelay
from screening.alerts.webhooks import (
    MAX_RETRY_AFTER_S,
    HttpTransport,
    RetrySchedule,
    _retry_after,
    new_secret,
    signed_headers,
)
from screening.domain.access import Role
from screening.protection import PersonalDataVault
from screening.services import access
from screening.storage.alerts import ClaimedDelivery
from tests.alerts.conftest import DARK, AlertGateway, Receiver, start_alert_gateway, wait_for


def waybill() -> str:
    return f"AL{uuid.uuid4().hex[:12].upper()}"


async def test_a_confident_flag_reaches_police_as_a_signed_webhook(
    agw: AlertGateway, receiver: Receiver
) -> None:
    await agw.register(receiver)
    await agw.set_policy(police=0.5)
    wb = waybill()
    scan = await agw.upload(DARK, wb)
    await wait_for(lambda: len(receiver.received) == 1)
    msg_id, payload = receiver.received[0]
    assert receiver.bad_signatures == 0
    data = payload["data"]
    assert payload["type"] == "alert.created"
    assert msg_id == f"msg_{uuid.UUID(data['alert_id']).hex}"
    assert data["site_id"] == agw.site
    assert data["waybill_no"] == wb
    assert data["cause"] == "scan_score"
    assert data["score"] > 0.5
    assert data["category"]
    assert data["image_url"].endswith(
        f"/v1/scans/{scan['scan_id']}/image?overlay=boxes&site_id={agw.site}"
    )
    assert data["details_url"].endswith(f"/v1/alerts/{data['alert_id']}")


async def test_alerts_raised_while_the_receiver_is_down_all_arrive_once_it_is_up(
    agw: AlertGateway, receiver: Receiver
) -> None:
    await agw.register(receiver)
    await agw.set_policy(police=0.5)
    await receiver.stop()  # the police endpoint is down: connection refused
    waybills = [waybill() for _ in range(5)]
    for wb in waybills:
        await agw.upload(DARK, wb)
    relay = agw.alerts.relay
    assert relay is not None
    await wait_for(lambda: relay.failed >= 10)  # several rounds of retries went nowhere
    await receiver.start()  # same port
    await wait_for(lambda: len(set(receiver.ids)) == 5, within=15.0)
    assert sorted(p["data"]["waybill_no"] for _, p in receiver.received) == sorted(waybills)
    assert receiver.bad_signatures == 0


async def test_a_relay_killed_mid_delivery_leaves_the_alert_to_another_after_its_lease(
    tmp_path: Path,
    pool: asyncpg.Pool[Any],
    vault: PersonalDataVault,
    receiver: Receiver,
) -> None:
    # A gateway whose relay holds the lease for 1 s, and a receiver that never answers at first.
    g = await start_alert_gateway(tmp_path, pool, vault, relay_lease_s=1.0)
    try:
        await g.register(receiver)
        await g.set_policy(police=0.5)
        receiver.hang = asyncio.Event()
        await g.upload(DARK, waybill())
        await wait_for(lambda: receiver.hung == 1)
        relay = g.alerts.relay
        assert relay is not None
        await relay.close()  # the process dies mid-send: no outcome recorded
        receiver.hang.set()  # the receiver works again (the killed send never completes)
        transport = HttpTransport(5.0)
        survivor = OutboxRelay(
            pool,
            transport,
            base_url=g.gw.url,
            schedule=RetrySchedule((0.0, 0.1, 0.2), 0.0),
            lease_s=1.0,
            poll_s=0.1,
        )
        await survivor.start()
        try:
            # The killed send's request may still land once the receiver unblocks (the server
            # finishes a handler whose client went away): wait for the survivor's own send.
            await wait_for(lambda: survivor.sent >= 1, within=10.0)
        finally:
            await survivor.close()
            await transport.close()
        assert survivor.sent >= 1
        assert len(set(receiver.ids)) == 1  # the same webhook-id: the receiver de-duplicates
    finally:
        await g.close()


async def test_two_gateway_processes_send_each_alert_once(
    tmp_path: Path,
    pool: asyncpg.Pool[Any],
    vault: PersonalDataVault,
    receiver: Receiver,
) -> None:
    first = await start_alert_gateway(tmp_path / "a", pool, vault)
    second = await start_alert_gateway(tmp_path / "b", pool, vault, keys=first.gw.keys)
    try:
        await first.register(receiver)
        await first.set_policy(police=0.5)
        waybills = [waybill() for _ in range(12)]
        await asyncio.gather(
            *((first if i % 2 else second).upload(DARK, wb) for i, wb in enumerate(waybills))
        )
        await wait_for(lambda: len(receiver.received) >= 12, within=15.0)
        await asyncio.sleep(0.5)  # any duplicate would arrive by now
        counts = Counter(receiver.ids)
        assert len(counts) == 12
        assert max(counts.values()) == 1
        relays = [g.alerts.relay for g in (first, second)]
        assert all(r is not None and r.sent > 0 for r in relays)  # both did work
    finally:
        await second.close()
        await first.close()


async def test_a_410_disables_the_endpoint_and_dead_letters_can_be_replayed(
    agw: AlertGateway, receiver: Receiver
) -> None:
    endpoint_id = await agw.register(receiver)
    await agw.set_policy(police=0.5)
    receiver.status = 410
    await agw.upload(DARK, waybill())
    status, body = 0, {}

    async def dead() -> bool:
        nonlocal status, body
        status, body = await agw.call("GET", "/v1/alerts/dead-letters", role="admin")
        return any(d["endpoint_id"] == endpoint_id for d in body["dead_letters"])

    await wait_for(dead)
    status, endpoints = await agw.call("GET", "/v1/webhook-endpoints", role="admin")
    mine = next(e for e in endpoints["endpoints"] if e["endpoint_id"] == endpoint_id)
    assert mine["enabled"] is False
    assert mine["disabled_reason"] == "410 Gone"
    # Police fix their side; an admin re-enables the endpoint and replays its dead letters.
    receiver.status = 200
    status, _ = await agw.call("POST", f"/v1/webhook-endpoints/{endpoint_id}/enable", role="admin")
    assert status == 200
    status, replay = await agw.call(
        "POST", "/v1/alerts/dead-letters/replay", role="admin", json={"endpoint_id": endpoint_id}
    )
    assert status == 200
    assert replay["replayed"] == 1
    await wait_for(lambda: len(receiver.received) == 1)


async def test_retries_are_exhausted_into_the_dead_letters(
    agw: AlertGateway, receiver: Receiver
) -> None:
    endpoint_id = await agw.register(receiver)
    await agw.set_policy(police=0.5)
    receiver.status = 500
    await agw.upload(DARK, waybill())

    async def dead() -> bool:
        _, body = await agw.call("GET", "/v1/alerts/dead-letters", role="admin")
        return any(
            d["endpoint_id"] == endpoint_id and d["attempts"] == 8 for d in body["dead_letters"]
        )

    await wait_for(dead, within=15.0)
    assert receiver.received == []


def test_retry_after_is_obeyed_only_within_the_schedule() -> None:
    assert _retry_after("120") == 120.0
    assert _retry_after("1e12") == MAX_RETRY_AFTER_S  # not a year-long wait
    assert _retry_after("-5") == 0.0
    for unreadable in ("inf", "-inf", "nan", "Wed, 21 Oct 2026 07:28:00 GMT", "", None):
        assert _retry_after(unreadable) == 0.0


async def test_a_receiver_answering_nonsense_does_not_stop_the_relay(
    agw: AlertGateway, receiver: Receiver
) -> None:
    """A Retry-After no clock can add, then a normal answer: the alert still arrives."""
    await agw.register(receiver)
    await agw.set_policy(police=0.5)
    receiver.status, receiver.retry_after = 503, "inf"
    relay = agw.alerts.relay
    assert relay is not None
    await agw.upload(DARK, waybill())
    await wait_for(lambda: relay.failed >= 1)
    receiver.status, receiver.retry_after = 200, None
    await wait_for(lambda: len(receiver.received) == 1, within=15.0)
    assert relay.running


async def test_an_unsignable_secret_fails_its_deliveries_not_the_relay(
    agw: AlertGateway, receiver: Receiver
) -> None:
    """An endpoint whose stored secret cannot be decoded (written before secrets were checked,
    or by hand) is retried like a refused delivery; other endpoints' alerts go out."""
    await agw.register(receiver)
    broken, _ = await agw.alerts.police.add_endpoint(receiver.url, [agw.site], "whsec_" + "=" * 40)
    await agw.set_policy(police=0.5)
    relay = agw.alerts.relay
    assert relay is not None
    await agw.upload(DARK, waybill())
    await wait_for(lambda: len(receiver.received) == 1)
    await wait_for(lambda: relay.failed >= 2)  # the broken endpoint's attempts, retried
    assert relay.running
    async with agw.gw.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT attempts, last_error FROM alert_deliveries WHERE endpoint_id = $1", broken
        )
    assert row is not None
    assert row["attempts"] >= 2
    assert "Error" in row["last_error"]


async def test_a_secret_that_does_not_decode_is_refused_when_registered(
    agw: AlertGateway, receiver: Receiver
) -> None:
    too_long = "whsec_" + base64.b64encode(b"k" * 65).decode()
    for secret in ("whsec_" + "A" * 33, "whsec_" + "=" * 40, too_long):
        status, body = await agw.call(
            "POST",
            "/v1/webhook-endpoints",
            role="admin",
            json={"url": receiver.url, "site_ids": [agw.site], "secret": secret},
        )
        assert status == 422, secret
        assert body["errors"][0]["path"] == "secret", body
    good = new_secret()
    status, body = await agw.call(
        "POST",
        "/v1/webhook-endpoints",
        role="admin",
        json={"url": receiver.url, "site_ids": [agw.site], "secret": good},
    )
    assert (status, body["secret"]) == (201, good)


async def test_alerts_raised_while_an_endpoint_is_disabled_go_out_once_it_is_enabled(
    agw: AlertGateway, receiver: Receiver
) -> None:
    endpoint_id = await agw.register(receiver)
    await agw.set_policy(police=0.5)
    path = f"/v1/webhook-endpoints/{endpoint_id}"
    assert (await agw.call("POST", f"{path}/disable", role="admin"))[0] == 200
    waybills = sorted(waybill() for _ in range(3))
    for wb in waybills:
        await agw.upload(DARK, wb)
    await asyncio.sleep(1.0)  # the relay polls several times meanwhile
    assert receiver.received == []
    assert (await agw.call("POST", f"{path}/enable", role="admin"))[0] == 200
    await wait_for(lambda: len(receiver.received) == 3)
    assert sorted(p["data"]["waybill_no"] for _, p in receiver.received) == waybills


async def test_a_rotated_secret_is_signed_with_beside_the_old_one_for_the_overlap(
    agw: AlertGateway, receiver: Receiver
) -> None:
    endpoint_id = await agw.register(receiver)
    old = receiver.secret
    await agw.set_policy(police=0.5)
    path = f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret"
    status, body = await agw.call("POST", path, role="admin", json={"overlap_s": 3600})
    assert status == 200, body
    new = body["secret"]
    assert new.startswith("whsec_")
    assert new != old
    window = datetime.fromisoformat(body["previous_secret_until"]) - datetime.now(UTC)
    assert timedelta(minutes=59) < window <= timedelta(hours=1)
    # The police side still verifies with the old secret: accepted.
    await agw.upload(DARK, waybill())
    await wait_for(lambda: len(receiver.received) == 1)
    # It switches to the new secret at some moment of the window: accepted as well.
    receiver.secret = new
    await agw.upload(DARK, waybill())
    await wait_for(lambda: len(receiver.received) == 2)
    assert receiver.bad_signatures == 0
    assert [len(sig.split(" ")) for sig in receiver.signatures] == [2, 2]
    # The listing says when the old secret stops; it never shows a secret.
    status, listed = await agw.call("GET", "/v1/webhook-endpoints", role="admin")
    assert status == 200
    row = next(e for e in listed["endpoints"] if e["endpoint_id"] == endpoint_id)
    assert row["secret_rotated_at"] is not None
    assert row["previous_secret_until"] == body["previous_secret_until"]
    assert old not in json.dumps(listed)
    assert new not in json.dumps(listed)


async def test_a_rotation_without_overlap_stops_the_old_secret_at_once(
    agw: AlertGateway, receiver: Receiver
) -> None:
    """What an admin does when a secret has leaked: the old one signs nothing from then on."""
    endpoint_id = await agw.register(receiver)
    await agw.set_policy(police=0.5)
    chosen = new_secret()
    status, body = await agw.call(
        "POST",
        f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
        role="admin",
        json={"secret": chosen, "overlap_s": 0},
    )
    assert (status, body) == (
        200,
        {"endpoint_id": endpoint_id, "secret": chosen, "previous_secret_until": None},
    )
    await agw.upload(DARK, waybill())
    await wait_for(lambda: receiver.bad_signatures >= 1)  # verified with the old secret: refused
    assert receiver.received == []
    receiver.secret = chosen
    await wait_for(lambda: len(receiver.received) == 1)  # the retry, signed with the new one
    assert all(" " not in sig for sig in receiver.signatures)


async def test_rotation_requests_that_cannot_be_carried_out_are_refused(
    agw: AlertGateway, receiver: Receiver
) -> None:
    endpoint_id = await agw.register(receiver)
    path = f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret"
    bad_bodies = [
        ({"secret": "whsec_" + "=" * 40}, "secret"),
        ({"overlap_s": -1}, "overlap_s"),
        ({"overlap_s": 7 * 86400 + 1}, "overlap_s"),
        ({"overlap": 60}, "overlap"),
    ]
    for bad, field_path in bad_bodies:
        status, problem = await agw.call("POST", path, role="admin", json=bad)
        assert status == 422, bad
        assert problem["errors"][0]["path"] == field_path, problem
    status, problem = await agw.call(
        "POST", f"/v1/webhook-endpoints/{uuid.uuid4()}/rotate-secret", role="admin"
    )
    assert (status, problem["code"]) == (404, "unknown_endpoint")
    status, problem = await agw.call("POST", path, role="police")
    assert status == 403, problem
    # None of these changed the secret the endpoint signs with.
    await agw.set_policy(police=0.5)
    await agw.upload(DARK, waybill())
    await wait_for(lambda: len(receiver.received) == 1)
    assert receiver.bad_signatures == 0
    # No body: a fresh secret, the old one kept for a day.
    status, body = await agw.call("POST", path, role="admin")
    assert status == 200, body
    window = datetime.fromisoformat(body["previous_secret_until"]) - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < window <= timedelta(days=1)


def test_a_delivery_signs_with_the_previous_secret_only_inside_its_window() -> None:
    old, new = new_secret(), new_secret()
    now = datetime.now(UTC)  # receivers refuse a webhook-timestamp far from their clock
    delivery = ClaimedDelivery(
        cast(Any, None), "created", uuid.uuid4(), 1, "http://127.0.0.1/hook", new, old,
        now + timedelta(hours=1),
    )  # fmt: skip
    assert delivery.secrets(now) == (new, old)
    assert delivery.secrets(now + timedelta(hours=1)) == (new,)
    assert replace(delivery, previous_secret=None).secrets(now) == (new,)
    body = '{"type":"alert.created"}'
    headers = signed_headers(delivery.secrets(now), "msg_1", body, now)
    # Each receiver, whichever of the two secrets it has, verifies the same request.
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"type": "alert.created"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(ValueError, match="no secret"):
        signed_headers((), "msg_1", body, now)


async def test_a_site_scoped_admin_may_not_change_what_serves_every_site(
    agw: AlertGateway, receiver: Receiver
) -> None:
    """Police endpoints, the alert policy, replays and reviewer levels act on every site: a
    site-scoped admin key could otherwise point all sites' alerts at its own server."""
    _, scoped = await access.create_key(agw.gw.pool, Role.ADMIN, [agw.site])
    auth = {"Authorization": f"Bearer {scoped}"}
    endpoint_id = await agw.register(receiver)  # by the unscoped admin: allowed
    attempts = [
        ("POST", "/v1/webhook-endpoints", {"url": receiver.url, "site_ids": []}),
        ("GET", "/v1/webhook-endpoints", None),
        ("POST", f"/v1/webhook-endpoints/{endpoint_id}/disable", None),
        ("POST", f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", {"overlap_s": 0}),
        ("POST", "/v1/alerts/dead-letters/replay", {"endpoint_id": endpoint_id}),
        ("PUT", "/v1/alerts/policy", {"categories": {}}),
        ("PUT", f"/v1/review/reviewers/{uuid.uuid4().hex[:12]}/level", {"level": 2}),
    ]
    for method, path, body in attempts:
        status, problem = await agw.call(method, path, headers=auth, json=body)
        assert (status, problem["code"]) == (403, "site_scoped_key"), (method, path)
    # Its own site's dead letters it may still read.
    status, _ = await agw.call("GET", "/v1/alerts/dead-letters", headers=auth)
    assert status == 200
