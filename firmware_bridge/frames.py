"""Scanner link frames and messages: pure encode/decode, no I/O (see PROTOCOL.md).

Frame layout, little-endian::

    offset size field
    0      2    magic      b"XL"
    2      1    version    1
    3      1    type       MessageType
    4      1    flags      bit 0 ACK_REQUEST, bit 1 RETRANSMIT
    5      1    reserved   0 on send, ignored on receipt
    6      4    seq        u32, per direction, +1 per new frame
    10     2    length     u16 payload length
    12     2    hcrc       CRC-16/CCITT-FALSE of bytes 0..11
    14     n    payload
    14+n   4    crc        CRC-32 (IEEE 802.3, zlib) of bytes 0..14+n-1
"""

from __future__ import annotations

import binascii
import enum
import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar, Final

from .errors import CrcError, FrameError, LocalProtocolError, MessageError, UnsupportedVersionError

MAGIC: Final = b"XL"
VERSION: Final = 1
_HEADER = struct.Struct("<2sBBBBIH")  # without the header CRC
HEADER_SIZE: Final = _HEADER.size + 2  # 14
TRAILER_SIZE: Final = 4
MAX_PAYLOAD: Final = 0xFFFF
MAX_FRAME: Final = HEADER_SIZE + MAX_PAYLOAD + TRAILER_SIZE
MAX_PIXELS: Final = 8192  # 4 calibration lines x 8192 px x 2 B = 64 KiB: fits one frame
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

FLAG_ACK_REQUEST: Final = 0x01
FLAG_RETRANSMIT: Final = 0x02


class MessageType(enum.IntEnum):
    HELLO = 0x01
    LINE = 0x02
    BARCODE = 0x03
    BELT_STATE = 0x04
    HEARTBEAT = 0x05
    FAULT = 0x06
    CALIBRATION = 0x07
    ACK = 0x80
    NAK = 0x81
    BELT_STOP = 0x82
    BELT_START = 0x83
    HOLD = 0x84
    REQUEST_CALIBRATION = 0x85


class NakReason(enum.IntEnum):
    CRC = 1
    MALFORMED = 2
    UNSUPPORTED = 3
    SEQUENCE_GAP = 4


class BeltRunState(enum.IntEnum):
    STOPPED = 0
    RUNNING = 1


class BeltReason(enum.IntEnum):
    OPERATOR = 0
    COMMAND = 1
    HOLD = 2
    INTERLOCK = 3  # e.g. no bridge connected, curtain open
    FAULT = 4


class FaultSeverity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    CRITICAL = 3


def _pack_str(value: str, field: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise LocalProtocolError(f"{field} is {len(raw)} bytes, at most 255")
    return bytes((len(raw),)) + raw


def _unpack_str(payload: bytes, offset: int, field: str) -> tuple[str, int]:
    if offset >= len(payload):
        raise MessageError(f"{field}: missing length")
    n = payload[offset]
    end = offset + 1 + n
    if end > len(payload):
        raise MessageError(f"{field}: {n} bytes declared, {len(payload) - offset - 1} present")
    try:
        return payload[offset + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise MessageError(f"{field}: not UTF-8") from exc


def _check_end(payload: bytes, offset: int, name: str) -> None:
    if offset != len(payload):
        raise MessageError(f"{name}: {len(payload) - offset} trailing bytes")


def _fixed(payload: bytes, st: struct.Struct, name: str) -> tuple[int, ...]:
    if len(payload) < st.size:
        raise MessageError(f"{name}: {len(payload)} bytes, at least {st.size} needed")
    return st.unpack_from(payload)


def _samples(name: str, value: bytes, pixels: int) -> None:
    if len(value) != 2 * pixels:
        raise LocalProtocolError(f"{name} is {len(value)} bytes for {pixels} px of u16")


# ---------------------------------------------------------------------------------------------
# Messages. Samples are raw little-endian u16 bytes so that messages compare by value and the
# assembler can view them with numpy.frombuffer without a copy.


@dataclass(frozen=True, slots=True)
class Hello:
    """Scanner -> bridge, first frame after connect: who the scanner is and its geometry."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    _S: ClassVar[struct.Struct] = struct.Struct("<HBHIBI")

    device_id: str
    vendor: str
    firmware: str
    pixels_per_line: int
    bit_depth: int  # significant bits per u16 sample, 8..16
    pixel_pitch_um: int  # detector pitch, micrometres
    line_rate_mhz: int  # nominal line rate, millihertz (250 lines/s = 250_000)
    channels: int  # 1 = single energy, 2 = high + low
    boot_id: int  # u32, new at every scanner power-up; line indices restart with it

    @property
    def line_rate_hz(self) -> float:
        return self.line_rate_mhz / 1000.0

    def encode_payload(self) -> bytes:
        if not 1 <= self.pixels_per_line <= MAX_PIXELS:
            raise LocalProtocolError(f"pixels_per_line {self.pixels_per_line} out of range")
        if self.channels not in (1, 2):
            raise LocalProtocolError("channels must be 1 or 2")
        try:
            tail = self._S.pack(
                self.pixels_per_line,
                self.bit_depth,
                self.pixel_pitch_um,
                self.line_rate_mhz,
                self.channels,
                self.boot_id,
            )
        except struct.error as exc:
            raise LocalProtocolError(f"HELLO field out of range: {exc}") from exc
        return (
            _pack_str(self.device_id, "device_id")
            + _pack_str(self.vendor, "vendor")
            + _pack_str(self.firmware, "firmware")
            + tail
        )

    @classmethod
    def decode_payload(cls, payload: bytes) -> Hello:
        device_id, off = _unpack_str(payload, 0, "HELLO.device_id")
        vendor, off = _unpack_str(payload, off, "HELLO.vendor")
        firmware, off = _unpack_str(payload, off, "HELLO.firmware")
        if len(payload) - off != cls._S.size:
            raise MessageError(f"HELLO: {len(payload) - off} fixed bytes, {cls._S.size} expected")
        ppl, depth, pitch, rate, channels, boot = cls._S.unpack_from(payload, off)
        if not 1 <= ppl <= MAX_PIXELS or channels not in (1, 2):
            raise MessageError(f"HELLO: {ppl} px x {channels} channels is not supported")
        return cls(device_id, vendor, firmware, ppl, depth, pitch, rate, channels, boot)


@dataclass(frozen=True, slots=True)
class Line:
    """Scanner -> bridge: one detector line. ``low`` is empty on a single-energy scanner."""

    TYPE: ClassVar[MessageType] = MessageType.LINE
    _S: ClassVar[struct.Struct] = struct.Struct("<QQHB")

    line_index: int  # u64, monotonic within one boot_id
    belt_position_um: int  # u64, belt encoder position, micrometres
    high: bytes  # pixels x u16 LE
    low: bytes = b""

    def encode_payload(self) -> bytes:
        pixels = len(self.high) // 2
        channels = 2 if self.low else 1
        if not 1 <= pixels <= MAX_PIXELS:
            raise LocalProtocolError(f"LINE has {pixels} px, 1..{MAX_PIXELS} allowed")
        _samples("LINE.high", self.high, pixels)
        if self.low:
            _samples("LINE.low", self.low, pixels)
        try:
            head = self._S.pack(self.line_index, self.belt_position_um, pixels, channels)
        except struct.error as exc:
            raise LocalProtocolError(f"LINE field out of range: {exc}") from exc
        return head + self.high + self.low

    @classmethod
    def decode_payload(cls, payload: bytes) -> Line:
        index, pos, pixels, channels = _fixed(payload, cls._S, "LINE")
        if channels not in (1, 2) or pixels == 0:
            raise MessageError(f"LINE: {pixels} px x {channels} channels")
        start = cls._S.size
        end = start + 2 * pixels * channels
        if len(payload) != end:
            raise MessageError(f"LINE: {len(payload)} bytes, {end} expected")
        mid = start + 2 * pixels
        return cls(index, pos, payload[start:mid], payload[mid:end] if channels == 2 else b"")


@dataclass(frozen=True, slots=True)
class Barcode:
    """Scanner -> bridge: a waybill read at the tunnel entry, at X-ray line ``line_index``."""

    TYPE: ClassVar[MessageType] = MessageType.BARCODE
    _S: ClassVar[struct.Struct] = struct.Struct("<QB")

    line_index: int
    symbology: int  # 0 unknown, 1 Code 128, 2 QR, 3 Data Matrix, 4 PDF417
    waybill_no: str

    def encode_payload(self) -> bytes:
        try:
            head = self._S.pack(self.line_index, self.symbology)
        except struct.error as exc:
            raise LocalProtocolError(f"BARCODE field out of range: {exc}") from exc
        return head + _pack_str(self.waybill_no, "waybill_no")

    @classmethod
    def decode_payload(cls, payload: bytes) -> Barcode:
        index, symbology = _fixed(payload, cls._S, "BARCODE")
        waybill, off = _unpack_str(payload, cls._S.size, "BARCODE.waybill_no")
        _check_end(payload, off, "BARCODE")
        return cls(index, symbology, waybill)


@dataclass(frozen=True, slots=True)
class BeltState:
    """Scanner -> bridge: the belt started or stopped, and why."""

    TYPE: ClassVar[MessageType] = MessageType.BELT_STATE
    _S: ClassVar[struct.Struct] = struct.Struct("<BHB")

    state: BeltRunState
    speed_mm_s: int
    reason: BeltReason

    def encode_payload(self) -> bytes:
        try:
            return self._S.pack(self.state, self.speed_mm_s, self.reason)
        except struct.error as exc:
            raise LocalProtocolError(f"BELT_STATE field out of range: {exc}") from exc

    @classmethod
    def decode_payload(cls, payload: bytes) -> BeltState:
        if len(payload) != cls._S.size:
            raise MessageError(f"BELT_STATE: {len(payload)} bytes, {cls._S.size} expected")
        state, speed, reason = cls._S.unpack(payload)
        try:
            return cls(BeltRunState(state), speed, BeltReason(reason))
        except ValueError as exc:
            raise MessageError(f"BELT_STATE: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Scanner -> bridge, about once a second: liveness and the last line index sent."""

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT
    _S: ClassVar[struct.Struct] = struct.Struct("<QQ")

    uptime_ms: int
    last_line_index: int

    def encode_payload(self) -> bytes:
        try:
            return self._S.pack(self.uptime_ms, self.last_line_index)
        except struct.error as exc:
            raise LocalProtocolError(f"HEARTBEAT field out of range: {exc}") from exc

    @classmethod
    def decode_payload(cls, payload: bytes) -> Heartbeat:
        if len(payload) != cls._S.size:
            raise MessageError(f"HEARTBEAT: {len(payload)} bytes, {cls._S.size} expected")
        return cls(*cls._S.unpack(payload))


@dataclass(frozen=True, slots=True)
class Fault:
    """Scanner -> bridge: a device fault (generator, detector, interlock...)."""

    TYPE: ClassVar[MessageType] = MessageType.FAULT
    _S: ClassVar[struct.Struct] = struct.Struct("<HB")

    code: int
    severity: FaultSeverity
    text: str

    def encode_payload(self) -> bytes:
        try:
            head = self._S.pack(self.code, self.severity)
        except struct.error as exc:
            raise LocalProtocolError(f"FAULT field out of range: {exc}") from exc
        return head + _pack_str(self.text, "text")

    @classmethod
    def decode_payload(cls, payload: bytes) -> Fault:
        code, severity = _fixed(payload, cls._S, "FAULT")
        text, off = _unpack_str(payload, cls._S.size, "FAULT.text")
        _check_end(payload, off, "FAULT")
        try:
            return cls(code, FaultSeverity(severity), text)
        except ValueError as exc:
            raise MessageError(f"FAULT: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Calibration:
    """Scanner -> bridge: averaged dark (generator off) and air (empty belt) lines per channel."""

    TYPE: ClassVar[MessageType] = MessageType.CALIBRATION
    _S: ClassVar[struct.Struct] = struct.Struct("<HB")

    dark_high: bytes
    air_high: bytes
    dark_low: bytes = b""
    air_low: bytes = b""

    def encode_payload(self) -> bytes:
        pixels = len(self.dark_high) // 2
        channels = 2 if self.dark_low else 1
        if not 1 <= pixels <= MAX_PIXELS:
            raise LocalProtocolError(f"CALIBRATION has {pixels} px, 1..{MAX_PIXELS} allowed")
        _samples("CALIBRATION.dark_high", self.dark_high, pixels)
        _samples("CALIBRATION.air_high", self.air_high, pixels)
        if channels == 2:
            _samples("CALIBRATION.dark_low", self.dark_low, pixels)
            _samples("CALIBRATION.air_low", self.air_low, pixels)
        elif self.air_low:
            raise LocalProtocolError("CALIBRATION.air_low without dark_low")
        body = self._S.pack(pixels, channels) + self.dark_high + self.air_high
        return body + self.dark_low + self.air_low

    @classmethod
    def decode_payload(cls, payload: bytes) -> Calibration:
        pixels, channels = _fixed(payload, cls._S, "CALIBRATION")
        if channels not in (1, 2) or pixels == 0:
            raise MessageError(f"CALIBRATION: {pixels} px x {channels} channels")
        n = 2 * pixels
        off = cls._S.size
        if len(payload) != off + 2 * n * channels:
            raise MessageError(f"CALIBRATION: {len(payload)} bytes for {pixels} px x {channels}")
        parts = [payload[off + i * n : off + (i + 1) * n] for i in range(2 * channels)]
        if channels == 1:
            return cls(parts[0], parts[1])
        return cls(parts[0], parts[1], parts[2], parts[3])


@dataclass(frozen=True, slots=True)
class Ack:
    """Either direction: the frame with sequence ``seq`` (sent with ACK_REQUEST) arrived intact."""

    TYPE: ClassVar[MessageType] = MessageType.ACK
    _S: ClassVar[struct.Struct] = struct.Struct("<I")

    seq: int

    def encode_payload(self) -> bytes:
        try:
            return self._S.pack(self.seq)
        except struct.error as exc:
            raise LocalProtocolError(f"ACK seq out of range: {exc}") from exc

    @classmethod
    def decode_payload(cls, payload: bytes) -> Ack:
        if len(payload) != cls._S.size:
            raise MessageError(f"ACK: {len(payload)} bytes, 4 expected")
        return cls(*cls._S.unpack(payload))


@dataclass(frozen=True, slots=True)
class Nak:
    """Either direction: frame ``seq`` was dropped (bad CRC, malformed, unsupported, gap)."""

    TYPE: ClassVar[MessageType] = MessageType.NAK
    _S: ClassVar[struct.Struct] = struct.Struct("<IB")

    seq: int
    reason: NakReason

    def encode_payload(self) -> bytes:
        try:
            return self._S.pack(self.seq, self.reason)
        except struct.error as exc:
            raise LocalProtocolError(f"NAK field out of range: {exc}") from exc

    @classmethod
    def decode_payload(cls, payload: bytes) -> Nak:
        if len(payload) != cls._S.size:
            raise MessageError(f"NAK: {len(payload)} bytes, 5 expected")
        seq, reason = cls._S.unpack(payload)
        try:
            return cls(seq, NakReason(reason))
        except ValueError as exc:
            raise MessageError(f"NAK: {exc}") from exc


@dataclass(frozen=True, slots=True)
class BeltStop:
    """Bridge -> scanner: stop the belt now."""

    TYPE: ClassVar[MessageType] = MessageType.BELT_STOP

    reason: str

    def encode_payload(self) -> bytes:
        return _pack_str(self.reason, "reason")

    @classmethod
    def decode_payload(cls, payload: bytes) -> BeltStop:
        reason, off = _unpack_str(payload, 0, "BELT_STOP.reason")
        _check_end(payload, off, "BELT_STOP")
        return cls(reason)


@dataclass(frozen=True, slots=True)
class BeltStart:
    """Bridge -> scanner: (re)start the belt."""

    TYPE: ClassVar[MessageType] = MessageType.BELT_START

    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode_payload(cls, payload: bytes) -> BeltStart:
        _check_end(payload, 0, "BELT_START")
        return cls()


@dataclass(frozen=True, slots=True)
class Hold:
    """Bridge -> scanner: hold the parcel with this waybill (divert / light / operator alarm)."""

    TYPE: ClassVar[MessageType] = MessageType.HOLD

    waybill_no: str
    hold_id: str

    def encode_payload(self) -> bytes:
        return _pack_str(self.waybill_no, "waybill_no") + _pack_str(self.hold_id, "hold_id")

    @classmethod
    def decode_payload(cls, payload: bytes) -> Hold:
        waybill, off = _unpack_str(payload, 0, "HOLD.waybill_no")
        hold_id, off = _unpack_str(payload, off, "HOLD.hold_id")
        _check_end(payload, off, "HOLD")
        return cls(waybill, hold_id)


@dataclass(frozen=True, slots=True)
class RequestCalibration:
    """Bridge -> scanner: send a fresh CALIBRATION at the next empty-belt moment."""

    TYPE: ClassVar[MessageType] = MessageType.REQUEST_CALIBRATION

    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode_payload(cls, payload: bytes) -> RequestCalibration:
        _check_end(payload, 0, "REQUEST_CALIBRATION")
        return cls()


Message = (
    Hello
    | Line
    | Barcode
    | BeltState
    | Heartbeat
    | Fault
    | Calibration
    | Ack
    | Nak
    | BeltStop
    | BeltStart
    | Hold
    | RequestCalibration
)
MESSAGE_CLASSES: Final[dict[MessageType, type[Message]]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Line,
        Barcode,
        BeltState,
        Heartbeat,
        Fault,
        Calibration,
        Ack,
        Nak,
        BeltStop,
        BeltStart,
        Hold,
        RequestCalibration,
    )
}
SCANNER_MESSAGES: Final = frozenset(
    {Hello, Line, Barcode, BeltState, Heartbeat, Fault, Calibration, Ack, Nak}
)
BRIDGE_MESSAGES: Final = frozenset({Ack, Nak, BeltStop, BeltStart, Hold, RequestCalibration})


# ---------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True, slots=True)
class Frame:
    """One intact frame: header fields and the still-encoded payload."""

    type: int
    flags: int
    seq: int
    payload: bytes

    def message(self) -> Message:
        """Decode the payload; raises MessageError (or FrameError for an unknown type)."""
        try:
            cls = MESSAGE_CLASSES[MessageType(self.type)]
        except ValueError as exc:
            raise FrameError(f"unknown message type 0x{self.type:02x}") from exc
        return cls.decode_payload(self.payload)


def encode_frame(msg_type: int, seq: int, payload: bytes, flags: int = 0) -> bytes:
    """Frame ``payload``: header, header CRC-16, payload, CRC-32."""
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    if not 0 <= seq <= 0xFFFFFFFF or not 0 <= flags <= 0xFF or not 0 <= msg_type <= 0xFF:
        raise LocalProtocolError("seq, flags or type out of range")
    head = _HEADER.pack(MAGIC, VERSION, msg_type, flags, 0, seq, len(payload))
    head += _U16.pack(binascii.crc_hqx(head, 0xFFFF))
    body = head + payload
    return body + _U32.pack(zlib.crc32(body))


def encode(message: Message, seq: int, flags: int = 0) -> bytes:
    """Encode one message as one frame."""
    return encode_frame(message.TYPE, seq, message.encode_payload(), flags)


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one frame; raises FrameError (never anything else) on bad bytes."""
    if len(data) < HEADER_SIZE + TRAILER_SIZE:
        raise FrameError(f"{len(data)} bytes is shorter than an empty frame")
    magic, version, msg_type, flags, _rsv, seq, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError("bad magic")
    (hcrc,) = _U16.unpack_from(data, _HEADER.size)
    if binascii.crc_hqx(data[: _HEADER.size], 0xFFFF) != hcrc:
        raise FrameError("bad header CRC")
    if len(data) != HEADER_SIZE + length + TRAILER_SIZE:
        raise FrameError(f"{len(data)} bytes, header says {HEADER_SIZE + length + TRAILER_SIZE}")
    (crc,) = _U32.unpack_from(data, HEADER_SIZE + length)
    if zlib.crc32(data[: HEADER_SIZE + length]) != crc:
        raise CrcError(f"frame seq {seq}: CRC-32 mismatch")
    if version != VERSION:
        raise UnsupportedVersionError(f"version {version}, this bridge speaks {VERSION}")
    return Frame(msg_type, flags, seq, bytes(data[HEADER_SIZE : HEADER_SIZE + length]))


@dataclass(frozen=True, slots=True)
class Decoded:
    seq: int
    flags: int
    message: Message


def decode(data: bytes) -> Decoded:
    """Decode exactly one frame and its message; raises only ProtocolError subclasses."""
    frame = decode_frame(data)
    return Decoded(frame.seq, frame.flags, frame.message())


# ---------------------------------------------------------------------------------------------
# Stream decoder


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes skipped while searching for the next frame header."""

    nbytes: int


@dataclass(frozen=True, slots=True)
class Corrupt:
    """A frame whose header was intact but whose CRC-32 failed: dropped whole."""

    seq: int
    type: int
    reason: NakReason


class FrameDecoder:
    """Bytes in, frames out. Never raises on input; resynchronises on the next valid header.

    The header has its own CRC-16, so a false ``XL`` inside garbage is rejected at once and a
    corrupted payload is skipped by its (trusted) length without losing the following frame.
    Buffered bytes are bounded by one maximum frame.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Garbage | Corrupt]:
        buf = self._buf
        buf += data
        out: list[Frame | Garbage | Corrupt] = []
        pos = 0
        n = len(buf)
        find = buf.find
        unpack = _HEADER.unpack_from
        hsize = _HEADER.size
        while True:
            i = find(MAGIC, pos)
            if i < 0:
                keep = n - 1 if n > pos and buf[n - 1] == MAGIC[0] else n
                if keep > pos:
                    out.append(Garbage(keep - pos))
                pos = keep
                break
            if i > pos:
                out.append(Garbage(i - pos))
                pos = i
            if n - pos < HEADER_SIZE:
                break
            _m, version, msg_type, flags, _rsv, seq, length = unpack(buf, pos)
            (hcrc,) = _U16.unpack_from(buf, pos + hsize)
            if binascii.crc_hqx(buf[pos : pos + hsize], 0xFFFF) != hcrc:
                out.append(Garbage(1))
                pos += 1
                continue
            end = pos + HEADER_SIZE + length
            if n < end + TRAILER_SIZE:
                break
            (crc,) = _U32.unpack_from(buf, end)
            if zlib.crc32(memoryview(buf)[pos:end]) != crc:
                out.append(Corrupt(seq, msg_type, NakReason.CRC))
            elif version != VERSION:
                out.append(Corrupt(seq, msg_type, NakReason.UNSUPPORTED))
            else:
                out.append(Frame(msg_type, flags, seq, bytes(buf[pos + HEADER_SIZE : end])))
            pos = end + TRAILER_SIZE
        if pos:
            del buf[:pos]
        return out
