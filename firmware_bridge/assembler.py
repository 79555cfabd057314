"""Line stream -> calibrated per-parcel images with their waybill (pure: no I/O, time passed in).

Per line the assembler does only what must be done per line (is it air?, keep the raw bytes);
calibration and colour run vectorised once per parcel, which keeps it far above line rate.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import numpy as np
import numpy.typing as npt

from .colour import F32Array, RGBArray, U16Array, attenuation, pseudo_colour, to_u16
from .errors import AssemblyError
from .frames import Barcode, Calibration, Hello, Line

# Namespace for scan ids: uuid5(SCAN_NAMESPACE, "device:boot:first_line") is stable across resends
# and bridge restarts, because the scanner owns line indices.
SCAN_NAMESPACE: Final = uuid.UUID("9c1f3a52-6f0e-5d0b-8e4a-3b7e2d1c0a55")


def scan_id_for(device_id: str, boot_id: int, first_line: int) -> str:
    return str(uuid.uuid5(SCAN_NAMESPACE, f"{device_id}:{boot_id}:{first_line}"))


AIR_DRIFT: Final = 0.02  # relative air-level change that re-derives the segmentation threshold
# LINE carries a u64 index, but one line per 4 ms reaches 2**63 only after a billion years: a
# larger index is corrupt or hostile, and would overflow the int64 arithmetic of the image fill.
MAX_LINE_INDEX: Final = 2**63 - 1
MAX_PENDING_BARCODES: Final = 256  # waybill reads not yet matched to a parcel, at most


@dataclass(frozen=True, slots=True)
class AssemblerConfig:
    gap_lines: int = 40  # consecutive air lines that end a parcel (6 cm at 1.5 mm/line)
    margin_lines: int = 4  # air kept before and after the object
    max_lines: int = 2000  # a longer object is cut (and continued): 2 m at 1 mm/line
    min_object_lines: int = 3  # fewer object lines is dust/noise, reported and discarded
    # Air test per line, on bins of adjacent pixels (binning divides detector noise by ~3, so
    # faint cardboard at 3 % attenuation still counts as parcel): a line is air when fewer than
    # min_object_bins bins transmit less than air_transmission of the line's own air level.
    air_transmission: float = 0.97
    bin_pixels: int = 8
    min_object_bins: int = 2
    # The line's air level is the 90th percentile bin, so a tube-output dip is not a parcel;
    # it may lower the reference by at most this much (a belt-wide parcel cannot mask itself).
    max_line_drift: float = 0.10
    air_settle_lines: int = 24  # consecutive air lines before air is re-acquired
    air_weight: float = 1 / 64  # exponential weight of one empty-belt line in the air reference
    barcode_offset_lines: int = 0  # lines between the barcode reader and the X-ray curtain
    barcode_tolerance_lines: int = 40
    barcode_horizon_lines: int = 4000  # an unmatched barcode older than this is orphaned


@dataclass(frozen=True, slots=True, eq=False)
class ParcelScan:
    """One parcel image: calibrated attenuation (uint16, see colour.py) and pseudo-colour."""

    device_id: str
    boot_id: int
    first_line: int
    last_line: int
    occurred_at: datetime
    high: U16Array  # (lines, pixels)
    low: U16Array
    image: RGBArray  # (lines, pixels, 3) RGB
    waybill_no: str | None
    extra_waybills: tuple[str, ...] = ()
    truncated: bool = False  # cut at max_lines; the next scan continues the same object
    continuation: bool = False
    missing_lines: int = 0

    @property
    def scan_id(self) -> str:
        return scan_id_for(self.device_id, self.boot_id, self.first_line)

    @property
    def unbound(self) -> bool:
        return self.waybill_no is None

    @property
    def line_count(self) -> int:
        return int(self.high.shape[0])

    @property
    def pixels_per_line(self) -> int:
        return int(self.high.shape[1])


@dataclass(frozen=True, slots=True)
class OrphanBarcode:
    """A waybill read for which no parcel image appeared (reported, compliance counts it)."""

    barcode: Barcode


@dataclass(frozen=True, slots=True)
class FragmentDiscarded:
    first_line: int
    object_lines: int
    replayed: bool = False  # the scanner is replaying these lines; the parcel will be rebuilt


@dataclass(frozen=True, slots=True)
class LinesUncalibrated:
    """Lines arrived before any CALIBRATION: they cannot be turned into attenuation."""

    count: int


Output = ParcelScan | OrphanBarcode | FragmentDiscarded | LinesUncalibrated


@dataclass(slots=True)
class AssemblerStats:
    lines: int = 0
    air_lines: int = 0
    scans: int = 0
    unbound_scans: int = 0
    truncated_scans: int = 0
    fragments: int = 0
    orphan_barcodes: int = 0
    missing_lines: int = 0
    uncalibrated_lines: int = 0
    air_updates: int = 0
    threshold_updates: int = 0


@dataclass(slots=True)
class _Parcel:
    started_at: datetime
    indices: list[int] = field(default_factory=list)
    highs: list[bytes] = field(default_factory=list)
    lows: list[bytes] = field(default_factory=list)
    object_lines: int = 0
    air_run: int = 0
    continuation: bool = False


class Assembler:
    """Feed HELLO, CALIBRATION, BARCODE and LINE messages; collect ParcelScans."""

    def __init__(self, config: AssemblerConfig | None = None) -> None:
        self.config = config or AssemblerConfig()
        self.stats = AssemblerStats()
        self.hello: Hello | None = None
        self._dark: list[F32Array] = []
        self._air: list[F32Array] = []
        self._pixels = 0  # 0 until calibrated
        self._geometry: tuple[int, int] | None = None  # (pixels, channels) of the calibration
        self._calibration: Calibration | None = None  # the one in use
        self._threshold_air: F32Array = np.zeros(0, np.float32)
        self._bin = 1
        self._bin_dark: F32Array = np.zeros(0, np.float32)
        self._bin_span: F32Array = np.zeros(0, np.float32)
        self._recent: deque[tuple[int, bytes, bytes]] = deque(maxlen=self.config.margin_lines)
        self._parcel: _Parcel | None = None
        self._air_run = 0
        self._last_index: int | None = None
        self._barcodes: list[Barcode] = []
        self._carry_waybill: tuple[str | None, tuple[str, ...]] | None = None

    # -- configuration from the scanner ------------------------------------------------------

    @property
    def calibrated(self) -> bool:
        return self._pixels > 0

    def on_hello(self, hello: Hello) -> list[Output]:
        out: list[Output] = []
        if self.hello is not None and (
            hello.boot_id != self.hello.boot_id or hello.device_id != self.hello.device_id
        ):
            out += self._abandon()
        if self.hello is not None and hello.pixels_per_line != self.hello.pixels_per_line:
            self._pixels = 0
            self._dark, self._air = [], []
            self._calibration = None
        self.hello = hello
        return out

    def on_calibration(self, cal: Calibration) -> None:
        if cal == self._calibration:
            # The same references again (the bridge asks for them on every connect): keep the
            # air tracked since and the threshold as stepped from it, so that a parcel the
            # scanner replays after the reconnect is cut at the same first line (same scan id).
            return
        pixels = len(cal.dark_high) // 2
        if self.hello is not None and pixels != self.hello.pixels_per_line:
            raise AssemblyError(
                f"CALIBRATION has {pixels} px, HELLO said {self.hello.pixels_per_line}"
            )
        geometry = (pixels, 2 if cal.dark_low else 1)
        if self._geometry is not None and geometry != self._geometry:
            # lines held under the old geometry cannot stack with new ones into one image
            self._abandon_open(replay=False)
        self._geometry = geometry
        dark = [np.frombuffer(cal.dark_high, "<u2").astype(np.float32)]
        air = [np.frombuffer(cal.air_high, "<u2").astype(np.float32)]
        if cal.dark_low:
            dark.append(np.frombuffer(cal.dark_low, "<u2").astype(np.float32))
            air.append(np.frombuffer(cal.air_low, "<u2").astype(np.float32))
        self._dark, self._air = dark, air
        self._update_threshold()
        self._calibration = cal

    def on_barcode(self, barcode: Barcode) -> None:
        if barcode in self._barcodes:  # a replay re-sends the same read
            return
        if len(self._barcodes) >= MAX_PENDING_BARCODES:
            # Reads waiting for their parcel are a handful; this many means a reader (or a
            # peer) sending nonsense, e.g. indices far ahead that would never expire: the
            # oldest waiting read becomes an orphan instead of the list growing without end.
            self._barcodes.pop(0)
            self.stats.orphan_barcodes += 1
        self._barcodes.append(barcode)

    def _update_threshold(self) -> None:
        pixels = self._dark[0].shape[0]
        self._bin = b = max(1, min(self.config.bin_pixels, pixels // 16))
        n = pixels // b * b
        self._threshold_air = self._air[0].copy()
        dark = self._dark[0][:n].reshape(-1, b).sum(axis=1, dtype=np.float32)
        air = self._threshold_air[:n].reshape(-1, b).sum(axis=1, dtype=np.float32)
        self._bin_dark = dark
        self._bin_span = np.maximum(air - dark, 1.0).astype(np.float32)
        self._pixels = pixels

    def _is_air(self, high: npt.NDArray[np.uint16]) -> bool:
        cfg = self.config
        nb = self._bin_dark.shape[0]
        binned = high[: nb * self._bin].reshape(nb, self._bin).sum(axis=1, dtype=np.float32)
        t = (binned - self._bin_dark) / self._bin_span
        k = int(0.9 * (nb - 1))
        reference = min(1.0, max(float(np.partition(t, k)[k]), 1.0 - cfg.max_line_drift))
        objects = int(np.count_nonzero(t < cfg.air_transmission * reference))
        return objects < cfg.min_object_bins

    def _air_drifted(self) -> bool:
        # The segmentation threshold follows the air estimate only in steps, when air has
        # drifted by more than AIR_DRIFT: noise in the running estimate must never move a
        # parcel boundary, because a replayed parcel must get the same first line (scan id).
        span = np.maximum(self._threshold_air - self._dark[0], 1.0)
        drift = float(np.median(np.abs(self._air[0] - self._threshold_air) / span))
        return drift > AIR_DRIFT

    # -- lines -------------------------------------------------------------------------------

    def on_line(self, line: Line, now: datetime) -> list[Output]:
        """Account one line; returns any parcel images it completed."""
        self.stats.lines += 1
        if not self._pixels:
            self.stats.uncalibrated_lines += 1
            return [LinesUncalibrated(1)]
        high = np.frombuffer(line.high, "<u2")
        if high.shape[0] != self._pixels:
            raise AssemblyError(f"LINE of {high.shape[0]} px, calibrated for {self._pixels}")
        channels, calibrated = (2 if line.low else 1), len(self._dark)
        if channels != calibrated:
            # one parcel's lines must stack into one image per energy
            raise AssemblyError(
                f"LINE {line.line_index} has {channels} energy channel(s), "
                f"calibrated for {calibrated}"
            )
        if line.line_index > MAX_LINE_INDEX:
            raise AssemblyError(f"LINE line index {line.line_index} is beyond {MAX_LINE_INDEX}")
        out: list[Output] = []
        index = line.line_index
        last = self._last_index
        if last is not None and index != last + 1:
            if index <= last:
                # The scanner replays from its ring buffer after a reconnect: the open parcel
                # will be rebuilt from the same line indices, so with the same scan id.
                out += self._abandon_open(replay=True)
            elif index - last > self.config.gap_lines:
                # a long hole: what is open cannot be trusted as one image
                out += self._close(now, cut=False)
                self._recent.clear()
                self._air_run = 0
            else:
                self.stats.missing_lines += index - last - 1
        self._last_index = index
        is_air = self._is_air(high)
        parcel = self._parcel
        if is_air:
            self.stats.air_lines += 1
            self._air_run += 1
            if parcel is None and self._air_run >= self.config.air_settle_lines:
                self._reacquire_air(high, line.low)
        else:
            self._air_run = 0
        if parcel is None:
            if is_air:
                self._recent.append((index, line.high, line.low))
                out += self._expire_barcodes(index)
                return out
            parcel = self._parcel = _Parcel(now)
            for i, h, lo in self._recent:
                parcel.indices.append(i)
                parcel.highs.append(h)
                parcel.lows.append(lo)
            self._recent.clear()
        parcel.indices.append(index)
        parcel.highs.append(line.high)
        parcel.lows.append(line.low)
        if is_air:
            parcel.air_run += 1
            if parcel.air_run >= self.config.gap_lines:
                out += self._close(now, cut=False)
        else:
            parcel.air_run = 0
            parcel.object_lines += 1
            # The image spans the index range (missing lines are filled), so that is what is
            # bounded: lines arriving with gaps must not build an image many times max_lines.
            if index - parcel.indices[0] + 1 >= self.config.max_lines:
                out += self._close(now, cut=True)
        return out

    def _reacquire_air(self, high: npt.NDArray[np.uint16], low: bytes) -> None:
        w = np.float32(self.config.air_weight)
        self._air[0] *= 1 - w
        self._air[0] += w * high
        if low and len(self._air) > 1:
            self._air[1] *= 1 - w
            self._air[1] += w * np.frombuffer(low, "<u2")
        self.stats.air_updates += 1
        if self.stats.air_updates % 16 == 0 and self._air_drifted():
            self._update_threshold()
            self.stats.threshold_updates += 1

    def flush(self, now: datetime) -> list[Output]:
        """Close whatever is open (belt emptied for good, or shutdown with the belt stopped)."""
        return self._close(now, cut=False)

    def _abandon_open(self, *, replay: bool) -> list[Output]:
        out: list[Output] = []
        parcel = self._parcel
        # (A continuation opened by a cut holds no line until the next one comes: nothing lost.)
        if parcel is not None and parcel.indices:
            self.stats.fragments += 1
            out.append(FragmentDiscarded(parcel.indices[0], parcel.object_lines, replay))
        self._parcel = None
        self._last_index = None
        self._recent.clear()
        self._air_run = 0
        self._carry_waybill = None
        return out

    def _abandon(self) -> list[Output]:
        """The scanner rebooted: a half parcel from the old boot is reported, not imaged."""
        out = self._abandon_open(replay=False)
        for bc in self._barcodes:
            self.stats.orphan_barcodes += 1
            out.append(OrphanBarcode(bc))
        self._barcodes.clear()
        return out

    def _close(self, now: datetime, *, cut: bool) -> list[Output]:
        parcel = self._parcel
        self._parcel = None
        if parcel is None or not parcel.indices:  # an empty continuation: the cut was the end
            return []
        if not cut:
            keep = len(parcel.indices) - max(0, parcel.air_run - self.config.margin_lines)
            # trailing air beyond the margin becomes the leading margin of the next parcel
            for j in range(
                max(keep, len(parcel.indices) - self.config.margin_lines), len(parcel.indices)
            ):
                self._recent.append((parcel.indices[j], parcel.highs[j], parcel.lows[j]))
            del parcel.indices[keep:], parcel.highs[keep:], parcel.lows[keep:]
        tail_of_cut = parcel.continuation and parcel.object_lines > 0
        if parcel.object_lines < self.config.min_object_lines and not tail_of_cut:
            self.stats.fragments += 1
            if not cut:
                self._carry_waybill = None
            return [FragmentDiscarded(parcel.indices[0], parcel.object_lines)]
        scan = self._image(parcel, cut=cut)
        if not cut:
            self._carry_waybill = None
        out: list[Output] = [scan]
        if cut:
            self._parcel = _Parcel(now, continuation=True)
        out += self._expire_barcodes(parcel.indices[-1])
        return out

    def _image(self, parcel: _Parcel, *, cut: bool) -> ParcelScan:
        hello = self.hello
        pixels = self._dark[0].shape[0]
        first, last = parcel.indices[0], parcel.indices[-1]
        n = last - first + 1
        raw_h = np.frombuffer(b"".join(parcel.highs), "<u2").reshape(-1, pixels)
        two = len(self._air) > 1 and bool(parcel.lows[0])
        raw_l = np.frombuffer(b"".join(parcel.lows), "<u2").reshape(-1, pixels) if two else raw_h
        missing = n - len(parcel.indices)
        if missing:
            # forward-fill lost lines so the image keeps its true length (belt geometry)
            pos = np.asarray(parcel.indices, dtype=np.int64) - first
            src = np.zeros(n, dtype=np.int64)
            src[pos] = np.arange(len(pos))
            has = np.zeros(n, dtype=bool)
            has[pos] = True
            src = np.maximum.accumulate(np.where(has, src, 0))
            raw_h = raw_h[src]
            raw_l = raw_l[src]
        a_high = attenuation(raw_h, self._dark[0], self._air[0])
        a_low = attenuation(raw_l, self._dark[1], self._air[1]) if two else a_high
        waybill, extra = self._bind(first, last, parcel.continuation)
        if cut:
            self._carry_waybill = (waybill, extra)
        self.stats.scans += 1
        self.stats.unbound_scans += waybill is None
        self.stats.truncated_scans += cut
        return ParcelScan(
            device_id=hello.device_id if hello else "unknown",
            boot_id=hello.boot_id if hello else 0,
            first_line=first,
            last_line=last,
            occurred_at=parcel.started_at,
            high=to_u16(a_high),
            low=to_u16(a_low),
            image=pseudo_colour(a_high, a_low),
            waybill_no=waybill,
            extra_waybills=extra,
            truncated=cut,
            continuation=parcel.continuation,
            missing_lines=missing,
        )

    def _bind(
        self, first: int, last: int, continuation: bool
    ) -> tuple[str | None, tuple[str, ...]]:
        if continuation and self._carry_waybill is not None:
            return self._carry_waybill
        cfg = self.config
        lo, hi = first - cfg.barcode_tolerance_lines, last
        matched = [b for b in self._barcodes if lo <= b.line_index + cfg.barcode_offset_lines <= hi]
        if not matched:
            return None, ()
        matched.sort(key=lambda b: abs(b.line_index + cfg.barcode_offset_lines - first))
        self._barcodes = [b for b in self._barcodes if b not in matched]
        waybills = list(dict.fromkeys(b.waybill_no for b in matched))
        return waybills[0], tuple(waybills[1:])

    def _expire_barcodes(self, index: int) -> list[Output]:
        if not self._barcodes:
            return []
        horizon = index - self.config.barcode_horizon_lines
        out: list[Output] = []
        keep: list[Barcode] = []
        for b in self._barcodes:
            if b.line_index + self.config.barcode_offset_lines < horizon:
                self.stats.orphan_barcodes += 1
                out.append(OrphanBarcode(b))
            else:
                keep.append(b)
        self._barcodes = keep
        return out
