"""Virtual scanner <-> bridge over real TCP (and a pty), with a real fake gateway."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from firmware_bridge import app as app_module
from firmware_bridge.app import Bridge
from firmware_bridge.assembler import Assembler
from firmware_bridge.colour import from_u16
from firmware_bridge.errors import SpoolError
from firmware_bridge.frames import (
    Barcode,
    BeltStop,
    Heartbeat,
    Line,
    Message,
    RequestCalibration,
)
from firmware_bridge.protocol import DeliveryFailed, LinkProtocol, Role
from firmware_bridge.spool import Spool

from .conftest import PIXELS, bridge_config, fast_scanner, running_bridge, wait_until
from .fake_gateway import KEY, FakeGateway
from .test_assembler import Belt


async def test_parcels_flow_from_scanner_lines_to_gateway_scans(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    scanner = fast_scanner(parcels=4)
    server = await scanner.serve_tcp()
    port = server.sockets[0].getsockname()[1]
    bridge = Bridge(
        bridge_config(f"tcp://127.0.0.1:{port}", gateway.url, tmp_path / "spool.db", status_port=0)
    )
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.scans) == 4 and len(scanner.state.parcels_done) >= 4)
        sent = {p.waybill_no for p in scanner.state.parcels_done[:4]}
        got = {m["waybill_no"] for m in gateway.scans.values()}
        assert got == sent
        meta = next(iter(gateway.scans.values()))
        assert meta["pixels_per_line"] == PIXELS
        assert meta["scanner_id"] == "SIM-0001"
        assert meta["occurred_at"].endswith("+00:00")
        images = next(iter(gateway.images.values()))
        rgb = cv2.imdecode(np.frombuffer(images["image"], np.uint8), cv2.IMREAD_UNCHANGED)
        high = cv2.imdecode(np.frombuffer(images["high"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert rgb.shape == (meta["line_count"], PIXELS, 3)
        assert high.dtype == np.uint16
        assert from_u16(high).max() > 0.5  # the box walls attenuate
        assert bridge.status_url is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(bridge.status_url) as resp,
        ):
            status = await resp.json()
        assert status["link"] == "up"
        assert status["scans"] == 4
        assert status["last_upload_at"] is not None
        assert status["spool"]["pending"] == 0
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()


async def test_outage_and_bridge_restart_deliver_each_parcel_exactly_once(
    tmp_path: Path,
) -> None:
    n = 6
    gateway = FakeGateway()
    await gateway.start()
    gw_port = gateway.port
    await gateway.stop()  # the gateway is down while the parcels pass
    # 300 lines/s: a parcel takes 100-200 ms, so the restart below lands inside parcel 2 even on
    # a loaded machine (at 1500 lines/s the parcel could end before the bridge had stopped).
    scanner = fast_scanner(parcels=n, rate=300.0)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    spool = tmp_path / "spool.db"
    config = bridge_config(url, f"http://127.0.0.1:{gw_port}", spool, holds=False)
    bridge = Bridge(config)
    await bridge.start()
    try:
        await wait_until(lambda: scanner.inside_parcel == 2)
        # restart mid-parcel: the scanner replays that parcel with its original line indices
        await bridge.stop()
        await asyncio.sleep(0.05)
        bridge = Bridge(config)
        await bridge.start()
        await wait_until(lambda: len(scanner.state.parcels_done) == n)
        await wait_until(lambda: bridge.spool.depth().pending == n)
        assert bridge.forwarder is not None
        assert bridge.forwarder.stats.retries > 0
        await gateway.start(gw_port)
        await wait_until(lambda: bridge.spool.depth().pending == 0)
        assert len(gateway.scans) == n
        assert gateway.conflicts == 0
        assert {m["waybill_no"] for m in gateway.scans.values()} == {
            p.waybill_no for p in scanner.state.parcels_done
        }
        assert scanner.state.sessions == 2
        assert scanner.state.replays == 1
    finally:
        await bridge.stop()
        await gateway.stop()
        server.close()
        await server.wait_closed()


async def test_hold_order_stops_the_belt_and_is_acknowledged(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    scanner = fast_scanner(parcels=50, rate=500.0)
    async with running_bridge(scanner, gateway, tmp_path / "spool.db") as bridge:
        await wait_until(lambda: len(gateway.sockets) == 1 and scanner.state.belt_running)
        await gateway.push_hold("hold-7", "SF001000000003")
        await wait_until(lambda: bool(scanner.state.holds) and gateway.acks == ["hold-7"])
        assert scanner.state.holds[0].waybill_no == "SF001000000003"
        assert not scanner.state.belt_running
        sent = scanner.state.lines_sent
        await asyncio.sleep(0.1)
        assert scanner.state.lines_sent == sent  # the belt really stopped
        assert "stopped" in (await bridge.status())["belt"]


async def test_a_restarted_bridge_still_knows_the_hold_that_stopped_its_belt(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    """The gateway does not send an acknowledged hold again, so the bridge keeps its hold book
    in the spool: after a restart the operator still sees the open hold, and its release."""
    scanner = fast_scanner(parcels=50, rate=500.0)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    config = bridge_config(url, gateway.url, tmp_path / "spool.db")
    bridge = Bridge(config)
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.sockets) == 1 and scanner.state.belt_running)
        await gateway.push_hold("hold-8", "SF001000000004")
        await wait_until(lambda: gateway.acks == ["hold-8"])
        await bridge.stop()
        await wait_until(lambda: not gateway.sockets)
        bridge = Bridge(config)
        await bridge.start()
        status = await bridge.status()
        assert status["open_holds"] == [{"hold_id": "hold-8", "waybill_no": "SF001000000004"}]
        assert not status["restart_allowed"]
        await wait_until(lambda: len(gateway.sockets) == 1)
        await gateway.push_release("rel-8", "hold-8", "SF001000000004")
        await wait_until(lambda: gateway.acks == ["hold-8", "rel-8"])
        status = await bridge.status()
        assert status["open_holds"] == []
        assert status["restart_allowed"]
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()


async def test_a_rebooted_scanner_is_stopped_again_for_the_holds_still_open(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    """A scanner that reboots forgets the stop it was commanded; the bridge, restarted too,
    stops it again and re-sends the hold at its first HELLO."""
    first = fast_scanner(parcels=50, rate=500.0)
    config_kw = {"spool": tmp_path / "spool.db"}
    async with running_bridge(first, gateway, **config_kw):
        await wait_until(lambda: len(gateway.sockets) == 1 and first.state.belt_running)
        await gateway.push_hold("hold-9", "SF001000000005")
        await wait_until(lambda: gateway.acks == ["hold-9"] and not first.state.belt_running)
    rebooted = fast_scanner(parcels=50, rate=500.0)  # a new boot: belt running, no holds
    async with running_bridge(rebooted, gateway, **config_kw):
        await wait_until(lambda: bool(rebooted.state.holds) and not rebooted.state.belt_running)
        assert [h.hold_id for h in rebooted.state.holds] == ["hold-9"]
        assert gateway.acks == ["hold-9"]  # the gateway was not asked again


async def test_a_stop_the_scanner_never_acknowledged_is_sent_again(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    scanner = fast_scanner(parcels=50, rate=500.0)
    async with running_bridge(scanner, gateway, tmp_path / "s.db", holds=False) as bridge:
        await wait_until(lambda: scanner.state.belt_running)
        stops = scanner.state.stops
        bridge.hold_book.hold("h-lost", "SF1")  # the hold the stop was for stands
        # What the link reports when every retransmission of a BELT_STOP went unanswered.
        bridge._on_event(DeliveryFailed(BeltStop("hold h-lost")))
        await wait_until(lambda: scanner.state.stops > stops and not scanner.state.belt_running)


async def test_gateway_overload_and_rejection(gateway: FakeGateway, tmp_path: Path) -> None:
    gateway.overload_next = 2
    scanner = fast_scanner(parcels=2)
    async with running_bridge(scanner, gateway, tmp_path / "a.db", holds=False) as bridge:
        await wait_until(lambda: len(gateway.scans) == 2)
    # a site the key is not bound to: 403 problem+json -> dead, kept, never retried
    scanner = fast_scanner(parcels=2, seed=2)
    spool = tmp_path / "b.db"
    async with running_bridge(scanner, gateway, spool, site_id="other", holds=False) as bridge:
        await wait_until(lambda: bridge.spool.depth().dead == 2)
        assert all("403" in d.error for d in bridge.spool.dead_scans())
        posts = gateway.posts
        await asyncio.sleep(0.3)
        assert gateway.posts == posts
        assert bridge.spool.depth().pending == 0


async def test_serial_link_over_a_pty(gateway: FakeGateway, tmp_path: Path) -> None:
    scanner = fast_scanner(parcels=2)
    path, task = await scanner.serve_pty()
    bridge = Bridge(bridge_config(f"serial://{path}", gateway.url, tmp_path / "s.db", holds=False))
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.scans) == 2)
    finally:
        await bridge.stop()
        task.cancel()


async def test_demo_station_runs_scanner_and_bridge_in_process(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    from firmware_bridge.station import start_station

    station = await start_station(
        "site-1",
        gateway.url,
        KEY,
        workdir=tmp_path,
        pixels=64,
        line_rate=3000,
        source="procedural",
        parcels=2,
        status_interval=0,
    )
    try:
        await wait_until(lambda: len(gateway.scans) >= 1)
        assert station.scanner_url.startswith("tcp://127.0.0.1:")
    finally:
        await station.stop()


async def test_commands_issued_while_the_scanner_is_away_are_sent_on_reconnect() -> None:
    import socket

    from firmware_bridge.connection import LinkState, ScannerLink
    from firmware_bridge.frames import Hold

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events: list[object] = []
    link = ScannerLink(f"tcp://127.0.0.1:{port}", events.append, backoff_max=0.1)
    task = asyncio.get_running_loop().create_task(link.run())
    scanner = fast_scanner(parcels=1)
    server = None
    try:
        await wait_until(lambda: link.state is LinkState.DOWN)
        link.send(Hold("SF001000000000", "h-away"))
        server = await scanner.serve_tcp("127.0.0.1", port)
        await wait_until(lambda: bool(scanner.state.holds))
        assert scanner.state.holds[0].hold_id == "h-away"
        assert not scanner.state.belt_running
    finally:
        await link.close()
        await asyncio.wait_for(task, 5)
        if server is not None:
            server.close()
            await server.wait_closed()


async def test_a_new_bridge_takes_over_from_a_stale_connection(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    # Lines sent into the stale connection are gone (LINEs are never acknowledged); on the
    # takeover the scanner replays the parcel under the curtain. A slow belt keeps the first
    # parcel under it until the new bridge is up, however long the machine takes to start it.
    scanner = fast_scanner(parcels=2, rate=200.0)
    server = await scanner.serve_tcp()
    port = server.sockets[0].getsockname()[1]
    _stale_reader, stale = await asyncio.open_connection("127.0.0.1", port)  # never reads
    await wait_until(lambda: scanner.state.sessions == 1)
    bridge = Bridge(bridge_config(f"tcp://127.0.0.1:{port}", gateway.url, tmp_path / "s.db"))
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.scans) == 2)
        assert scanner.state.sessions == 2
    finally:
        await bridge.stop()
        stale.close()
        server.close()
        await server.wait_closed()


async def test_scanner_keeps_its_line_rate(gateway: FakeGateway, tmp_path: Path) -> None:
    scanner = fast_scanner(parcels=1000, rate=500.0)
    async with running_bridge(scanner, gateway, tmp_path / "s.db", holds=False) as bridge:
        await wait_until(lambda: bridge.stats.lines > 0)
        start = bridge.stats.lines
        await asyncio.sleep(1.0)
        assert 400 <= bridge.stats.lines - start <= 600


async def test_a_hold_with_a_long_multibyte_id_still_stops_the_belt_and_later_holds_work(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    hold_id = "扣" * 85  # 255 UTF-8 bytes: fits HOLD, but "hold <id>" would not fit BELT_STOP
    scanner = fast_scanner(parcels=50, rate=500.0)
    async with running_bridge(scanner, gateway, tmp_path / "spool.db") as bridge:
        await wait_until(lambda: len(gateway.sockets) == 1 and scanner.state.belt_running)
        await gateway.push_hold(hold_id, "SF001000000003")
        await wait_until(lambda: gateway.acks == [hold_id] and bool(scanner.state.holds))
        assert scanner.state.stops >= 1
        assert scanner.state.holds[0].hold_id == hold_id
        assert not scanner.state.belt_running
        await gateway.push_hold("hold-2", "SF001000000004")
        await wait_until(lambda: gateway.acks == [hold_id, "hold-2"])
        assert [h.hold_id for h in scanner.state.holds] == [hold_id, "hold-2"]
        assert bridge.stats.failed_tasks == []


async def test_the_belt_stops_for_a_hold_even_when_the_hold_book_cannot_be_saved(
    gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scanner = fast_scanner(parcels=50, rate=500.0)
    save = Spool.put_state
    disk_ok = False

    def put_state(spool: Spool, key: str, value: str) -> None:
        if not disk_ok:
            raise SpoolError("disk I/O error")
        save(spool, key, value)

    monkeypatch.setattr(Spool, "put_state", put_state)
    async with running_bridge(scanner, gateway, tmp_path / "spool.db") as bridge:
        await wait_until(lambda: len(gateway.sockets) == 1 and scanner.state.belt_running)
        await gateway.push_hold("hold-d", "SF001000000005")
        await wait_until(lambda: bool(scanner.state.holds) and not scanner.state.belt_running)
        await asyncio.sleep(0.1)
        assert gateway.acks == []  # not recorded, so not acknowledged: the gateway re-sends it
        disk_ok = True
        await gateway.push_hold("hold-d", "SF001000000005")
        await wait_until(lambda: gateway.acks == ["hold-d"])
        assert bridge.stats.failed_tasks == []
        assert bridge.stats.holds == 1  # one hold, sent twice


async def serve_script(messages: list[Message]) -> asyncio.Server:
    """A scanner that sends ``messages`` once, then heartbeats, over a real socket."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proto = LinkProtocol(Role.SCANNER)
        clock = asyncio.get_running_loop().time
        writer.write(b"".join(proto.send(m, clock()) for m in messages))
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), 0.5)
                except TimeoutError:
                    writer.write(proto.send(Heartbeat(0, 0), clock()))
                    continue
                if not data:
                    return
                proto.receive_data(data, clock())
                writer.write(proto.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_hostile_scanner_lines_are_dropped_and_a_later_parcel_still_goes_through(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    belt = Belt()
    script: list[Message] = [belt.hello(), belt.calibration(), *belt.air(50)]
    # a parcel whose lines switch between dual- and single-energy
    mixed = belt.slab(40, "organic", 50)
    script += [Line(ln.line_index, ln.belt_position_um, ln.high) if i % 2 else ln
               for i, ln in enumerate(mixed)]
    script += belt.air(50)
    # line indices past 2**63 with a line missing inside a parcel
    belt.index = 2**63 + 10
    huge = belt.air(50) + belt.slab(40, "organic", 50) + belt.air(50)
    del huge[70]
    script += [Line(ln.line_index, 0, ln.high, ln.low) for ln in huge]  # u64 belt position
    # then a good parcel with its waybill
    belt.index = 10_000
    script += belt.air(50)
    script.append(Barcode(belt.index, 1, "SF-GOOD"))
    script += belt.slab(40, "organic", 50) + belt.air(50)
    server = await serve_script(script)
    async with running_bridge(server, gateway, tmp_path / "s.db", holds=False) as bridge:
        await wait_until(
            lambda: any(m["waybill_no"] == "SF-GOOD" for m in gateway.scans.values())
            or bool(bridge.stats.failed_tasks)
        )
        assert bridge.stats.failed_tasks == []
        assert bridge.stats.assembly_errors == 20 + 139  # the single-energy and the huge lines
        assert bridge.stats.event_errors == 0  # rejected as bad data, not by the last resort
        good = next(m for m in gateway.scans.values() if m["waybill_no"] == "SF-GOOD")
        assert good["line_count"] == 48
        assert bridge.link is not None
        assert bridge.link.connects == 1  # the link never dropped


async def test_an_unforeseen_error_on_one_scanner_event_drops_only_that_event(
    gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_barcode = Assembler.on_barcode
    calls = 0

    def first_barcode_fails(asm: Assembler, barcode: Barcode) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug nobody foresaw")
        on_barcode(asm, barcode)

    monkeypatch.setattr(Assembler, "on_barcode", first_barcode_fails)
    scanner = fast_scanner(parcels=3)
    async with running_bridge(scanner, gateway, tmp_path / "s.db", holds=False) as bridge:
        await wait_until(
            lambda: (len(gateway.scans) == 3 and len(scanner.state.parcels_done) == 3)
            or bool(bridge.stats.failed_tasks)
        )
        assert bridge.stats.failed_tasks == []
        assert bridge.stats.event_errors == 1
        done = scanner.state.parcels_done
        # the first parcel's waybill read was the event dropped: that scan is unbound
        assert sorted(m["waybill_no"] or "" for m in gateway.scans.values()) == [
            "",
            done[1].waybill_no,
            done[2].waybill_no,
        ]


async def test_a_scan_that_cannot_be_spooled_is_lost_alone(
    gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = app_module._encode
    calls = 0

    def first_fails(scan: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("image could not be encoded")
        return encode(scan, **kw)

    monkeypatch.setattr(app_module, "_encode", first_fails)
    scanner = fast_scanner(parcels=3)
    async with running_bridge(scanner, gateway, tmp_path / "s.db", holds=False) as bridge:
        await wait_until(lambda: len(gateway.scans) == 2 and len(scanner.state.parcels_done) == 3)
        await asyncio.sleep(0.2)
        assert len(gateway.scans) == 2
        assert bridge.stats.persist_errors == 1
        assert bridge.stats.failed_tasks == []
        assert (await bridge.status())["errors"]["scans_not_spooled"] == 1


async def test_calibration_is_asked_for_again_while_lines_arrive_without_it(
    gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scanner whose CALIBRATION never comes (the request lost, say): the bridge keeps asking
    while uncalibrated lines arrive, instead of asking once and dropping every parcel after."""
    monkeypatch.setattr(app_module, "CALIBRATION_RETRY_S", 0.2)
    belt = Belt()
    asked: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proto = LinkProtocol(Role.SCANNER)
        clock = asyncio.get_running_loop().time
        writer.write(proto.send(belt.hello(), clock()))  # and no CALIBRATION
        try:
            for line in belt.air(30):  # a line every 50 ms, for 1.5 s
                writer.write(proto.send(line, clock()))
                with contextlib.suppress(TimeoutError):
                    data = await asyncio.wait_for(reader.read(65536), 0.05)
                    for message in proto.receive_data(data, clock()):
                        if isinstance(message, RequestCalibration):
                            asked.append(clock())
                writer.write(proto.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with running_bridge(server, gateway, tmp_path / "s.db", holds=False):
        await wait_until(lambda: len(asked) >= 4, within=5)
    # The link asks once as it opens; the bridge's own requests are then spaced out.
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(asked[1:]))
