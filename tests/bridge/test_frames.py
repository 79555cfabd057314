"""Scanner link codec: golden bytes, streaming, resynchronisation, properties."""

from __future__ import annotations

import contextlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import CrcError, FrameError, LocalProtocolError, ProtocolError
from firmware_bridge.frames import (
    HEADER_SIZE,
    MAX_FRAME,
    Ack,
    Barcode,
    BeltReason,
    BeltRunState,
    BeltStart,
    BeltState,
    BeltStop,
    Calibration,
    Corrupt,
    Fault,
    FaultSeverity,
    Frame,
    FrameDecoder,
    Garbage,
    Heartbeat,
    Hello,
    Hold,
    Line,
    Message,
    Nak,
    NakReason,
    RequestCalibration,
    decode,
    decode_frame,
    encode,
)
from firmware_bridge.protocol import LinkProtocol, Role

CASES: dict[str, tuple[Message, int, str]] = {
    "hello": (
        Hello("XR-0001", "Nuctech", "2.4.1", 4, 16, 800, 250_000, 2, 0xDEADBEEF),
        0,
        "584c01010000000000002400198c0758522d30303031074e75637465636805322e342e3104001020039"
        "0d0030002efbeadde9c5b25a4",
    ),
    "line": (
        Line(7, 1234, bytes.fromhex("0100020003000400"), bytes.fromhex("0a000b000c000d00")),
        1,
        "584c010200000100000023006a7d0700000000000000d204000000000000040002010002000300040"
        "00a000b000c000d0042c873b4",
    ),
    "barcode": (
        Barcode(5, 1, "SF1234567890"),
        2,
        "584c01030000020000001600c9a20500000000000000010c534631323334353637383930bc2836dc",
    ),
    "belt_state": (
        BeltState(BeltRunState.RUNNING, 200, BeltReason.OPERATOR),
        3,
        "584c01040000030000000400d33301c800002e64d1ae",
    ),
    "heartbeat": (
        Heartbeat(1000, 42),
        4,
        "584c0105000004000000100006dfe8030000000000002a00000000000000d298e50f",
    ),
    "fault": (
        Fault(0x0102, FaultSeverity.WARNING, "tube temp"),
        5,
        "584c01060000050000000d00cdc202010109747562652074656d70d12dee6e",
    ),
    "calibration": (
        Calibration(
            bytes.fromhex("e803e803"),
            bytes.fromhex("60ea60ea"),
            bytes.fromhex("d007d007"),
            bytes.fromhex("50c350c3"),
        ),
        6,
        "584c0107000006000000130072c7020002e803e80360ea60ead007d00750c350c31e59eecc",
    ),
    "ack": (Ack(9), 7, "584c018000000700000004002f1609000000885c5558"),
    "nak": (Nak(9, NakReason.CRC), 8, "584c018100000800000005003e0b09000000018d57bca6"),
    "belt_stop": (BeltStop("hold"), 9, "584c01820000090000000500da6304686f6c64f513b3f0"),
    "belt_start": (BeltStart(), 10, "584c018300000a0000000000ecb9cd30ce46"),
    "hold": (
        Hold("SF1234567890", "h-1"),
        11,
        "584c018400000b0000001100a57d0c53463132333435363738393003682d31280e9ab2",
    ),
    "request_calibration": (RequestCalibration(), 12, "584c018500000c0000000000856e90649cc4"),
}
GARBAGE = b"\x00\xffXLX\x13garbage XL\x01"


def frames_of(items: list[Frame | Garbage | Corrupt]) -> list[Frame]:
    return [f for f in items if isinstance(f, Frame)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_message_encodes_to_golden_bytes(name: str) -> None:
    message, seq, golden = CASES[name]
    data = encode(message, seq)
    assert data.hex() == golden
    assert int.from_bytes(data[-4:], "little") == zlib.crc32(data[:-4])  # CRC-32 IEEE trailer


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_bytes_decode_to_message(name: str) -> None:
    message, seq, golden = CASES[name]
    decoded = decode(bytes.fromhex(golden))
    assert (decoded.seq, decoded.message) == (seq, message)


@pytest.mark.parametrize("name", sorted(CASES))
def test_message_fed_whole_byte_by_byte_and_between_garbage(name: str) -> None:
    message, _seq, golden = CASES[name]
    data = bytes.fromhex(golden)

    whole = frames_of(FrameDecoder().feed(data))
    assert [f.message() for f in whole] == [message]

    decoder = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(data)):
        got += frames_of(decoder.feed(data[i : i + 1]))
    assert [f.message() for f in got] == [message]
    assert decoder.buffered == 0

    stream = GARBAGE + data + GARBAGE + data + GARBAGE
    decoder = FrameDecoder()
    items = decoder.feed(stream)
    assert [f.message() for f in frames_of(items)] == [message, message]
    assert all(isinstance(i, Frame | Garbage) for i in items)


def test_bad_crc_drops_only_that_frame_and_names_its_seq() -> None:
    first = encode(Heartbeat(1, 1), 1)
    bad = bytearray(encode(Line(2, 0, b"\x01\x00" * 4, b"\x02\x00" * 4), 2))
    bad[HEADER_SIZE + 3] ^= 0x40  # flip a payload bit, header intact
    last = encode(Heartbeat(3, 2), 3)
    items = FrameDecoder().feed(first + bytes(bad) + last)
    assert items[0] == Frame(0x05, 0, 1, Heartbeat(1, 1).encode_payload())
    assert items[1] == Corrupt(2, 0x02, NakReason.CRC)
    assert isinstance(items[2], Frame)
    assert items[2].message() == Heartbeat(3, 2)
    with pytest.raises(CrcError):
        decode_frame(bytes(bad))


def test_corrupted_header_resyncs_on_next_frame() -> None:
    bad = bytearray(encode(Barcode(1, 1, "A1"), 1))
    bad[7] ^= 0x01  # seq byte: the header CRC catches it
    good = encode(Barcode(2, 1, "B2"), 2)
    frames = frames_of(FrameDecoder().feed(bytes(bad) + good))
    assert [f.message() for f in frames] == [Barcode(2, 1, "B2")]


def test_decoder_buffer_stays_bounded_by_one_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"XL" * 100_000)
    assert decoder.buffered <= MAX_FRAME


def test_encoding_an_oversized_field_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode(Barcode(1, 1, "x" * 256), 0)
    with pytest.raises(LocalProtocolError):
        encode(Line(1, 0, b"\x00" * 3), 0)
    with pytest.raises(LocalProtocolError):
        encode(Line(1, 0, b"\x00" * 4, b"\x00" * 2), 0)


def test_unknown_type_is_a_frame_error() -> None:
    from firmware_bridge.frames import encode_frame

    with pytest.raises(FrameError):
        decode(encode_frame(0x42, 0, b""))


# -- properties ---------------------------------------------------------------------------------

u16_samples = st.integers(1, 64).flatmap(
    lambda n: st.tuples(
        st.binary(min_size=2 * n, max_size=2 * n), st.binary(min_size=2 * n, max_size=2 * n)
    )
)
text = st.text(max_size=40)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Hello,
        text,
        text,
        text,
        st.integers(1, 8192),
        st.integers(0, 255),
        st.integers(0, 65535),
        u32,
        st.sampled_from([1, 2]),
        u32,
    ),
    st.builds(
        lambda idx, pos, hl, single: Line(idx, pos, hl[0], b"" if single else hl[1]),
        u64,
        u64,
        u16_samples,
        st.booleans(),
    ),
    st.builds(Barcode, u64, st.integers(0, 255), text),
    st.builds(
        BeltState, st.sampled_from(BeltRunState), st.integers(0, 65535), st.sampled_from(BeltReason)
    ),
    st.builds(Heartbeat, u64, u64),
    st.builds(Fault, st.integers(0, 65535), st.sampled_from(FaultSeverity), text),
    st.builds(
        lambda a, b, single: (
            Calibration(a[0], a[1]) if single else Calibration(a[0], a[1], b[0], b[1])
        ),
        u16_samples,
        u16_samples,
        st.booleans(),
    ).filter(lambda c: len(c.dark_low) in (0, len(c.dark_high))),
    st.builds(Ack, u32),
    st.builds(Nak, u32, st.sampled_from(NakReason)),
    st.builds(BeltStop, text),
    st.just(BeltStart()),
    st.builds(Hold, text, text),
    st.just(RequestCalibration()),
)


@settings(max_examples=300, deadline=None)
@given(messages, u32)
def test_decode_inverts_encode(message: Message, seq: int) -> None:
    decoded = decode(encode(message, seq))
    assert (decoded.seq, decoded.message) == (seq, message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)
    FrameDecoder().feed(data)  # the stream decoder never raises
    LinkProtocol(Role.BRIDGE).receive_data(data, 0.0)  # nor does the state machine


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(messages, st.binary(max_size=20)), min_size=1, max_size=6), st.data())
def test_stream_of_messages_with_garbage_survives_any_chunking(
    items: list[tuple[Message, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(
        junk.replace(b"XL", b"xl") + encode(m, i) for i, (m, junk) in enumerate(items)
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    got: list[Frame] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += frames_of(decoder.feed(stream[start:cut]))
        start = cut
    assert [f.message() for f in got] == [m for m, _ in items]
