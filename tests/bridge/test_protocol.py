"""Link state machine: ACK/NAK, retransmission, gaps, silence; no I/O."""

from __future__ import annotations

import binascii
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import LocalProtocolError
from firmware_bridge.frames import (
    HEADER_SIZE,
    Barcode,
    BeltStop,
    FrameDecoder,
    Heartbeat,
    Hello,
    Hold,
    Line,
    NakReason,
    decode,
    encode,
)
from firmware_bridge.protocol import (
    Acknowledged,
    DeliveryFailed,
    FrameDropped,
    GarbageSkipped,
    LinkProtocol,
    LinkSilent,
    PeerRejected,
    Role,
    SequenceGap,
    UnexpectedMessage,
)

HELLO = Hello("XR-1", "sim", "1", 2, 16, 800, 250_000, 2, 7)


def pair() -> tuple[LinkProtocol, LinkProtocol]:
    return LinkProtocol(Role.BRIDGE), LinkProtocol(Role.SCANNER)


def test_hello_is_delivered_acked_and_remembered() -> None:
    bridge, scanner = pair()
    events = bridge.receive_data(scanner.send(HELLO, 0.0), 0.0)
    assert events == [HELLO]
    assert bridge.peer_hello == HELLO
    assert scanner.receive_data(bridge.data_to_send(), 0.1) == [Acknowledged(HELLO)]
    assert scanner.awaiting_ack == 0


def test_a_scanner_rebooting_behind_an_open_serial_port_is_heard_from_its_new_hello() -> None:
    """No reconnect resets a serial link: the new boot numbers its frames from 0 again, and the
    retransmission of its first (damaged) HELLO must not pass for the old boot's HELLO."""
    bridge, first_boot = pair()
    bridge.receive_data(first_boot.send(HELLO, 0.0), 0.0)
    for i in range(100):
        bridge.receive_data(first_boot.send(Line(i, 0, b"\xff\x0f" * 2), 0.0), 0.1)
    bridge.data_to_send()
    rebooted = Hello("XR-1", "sim", "1", 2, 16, 800, 250_000, 2, 8)  # a new boot id
    second_boot = LinkProtocol(Role.SCANNER)
    damaged = bytearray(second_boot.send(rebooted, 1.0))
    damaged[HEADER_SIZE + 2] ^= 0xFF  # a payload byte hit on the line
    assert [type(e) for e in bridge.receive_data(bytes(damaged), 1.0)] == [FrameDropped]
    second_boot.receive_data(bridge.data_to_send(), 1.0)  # the NAK
    second_boot.tick(1.01)
    events = bridge.receive_data(second_boot.data_to_send(), 1.02)  # the retransmission
    assert events == [rebooted]
    assert bridge.peer_hello == rebooted
    assert second_boot.receive_data(bridge.data_to_send(), 1.03) == [Acknowledged(rebooted)]
    line = Line(0, 0, b"\xff\x0f" * 2)
    assert bridge.receive_data(second_boot.send(line, 1.1), 1.1) == [line]  # no "duplicate"


def test_a_hello_sent_again_because_its_ack_was_lost_is_not_a_new_start() -> None:
    bridge, scanner = pair()
    assert bridge.receive_data(scanner.send(HELLO, 0.0), 0.0) == [HELLO]
    bridge.data_to_send()  # the ACK, lost on the line
    line = Line(0, 0, b"\xff\x0f" * 2)
    assert bridge.receive_data(scanner.send(line, 0.1), 0.1) == [line]
    scanner.tick(0.6)
    assert bridge.receive_data(scanner.data_to_send(), 0.6) == []  # acked again, not delivered
    assert scanner.receive_data(bridge.data_to_send(), 0.7) == [Acknowledged(HELLO)]


def test_command_is_retransmitted_until_acked_and_delivered_once() -> None:
    bridge, scanner = pair()
    first = bridge.send(BeltStop("hold"), 0.0)
    del first  # lost on the wire
    assert bridge.tick(0.6) == []
    retransmit = bridge.data_to_send()
    assert decode(retransmit).message == BeltStop("hold")
    assert scanner.receive_data(retransmit, 0.6) == [BeltStop("hold")]
    # the ACK is lost too; the next retransmission must not deliver the command twice
    scanner.data_to_send()
    bridge.tick(2.0)
    again = bridge.data_to_send()
    assert scanner.receive_data(again, 2.0) == []
    assert bridge.receive_data(scanner.data_to_send(), 2.1) == [Acknowledged(BeltStop("hold"))]


def test_unacked_command_fails_after_max_attempts() -> None:
    bridge = LinkProtocol(Role.BRIDGE, max_attempts=2)
    bridge.send(Hold("SF1", "h1"), 0.0)
    bridge.tick(1.0)
    assert bridge.tick(10.0) == [DeliveryFailed(Hold("SF1", "h1"))]


def test_corrupt_frame_is_dropped_and_naked_with_its_seq() -> None:
    bridge, scanner = pair()
    bad = bytearray(scanner.send(Line(1, 0, b"\x01\x00" * 2, b"\x02\x00" * 2), 0.0))
    bad[HEADER_SIZE + 1] ^= 0xFF
    events = bridge.receive_data(bytes(bad), 0.0)
    assert events == [FrameDropped(0, 0x02, NakReason.CRC)]
    assert scanner.receive_data(bridge.data_to_send(), 0.0) == [
        PeerRejected(0, NakReason.CRC, None)
    ]


def test_sequence_gap_is_reported() -> None:
    bridge, scanner = pair()
    bridge.receive_data(scanner.send(Heartbeat(0, 0), 0.0), 0.0)
    scanner.send(Heartbeat(1, 0), 0.0)  # lost
    scanner.send(Heartbeat(2, 0), 0.0)  # lost
    events = bridge.receive_data(scanner.send(Heartbeat(3, 0), 0.0), 0.0)
    assert events == [SequenceGap(1, 3), Heartbeat(3, 0)]
    assert bridge.stats.missing_frames == 2


def test_garbage_between_frames_is_reported_once_per_run() -> None:
    bridge, scanner = pair()
    data = b"\x00" * 10 + scanner.send(Heartbeat(0, 0), 0.0) + b"\xff" * 3
    events = bridge.receive_data(data, 0.0)
    assert events == [GarbageSkipped(10), Heartbeat(0, 0), GarbageSkipped(3)]


def test_role_violations() -> None:
    bridge, _scanner = pair()
    with pytest.raises(LocalProtocolError):
        bridge.send(Heartbeat(0, 0), 0.0)
    forged = encode(Hold("x", "y"), 0)
    assert bridge.receive_data(forged, 0.0) == [UnexpectedMessage(Hold("x", "y"))]


def test_silence_is_reported_once() -> None:
    bridge, _ = pair()
    bridge.started(0.0)
    assert bridge.tick(2.9) == []
    assert bridge.tick(3.5) == [LinkSilent(3.5)]
    assert bridge.tick(4.0) == []


def test_noise_or_a_false_header_does_not_keep_a_dead_link_alive() -> None:
    """A header that passes its CRC by chance can promise a 64 KB frame; bytes trickling in
    after it (noise, or heartbeats swallowed into that frame) are not a live peer."""
    bridge, scanner = pair()
    bridge.started(0.0)
    bridge.receive_data(scanner.send(HELLO, 0.0), 0.0)
    header = struct.pack("<2sBBBBIH", b"XL", 1, 0x10, 0, 0, 99, 65535)
    bridge.receive_data(header + struct.pack("<H", binascii.crc_hqx(header, 0xFFFF)), 0.5)
    for t in (1.0, 2.0, 2.9):
        bridge.receive_data(scanner.send(Heartbeat(0, 0), t), t)  # held in the false frame
        assert bridge.tick(t) == []
    assert bridge.tick(3.5) == [LinkSilent(3.5)]  # the connection layer then reconnects


def test_barcode_byte_by_byte_through_the_protocol() -> None:
    bridge, scanner = pair()
    data = scanner.send(Barcode(10, 1, "SF9"), 0.0)
    events = []
    for i in range(len(data)):
        events += bridge.receive_data(data[i : i + 1], 0.0)
    assert events == [Barcode(10, 1, "SF9")]
    assert FrameDecoder().feed(bridge.data_to_send())


def test_acks_queued_before_a_send_keep_the_wire_in_seq_order() -> None:
    bridge, scanner = pair()
    scanner.receive_data(bridge.send(BeltStop("x"), 0.0), 0.0)  # scanner owes an ACK
    wire = scanner.send(Heartbeat(0, 0), 0.0)
    events = bridge.receive_data(wire, 0.0)
    assert events == [Acknowledged(BeltStop("x")), Heartbeat(0, 0)]
    assert bridge.stats.gaps == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=6),
    st.lists(st.integers(1, 4096), min_size=1, max_size=10),
)
def test_damaged_stream_delivers_every_intact_frame_and_nothing_else(
    values: list[int], flips: list[tuple[int, int]], chunks: list[int]
) -> None:
    scanner = LinkProtocol(Role.SCANNER)
    frames = [
        scanner.send(Line(i, v, v.to_bytes(2, "little") * 8, b"\x01\x00" * 8), 0.0)
        for i, v in enumerate(values)
    ]
    stream = bytearray(b"".join(frames))
    damaged: set[int] = set()
    for pos, bit in flips:
        pos %= len(stream)
        stream[pos] ^= 1 << bit
        offset = 0
        for n, f in enumerate(frames):
            if offset <= pos < offset + len(f):
                damaged.add(n)
            offset += len(f)
    bridge = LinkProtocol(Role.BRIDGE)
    events: list[object] = []
    start, k = 0, 0
    while start < len(stream):
        size = chunks[k % len(chunks)]
        events += bridge.receive_data(bytes(stream[start : start + size]), 0.0)
        start += size
        k += 1
    delivered = [e.line_index for e in events if isinstance(e, Line)]
    intact = [i for i in range(len(values)) if i not in damaged]
    assert set(intact) <= set(delivered)
    assert delivered == sorted(delivered)
    assert set(delivered) <= set(range(len(values)))
