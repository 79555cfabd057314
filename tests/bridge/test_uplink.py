"""Forwarder against the fake gateway: retries, duplicates, conflicts, spool-full back-pressure."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from firmware_bridge.app import Bridge
from firmware_bridge.spool import Spool, SpoolRecord
from firmware_bridge.uplink import Forwarder, GatewayClient, HoldListener, HoldOrder

from .conftest import bridge_config, fast_scanner, running_bridge, wait_until
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


async def forward_all(
    spool: Spool,
    gateway: FakeGateway,
    client: type[GatewayClient] = GatewayClient,
    **forwarder: Any,
) -> Forwarder:
    async with aiohttp.ClientSession() as session:
        params: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05, **forwarder}
        fwd = Forwarder(spool, client(session, gateway.url, KEY), **params)
        task = asyncio.get_running_loop().create_task(fwd.run())
        try:
            await wait_until(lambda: spool.depth().pending == 0 or task.done(), within=10)
            assert not task.done(), task.exception()
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


async def test_a_backlog_is_not_hammered_at_a_gateway_that_is_down(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    """Each failure pauses the whole forwarder, growing while the gateway keeps failing, not just
    the scan that failed: 50 pending scans cost a handful of requests a second, not 50."""
    gateway.fail_next = 1_000_000
    spool = Spool(tmp_path / "a.db")
    for i in range(50):
        spool.put(record(f"00000000-0000-5000-8000-{i:012d}"), time.time())
    async with aiohttp.ClientSession() as session:
        fwd = Forwarder(
            spool, GatewayClient(session, gateway.url, KEY), backoff_initial=0.05, backoff_max=0.4
        )
        task = asyncio.get_running_loop().create_task(fwd.run())
        try:
            await asyncio.sleep(1.5)
            tried = gateway.posts
            gateway.fail_next = 0  # back up: the backlog drains
            await wait_until(lambda: spool.depth().pending == 0 or task.done(), within=20)
            assert not task.done()
        finally:
            task.cancel()
    assert 2 <= tried <= 15, tried  # one at a time, 0.05 s growing to 0.4 s apart at most
    assert len(gateway.scans) == 50


async def test_conflict_is_dead_and_never_retried(gateway: FakeGateway, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "a.db")
    spool.put(record("00000000-0000-5000-8000-000000000002", "SF1"), time.time())
    await forward_all(spool, gateway)
    other = Spool(tmp_path / "b.db")
    other.put(record("00000000-0000-5000-8000-000000000002", "SF-OTHER"), time.time())
    fwd = await forward_all(other, gateway)
    assert fwd.stats.dead == 1
    assert other.depth().dead == 1
    assert "409" in other.dead_scans()[0].error
    assert gateway.conflicts == 1


async def test_a_refused_key_keeps_the_scans_until_the_bridge_has_a_good_one(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    """401/403 say the key is wrong (or rotated), not the scan: nothing goes to dead, the
    forwarder backs off to its maximum, and a bridge restarted with the right key sends all."""
    spool = Spool(tmp_path / "a.db")
    for i in range(3):
        spool.put(record(f"00000000-0000-5000-8000-00000000000{i}"), time.time())
    async with aiohttp.ClientSession() as session:
        fwd = Forwarder(
            spool, GatewayClient(session, gateway.url, "wrong"), backoff_initial=0.01,
            backoff_max=0.5,
        )  # fmt: skip
        task = asyncio.get_running_loop().create_task(fwd.run())
        try:
            await wait_until(lambda: fwd.stats.retries >= 1)
            await asyncio.sleep(0.3)
        finally:
            task.cancel()
    assert (spool.depth().pending, spool.depth().dead) == (3, 0)
    assert gateway.posts == 1  # one refusal, then the forwarder waits at its backoff maximum
    assert "401" in (fwd.stats.last_error or "")
    await forward_all(spool, gateway)  # the bridge restarted with its real key
    assert len(gateway.scans) == 3


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


@pytest.mark.parametrize(
    "fault",
    [
        # a proxy's GBK error page while the gateway restarts
        "bad_gateway_next",
        # a captive portal or a misrouted proxy answering 200: it stored nothing, and deleting
        # the images on its word would lose the scan for good
        "portal_next",
    ],
)
async def test_an_answer_that_is_not_the_gateways_is_retried_and_the_scan_delivered(
    gateway: FakeGateway, tmp_path: Path, fault: str
) -> None:
    setattr(gateway, fault, 2)
    spool = Spool(tmp_path / "a.db")
    spool.put(record("00000000-0000-5000-8000-000000000004"), time.time())
    fwd = await forward_all(spool, gateway)
    assert fwd.stats.retries == 2
    assert fwd.stats.uploaded == 1
    assert "00000000-0000-5000-8000-000000000004" in gateway.scans
    assert spool.depth().dead == 0


async def test_a_clock_set_back_does_not_park_the_forwarder(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    """NTP steps the wall clock back 6 h while the forwarder waits to retry: the retry planned
    in the old time, and the pause, must not wait the 6 h out."""
    gateway.fail_next = 1
    step = [0.0]
    spool = Spool(tmp_path / "a.db")
    spool.put(record("00000000-0000-5000-8000-000000000006"), time.time())
    async with aiohttp.ClientSession() as session:
        fwd = Forwarder(spool, GatewayClient(session, gateway.url, KEY), backoff_initial=2.0,
                        backoff_max=5.0, wall_clock=lambda: time.time() + step[0])  # fmt: skip
        task = asyncio.get_running_loop().create_task(fwd.run())
        try:
            # The failed upload's retry is planned 1-2 s ahead, in the old time; then the
            # clock goes back.
            await wait_until(lambda: (spool.next_due_at() or 0.0) > time.time(), within=10)
            step[0] = -6 * 3600.0
            await wait_until(lambda: spool.depth().pending == 0 or task.done(), within=10)
            assert not task.done(), task.exception()
        finally:
            task.cancel()
    assert (fwd.stats.retries, fwd.stats.uploaded) == (1, 1)


class _FlakyClient(GatewayClient):
    """The real client, but its first upload fails in a way no one planned for."""

    failed = False

    async def upload(self, record: SpoolRecord) -> dict[str, object]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug below the client, once")
        return await super().upload(record)


async def test_an_unexpected_error_in_one_upload_is_retried_not_fatal(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "a.db")
    spool.put(record("00000000-0000-5000-8000-000000000005"), time.time())
    fwd = await forward_all(spool, gateway, _FlakyClient)
    assert fwd.stats.retries == 1
    assert fwd.stats.last_error is not None
    assert "RuntimeError" in fwd.stats.last_error
    assert fwd.stats.uploaded == 1
    assert "00000000-0000-5000-8000-000000000005" in gateway.scans


@pytest.mark.parametrize("retry_after", ["1e9", "inf"])
async def test_retry_after_is_capped_at_the_backoff_maximum(
    gateway: FakeGateway, tmp_path: Path, retry_after: str
) -> None:
    gateway.overload_next = 1
    gateway.retry_after = retry_after  # would park the scan for 30 years, or for ever
    spool = Spool(tmp_path / "a.db")
    spool.put(record("00000000-0000-5000-8000-000000000006"), time.time())
    fwd = await forward_all(spool, gateway)  # backoff_max 0.05 s
    assert fwd.stats.retries == 1
    assert fwd.stats.uploaded == 1


async def test_a_drained_spool_never_restarts_a_belt_that_a_hold_stopped(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.fail_next = 1_000_000  # the gateway answers 500 until told otherwise
    scanner = fast_scanner(parcels=5, rate=1500.0)
    async with running_bridge(scanner, gateway, tmp_path / "s.db", max_spool_scans=2) as bridge:
        await wait_until(lambda: bridge.stats.spool_full and not scanner.state.belt_running)
        assert len(gateway.sockets) == 1
        await gateway.push_hold("hold-s", "SF001000000001")
        await wait_until(lambda: gateway.acks == ["hold-s"] and bool(scanner.state.holds))
        gateway.fail_next = 0  # the spool drains and has room again
        await wait_until(lambda: not bridge.stats.spool_full)
        await asyncio.sleep(0.3)  # a BELT_START would have reached the scanner by now
        assert scanner.state.starts == 0
        assert not scanner.state.belt_running
        status = await bridge.status()
        assert status["open_holds"] == [{"hold_id": "hold-s", "waybill_no": "SF001000000001"}]
        # the gateway releases the hold; still only a person restarts the belt
        await gateway.push_release("rel-s", "hold-s", "SF001000000001")
        await wait_until(lambda: gateway.acks == ["hold-s", "rel-s"])
        await asyncio.sleep(0.1)
        assert scanner.state.starts == 0
        bridge.resume_belt("operator")
        await wait_until(
            lambda: len(gateway.scans) == 5 and len(scanner.state.parcels_done) == 5, within=20
        )
        assert scanner.state.starts == 1


async def test_parcels_closed_while_the_spool_is_full_are_kept_at_a_stop(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    """The scanner does not send a parcel it closed long ago again: one waiting for room
    when the bridge is stopped goes to disk past the bound, not into an alarm."""
    gateway.fail_next = 1_000_000
    scanner = fast_scanner(parcels=5, rate=1500.0)
    async with running_bridge(scanner, gateway, tmp_path / "s.db", max_spool_scans=1) as bridge:
        await wait_until(lambda: bridge.stats.spool_full and bool(bridge._overflow))
    assert bridge.stats.scans >= 2  # parcels the bridge closed, until the stop
    spool = Spool(tmp_path / "s.db")
    try:
        assert spool.depth().pending == bridge.stats.scans
    finally:
        spool.close()


async def test_an_operator_restart_while_the_spool_is_full_waits_for_room(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.fail_next = 1_000_000
    scanner = fast_scanner(parcels=5, rate=1500.0)
    async with running_bridge(scanner, gateway, tmp_path / "s.db", max_spool_scans=2) as bridge:
        await wait_until(lambda: gateway.sockets and bridge.stats.spool_full)
        await gateway.push_hold("hold-f", "SF001000000001")
        await wait_until(lambda: gateway.acks == ["hold-f"])
        bridge.resume_belt("operator")  # the hold is dealt with, but there is no room
        await asyncio.sleep(0.3)
        assert scanner.state.starts == 0
        assert not scanner.state.belt_running
        gateway.fail_next = 0
        await wait_until(
            lambda: len(gateway.scans) == 5 and len(scanner.state.parcels_done) == 5, within=20
        )
        assert scanner.state.starts >= 1  # started by the spool's room, as the operator asked


async def test_a_hold_that_fails_to_apply_is_not_acked_and_the_stream_goes_on(
    gateway: FakeGateway,
) -> None:
    applied: list[str] = []

    async def on_hold(order: HoldOrder) -> None:
        if order.hold_id == "h-bad":
            raise RuntimeError("cannot apply this one")
        applied.append(order.hold_id)

    async with aiohttp.ClientSession() as session:
        listener = HoldListener(session, gateway.url, KEY, on_hold)
        task = asyncio.get_running_loop().create_task(listener.run())
        try:
            await wait_until(lambda: listener.connected and len(gateway.sockets) == 1)
            await gateway.push_hold("h-bad", "SF1")
            await gateway.push_hold("h-good", "SF2")
            await wait_until(lambda: gateway.acks == ["h-good"] or task.done())
            assert not task.done()
            assert applied == ["h-good"]  # and h-bad was not acked: the gateway sends it again
            assert listener.failures == 1
            assert len(gateway.sockets) == 1  # the same connection carried on
        finally:
            task.cancel()


async def test_a_restart_at_the_machine_is_the_persons_restart_for_holds(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    """The machine's own start button is how people restart a held belt (PROTOCOL.md): after
    it, a reconnect's HELLO must not stop the belt again for holds already dealt with."""
    scanner = fast_scanner(parcels=3, rate=1500.0)
    async with running_bridge(scanner, gateway, tmp_path / "s.db") as bridge:
        await wait_until(lambda: bool(gateway.sockets) and scanner.state.belt_running)
        await gateway.push_hold("hold-m", "SF001000000001")
        await wait_until(lambda: gateway.acks == ["hold-m"] and not scanner.state.belt_running)
        await gateway.push_release("rel-m", "hold-m", "SF001000000001")
        await wait_until(lambda: gateway.acks == ["hold-m", "rel-m"])
        scanner.press_start()
        await wait_until(lambda: not bridge.hold_book.belt_stopped and scanner.state.belt_running)
        stops = scanner.state.stops
        scanner.drop_link()  # the bridge reconnects: a new HELLO
        await wait_until(lambda: scanner.state.sessions == 2 and scanner.state.belt_running)
        await asyncio.sleep(0.3)  # a BELT_STOP would have reached the scanner by now
        assert scanner.state.stops == stops
        assert scanner.state.belt_running
        assert not bridge._load_hold_book().belt_stopped  # and the spool keeps it so


async def test_a_belt_started_at_the_machine_while_the_spool_is_full_is_stopped_until_room(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    """Scans the spool cannot take would pile up in memory: the bridge stops the belt again
    (on the start button and on a reconnect) and starts it once there is room."""
    gateway.fail_next = 1_000_000
    scanner = fast_scanner(parcels=5, rate=1500.0)
    async with running_bridge(
        scanner, gateway, tmp_path / "s.db", holds=False, max_spool_scans=2
    ) as bridge:
        await wait_until(lambda: bridge.stats.spool_full and not scanner.state.belt_running)
        stops = scanner.state.stops
        scanner.press_start()
        await wait_until(lambda: scanner.state.stops > stops and not scanner.state.belt_running)
        stops = scanner.state.stops
        scanner.drop_link()  # a scanner that forgot the stop over a reconnect runs on interlock
        await wait_until(lambda: scanner.state.sessions == 2)
        await wait_until(lambda: scanner.state.stops > stops and not scanner.state.belt_running)
        gateway.fail_next = 0
        await wait_until(
            lambda: len(gateway.scans) == 5 and len(scanner.state.parcels_done) == 5, within=20
        )
        assert scanner.state.starts >= 1  # started by the spool's room, as the person asked


async def test_an_uploads_deadline_grows_with_its_size() -> None:
    """A fixed 30 s failed every large scan on a slow station line, forever."""
    async with aiohttp.ClientSession() as session:
        client = GatewayClient(session, "http://gateway.invalid", KEY, timeout=30.0)
        small = client.timeout_for(record("s-1"))
        big = SpoolRecord("s-2", {}, b"i" * 2_000_000, b"h" * 1_500_000, b"l" * 1_500_000)
        assert small.total is not None
        assert 30.0 <= small.total < 31.0
        # 5 MB at the slowest rate waited for, 64 KiB/s: about 76 s more than a small one
        assert client.timeout_for(big).total == pytest.approx(30.0 + 5_000_000 / 65_536)
