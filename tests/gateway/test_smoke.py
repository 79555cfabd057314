"""A first end-to-end pass: a compliant parcel goes in and its status comes out."""

from tests.conftest import RunningGateway
from tests.gateway.events import parcel_flow


async def test_a_complete_parcel_is_compliant(gateway: RunningGateway) -> None:
    events = parcel_flow(gateway.keys.site, "SF0000000001")
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=events, headers=gateway.auth()
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert body["accepted"] == 6
    async with gateway.http.get(
        f"{gateway.url}/v1/parcels/SF0000000001", headers=gateway.auth("supervisor")
    ) as resp:
        parcel = await resp.json()
        assert resp.status == 200, parcel
    assert parcel["compliant"] is True
    assert parcel["violations"] == []
