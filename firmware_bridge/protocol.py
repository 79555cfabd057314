"""Scanner link state machine, sans-IO: bytes and the time in, events and bytes out.

One ``LinkProtocol`` per connection and per side (``Role.BRIDGE`` or ``Role.SCANNER``):

* ``receive_data(data, now)`` -> events: decoded messages plus link conditions (garbage skipped,
  corrupt frames, sequence gaps, unexpected or malformed messages, commands acknowledged);
* ``send(message, now)`` -> bytes to write; frames that need an ACK are remembered;
* ``tick(now)`` -> events; retransmits unacknowledged frames and reports a silent link;
* ``data_to_send()`` -> the ACKs, NAKs and retransmissions produced by the calls above.

No asyncio, sockets, or clocks here: ``now`` is monotonic seconds supplied by the caller.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from .errors import LocalProtocolError, ProtocolError
from .frames import (
    BRIDGE_MESSAGES,
    FLAG_ACK_REQUEST,
    FLAG_RETRANSMIT,
    SCANNER_MESSAGES,
    Ack,
    Barcode,
    BeltStart,
    BeltStop,
    Calibration,
    Corrupt,
    Fault,
    Frame,
    FrameDecoder,
    Garbage,
    Hello,
    Hold,
    Message,
    MessageType,
    Nak,
    NakReason,
    RequestCalibration,
    encode,
)


class Role(enum.Enum):
    BRIDGE = "bridge"
    SCANNER = "scanner"


# Messages whose loss matters enough to ask for an ACK and retransmit. LINE is not among them:
# at 250 lines/s a lost line is reported as a gap and filled, never waited for.
_ACKED: dict[Role, tuple[type[Message], ...]] = {
    Role.BRIDGE: (BeltStop, BeltStart, Hold, RequestCalibration),
    Role.SCANNER: (Hello, Barcode, Fault, Calibration),
}


@dataclass(frozen=True, slots=True)
class GarbageSkipped:
    nbytes: int


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """A frame was dropped (CRC, malformed payload, unknown type or version) and NAKed."""

    seq: int
    type: int
    reason: NakReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """Frames ``expected`` .. ``received - 1`` never arrived."""

    expected: int
    received: int

    @property
    def missing(self) -> int:
        return (self.received - self.expected) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class UnexpectedMessage:
    """A message the peer's role must not send (e.g. a LINE from the bridge)."""

    message: Message


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The peer acknowledged a frame we sent."""

    message: Message


@dataclass(frozen=True, slots=True)
class PeerRejected:
    """The peer NAKed one of our frames."""

    seq: int
    reason: NakReason
    message: Message | None


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """A frame that needed an ACK got none after every retransmission."""

    message: Message


@dataclass(frozen=True, slots=True)
class LinkSilent:
    """No whole frame has arrived for ``silent_s`` seconds (heartbeats are 1 s apart)."""

    silent_s: float


LinkEvent = (
    GarbageSkipped
    | FrameDropped
    | SequenceGap
    | UnexpectedMessage
    | Acknowledged
    | PeerRejected
    | DeliveryFailed
    | LinkSilent
)
Event = Message | LinkEvent


@dataclass(slots=True)
class _Pending:
    message: Message
    deadline: float
    attempts: int = 1


@dataclass(slots=True)
class LinkStats:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    garbage_bytes: int = 0
    dropped: int = 0
    gaps: int = 0
    missing_frames: int = 0
    retransmits: int = 0


@dataclass(slots=True)
class LinkProtocol:
    """Per-connection protocol state for one side of the link."""

    role: Role
    ack_timeout: float = 0.5  # s; a command round trip on a LAN or 115200 Bd serial is < 50 ms
    max_attempts: int = 4
    silent_after: float = 3.0  # s; three missed heartbeats
    stats: LinkStats = field(default_factory=LinkStats)
    peer_hello: Hello | None = None
    _decoder: FrameDecoder = field(default_factory=FrameDecoder)
    _tx_seq: int = 0
    _rx_expected: int | None = None
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _recent_acked: deque[int] = field(default_factory=lambda: deque(maxlen=64))
    _out: bytearray = field(default_factory=bytearray)
    _last_rx: float | None = None
    _silent_reported: bool = False

    # -- receiving -----------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        events: list[Event] = []
        if data:
            self.stats.bytes_in += len(data)
        for item in self._decoder.feed(data):
            if not isinstance(item, Garbage):
                # Silence is counted from the last whole frame, not the last byte: noise, or a
                # false header that promises a long frame, must not keep a dead link "alive".
                self._last_rx = now
                self._silent_reported = False
            if isinstance(item, Frame):
                self._on_frame(item, events)
            elif isinstance(item, Garbage):
                self.stats.garbage_bytes += item.nbytes
                if events and isinstance(events[-1], GarbageSkipped):
                    events[-1] = GarbageSkipped(events[-1].nbytes + item.nbytes)
                else:
                    events.append(GarbageSkipped(item.nbytes))
            else:
                self._drop(item, events)
        return events

    def _drop(self, item: Corrupt, events: list[Event], detail: str = "") -> None:
        self.stats.dropped += 1
        # The header CRC held, so its seq is trustworthy: count the frame as received.
        self._track_seq(item.seq, 0, events)
        self._queue(Nak(item.seq, item.reason))
        events.append(FrameDropped(item.seq, item.type, item.reason, detail))

    def _track_seq(self, seq: int, flags: int, events: list[Event]) -> bool:
        """Update the expected sequence number; False for a retransmitted duplicate."""
        expected = self._rx_expected
        if expected is not None and ((expected - 1 - seq) & 0xFFFFFFFF) < 0x80000000:
            # at or before the newest frame seen: a retransmission, or a late frame
            return not (flags & FLAG_RETRANSMIT and seq in self._recent_acked)
        if expected is not None and seq != expected:
            gap = SequenceGap(expected, seq)
            if gap.missing < 0x80000000:
                self.stats.gaps += 1
                self.stats.missing_frames += gap.missing
                events.append(gap)
        self._rx_expected = (seq + 1) & 0xFFFFFFFF
        return True

    def _on_frame(self, frame: Frame, events: list[Event]) -> None:
        self.stats.frames_in += 1
        try:
            message = frame.message()
        except ProtocolError as exc:
            reason = NakReason.UNSUPPORTED if frame.type not in _KNOWN else NakReason.MALFORMED
            self._drop(Corrupt(frame.seq, frame.type, reason), events, str(exc))
            return
        if isinstance(message, Hello) and message != self.peer_hello:
            # The peer starting over: a scanner that rebooted behind a serial port which stayed
            # open numbers its frames from 0 again. The old boot's numbers must not make the new
            # boot's frames (its HELLO's retransmission first) look like duplicates.
            self._rx_expected = None
            self._recent_acked.clear()
        fresh = self._track_seq(frame.seq, frame.flags, events)
        if frame.flags & FLAG_ACK_REQUEST:
            self._queue(Ack(frame.seq))
            if not fresh:
                return
            self._recent_acked.append(frame.seq)
        elif not fresh:
            return
        if isinstance(message, Ack):
            pending = self._pending.pop(message.seq, None)
            if pending is not None:
                events.append(Acknowledged(pending.message))
            return
        if isinstance(message, Nak):
            pending = self._pending.get(message.seq)
            if pending is not None:
                pending.deadline = 0.0  # retransmit at the next tick
            events.append(
                PeerRejected(message.seq, message.reason, pending.message if pending else None)
            )
            return
        allowed = SCANNER_MESSAGES if self.role is Role.BRIDGE else BRIDGE_MESSAGES
        if type(message) not in allowed:
            events.append(UnexpectedMessage(message))
            return
        if isinstance(message, Hello):
            self.peer_hello = message
        events.append(message)

    # -- sending -------------------------------------------------------------------------------

    def send(self, message: Message, now: float) -> bytes:
        """Encode ``message`` with the next sequence number; returns the frame to write."""
        allowed = BRIDGE_MESSAGES if self.role is Role.BRIDGE else SCANNER_MESSAGES
        if type(message) not in allowed:
            raise LocalProtocolError(f"a {self.role.value} does not send {type(message).__name__}")
        seq = self._tx_seq
        needs_ack = isinstance(message, _ACKED[self.role])
        frame = encode(message, seq, FLAG_ACK_REQUEST if needs_ack else 0)
        if self._out:
            # ACKs/NAKs already numbered go first, so the wire carries seqs in order
            frame = self.data_to_send() + frame
        self._tx_seq = (seq + 1) & 0xFFFFFFFF
        self.stats.frames_out += 1
        if needs_ack:
            self._pending[seq] = _Pending(message, now + self.ack_timeout)
        return frame

    def _queue(self, message: Ack | Nak) -> None:
        self._out += encode(message, self._tx_seq)
        self._tx_seq = (self._tx_seq + 1) & 0xFFFFFFFF
        self.stats.frames_out += 1

    def data_to_send(self) -> bytes:
        """ACKs, NAKs and retransmissions waiting to be written (empties the queue)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def unacknowledged(self) -> list[Message]:
        """Frames still waiting for their ACK, oldest first (to re-send on a new link)."""
        return [p.message for _, p in sorted(self._pending.items())]

    @property
    def awaiting_ack(self) -> int:
        return len(self._pending)

    # -- time ----------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Retransmit overdue frames and report a silent link; call a few times a second."""
        events: list[Event] = []
        for seq, pending in list(self._pending.items()):
            if now < pending.deadline:
                continue
            if pending.attempts >= self.max_attempts:
                del self._pending[seq]
                events.append(DeliveryFailed(pending.message))
                continue
            self._out += encode(pending.message, seq, FLAG_ACK_REQUEST | FLAG_RETRANSMIT)
            pending.attempts += 1
            pending.deadline = now + self.ack_timeout * pending.attempts
            self.stats.retransmits += 1
        if (
            self._last_rx is not None
            and not self._silent_reported
            and now - self._last_rx >= self.silent_after
        ):
            self._silent_reported = True
            events.append(LinkSilent(now - self._last_rx))
        return events

    def started(self, now: float) -> None:
        """The transport is up: start the silence clock."""
        self._last_rx = now
        self._silent_reported = False


_KNOWN = frozenset(int(t) for t in MessageType)
