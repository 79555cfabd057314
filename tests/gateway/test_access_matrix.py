"""Who may do what, where: every role against every endpoint on its own site and on another, and
every way a request can fail to authenticate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from screening.domain.access import GRANTS, Permission, Role
from screening.services import access
from tests.conftest import RunningGateway
from tests.gateway.events import event, parcel_flow

PROBLEM_JSON = "application/problem+json"
DAY = {"from": "2026-11-20", "to": "2026-11-20"}  # the day parcel_flow dispatches
ROLES = ("station", "reviewer", "supervisor", "police", "admin")


@dataclass(frozen=True)
class Endpoint:
    name: str
    permission: Permission
    ok_status: int

    def request(self, site: str, waybill_no: str) -> tuple[str, str, dict[str, Any]]:
        """(method, path, keyword arguments for aiohttp) aimed at ``site``."""
        if self.name == "post_events":
            body = event("parcel.sealed", site, f"MX{uuid.uuid4().hex[:12].upper()}", clerk_id="c1")
            return "POST", "/v1/events", {"json": body}
        if self.name == "get_parcel":
            return "GET", f"/v1/parcels/{waybill_no}", {"params": {"site_id": site}}
        if self.name == "get_rates":
            return "GET", f"/v1/sites/{site}/rates", {"params": DAY}
        return "GET", f"/v1/sites/{site}/violations", {"params": DAY}


ENDPOINTS = (
    Endpoint("post_events", Permission.WRITE_EVENTS, 201),
    Endpoint("get_parcel", Permission.READ_PARCELS, 200),
    Endpoint("get_rates", Permission.READ_RATES, 200),
    Endpoint("get_violations", Permission.READ_VIOLATIONS, 200),
)


def expected(role: str, endpoint: Endpoint, other_site: bool) -> tuple[int, str | None]:
    """What the grants table and the key's scope say: (status, problem code or None)."""
    if endpoint.permission not in GRANTS[Role(role)]:
        return 403, "forbidden_role"
    if other_site and role != "admin":  # admin keys cover every site
        return 403, "forbidden_site"
    return endpoint.ok_status, None


async def seed_parcels(gw: RunningGateway) -> str:
    """The same waybill, dispatched with a violation, at both test sites; returns it."""
    waybill_no = f"MX{uuid.uuid4().hex[:12].upper()}"
    for site in (gw.keys.site, gw.keys.other_site):
        flow = parcel_flow(site, waybill_no, skip=frozenset({"xray"}))
        async with gw.http.post(f"{gw.url}/v1/events", json=flow, headers=gw.auth("admin")) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["accepted"] == len(flow)
    return waybill_no


MATRIX = [
    pytest.param(role, endpoint, other, id=f"{role}-{endpoint.name}-{'other' if other else 'own'}")
    for role in ROLES
    for endpoint in ENDPOINTS
    for other in (False, True)
]


@pytest.mark.parametrize(("role", "endpoint", "other_site"), MATRIX)
async def test_access_follows_the_grants_and_the_key_scope(
    gateway: RunningGateway, role: str, endpoint: Endpoint, other_site: bool
) -> None:
    waybill_no = await seed_parcels(gateway)
    site = gateway.keys.other_site if other_site else gateway.keys.site
    method, path, kwargs = endpoint.request(site, waybill_no)
    want_status, want_code = expected(role, endpoint, other_site)

    async with gateway.http.request(
        method, f"{gateway.url}{path}", headers=gateway.auth(role), **kwargs
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == want_status, body
        if want_code is not None:
            assert resp.content_type == PROBLEM_JSON
            assert body["code"] == want_code
            assert body["status"] == want_status
            return
    if endpoint.name == "post_events":
        assert body["accepted"] == 1
    elif endpoint.name == "get_parcel":
        assert (body["site_id"], body["waybill_no"]) == (site, waybill_no)
        assert body["violations"] == ["no_xray"]
    elif endpoint.name == "get_rates":
        assert body["site_id"] == site
        assert body["total"]["dispatched"] == 1
    else:
        assert body["site_id"] == site
        assert [(v["waybill_no"], v["reason"]) for v in body["items"]] == [(waybill_no, "no_xray")]


@pytest.mark.parametrize("role", ["station", "reviewer", "supervisor", "police"])
async def test_a_parcel_at_another_site_is_not_found_without_a_site_filter(
    gateway: RunningGateway, role: str
) -> None:
    own = f"MX{uuid.uuid4().hex[:12].upper()}"
    foreign = f"MX{uuid.uuid4().hex[:12].upper()}"
    for site, waybill_no in ((gateway.keys.site, own), (gateway.keys.other_site, foreign)):
        async with gateway.http.post(
            f"{gateway.url}/v1/events",
            json=parcel_flow(site, waybill_no),
            headers=gateway.auth("admin"),
        ) as resp:
            assert resp.status == 200

    async with gateway.http.get(
        f"{gateway.url}/v1/parcels/{own}", headers=gateway.auth(role)
    ) as resp:
        assert resp.status == 200
    async with gateway.http.get(
        f"{gateway.url}/v1/parcels/{foreign}", headers=gateway.auth(role)
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 404, body
        assert body["code"] == "unknown_parcel"
    async with gateway.http.get(
        f"{gateway.url}/v1/parcels/{foreign}", headers=gateway.auth("admin")
    ) as resp:
        assert resp.status == 200


# --- authentication ----------------------------------------------------------------------------


def _requests(gw: RunningGateway) -> list[tuple[str, str, dict[str, Any]]]:
    return [e.request(gw.keys.site, "MX000000000000") for e in ENDPOINTS]


async def _assert_401(gw: RunningGateway, headers: dict[str, str], code: str) -> None:
    for method, path, kwargs in _requests(gw):
        async with gw.http.request(method, f"{gw.url}{path}", headers=headers, **kwargs) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 401, (path, body)
            assert resp.content_type == PROBLEM_JSON
            assert body["code"] == code, (path, body)
            assert body["status"] == 401
            assert body["title"]
            assert body["detail"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Bearer "}, {"Authorization": "Basic dTpw"}],
    ids=["no header", "empty header", "empty bearer", "basic scheme"],
)
async def test_a_request_without_a_bearer_key_is_401_missing_credentials(
    gateway: RunningGateway, headers: dict[str, str]
) -> None:
    await _assert_401(gateway, headers, "missing_credentials")


async def test_a_401_names_the_bearer_scheme(gateway: RunningGateway) -> None:
    # RFC 9110 §11.6.1: a 401 response MUST carry WWW-Authenticate.
    async with gateway.http.get(f"{gateway.url}/v1/sites/{gateway.keys.site}/rates") as resp:
        challenge = resp.headers.get("WWW-Authenticate", "")
        assert resp.status == 401
    assert challenge.lower().startswith("bearer"), "no WWW-Authenticate: Bearer challenge"


@pytest.mark.parametrize(
    "make_key",
    [
        lambda gw: "not-a-key",
        lambda gw: "scr_station_short_secret",
        lambda gw: gw.keys.by_role["station"] + "x",
        lambda gw: access.new_key(Role.STATION)[1],  # well formed, never issued
        lambda gw: gw.keys.by_role["station"].replace("scr_station_", "scr_admin_", 1),
    ],
    ids=["garbage", "malformed", "extended secret", "unknown key", "role prefix swapped"],
)
async def test_a_malformed_or_unknown_key_is_401_invalid_api_key(
    gateway: RunningGateway, make_key: Any
) -> None:
    await _assert_401(gateway, {"Authorization": f"Bearer {make_key(gateway)}"}, "invalid_api_key")


async def test_a_revoked_key_is_refused_at_once(gateway: RunningGateway) -> None:
    key_id, key = await access.create_key(gateway.pool, Role.STATION, [gateway.keys.site])
    headers = {"Authorization": f"Bearer {key}"}
    async with gateway.http.get(
        f"{gateway.url}/v1/sites/{gateway.keys.site}/rates", headers=headers
    ) as resp:
        assert resp.status == 200

    await access.revoke_key(gateway.pool, key_id)  # the fixture caches keys for 0 s
    await _assert_401(gateway, headers, "invalid_api_key")
