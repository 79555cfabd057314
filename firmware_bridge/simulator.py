"""A virtual line-scan X-ray scanner speaking the link protocol over TCP or a pty (serial).

``python -m firmware_bridge.simulator --port 7070 [--pty] [--rate 250] [--pixels 750]``

Behaviour of the simulated firmware:

* on connect: HELLO, CALIBRATION, BELT_STATE(running); a HEARTBEAT every second;
* lines at the configured rate (sent in small batches on a 10 ms tick), parcels separated by air
  gaps; a BARCODE for each parcel at the line where its leading edge passes the reader (a few
  percent are missed on purpose, so unbound scans appear); occasional FAULT warnings and, if asked,
  corrupted frames and line noise on the wire;
* BELT_STOP / HOLD stop the belt (HOLD records the waybill) until BELT_START;
* no bridge connected stops the belt (interlock); after a reconnect the scanner replays the
  current parcel from its ring buffer with the original line indices, so a parcel the bridge was
  assembling when it went away comes out again with the same scan id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .frames import (
    Barcode,
    BeltReason,
    BeltRunState,
    BeltStart,
    BeltState,
    BeltStop,
    Calibration,
    Fault,
    FaultSeverity,
    Heartbeat,
    Hello,
    Hold,
    Line,
    RequestCalibration,
)
from .phantoms import DetectorModel, ParcelSource, make_source
from .protocol import DeliveryFailed, LinkProtocol, Role

log = logging.getLogger("firmware_bridge.simulator")

_TICK = 0.01  # s


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    device_id: str = "SIM-0001"
    vendor: str = "virtual"
    firmware: str = "sim-1.0"
    pixels: int = 750
    line_rate: float = 250.0  # lines/s
    pixel_pitch_um: int = 1500
    belt_speed_mm_s: int = 250
    lead_gap_lines: tuple[int, int] = (40, 120)  # air before each parcel, uniform range
    trail_gap_lines: int = 50  # air after each parcel (> the bridge's gap_lines)
    parcels: int | None = None  # stop feeding after this many (the belt keeps running empty)
    source: str = "auto"  # 'procedural', 'synth' or 'auto'
    seed: int = 0
    barcode_miss_rate: float = 0.03
    fault_interval_s: float | None = 45.0  # mean time between FAULT warnings
    corrupt_rate: float = 0.0  # probability a frame is corrupted on the wire
    garbage_rate: float = 0.0  # probability of line noise bytes before a frame
    boot_id: int | None = None


@dataclass(slots=True)
class _Tape:
    """One parcel's stretch of belt: lead air, the parcel, trailing air."""

    number: int
    base_index: int
    high: npt.NDArray[np.uint16]
    low: npt.NDArray[np.uint16]
    parcel_start: int  # row of the first parcel line
    parcel_end: int
    waybill_no: str | None
    barcode_row: int = 0  # where the leading edge passes the reader
    pos: int = 0


@dataclass(frozen=True, slots=True)
class ScannedParcel:
    number: int
    waybill_no: str | None
    first_line: int
    last_line: int


@dataclass(slots=True)
class SimulatorState:
    lines_sent: int = 0
    parcels_done: list[ScannedParcel] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    belt_running: bool = False
    commanded_stop: bool = False
    connected: bool = False
    sessions: int = 0
    replays: int = 0
    stops: int = 0
    starts: int = 0  # BELT_STARTs received
    operator_starts: int = 0  # presses of the machine's own start button


class VirtualScanner:
    """The simulated scanner; serve it with ``serve_tcp`` and/or ``serve_pty``."""

    def __init__(self, config: SimulatorConfig | None = None, source: ParcelSource | None = None):
        self.config = config or SimulatorConfig()
        cfg = self.config
        self.source = source or make_source(cfg.source)
        self.detector = DetectorModel.create(cfg.pixels, cfg.seed)
        self.boot_id = cfg.boot_id if cfg.boot_id is not None else random.getrandbits(32)
        self.state = SimulatorState()
        self._rng = np.random.default_rng(cfg.seed)
        self._prng = random.Random(cfg.seed)
        self._next_index = 0
        self._parcel_no = 0
        self._tape: _Tape | None = None
        self._previous: _Tape | None = None  # kept for replay after a reconnect
        self._queued: list[_Tape] = []  # tapes to play again before new ones
        self._done: set[int] = set()
        self._prefetch: asyncio.Task[_Tape] | None = None
        self._session_lock = asyncio.Lock()
        self._end_session = asyncio.Event()
        self._abort_session: Callable[[], None] | None = None
        self._started = time.monotonic()
        self._changed = asyncio.Event()
        self._start_pressed = False
        self.hello = Hello(
            cfg.device_id,
            cfg.vendor,
            cfg.firmware,
            cfg.pixels,
            16,
            cfg.pixel_pitch_um,
            round(cfg.line_rate * 1000),
            2,
            self.boot_id,
        )

    # -- the belt ----------------------------------------------------------------------------

    def drop_link(self) -> None:
        """The link drops (a cable pulled, a switch restarting): this session ends and the
        belt stops on the interlock; the bridge reconnects and gets a new HELLO."""
        self._end_session.set()
        self._changed.set()

    def press_start(self) -> None:
        """A person presses the machine's start button: the belt runs, whatever stop was
        commanded, and the scanner reports BELT_STATE running (reason operator)."""
        self._start_pressed = True
        self._changed.set()

    @property
    def inside_parcel(self) -> int | None:
        """The number of the parcel under the curtain right now, if any."""
        tape = self._tape
        if tape is not None and tape.parcel_start < tape.pos <= tape.parcel_end:
            return tape.number
        return None

    def _make_tape(self, number: int) -> _Tape:
        cfg = self.config
        rng = np.random.default_rng((cfg.seed, number))
        lead = int(rng.integers(cfg.lead_gap_lines[0], cfg.lead_gap_lines[1] + 1))
        if cfg.parcels is not None and number >= cfg.parcels:
            ones = np.ones((lead, cfg.pixels), dtype=np.float32)
            h, lo = self.detector.expose(ones, ones, rng)
            return _Tape(number, 0, h, lo, lead, lead, None)
        phantom = self.source.parcel(cfg.seed * 100_003 + number, cfg.pixels)
        n = phantom.t_high.shape[0]
        air = np.ones((lead, cfg.pixels), dtype=np.float32)
        trail = np.ones((cfg.trail_gap_lines, cfg.pixels), dtype=np.float32)
        t_h = np.vstack([air, phantom.t_high, trail])
        t_l = np.vstack([air, phantom.t_low, trail])
        h, lo = self.detector.expose(t_h, t_l, rng)
        missed = float(rng.random()) < cfg.barcode_miss_rate
        waybill = None if missed else f"SF{cfg.seed % 1000:03d}{number:09d}"
        # the reader fires on the parcel's leading edge, not on the generator's own margin
        edge = np.flatnonzero((phantom.t_high < 0.95).sum(axis=1) >= 2)
        barcode_row = lead + (int(edge[0]) if edge.size else 0)
        return _Tape(number, 0, h, lo, lead, lead + n, waybill, barcode_row)

    def _rewind(self) -> None:
        """After a reconnect, replay what the bridge may not have turned into a scan yet.

        That is the current parcel, or, while still in the air before it, the previous one
        too (the bridge closes a parcel only after a run of trailing air).
        """
        tape = self._tape
        if tape is None or tape.pos == 0:
            return
        replay = [tape]
        if tape.pos <= tape.parcel_start and self._previous is not None:
            replay.insert(0, self._previous)
        for t in replay:
            t.pos = 0
        log.info("replaying from line %d", replay[0].base_index)
        self._tape = replay[0]
        self._queued = replay[1:] + self._queued
        self.state.replays += 1

    async def _next_tape(self) -> _Tape:
        number = self._parcel_no
        self._parcel_no += 1
        task = self._prefetch
        tape = await task if task is not None else await asyncio.to_thread(self._make_tape, number)
        self._prefetch = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._make_tape, number + 1)
        )
        tape.base_index = self._next_index
        self._next_index += tape.high.shape[0]
        return tape

    # -- one bridge session ------------------------------------------------------------------

    async def session(
        self,
        reader: asyncio.StreamReader,
        write: Callable[[bytes], None],
        drain: Callable[[], Awaitable[None]],
        first: bytes = b"",
        abort: Callable[[], None] | None = None,
    ) -> None:
        """Talk to one bridge until it goes away (``first``: bytes already read from it).

        A new connection takes over from an old one: after a crash or a cable pull the old TCP
        connection may stay half-open for hours, and the newest bridge is the live one.
        """
        if self._session_lock.locked():
            log.warning("new bridge connection: ending the previous session")
            self._end_session.set()
            if self._abort_session is not None:
                self._abort_session()  # also frees a session blocked writing to a dead peer
        async with self._session_lock:
            self._end_session = asyncio.Event()
            self._abort_session = abort
            try:
                await self._run_session(reader, write, drain, first)
            finally:
                self._abort_session = None

    async def _run_session(
        self,
        reader: asyncio.StreamReader,
        write: Callable[[bytes], None],
        drain: Callable[[], Awaitable[None]],
        first: bytes,
    ) -> None:
        cfg = self.config
        st = self.state
        st.sessions += 1
        st.connected = True
        proto = LinkProtocol(Role.SCANNER)
        now = time.monotonic
        wire = _Wire(write, cfg, self._prng)
        wire(proto.send(self.hello, now()))
        wire(proto.send(self._calibration(), now()))
        self._rewind()
        self._set_belt(proto, wire, running=not st.commanded_stop, reason=BeltReason.INTERLOCK)
        reading = asyncio.get_running_loop().create_task(self._read(reader, proto, wire, first))
        t_run = now()
        sent_since = 0
        last_beat = 0.0
        next_fault = self._next_fault(now())
        try:
            while not reading.done() and not self._end_session.is_set():
                t = now()
                if self._start_pressed:
                    self._start_pressed = False
                    st.commanded_stop = False
                    st.operator_starts += 1
                    self._set_belt(proto, wire, running=True, reason=BeltReason.OPERATOR)
                if st.belt_running:
                    due = int((t - t_run) * cfg.line_rate) - sent_since
                    if due > 0:
                        sent_since += due
                        await self._feed(proto, wire, due)
                else:
                    t_run, sent_since = t, 0
                if t - last_beat >= 1.0:
                    last_beat = t
                    uptime = int((t - self._started) * 1000)
                    wire(proto.send(Heartbeat(uptime, max(self._next_index - 1, 0)), t))
                if next_fault is not None and t >= next_fault:
                    wire(
                        proto.send(Fault(0x0201, FaultSeverity.WARNING, "tube temperature high"), t)
                    )
                    next_fault = self._next_fault(t)
                if any(isinstance(e, DeliveryFailed) for e in proto.tick(t)):
                    log.warning("bridge stopped acknowledging: ending the session")
                    break
                wire(proto.data_to_send())
                await drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), _TICK)
                self._changed.clear()
        except (ConnectionError, OSError) as exc:
            log.info("bridge link lost: %s", exc)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await reading
            st.connected = False
            st.belt_running = False  # interlock: nobody records the images

    def _next_fault(self, now: float) -> float | None:
        interval = self.config.fault_interval_s
        return None if interval is None else now + self._prng.expovariate(1.0 / interval)

    def _calibration(self) -> Calibration:
        d = self.detector
        return Calibration(
            d.dark_high.astype("<u2").tobytes(),
            d.air_high.astype("<u2").tobytes(),
            d.dark_low.astype("<u2").tobytes(),
            d.air_low.astype("<u2").tobytes(),
        )

    def _set_belt(
        self, proto: LinkProtocol, wire: _Wire, *, running: bool, reason: BeltReason
    ) -> None:
        self.state.belt_running = running
        state = BeltRunState.RUNNING if running else BeltRunState.STOPPED
        speed = self.config.belt_speed_mm_s if running else 0
        wire(proto.send(BeltState(state, speed, reason), time.monotonic()))

    async def _read(
        self, reader: asyncio.StreamReader, proto: LinkProtocol, wire: _Wire, first: bytes
    ) -> None:
        st = self.state
        data = first
        while True:
            if not data:
                data = await reader.read(65536)
            if not data:
                return
            for event in proto.receive_data(data, time.monotonic()):
                if isinstance(event, BeltStop):
                    log.info("BELT_STOP: %s", event.reason)
                    st.commanded_stop = True
                    st.stops += 1
                    self._set_belt(proto, wire, running=False, reason=BeltReason.COMMAND)
                elif isinstance(event, Hold):
                    log.warning("HOLD waybill %s (hold %s)", event.waybill_no, event.hold_id)
                    st.holds.append(event)
                    st.commanded_stop = True
                    self._set_belt(proto, wire, running=False, reason=BeltReason.HOLD)
                elif isinstance(event, BeltStart):
                    st.commanded_stop = False
                    st.starts += 1
                    self._set_belt(proto, wire, running=True, reason=BeltReason.COMMAND)
                elif isinstance(event, RequestCalibration):
                    wire(proto.send(self._calibration(), time.monotonic()))
            wire(proto.data_to_send())
            self._changed.set()
            data = b""

    async def _feed(self, proto: LinkProtocol, wire: _Wire, count: int) -> None:
        now = time.monotonic()
        chunks: list[bytes] = []
        pitch_um = self.config.pixel_pitch_um
        for _ in range(count):
            tape = self._tape
            if tape is None or tape.pos >= tape.high.shape[0]:
                if tape is None or tape.number in self._done:
                    pass
                elif tape.parcel_end > tape.parcel_start:
                    self._done.add(tape.number)
                    self.state.parcels_done.append(
                        ScannedParcel(
                            tape.number,
                            tape.waybill_no,
                            tape.base_index + tape.parcel_start,
                            tape.base_index + tape.parcel_end - 1,
                        )
                    )
                if chunks:
                    wire(b"".join(chunks))
                    chunks = []
                self._previous = tape
                if self._queued:
                    tape = self._tape = self._queued.pop(0)
                else:
                    tape = self._tape = await self._next_tape()
            row = tape.pos
            index = tape.base_index + row
            if row == tape.barcode_row and tape.waybill_no is not None:
                chunks.append(proto.send(Barcode(index, 1, tape.waybill_no), now))
            chunks.append(
                proto.send(
                    Line(
                        index, index * pitch_um, tape.high[row].tobytes(), tape.low[row].tobytes()
                    ),
                    now,
                )
            )
            tape.pos += 1
            self.state.lines_sent += 1
        if chunks:
            wire(b"".join(chunks))

    # -- transports ----------------------------------------------------------------------------

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            log.info("bridge connected from %s", peer)
            try:
                await self.session(reader, writer.write, writer.drain, abort=writer.transport.abort)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
                log.info("bridge %s disconnected", peer)

        return await asyncio.start_server(handle, host, port)

    async def serve_pty(self) -> tuple[str, asyncio.Task[None]]:
        """Open a pseudo-terminal; the bridge connects to ``serial://<returned path>``.

        A serial line has no connect event: a session starts with the bridge's first frame
        (it sends REQUEST_CALIBRATION when it opens the port) and ends when the bridge stops
        acknowledging.
        """
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        path = os.ttyname(slave)
        loop = asyncio.get_running_loop()

        async def run() -> None:
            try:
                while True:
                    reader = asyncio.StreamReader()
                    protocol = asyncio.StreamReaderProtocol(reader)
                    read_file = os.fdopen(os.dup(master), "rb", buffering=0)
                    write_file = os.fdopen(os.dup(master), "wb", buffering=0)
                    r_transport, _ = await loop.connect_read_pipe(
                        functools.partial(_same, protocol), read_file
                    )
                    w_transport, w_protocol = await loop.connect_write_pipe(
                        asyncio.Protocol, write_file
                    )
                    try:
                        first = await reader.read(65536)
                        if first:
                            await self.session(
                                reader,
                                w_transport.write,
                                _drainer(w_transport),
                                first,
                                abort=w_transport.abort,
                            )
                    except OSError as exc:
                        log.info("pty: %s", exc)
                    finally:
                        r_transport.close()
                        w_transport.close()
                    del w_protocol
                    await asyncio.sleep(0.2)  # EIO while no one has the slave open
            finally:
                os.close(master)
                os.close(slave)

        return path, loop.create_task(run())


def _drainer(transport: asyncio.WriteTransport) -> Callable[[], Awaitable[None]]:
    async def drain() -> None:
        # back-pressure without StreamWriter: wait while the pty buffer is backed up
        while transport.get_write_buffer_size() > 1 << 20 and not transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(_TICK)

    return drain


def _same(protocol: asyncio.StreamReaderProtocol) -> asyncio.StreamReaderProtocol:
    return protocol


class _Wire:
    """Writes frames, optionally damaging some on the way (to exercise resync and NAK)."""

    def __init__(self, write: Callable[[bytes], None], cfg: SimulatorConfig, rng: random.Random):
        self._write = write
        self._cfg = cfg
        self._rng = rng

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        cfg = self._cfg
        if cfg.garbage_rate and self._rng.random() < cfg.garbage_rate:
            self._write(self._rng.randbytes(self._rng.randint(1, 40)))
        if cfg.corrupt_rate and self._rng.random() < cfg.corrupt_rate:
            damaged = bytearray(data)
            damaged[self._rng.randrange(len(damaged))] ^= 1 << self._rng.randrange(8)
            data = bytes(damaged)
        self._write(data)


# -- command line ----------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7070, help="TCP port (0 = any)")
    p.add_argument("--pty", action="store_true", help="also serve on a pseudo-terminal")
    p.add_argument("--rate", type=float, default=250.0, help="lines per second")
    p.add_argument("--pixels", type=int, default=750)
    p.add_argument("--parcels", type=int, default=None, help="stop after N parcels")
    p.add_argument("--source", choices=["auto", "synth", "procedural"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device-id", default="SIM-0001")
    p.add_argument("--corrupt-rate", type=float, default=0.0)
    p.add_argument("--garbage-rate", type=float, default=0.0)
    p.add_argument(
        "--render-video", metavar="PATH", help="write a scrolling-display video and exit"
    )
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    scanner = VirtualScanner(
        SimulatorConfig(
            device_id=args.device_id,
            pixels=args.pixels,
            line_rate=args.rate,
            parcels=args.parcels,
            source=args.source,
            seed=args.seed,
            corrupt_rate=args.corrupt_rate,
            garbage_rate=args.garbage_rate,
        )
    )
    server = await scanner.serve_tcp(args.host, args.port)
    addr = server.sockets[0].getsockname()
    print(f"virtual scanner {args.device_id}: tcp://{addr[0]}:{addr[1]}", flush=True)
    if args.pty:
        path, _task = await scanner.serve_pty()
        print(f"virtual scanner {args.device_id}: serial://{path}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.render_video:
        from .display import render_video

        n = render_video(
            args.render_video, parcels=args.parcels or 5, seed=args.seed, source=args.source
        )
        print(f"wrote {args.render_video}: {n} parcels", flush=True)
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
