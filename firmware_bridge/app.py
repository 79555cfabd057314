"""The bridge process: wires scanner link, assembler, spool, forwarder, hold stream and status.

The only module that knows every part. Data path::

    ScannerLink --events--> Assembler --ParcelScan--> encode (thread) --> Spool --> Forwarder
    HoldListener --hold--> ScannerLink (BELT_STOP + HOLD) --> hold.ack
    HoldListener --hold.release--> HoldBook + /status (operator restarts) --> hold.release.ack
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .assembler import (
    Assembler,
    AssemblerConfig,
    FragmentDiscarded,
    LinesUncalibrated,
    OrphanBarcode,
    Output,
    ParcelScan,
)
from .connection import Command, ScannerLink
from .errors import (
    AssemblyError,
    LocalProtocolError,
    SpoolError,
    SpoolFullError,
    VideoSourceError,
)
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
    Hello,
    Hold,
    Line,
    RequestCalibration,
)
from .holds import HoldBook, Release, stop_reason
from .protocol import Acknowledged, DeliveryFailed, Event, FrameDropped, SequenceGap
from .spool import Spool, SpoolRecord
from .uplink import (
    Forwarder,
    GatewayClient,
    HoldListener,
    HoldOrder,
    HoldReleaseOrder,
    spool_record,
    video_record,
)
from .video import VideoScan, VideoSource

log = logging.getLogger("firmware_bridge")

HOLD_BOOK_KEY = "hold_book"  # the spool's state entry for the hold book
CALIBRATION_RETRY_S = 3.0  # between requests while lines arrive uncalibrated
# A stop or hold the scanner did not acknowledge is sent again after RESEND_FIRST_S, doubling
# while it keeps failing, up to RESEND_MAX_S; its alarm is logged once per RESEND_ALARM_EVERY_S.
RESEND_FIRST_S = 0.5
RESEND_MAX_S = 30.0
RESEND_ALARM_EVERY_S = 60.0
# A live video source that stops is reopened after VIDEO_REOPEN_FIRST_S, doubling up to the max.
VIDEO_REOPEN_FIRST_S = 1.0
VIDEO_REOPEN_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    scanner: str  # tcp://host:port or serial:///dev/ttyUSB0
    gateway: str
    key: str
    site_id: str
    spool_path: Path = Path("var/bridge/spool.sqlite3")
    scanner_id: str | None = None  # default: the device id from the scanner's HELLO
    status_interval: float = 30.0  # s between status log lines; 0 = none
    status_port: int | None = None  # serve GET /status on 127.0.0.1:port
    status_host: str = "127.0.0.1"
    max_spool_scans: int = 20_000
    max_spool_bytes: int = 4 << 30
    upload_backoff_initial: float = 1.0
    upload_backoff_max: float = 300.0
    link_backoff_max: float = 10.0
    holds: bool = True  # keep the hold-order WebSocket
    assembler: AssemblerConfig = field(default_factory=AssemblerConfig)


@dataclass(slots=True)
class BridgeStats:
    lines: int = 0
    scans: int = 0
    unbound: int = 0
    replays_skipped: int = 0
    orphan_barcodes: int = 0
    faults: int = 0
    last_fault: str | None = None
    sequence_gaps: int = 0
    frames_dropped: int = 0
    holds: int = 0
    belt: str = "unknown"
    spool_full: bool = False
    lines_per_s: float = 0.0
    failed_tasks: list[str] = field(default_factory=list)
    assembly_errors: int = 0
    event_errors: int = 0  # scanner events that failed for a reason nobody foresaw
    persist_errors: int = 0  # assembled scans that could not be encoded or spooled
    video_reopens: int = 0  # times a live video source stopped and was opened again


class Bridge:
    """One scanner, one gateway. ``start()`` then ``stop()``; ``status()`` at any time."""

    def __init__(self, config: BridgeConfig, *, session: aiohttp.ClientSession | None = None):
        self.config = config
        self.stats = BridgeStats()
        self.assembler = Assembler(config.assembler)
        self.spool = Spool(
            config.spool_path, max_scans=config.max_spool_scans, max_bytes=config.max_spool_bytes
        )
        self.video: VideoSource | None = None
        self.link: ScannerLink | None = None
        if config.scanner.startswith("video:"):
            # a scanner with only a monitor output: video:///path/to/file.avi or video://0
            target = config.scanner.removeprefix("video://").removeprefix("video:")
            capture: str | int = int(target) if target.isascii() and target.isdigit() else target
            self.video = VideoSource(capture, source_id=config.scanner_id or config.scanner)
        else:
            self.link = ScannerLink(
                config.scanner, self._on_event, backoff_max=config.link_backoff_max
            )
        self._own_session = session is None
        self._session = session
        self.forwarder: Forwarder | None = None
        self.holds: HoldListener | None = None
        self._persist: asyncio.Queue[ParcelScan | VideoScan] = asyncio.Queue()
        self._overflow: list[SpoolRecord] = []
        self._closing = asyncio.Event()  # stopping: closed parcels go to disk past the bound
        self._resends: set[asyncio.Task[None]] = set()  # stops/holds waiting to be sent again
        self._resend_failures = 0  # unacknowledged stops and holds in a row
        self._resend_alarmed_at = -math.inf  # monotonic time of the last such alarm
        self._tasks: list[asyncio.Task[Any]] = []
        self._runner: web.AppRunner | None = None
        self._calibration_requested_at: float | None = None  # monotonic; None: not asked
        self._stopped_for_spool = False
        self._restart_when_room = False  # an operator restarted the belt while the spool was full
        self._rate_mark = (time.monotonic(), 0)
        self.status_url: str | None = None
        self.hold_book = self._load_hold_book()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        if self._session is None:
            self._session = aiohttp.ClientSession()
        client = GatewayClient(self._session, cfg.gateway, cfg.key)
        self.forwarder = Forwarder(
            self.spool,
            client,
            backoff_initial=cfg.upload_backoff_initial,
            backoff_max=cfg.upload_backoff_max,
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._input(), name="scanner-input"),
            loop.create_task(self._persist_loop(), name="persist"),
            loop.create_task(self.forwarder.run(), name="forwarder"),
            loop.create_task(self._status_loop(), name="status"),
        ]
        if cfg.holds:
            self.holds = HoldListener(
                self._session, cfg.gateway, cfg.key, self._on_hold, self._on_release
            )
            self._tasks.append(loop.create_task(self.holds.run(), name="holds"))
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        if cfg.status_port is not None:
            await self._start_status_server()
        depth = await asyncio.to_thread(self.spool.depth)
        log.info(
            "bridge started: scanner %s gateway %s site %s spool %s (%d pending, %d dead)",
            cfg.scanner,
            cfg.gateway,
            cfg.site_id,
            cfg.spool_path,
            depth.pending,
            depth.dead,
        )

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop reading the scanner, persist every assembled scan, then stop the rest."""
        if self.link is not None:
            await self.link.close()
        if self.video is not None:
            self.video.stop()
        link_task = self._tasks[0] if self._tasks else None
        if link_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(link_task), grace_s)
        # Parcels already closed are not sent again by the scanner: a full spool takes them
        # past its bound now rather than lose them (the bound is for a running belt).
        self._closing.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._persist.join(), grace_s)
        for task in [*self._tasks, *self._resends]:
            task.cancel()
        for task in [*self._tasks, *self._resends]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._runner is not None:
            await self._runner.cleanup()
        if self._own_session and self._session is not None:
            await self._session.close()
        self.spool.close()
        unsaved = len(self._overflow) + self._persist.qsize()
        if unsaved:
            log.critical("ALARM %d scans not in the spool at shutdown", unsaved)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.stats.failed_tasks.append(task.get_name())
            log.critical("ALARM bridge task %s died: %r", task.get_name(), exc, exc_info=exc)

    # -- scanner input -------------------------------------------------------------------------

    async def _input(self) -> None:
        if self.link is not None:
            await self.link.run()
            return
        assert self.video is not None
        loop = asyncio.get_running_loop()
        video = self.video

        def read() -> None:
            for scan in video.scans():
                loop.call_soon_threadsafe(self._on_video_scan, scan)

        delay = VIDEO_REOPEN_FIRST_S
        while True:
            frames_before = video.frames
            try:
                await asyncio.to_thread(read)
            except VideoSourceError as exc:
                if not video.live or video.stopping:
                    raise
                why = str(exc)
            else:
                if not video.live or video.stopping:
                    log.info("video source %s ended after %d frames", video.capture, video.frames)
                    return
                why = f"no frame after {video.frames}"
            # A live device that stopped (a USB glitch, a capture card reset): reopened, with
            # growing pauses, and counted in the status, never left silently recording nothing.
            self.stats.video_reopens += 1
            log.critical("ALARM live video source %s stopped (%s): reopening in %.0f s",
                         video.capture, why, delay)  # fmt: skip
            await self._pause(delay)
            if video.stopping:
                return
            # Doubling while the device keeps failing at once; an opening that delivered
            # frames was a recovery, and the next glitch starts again from the first pause.
            delay = (
                min(VIDEO_REOPEN_MAX_S, delay * 2)
                if video.frames == frames_before
                else VIDEO_REOPEN_FIRST_S
            )

    def _on_video_scan(self, scan: VideoScan) -> None:
        self.stats.scans += 1
        self.stats.unbound += 1  # a monitor shows no barcode
        log.warning("UNBOUND video scan %s (%d lines)", scan.scan_id, scan.line_count)
        self._persist.put_nowait(scan)

    def _command(self, command: Command) -> None:
        if self.link is not None:
            self.link.send(command)
        else:
            log.critical("ALARM no scanner link to send %s: operator action needed", command)

    # -- scanner events ------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        try:
            self._dispatch(event)
        except AssemblyError as exc:
            # a scanner contradicting its own HELLO: drop what does not fit, keep the link
            self.stats.assembly_errors += 1
            if _worth_logging(self.stats.assembly_errors):
                log.warning(
                    "scanner data rejected (%d so far): %s", self.stats.assembly_errors, exc
                )
        except Exception:
            # One odd event must not end the scanner input (and with it every later parcel):
            # drop it, alarm, keep the link. The assembler drops a parcel it cannot image.
            self.stats.event_errors += 1
            if _worth_logging(self.stats.event_errors):
                log.critical(
                    "ALARM scanner event %s dropped (%d so far)",
                    type(event).__name__,
                    self.stats.event_errors,
                    exc_info=True,
                )

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Line):
            self.stats.lines += 1
            outputs = self.assembler.on_line(event, datetime.now(UTC))
            if outputs:
                self._on_outputs(outputs)
        elif isinstance(event, Barcode):
            self.assembler.on_barcode(event)
        elif isinstance(event, Hello):
            log.info(
                "scanner %s (%s %s): %d px, %.0f lines/s, boot %08x",
                event.device_id,
                event.vendor,
                event.firmware,
                event.pixels_per_line,
                event.line_rate_hz,
                event.boot_id,
            )
            self._calibration_requested_at = None
            self._on_outputs(self.assembler.on_hello(event))
            self._reassert_stops()
        elif isinstance(event, Calibration):
            self._calibration_requested_at = None
            self.assembler.on_calibration(event)
        elif isinstance(event, BeltState):
            self.stats.belt = f"{event.state.name.lower()} ({event.reason.name.lower()})"
            log.info("belt %s", self.stats.belt)
            if event.state is BeltRunState.RUNNING and event.reason is BeltReason.OPERATOR:
                self._started_at_machine()
        elif isinstance(event, Fault):
            self.stats.faults += 1
            self.stats.last_fault = f"{event.code:#06x} {event.severity.name} {event.text}"
            level = logging.WARNING if event.severity <= FaultSeverity.WARNING else logging.ERROR
            log.log(level, "scanner fault %s", self.stats.last_fault)
        elif isinstance(event, SequenceGap):
            self.stats.sequence_gaps += 1
            log.warning(
                "scanner link: %d frames missing before seq %d", event.missing, event.received
            )
        elif isinstance(event, FrameDropped):
            self.stats.frames_dropped += 1
            log.warning("scanner link: frame %d dropped (%s)", event.seq, event.reason.name)
        elif isinstance(event, DeliveryFailed) and isinstance(event.message, BeltStop | Hold):
            # A stop that the scanner never acknowledged is never given up: it is sent again
            # (the link re-sends it after a reconnect too). After a pause that grows while the
            # scanner keeps refusing (a firmware that NAKs it answers within milliseconds: sent
            # again at once, that was 20 frames and 10 alarms a second), and said loudly, but
            # once a minute, not once a failure.
            self._resend_failures += 1
            delay = min(RESEND_MAX_S, RESEND_FIRST_S * 2 ** min(self._resend_failures - 1, 10))
            now = time.monotonic()
            if now - self._resend_alarmed_at >= RESEND_ALARM_EVERY_S:
                self._resend_alarmed_at = now
                log.critical("ALARM scanner did not acknowledge %s (%d times in a row): "
                             "sending it again in %.1f s", event.message, self._resend_failures,
                             delay)  # fmt: skip
            resend = asyncio.get_running_loop().create_task(
                self._resend(event.message, delay), name="resend"
            )
            self._resends.add(resend)
            resend.add_done_callback(self._resends.discard)
        elif isinstance(event, Acknowledged) and isinstance(event.message, BeltStop | Hold):
            self._resend_failures = 0

    async def _resend(self, message: BeltStop | Hold, delay: float) -> None:
        await self._pause(delay)
        if not self._closing.is_set() and self._still_wanted(message):
            self._command(message)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until the stop begins."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _still_wanted(self, message: BeltStop | Hold) -> bool:
        """Whether a stop or hold waiting to be sent again still stands: the belt may have been
        started meanwhile (the spool has room, a person restarted it), and a stale BELT_STOP
        would stop it with nobody left to start it again."""
        if isinstance(message, Hold):
            return message.hold_id in self.hold_book.open
        return self._stopped_for_spool or self.hold_book.belt_stopped

    def _reassert_stops(self) -> None:
        """On every HELLO (a new link, or a scanner that rebooted and forgot its commanded
        stop): while the spool is full, stop the belt again; if a hold stopped the belt and no
        person has restarted it, stop it again and re-send each open hold."""
        if self._stopped_for_spool:
            self._command(BeltStop("bridge spool full"))
        if not self.hold_book.belt_stopped:
            return
        self._command(BeltStop("holds open at the bridge"))
        for hold_id, waybill_no in self.hold_book.open.items():
            try:
                self._command(Hold(waybill_no, hold_id))
            except LocalProtocolError as exc:
                log.critical("ALARM hold %s cannot be sent to the scanner: %s", hold_id, exc)

    def _on_outputs(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, ParcelScan):
                self.stats.scans += 1
                if out.unbound:
                    self.stats.unbound += 1
                    log.warning(
                        "UNBOUND scan %s: no waybill read for lines %d..%d",
                        out.scan_id,
                        out.first_line,
                        out.last_line,
                    )
                self._persist.put_nowait(out)
            elif isinstance(out, OrphanBarcode):
                self.stats.orphan_barcodes += 1
                log.warning("waybill %s read but no image followed", out.barcode.waybill_no)
            elif isinstance(out, LinesUncalibrated):
                self._ask_for_calibration()
            elif isinstance(out, FragmentDiscarded) and out.replayed:
                self.stats.replays_skipped += 1

    def _ask_for_calibration(self) -> None:
        """Lines are arriving that cannot be imaged without the scanner's calibration: ask for
        it, and again every ``CALIBRATION_RETRY_S`` while they keep coming (a lost request must
        not cost every parcel after it), with an alarm from the second time on."""
        now = time.monotonic()
        asked = self._calibration_requested_at
        if asked is not None and now - asked < CALIBRATION_RETRY_S:
            return
        if asked is not None:
            log.critical(
                "ALARM parcels are being dropped: no calibration from the scanner (%d lines); "
                "asking again",
                self.assembler.stats.uncalibrated_lines,
            )
        self._calibration_requested_at = now
        self._command(RequestCalibration())

    # -- persistence ---------------------------------------------------------------------------

    async def _persist_loop(self) -> None:
        cfg = self.config
        while True:
            scan = await self._persist.get()
            try:
                record = await asyncio.to_thread(
                    _encode, scan, site_id=cfg.site_id, scanner_id=cfg.scanner_id
                )
                await self._store(record)
            except Exception:
                # A scan that cannot be encoded is lost, loudly; the ones after it must not be.
                self.stats.persist_errors += 1
                log.critical("ALARM scan %s could not be spooled", scan.scan_id, exc_info=True)
            finally:
                self._persist.task_done()

    async def _store(self, record: SpoolRecord) -> None:
        self._overflow.append(record)
        while self._overflow:
            head = self._overflow[0]
            try:
                fresh = await asyncio.to_thread(
                    self.spool.put, head, time.time(), beyond_bound=self._closing.is_set()
                )
            except SpoolError as exc:
                # full, or the disk failed: either way nothing may pass unrecorded
                if not self.stats.spool_full:
                    why = "until the gateway catches up" if isinstance(exc, SpoolFullError) else ""
                    log.critical("ALARM %s: stopping the belt %s", exc, why)
                    self.stats.spool_full = True
                    self._stopped_for_spool = True
                    self._command(BeltStop("bridge spool full"))
                await self._pause(1.0)
                continue
            self._overflow.pop(0)
            if not fresh:
                log.info("scan %s already spooled (scanner replay)", head.scan_id)
            elif self.forwarder is not None:
                self.forwarder.wake()
        if self._stopped_for_spool:
            self._stopped_for_spool = False
            self.stats.spool_full = False
            operator_asked, self._restart_when_room = self._restart_when_room, False
            if self.hold_book.keeps_belt_stopped and not operator_asked:
                # a hold stopped it too: only a person restarts it (PROTOCOL.md, "Hold release")
                log.warning(
                    "spool has room again; the belt stays stopped for hold(s) %s: "
                    "OPERATOR restarts it",
                    ", ".join(self.hold_book.open) or "released since",
                )
            else:
                log.warning("spool has room again: restarting the belt")
                self._command(BeltStart())

    # -- holds ---------------------------------------------------------------------------------

    def _load_hold_book(self) -> HoldBook:
        """The holds that stopped this belt, as kept in the spool before a restart."""
        saved = self.spool.get_state(HOLD_BOOK_KEY)
        if saved is None:
            return HoldBook()
        try:
            book = HoldBook.from_json(saved)
        except (ValueError, KeyError, TypeError) as exc:
            log.critical("ALARM the saved hold book is unreadable (%s): starting empty", exc)
            return HoldBook()
        if book.open:
            log.warning("holds still open from before the restart: %s", ", ".join(
                f"{h} ({w})" for h, w in book.open.items()))
        return book

    def _write_hold_book(self) -> None:
        self.spool.put_state(HOLD_BOOK_KEY, self.hold_book.to_json())

    async def _save_hold_book(self) -> None:
        # Before the ack goes back: an acknowledged hold is not sent again by the gateway.
        await asyncio.to_thread(self._write_hold_book)

    async def _on_hold(self, order: HoldOrder) -> None:
        again = order.hold_id in self.hold_book.open  # re-sent: not acked (say, a failed save)
        if not self.hold_book.hold(order.hold_id, order.waybill_no):
            log.info("hold %s was released already: nothing to stop", order.hold_id)
            return
        self.stats.holds += 0 if again else 1
        log.warning("HOLD %s for waybill %s: %s", order.hold_id, order.waybill_no, order.reason)
        # The belt stops first: a spool or disk error below must not leave it running. If the
        # book cannot be saved the hold is not acked, and the gateway sends it again.
        self._command(BeltStop(stop_reason(order.hold_id)))
        try:
            self._command(Hold(order.waybill_no, order.hold_id))
        except LocalProtocolError as exc:
            # the belt is stopped; the operator finds the parcel from the alarm
            log.critical("ALARM hold %s cannot be sent to the scanner: %s", order.hold_id, exc)
        await self._save_hold_book()

    async def _on_release(self, order: HoldReleaseOrder) -> None:
        """The gateway closed a hold. Shown, never acted on at the belt: a conveyor stopped for a
        held parcel restarts only by a person at the tunnel (PROTOCOL.md, "Hold release")."""
        restart_allowed = self.hold_book.release(
            Release(order.hold_id, order.waybill_no, order.resolution, datetime.now(UTC))
        )
        await self._save_hold_book()
        still = len(self.hold_book.open)
        log.warning(
            "HOLD %s for waybill %s %s by the gateway; %s",
            order.hold_id,
            order.waybill_no,
            order.resolution,
            "OPERATOR: the belt may be restarted"
            if restart_allowed
            else f"{still} hold(s) still open"
            if still
            else "the belt is running",
        )

    def _started_at_machine(self) -> None:
        """A person started the belt with the machine's own button (BELT_STATE running, reason
        operator): that is the restart the holds wait for (PROTOCOL.md, "Hold release"), so a
        later HELLO must not stop the belt again for them. While the spool is full, though, the
        parcels it carries could not be recorded and their images would pile up in memory: the
        belt is stopped again, and starts once the spool has room, as the person asked."""
        if self.hold_book.belt_stopped:
            self.hold_book.restarted()
            self._write_hold_book()  # a person's action, at once
            log.warning("belt restarted at the machine: the stop for holds is lifted")
        if self._stopped_for_spool:
            log.critical(
                "ALARM belt started at the machine while the spool is full: stopping it until "
                "there is room"
            )
            self._restart_when_room = True
            self._command(BeltStop("bridge spool full"))

    def resume_belt(self, reason: str = "operator") -> None:
        """The operator has taken the held parcel aside: restart the belt (BELT_START), or,
        while the spool is full, as soon as it has room."""
        self.hold_book.restarted()
        self._write_hold_book()  # an operator's action, at once
        if self._stopped_for_spool:
            # Running now would only pile scans up in memory: the belt starts once the spool
            # has room (``_store``), as the operator asked.
            log.warning("belt restart by %s deferred: the spool is full", reason)
            self._restart_when_room = True
            return
        log.warning("belt restarted by %s", reason)
        self._command(BeltStart())

    # -- status --------------------------------------------------------------------------------

    def _lines_per_s(self) -> float:
        t0, n0 = self._rate_mark
        t1, n1 = time.monotonic(), self.stats.lines
        if t1 - t0 >= 1.0:
            self.stats.lines_per_s = (n1 - n0) / (t1 - t0)
            self._rate_mark = (t1, n1)
        return self.stats.lines_per_s

    async def status(self) -> dict[str, Any]:
        depth = await asyncio.to_thread(self.spool.depth)
        fwd = self.forwarder.stats if self.forwarder else None
        last = fwd.last_upload_at.isoformat() if fwd and fwd.last_upload_at else None
        hello = self.assembler.hello
        return {
            "scanner": self.config.scanner,
            "device_id": hello.device_id if hello else None,
            "link": self.link.state.value if self.link else "video",
            "belt": self.stats.belt,
            "lines_per_s": round(self._lines_per_s(), 1),
            "lines": self.stats.lines,
            "scans": self.stats.scans,
            "unbound_scans": self.stats.unbound,
            "orphan_barcodes": self.stats.orphan_barcodes,
            "spool": {
                "pending": depth.pending,
                "dead": depth.dead,
                "sent": depth.sent,
                "bytes": depth.bytes,
                "full": self.stats.spool_full,
            },
            "uploads": fwd.uploaded if fwd else 0,
            "duplicates": fwd.duplicates if fwd else 0,
            "last_upload_at": last,
            "last_upload_error": fwd.last_error if fwd else None,
            "hold_stream": bool(self.holds and self.holds.connected),
            "holds": self.stats.holds,
            "open_holds": [{"hold_id": h, "waybill_no": w} for h, w in self.hold_book.open.items()],
            "released_holds": [
                {
                    "hold_id": r.hold_id,
                    "waybill_no": r.waybill_no,
                    "resolution": r.resolution,
                    "at": r.at.isoformat(),
                }
                for r in self.hold_book.released
            ],
            # The belt is stopped for holds that are all released: the operator may restart it.
            "restart_allowed": self.hold_book.restart_allowed,
            "faults": self.stats.faults,
            "last_fault": self.stats.last_fault,
            "link_gaps": self.stats.sequence_gaps,
            "frames_dropped": self.stats.frames_dropped,
            "errors": {  # data dropped with an alarm, the bridge running on
                "scanner_data_rejected": self.stats.assembly_errors,
                "scanner_events_failed": self.stats.event_errors,
                "scans_not_spooled": self.stats.persist_errors,
                "hold_orders_not_applied": self.holds.failures if self.holds else 0,
            },
            "video_reopens": self.stats.video_reopens,
            "failed_tasks": list(self.stats.failed_tasks),
        }

    async def _status_loop(self) -> None:
        interval = self.config.status_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            s = await self.status()
            log.info(
                "status link=%s belt=%s lines/s=%.0f scans=%d unbound=%d spool=%d pending/%d dead "
                "last_upload=%s holds=%s",
                s["link"],
                s["belt"],
                s["lines_per_s"],
                s["scans"],
                s["unbound_scans"],
                s["spool"]["pending"],
                s["spool"]["dead"],
                s["last_upload_at"] or "never",
                "up" if s["hold_stream"] else "down",
            )

    async def _start_status_server(self) -> None:
        async def handle(_request: web.Request) -> web.Response:
            return web.json_response(await self.status(), dumps=lambda v: json.dumps(v, indent=1))

        app = web.Application()
        app.router.add_get("/status", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.status_host, self.config.status_port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.status_url = f"http://{self.config.status_host}:{port}/status"
        log.info("status endpoint %s", self.status_url)


def _worth_logging(count: int) -> bool:
    # the first few, then one in a thousand: a broken scanner can repeat a fault at line rate
    return count <= 10 or count % 1000 == 0


def _encode(scan: ParcelScan | VideoScan, *, site_id: str, scanner_id: str | None) -> SpoolRecord:
    if isinstance(scan, ParcelScan):
        return spool_record(scan, site_id=site_id, scanner_id=scanner_id)
    return video_record(scan, site_id=site_id, scanner_id=scanner_id)
