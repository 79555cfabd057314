"""Forwarder against the fake gateway: retries, duplicates, conflicts, spool-full back-pressure."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from firmware_bridge.app import Bridge
from firmware_bridge.spool import Spool, SpoolRecord
from firmware_bridge.uplink import Forwarder, GatewayClient

from .conftest import bridge_config, fast_scanner, wait_until
from .fake_gateway import KEY, FakeGateway

PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)


def record(scan_id: str, waybill: str = "SF1") -> SpoolRecord:
    meta = {
        "scan_id": scan_id,
        "site_id": "site-1",
        "scanner_id": "SIM",
        "waybill_no": waybill,
        "occurred_at": "2026-11-28T12:00:00+00:00",
        "line_count": 1,
        "pixels_per_line": 1,
    }
    return SpoolRecord(scan_id, meta, PNG_1PX)


async def forward_all(spool: Spool, gateway: FakeGateway) -> Forwarder:
    async with aiohttp.ClientSession() as session:
        fwd = Forwarder(
            spool, GatewayClient(session, gateway.url, KEY), backoff_initial=0.01, backoff_max=0.05
        )
        task = asyncio.get_running_loop().create_task(fwd.run())
        try:
            await wait_until(lambda: spool.depth().pending == 0, within=10)
        finally:
            task.cancel()
    return fwd


async def test_server_errors_are_retried_and_a_resend_is_a_duplicate(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.fail_next = 2
    spool = Spool(tmp_path / "a.db")
    spool.put(record("00000000-0000-5000-8000-000000000001"), time.time())
    fwd = await forward_all(spool, gateway)
    assert fwd.stats.retries == 2
    assert fwd.stats.uploaded == 1
    # a second bridge (or a lost 201) sends the same scan again: the gateway says duplicate
    other = Spool(tmp_path / "b.db")
    other.put(record("00000000-0000-5000-8000-000000000001"), time.time())
    fwd = await forward_all(other, gateway)
    assert fwd.stats.duplicates == 1
    assert len(gateway.scans) == 1


async def test_conflict_is_dead_and_never_retried(gateway: FakeGateway, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "a.db")
    spool.put(record("00000000-0000-5000-8000-000000000002", "SF1"), time.time())
    await forward_all(spool, gateway)
    other = Spool(tmp_path / "b.db")
    other.put(record("00000000-0000-5000-8000-000000000002", "SF-OTHER"), time.time())
    fwd = await forward_all(other, gateway)
    assert fwd.stats.dead == 1
    assert other.depth().dead == 1
    assert "409" in other.dead()[0][1]
    assert gateway.conflicts == 1


async def test_bad_key_is_dead(gateway: FakeGateway, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "a.db")
    spool.put(record("00000000-0000-5000-8000-000000000003"), time.time())
    async with aiohttp.ClientSession() as session:
        fwd = Forwarder(spool, GatewayClient(session, gateway.url, "wrong"))
        task = asyncio.get_running_loop().create_task(fwd.run())
        try:
            await wait_until(lambda: spool.depth().dead == 1, within=10)
        finally:
            task.cancel()
    assert "401" in spool.dead()[0][1]


async def test_full_spool_stops_the_belt_until_the_gateway_catches_up(tmp_path: Path) -> None:
    gateway = FakeGateway()
    await gateway.start()
    port = gateway.port
    await gateway.stop()
    scanner = fast_scanner(parcels=5, rate=1500.0)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    config = bridge_config(
        url, f"http://127.0.0.1:{port}", tmp_path / "s.db", holds=False, max_spool_scans=2
    )
    bridge = Bridge(config)
    await bridge.start()
    try:
        await wait_until(lambda: bridge.stats.spool_full and not scanner.state.belt_running)
        assert scanner.state.commanded_stop
        assert bridge.spool.depth().pending == 2
        await gateway.start(port)
        await wait_until(
            lambda: len(gateway.scans) == 5 and len(scanner.state.parcels_done) == 5, within=20
        )
        assert not bridge.stats.spool_full
        assert scanner.state.stops >= 1
        assert {m["waybill_no"] for m in gateway.scans.values()} == {
            p.waybill_no for p in scanner.state.parcels_done
        }
    finally:
        await bridge.stop()
        await gateway.stop()
        server.close()
        await server.wait_closed()
