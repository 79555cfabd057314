"""A scanner whose firmware refuses (NAKs) a stop or a hold: the bridge never gives the command
up, but sends it again after a growing pause and raises its alarm once, not in a storm."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from firmware_bridge.app import Bridge
from firmware_bridge.frames import (
    FLAG_ACK_REQUEST,
    Ack,
    BeltStart,
    BeltStop,
    Frame,
    FrameDecoder,
    Heartbeat,
    Hello,
    Hold,
    Nak,
    NakReason,
    encode,
)
from firmware_bridge.protocol import DeliveryFailed

from .conftest import bridge_config


class RefusingScanner:
    """Says HELLO, beats, acknowledges everything except HOLD, which it NAKs."""

    def __init__(self) -> None:
        self.holds_seen = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seq = 0

        def send(message: object, flags: int = 0) -> None:
            nonlocal seq
            writer.write(encode(message, seq, flags))  # type: ignore[arg-type]
            seq += 1

        send(Hello("SCN", "v", "fw", 16, 16, 1500, 250_000, 1, 7), FLAG_ACK_REQUEST)

        async def beat() -> None:
            while True:
                send(Heartbeat(0, 0))
                await asyncio.sleep(0.5)

        beating = asyncio.create_task(beat())
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    if isinstance(frame, Frame) and frame.type == Hold.TYPE:
                        self.holds_seen += 1
                        send(Nak(frame.seq, NakReason.UNSUPPORTED))
                    elif isinstance(frame, Frame) and frame.flags & FLAG_ACK_REQUEST:
                        send(Ack(frame.seq))
        finally:
            beating.cancel()


async def test_a_refused_hold_is_sent_again_after_a_growing_pause_with_one_alarm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scanner = RefusingScanner()
    server = await asyncio.start_server(scanner.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = bridge_config(f"tcp://127.0.0.1:{port}", "http://127.0.0.1:9", tmp_path / "s.db",
                           holds=False)  # fmt: skip
    bridge = Bridge(config)
    await bridge.start()
    try:
        await asyncio.sleep(0.5)  # HELLO exchanged
        with caplog.at_level(logging.CRITICAL, logger="firmware_bridge"):
            bridge.hold_book.hold("hold-1", "SF123")  # an open hold: it stands until released
            bridge._command(Hold("SF123", "hold-1"))
            await asyncio.sleep(3.0)
        alarms = [r for r in caplog.records if "did not acknowledge" in r.getMessage()]
        # Sent without a pause, a refusing firmware drew 61 frames and 30 alarms in 3 s. Now:
        # a round of 4 attempts, then rounds after 0.5 s and 1 s (a 2 s pause follows).
        assert 8 <= scanner.holds_seen <= 16, scanner.holds_seen
        assert len(alarms) == 1
    finally:
        await bridge.stop(grace_s=1.0)
        server.close()
        await server.wait_closed()


async def test_a_stop_waiting_to_be_sent_again_is_dropped_once_the_belt_may_run(
    tmp_path: Path,
) -> None:
    """Found by review: a stop refused while the spool was full went out again after its pause
    even though the spool had room by then and the bridge had started the belt: the belt stopped
    with nobody left to start it."""
    bridge = Bridge(bridge_config("tcp://127.0.0.1:9", "http://127.0.0.1:9", tmp_path / "s.db",
                                  holds=False))  # fmt: skip
    sent: list[str] = []
    bridge._command = lambda command: sent.append(type(command).__name__)  # type: ignore[method-assign]
    bridge._stopped_for_spool = True
    bridge._dispatch(DeliveryFailed(BeltStop("bridge spool full")))
    bridge._dispatch(DeliveryFailed(Hold("SF123", "hold-gone")))  # a hold no longer open
    await asyncio.sleep(0.1)
    bridge._stopped_for_spool = False  # room again: the bridge starts the belt
    bridge._command(BeltStart())
    await asyncio.sleep(1.0)  # past the first pause (0.5 s)
    assert sent == ["BeltStart"]
    # While the stop still stands, it is sent again.
    bridge._stopped_for_spool = True
    bridge._dispatch(DeliveryFailed(BeltStop("bridge spool full")))
    await asyncio.sleep(2.5)  # the third failure in a row: a 2 s pause
    assert sent == ["BeltStart", "BeltStop"]
