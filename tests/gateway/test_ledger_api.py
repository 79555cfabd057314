"""Ledger endpoints: a signed checkpoint, and proofs that verify against it (RFC 9162)."""

from __future__ import annotations

import base64
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from screening.api.context import GATEWAY as GATEWAY_KEY
from screening.api.ledger import LEDGER_SIGNER
from screening.domain.checkpoint import NoteVerifier, parse_and_verify
from screening.domain.ledger import (
    LedgerInconsistentError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from screening.services import access
from screening.services import ledger as ledger_service
from screening.services.ledger import LedgerSigner, SignerMismatchError
from screening.settings import Settings
from tests.conftest import RunningGateway
from tests.gateway.events import event, parcel_flow


async def get(gw: RunningGateway, path: str, role: str = "supervisor") -> tuple[int, Any]:
    async with gw.http.get(f"{gw.url}{path}", headers=gw.auth(role)) as resp:
        return resp.status, await resp.json(content_type=None)


async def checkpoint_now(gw: RunningGateway) -> None:
    signer = LedgerSigner.load_or_create(gw.app[GATEWAY_KEY].settings.ledger_key_path)
    await ledger_service.make_checkpoint(gw.pool, gw.keys.site, signer)


async def test_proofs_verify_against_the_signed_checkpoint(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    first = parcel_flow(site, "LG0000000001")
    async with gateway.http.post(f"{gateway.url}/v1/events", json=first, headers=gateway.auth()):
        pass
    status, body = await get(gateway, f"/v1/sites/{site}/ledger/checkpoint")
    assert status == 404
    assert body["code"] == "no_checkpoint"

    await checkpoint_now(gateway)
    status, cp = await get(gateway, f"/v1/sites/{site}/ledger/checkpoint")
    assert status == 200, cp
    assert cp["tree_size"] == 6
    verifier = NoteVerifier.from_vkey(cp["vkey"])
    checkpoint = parse_and_verify(cp["note"], verifier)
    assert checkpoint.root_hash == base64.b64decode(cp["root_hash"])

    event_id = first[3]["event_id"]
    status, proof = await get(gateway, f"/v1/sites/{site}/ledger/inclusion?event_id={event_id}")
    assert status == 200, proof
    assert verify_inclusion(
        base64.b64decode(proof["leaf_hash"]),
        proof["leaf_index"],
        proof["tree_size"],
        [base64.b64decode(h) for h in proof["hashes"]],
        checkpoint.root_hash,
    )
    # The leaf is this event's: its entry hashes to it and names the event (after the
    # version byte and the length-prefixed site id come the event id's 16 bytes).
    entry = base64.b64decode(proof["entry"])
    assert leaf_hash(entry) == base64.b64decode(proof["leaf_hash"])
    id_at = 2 + len(site.encode())
    assert entry[id_at : id_at + 16] == uuid.UUID(event_id).bytes
    # A leaf row pointed at another event is told, not proven for it.
    await gateway.pool.execute(
        "UPDATE ledger_leaves SET event_id = $2 WHERE site_id = $1 AND event_id = $3",
        site, uuid.uuid4(), uuid.UUID(first[4]["event_id"]),
    )  # fmt: skip
    await gateway.pool.execute(
        "UPDATE ledger_leaves SET event_id = $3 WHERE site_id = $1 AND event_id = $2",
        site, uuid.UUID(event_id), uuid.UUID(first[4]["event_id"]),
    )  # fmt: skip
    swapped = first[4]["event_id"]
    status, problem = await get(gateway, f"/v1/sites/{site}/ledger/inclusion?event_id={swapped}")
    assert (status, problem["code"]) == (503, "ledger_inconsistent")

    second = parcel_flow(site, "LG0000000002")
    async with gateway.http.post(f"{gateway.url}/v1/events", json=second, headers=gateway.auth()):
        pass
    await checkpoint_now(gateway)
    status, cp2 = await get(gateway, f"/v1/sites/{site}/ledger/checkpoint")
    assert cp2["tree_size"] == 12
    new_root = parse_and_verify(cp2["note"], verifier).root_hash
    status, cons = await get(gateway, f"/v1/sites/{site}/ledger/consistency?old_size=6&new_size=12")
    assert status == 200, cons
    assert verify_consistency(
        6, 12, checkpoint.root_hash, new_root, [base64.b64decode(h) for h in cons["hashes"]]
    )


async def test_ledger_reads_respect_scope_and_input(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    status, body = await get(gateway, f"/v1/sites/{site}/ledger/checkpoint", role="reviewer")
    assert (status, body["code"]) == (403, "forbidden_role")
    status, body = await get(
        gateway, f"/v1/sites/{gateway.keys.other_site}/ledger/checkpoint", role="supervisor"
    )
    assert (status, body["code"]) == (403, "forbidden_site")
    status, body = await get(gateway, f"/v1/sites/{site}/ledger/inclusion?event_id=nope")
    assert (status, body["code"]) == (400, "invalid_query")
    # past PostgreSQL's bigint: a 400, not a 503 blaming the database
    status, body = await get(
        gateway, f"/v1/sites/{site}/ledger/consistency?old_size=1&new_size={2**63}"
    )
    assert (status, body["code"]) == (400, "invalid_query")
    status, body = await get(gateway, f"/v1/sites/{site}/ledger/inclusion?event_id={uuid.uuid4()}")
    assert (status, body["code"]) == (404, "not_in_ledger")
    async with gateway.http.get(f"{gateway.url}/v1/ledger/vkey") as resp:
        assert resp.status == 200
        assert (await resp.text()).startswith("screening.example/ledger+")


async def test_a_site_signed_with_another_key_is_neither_extended_nor_served(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """Found by review: gateways with their own key files took turns signing a site's
    checkpoints, and the API paired a note with a vkey that did not verify it."""
    site = gateway.keys.site
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=parcel_flow(site, "LG0000000031"), headers=gateway.auth()
    ):
        pass
    elsewhere = LedgerSigner.load_or_create(tmp_path / "another-gateway.key")
    await ledger_service.make_checkpoint(gateway.pool, site, elsewhere)  # the other one first
    status, problem = await get(gateway, f"/v1/sites/{site}/ledger/checkpoint")
    assert (status, problem["code"]) == (503, "ledger_key_mismatch")
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=parcel_flow(site, "LG0000000032"), headers=gateway.auth()
    ):
        pass
    ours = gateway.app[LEDGER_SIGNER]
    with pytest.raises(SignerMismatchError, match="same SCREENING_LEDGER_KEY_FILE"):
        await ledger_service.make_checkpoint(gateway.pool, site, ours)
    # The periodic job skips the site with an alarm, and signs the others.
    assert site not in await ledger_service.checkpoint_all(gateway.pool, ours)
    # An operator adopting this gateway's key (the other was lost) signs the site once with it,
    # after the same consistency check; from then on it is extended and served.
    await ledger_service.make_checkpoint(gateway.pool, site, ours, adopt_key=True)
    status, cp = await get(gateway, f"/v1/sites/{site}/ledger/checkpoint")
    assert (status, cp["tree_size"]) == (200, 12)


async def test_the_log_columns_are_the_events_as_validated_and_the_ledger_verifies(
    gateway: RunningGateway,
) -> None:
    """The log's columns are read from each event's payload in SQL while the ledger leaf is
    built from the validated event in Python: a Beijing offset with fractions of a second, a
    waybill sent in lower case, a sender and a contract customer must all agree, or the site
    would not verify against its checkpoint."""
    site = gateway.keys.site
    await access.add_contract(
        gateway.pool, site, "C-LEDGER", name="某电商公司", uscc="91420100MA4K00001U",
        agreement_no="SA-LEDGER", valid_from=date(2026, 1, 1),
    )  # fmt: skip
    beijing = timezone(timedelta(hours=8))
    start = datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=beijing)
    events = parcel_flow(site, "lgoffset00001", start=start)
    contract = event("realname.registered", site, "lgoffset00001",
                     start + timedelta(seconds=1.5), contract_customer_ref="C-LEDGER")  # fmt: skip
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=[*events, contract], headers=gateway.auth()
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert body["accepted"] == 7
    rows = await gateway.pool.fetch(
        "SELECT event_id, event_type, waybill_no, occurred_at FROM events WHERE site_id = $1",
        site,
    )
    sent = {uuid.UUID(e["event_id"]): e for e in [*events, contract]}
    assert {r["event_id"] for r in rows} == set(sent)
    for r in rows:
        assert r["event_type"] == sent[r["event_id"]]["type"]
        assert r["waybill_no"] == "LGOFFSET00001"
        assert r["occurred_at"] == datetime.fromisoformat(sent[r["event_id"]]["occurred_at"])
    records = await gateway.pool.fetch(
        "SELECT event_id, contract_customer_ref, document_masked FROM realname_records"
        " WHERE site_id = $1 ORDER BY occurred_at",
        site,
    )
    assert [(r["contract_customer_ref"], r["document_masked"] is None) for r in records] == [
        ("C-LEDGER", True),  # 1.5 s after the start
        (None, False),  # the sender's, a minute after
    ]
    await checkpoint_now(gateway)
    _, cp = await get(gateway, f"/v1/sites/{site}/ledger/checkpoint")
    report = await ledger_service.verify(
        gateway.pool, site, cp["note"], NoteVerifier.from_vkey(cp["vkey"])
    )
    assert report.ok, report
    assert cp["tree_size"] == 7


async def test_a_checkpoint_row_edited_in_the_database_is_neither_served_nor_extended(
    gateway: RunningGateway,
) -> None:
    """Found by review: the checkpoint endpoint, the monthly report and the next signing took
    the stored row's size and root, which anyone who can write to the database could set to
    a forged history's. What the signed note says now decides, and a row that disagrees
    with it stops all three."""
    site = gateway.keys.site
    ours = gateway.app[LEDGER_SIGNER]
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=parcel_flow(site, "LG0000000041"), headers=gateway.auth()
    ):
        pass
    await ledger_service.make_checkpoint(gateway.pool, site, ours)
    month = datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m")  # the site's zone
    report = f"{gateway.url}/console/reports/{site}/{month}"
    async with gateway.http.get(report, headers=gateway.auth("supervisor")) as resp:
        page = await resp.text()
    assert 'class="ok" id="checkpoint-status"' in page
    await gateway.pool.execute(
        "UPDATE ledger_checkpoints SET root_hash = $2 WHERE site_id = $1", site, bytes(32)
    )
    status, problem = await get(gateway, f"/v1/sites/{site}/ledger/checkpoint")
    assert (status, problem["code"]) == (503, "ledger_inconsistent")
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=parcel_flow(site, "LG0000000042"), headers=gateway.auth()
    ):
        pass
    with pytest.raises(LedgerInconsistentError, match="does not say what its signed note says"):
        await ledger_service.make_checkpoint(gateway.pool, site, ours)
    async with gateway.http.get(report, headers=gateway.auth("supervisor")) as resp:
        page = await resp.text()
    assert 'class="bad" id="checkpoint-status"' in page
    assert base64.b64encode(bytes(32)).decode() not in page  # the note's root, not the row's


@pytest.mark.parametrize("grown", [True, False])
async def test_a_log_is_not_renamed_by_a_changed_origin_prefix_unless_adopted(
    gateway: RunningGateway, grown: bool
) -> None:
    """Found by review: a changed SCREENING_LEDGER_ORIGIN_PREFIX signed the same log under a
    new name, and auditors holding its checkpoints would take the new ones as another log's.
    Renaming takes --adopt-key once, whether or not the log grew since its last checkpoint."""
    site = gateway.keys.site
    ours = gateway.app[LEDGER_SIGNER]
    old, new = "audit.example/a", "audit.example/b"

    async def post(waybill: str) -> None:
        async with gateway.http.post(
            f"{gateway.url}/v1/events", json=parcel_flow(site, waybill), headers=gateway.auth()
        ):
            pass

    await post("LG0000000051")
    await ledger_service.make_checkpoint(gateway.pool, site, ours, origin_prefix=old)
    if grown:
        await post("LG0000000052")
        with pytest.raises(SignerMismatchError, match="its log is named"):
            await ledger_service.make_checkpoint(gateway.pool, site, ours, origin_prefix=new)
    note = await ledger_service.make_checkpoint(
        gateway.pool, site, ours, origin_prefix=new, adopt_key=True
    )
    assert note.startswith(f"{new}/{site}\n")
    status, cp = await get(gateway, f"/v1/sites/{site}/ledger/checkpoint")
    assert (status, cp["origin"]) == (200, f"{new}/{site}")
    await post("LG0000000053")  # from now on the log is extended under its new name
    note = await ledger_service.make_checkpoint(gateway.pool, site, ours, origin_prefix=new)
    assert note.startswith(f"{new}/{site}\n")


def test_an_origin_prefix_with_a_space_or_plus_is_refused_at_start() -> None:
    for prefix in ("audit example", "audit+example"):
        with pytest.raises(ValueError, match="ledger_origin_prefix"):
            Settings(ledger_origin_prefix=prefix)


async def test_a_stored_note_that_cannot_be_read_is_an_alarm_not_a_crash(
    gateway: RunningGateway,
) -> None:
    site = gateway.keys.site
    flow = parcel_flow(site, "LG0000000061")
    async with gateway.http.post(f"{gateway.url}/v1/events", json=flow, headers=gateway.auth()):
        pass
    await ledger_service.make_checkpoint(gateway.pool, site, gateway.app[LEDGER_SIGNER])
    await gateway.pool.execute(
        "UPDATE ledger_checkpoints SET note = 'garbage' WHERE site_id = $1", site
    )
    for path in (
        "checkpoint",
        "consistency?old_size=1",
        f"inclusion?event_id={flow[0]['event_id']}",
    ):
        status, problem = await get(gateway, f"/v1/sites/{site}/ledger/{path}")
        assert (status, problem.get("code")) == (503, "ledger_inconsistent"), path
    month = datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m")
    async with gateway.http.get(
        f"{gateway.url}/console/reports/{site}/{month}", headers=gateway.auth("supervisor")
    ) as resp:
        assert resp.status == 200
        assert 'class="bad" id="checkpoint-status"' in await resp.text()
