"""Contract customers: a security agreement on file stands in for the sender's ID, and only then."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from screening.errors import BadRequestError, NotFoundError
from screening.services import access
from tests.conftest import RunningGateway
from tests.gateway.events import BASE, event, parcel_flow
from tests.gateway.test_verify_cli import cli

USCC = "91420100MA4K00001U"  # 武汉 (420100), GB 32100 check character U


async def post(gw: RunningGateway, events: list[dict[str, Any]]) -> dict[str, Any]:
    async with gw.http.post(f"{gw.url}/v1/events", json=events, headers=gw.auth()) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def violations_of(gw: RunningGateway, waybill_no: str) -> list[str]:
    async with gw.http.get(f"{gw.url}/v1/parcels/{waybill_no}", headers=gw.auth()) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return list(body["violations"])


def contract_parcel(site: str, waybill: str, ref: str) -> list[dict[str, Any]]:
    """A complete parcel life whose real-name record is a contract customer's reference."""
    flow = parcel_flow(site, waybill, skip=frozenset({"realname"}))
    return [*flow, event("realname.registered", site, waybill, BASE, contract_customer_ref=ref)]


async def test_a_contract_customer_counts_only_with_an_agreement_covering_the_day(
    gateway: RunningGateway,
) -> None:
    site = gateway.keys.site
    event_day = BASE.date()  # 2026-11-20, also in Beijing
    await access.add_contract(
        gateway.pool, site, "C-ON-FILE", name="武汉光谷电子商务有限公司", uscc=USCC,
        agreement_no="SA-2026-001", valid_from=date(2026, 1, 1),
    )  # fmt: skip
    await access.add_contract(
        gateway.pool, site, "C-ENDED", name="武汉江城图书发行有限公司", uscc=USCC,
        agreement_no="SA-2025-007", valid_from=date(2025, 1, 1),
        valid_until=event_day - timedelta(days=1),
    )  # fmt: skip
    cases = {"CT0000000001": "C-ON-FILE", "CT0000000002": "C-ENDED", "CT0000000003": "C-NONE"}
    for waybill, ref in cases.items():
        assert (await post(gateway, contract_parcel(site, waybill, ref)))["accepted"] == 6
    assert await violations_of(gateway, "CT0000000001") == []
    assert await violations_of(gateway, "CT0000000002") == ["no_contract_agreement"]
    assert await violations_of(gateway, "CT0000000003") == ["no_contract_agreement"]
    # The rates see the same: one of three parcels passes the real-name rule.
    path = f"/v1/sites/{site}/rates?from=2026-11-20&to=2026-11-20"
    async with gateway.http.get(f"{gateway.url}{path}", headers=gateway.auth()) as resp:
        total = (await resp.json())["total"]
    assert (total["dispatched"], total["realname_rate"]) == (3, pytest.approx(1 / 3))


async def test_a_late_registration_is_judged_by_the_agreement_of_its_day_after_a_renewal(
    gateway: RunningGateway,
) -> None:
    """A station offline over a renewal sends the old day's registration afterwards: the
    agreement that covered that day counts, though the customer's current one starts later."""
    site = gateway.keys.site
    event_day = BASE.date()
    await access.add_contract(
        gateway.pool, site, "C-RENEWED", name="武汉长江物流有限公司", uscc=USCC,
        agreement_no="SA-2026-100", valid_from=date(2026, 1, 1), valid_until=event_day,
    )  # fmt: skip
    await access.add_contract(
        gateway.pool, site, "C-RENEWED", name="武汉长江物流有限公司", uscc=USCC,
        agreement_no="SA-2027-100", valid_from=event_day + timedelta(days=1),
    )  # fmt: skip
    assert (await post(gateway, contract_parcel(site, "CT0000000021", "C-RENEWED")))[
        "accepted"
    ] == 6
    assert await violations_of(gateway, "CT0000000021") == []
    async with gateway.pool.acquire() as conn:
        kept = await conn.fetchval(
            "SELECT payload->>'contract_agreement' FROM events WHERE site_id = $1 AND "
            "waybill_no = $2 AND event_type = 'realname.registered'", site, "CT0000000021",
        )  # fmt: skip
    assert kept == "SA-2026-100"
    # The listing shows the customer's current agreement.
    contracts = await access.list_contracts(gateway.pool, site)
    renewed = next(c for c in contracts if c["customer_ref"] == "C-RENEWED")
    assert renewed["agreement_no"] == "SA-2027-100"


async def test_the_agreement_found_is_kept_with_the_event_and_a_resend_is_a_duplicate(
    gateway: RunningGateway,
) -> None:
    site = gateway.keys.site
    await access.add_contract(
        gateway.pool, site, "C-KEPT", name="湖北楚天服饰贸易有限公司", uscc=USCC,
        agreement_no="SA-2026-042", valid_from=date(2026, 1, 1),
    )  # fmt: skip
    registration = event(
        "realname.registered", site, "CT0000000010", contract_customer_ref="C-KEPT"
    )
    assert (await post(gateway, [registration]))["accepted"] == 1
    # Ending the agreement later does not rewrite what was on file when the parcel was taken.
    await access.add_contract(
        gateway.pool, site, "C-KEPT", name="湖北楚天服饰贸易有限公司", uscc=USCC,
        agreement_no="SA-2026-042", valid_from=date(2026, 1, 1), valid_until=date(2026, 1, 2),
    )  # fmt: skip
    assert (await post(gateway, [registration]))["duplicate"] == 1
    rest = [e for e in parcel_flow(site, "CT0000000010") if e["type"] != "realname.registered"]
    await post(gateway, rest)
    assert await violations_of(gateway, "CT0000000010") == []
    stored = await gateway.pool.fetchval(
        "SELECT payload FROM events WHERE site_id = $1 AND event_id = $2::uuid",
        site,
        registration["event_id"],
    )
    assert json.loads(stored)["contract_agreement"] == "SA-2026-042"


async def test_an_agreement_needs_a_valid_uscc_a_known_site_and_a_sane_period(
    gateway: RunningGateway,
) -> None:
    site = gateway.keys.site
    base = {"name": "某公司", "agreement_no": "SA-1", "valid_from": date(2026, 1, 1)}
    with pytest.raises(BadRequestError) as bad:
        await access.add_contract(gateway.pool, site, "C-X", uscc="91420100MA4K00001A", **base)
    assert bad.value.code == "invalid_checksum"
    with pytest.raises(NotFoundError):
        await access.add_contract(gateway.pool, "NO-SUCH-SITE", "C-X", uscc=USCC, **base)
    with pytest.raises(BadRequestError):
        await access.add_contract(
            gateway.pool, site, "C-X", uscc=USCC, **base, valid_until=date(2025, 12, 31)
        )


async def test_the_cli_records_and_lists_agreements(
    gateway: RunningGateway, database_url: str, tmp_path: Path
) -> None:
    site = gateway.keys.site
    rc, out = await cli(
        database_url, tmp_path, "contracts", "add", "--site", site, "--ref", "C-CLI",
        "--name", "武汉光谷电子商务有限公司", "--uscc", USCC.lower(), "--agreement", "SA-9",
        "--from", "2026-01-01", "--until", "2026-12-31",
    )  # fmt: skip
    assert rc == 0, out
    rc, out = await cli(database_url, tmp_path, "contracts", "list", "--site", site)
    assert rc == 0, out
    assert f"C-CLI\t武汉光谷电子商务有限公司\t{USCC}\tSA-9\t2026-01-01..2026-12-31" in out
    rc, out = await cli(
        database_url, tmp_path, "contracts", "add", "--site", site, "--ref", "C-BAD",
        "--name", "某公司", "--uscc", "91420100MA4K00001A", "--agreement", "SA-10",
        "--from", "2026-01-01",
    )  # fmt: skip
    assert rc == 2
    assert "(invalid_checksum)" in out
