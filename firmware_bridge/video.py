"""Parcel images from a scanner's monitor output (capture card or video file) via cv2.VideoCapture.

For scanners that give no line data, only a video of the operator screen: the belt image
scrolls sideways under static UI (status bars, panels, a clock). The source

1. learns the scrolling region: pixels whose change between frames is explained by one
   horizontal shift are belt image; pixels that never change, or change without following the
   shift (the clock), are UI and masked out; the band is then widened through belt-white rows;
2. per frame, measures the shift and takes the newly revealed columns (each one a line);
3. cuts parcels at runs of air (near-white) columns, like the line assembler.

The scan-by-scan logic (``ScrollTracker``, ``ColumnSegmenter``) is pure; ``VideoSource`` owns
the capture.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from .assembler import SCAN_NAMESPACE
from .colour import RGBArray
from .errors import VideoSourceError

Gray = npt.NDArray[np.int16]
BGR = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class VideoConfig:
    max_shift: int = 40  # px per frame; 1 m/s belt on a 1080p screen at 25 fps is ~20 px
    diff_threshold: int = 20  # grey levels; MJPEG/H.264 noise stays well below
    learn_frames: int = 24  # frames with motion used to find the scrolling region
    max_learn_frames: int = 2000  # give up if the belt never moves
    roi: tuple[int, int, int, int] | None = None  # (top, bottom, left, right) to skip learning
    white_level: int = 215  # a pixel this bright in every channel is air
    air_dark_fraction: float = 0.01  # a column with fewer non-white pixels is air
    gap_columns: int = 8
    margin_columns: int = 2
    min_object_columns: int = 4
    max_columns: int = 4000


@dataclass(frozen=True, slots=True, eq=False)
class VideoScan:
    """One parcel cut from the monitor: RGB, lines along axis 0 (like ParcelScan.image)."""

    source_id: str
    session_id: str
    first_column: int
    last_column: int
    image: RGBArray
    occurred_at: datetime
    truncated: bool = False
    waybill_no: str | None = None

    @property
    def scan_id(self) -> str:
        key = f"video:{self.source_id}:{self.session_id}:{self.first_column}"
        return str(uuid.uuid5(SCAN_NAMESPACE, key))

    @property
    def line_count(self) -> int:
        return int(self.image.shape[0])


def _gray(frame: BGR) -> Gray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.int16)


def _best_shift(
    prev: Gray, cur: Gray, max_shift: int, threshold: int, near: int = 0
) -> tuple[int, int]:
    """The shift that explains most changed pixels, and how many it explains.

    With ``near`` (the last shift), neighbours are tried first and accepted when they explain
    most of the change: the belt speed is constant, so the full search is rarely needed.
    """
    changed = np.abs(cur - prev) > threshold
    n_changed = int(changed.sum())
    if n_changed < 20:
        return 0, 0
    width = cur.shape[1]
    if near > 0:
        candidates = range(max(1, near - 2), min(max_shift, width - 1, near + 2) + 1)
        s, n = _search(prev, cur, changed, candidates, threshold)
        if n >= 0.5 * n_changed:
            return s, n
    return _search(prev, cur, changed, range(1, min(max_shift, width - 1) + 1), threshold)


def _search(
    prev: Gray, cur: Gray, changed: npt.NDArray[np.bool_], candidates: range, threshold: int
) -> tuple[int, int]:
    best, best_n = 0, 0
    width = cur.shape[1]
    for s in candidates:
        ok = np.abs(cur[:, : width - s] - prev[:, s:]) <= threshold
        n = int(np.count_nonzero(ok & changed[:, : width - s]))
        if n > best_n:
            best, best_n = s, n
    return best, best_n


def find_scroll_region(frames: list[BGR], config: VideoConfig) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the scrolling belt image, or None without enough motion."""
    grays = [_gray(f) for f in frames]
    h, w = grays[0].shape
    explained = np.zeros((h, w), np.int32)
    unexplained = np.zeros((h, w), np.int32)
    moving = 0
    for prev, cur in itertools.pairwise(grays):
        s, n = _best_shift(prev, cur, config.max_shift, config.diff_threshold)
        if s == 0 or n < 50:
            continue
        moving += 1
        changed = np.abs(cur - prev) > config.diff_threshold
        ok = np.zeros((h, w), bool)
        ok[:, : w - s] = np.abs(cur[:, : w - s] - prev[:, s:]) <= config.diff_threshold
        explained += changed & ok
        unexplained += changed & ~ok
    if moving < 2:
        return None
    content = (explained >= 2) & (explained > 2 * unexplained)
    rows = content.sum(axis=1)
    if rows.max() == 0:
        return None
    top, bottom = _longest_run(rows >= max(2, 0.02 * rows.max()))
    cols = content[top:bottom].sum(axis=0)
    left, right = _longest_run(cols >= max(1, 0.02 * cols.max()))
    # widen through belt-white rows (air above/below the parcels) that never misbehaved
    mean = np.mean([f[:, left:right].min(axis=2) for f in frames], axis=0)
    belt_row = ((mean >= config.white_level).mean(axis=1) >= 0.95) | (
        explained[:, left:right].sum(axis=1) > 0
    )
    belt_row &= unexplained[:, left:right].sum(axis=1) == 0
    while top > 0 and belt_row[top - 1]:
        top -= 1
    while bottom < h and belt_row[bottom]:
        bottom += 1
    # and sideways through belt columns (air not yet reached by the first parcel)
    band = np.mean([f[top:bottom].min(axis=2) for f in frames], axis=0)
    belt_col = ((band >= config.white_level).mean(axis=0) >= 0.95) | (
        explained[top:bottom].sum(axis=0) > 0
    )
    belt_col &= unexplained[top:bottom].sum(axis=0) == 0
    while left > 0 and belt_col[left - 1]:
        left -= 1
    while right < w and belt_col[right]:
        right += 1
    # keep off the borders, where compression smears UI into the image
    return top + 1, bottom - 1, left + 1, right - 1


def _longest_run(mask: npt.NDArray[np.bool_]) -> tuple[int, int]:
    best = (0, 0)
    start = None
    for i, v in enumerate([*mask.tolist(), False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


@dataclass(slots=True)
class ScrollTracker:
    """Frames in, newly revealed belt columns out (RGB, rows x k x 3)."""

    roi: tuple[int, int, int, int]
    config: VideoConfig
    default_shift: int = 0
    _prev: Gray | None = None
    shifts: list[int] = field(default_factory=list)

    def push(self, frame: BGR) -> RGBArray:
        top, bottom, left, right = self.roi
        view = frame[top:bottom, left:right]
        gray = _gray(view[::2])  # every other row is plenty to measure a horizontal shift
        prev, self._prev = self._prev, gray
        if prev is None:
            return np.empty((bottom - top, 0, 3), np.uint8)
        s, n = _best_shift(
            prev, gray, self.config.max_shift, self.config.diff_threshold, self.default_shift
        )
        if n == 0:
            # nothing changed: an empty (white) belt moving, or the belt stopped. The screen
            # cannot tell; a stopped belt adds air, which only lengthens a gap.
            s = self.default_shift
        else:
            self.default_shift = s
        self.shifts.append(s)
        if s == 0:
            return np.empty((bottom - top, 0, 3), np.uint8)
        out = cv2.cvtColor(np.ascontiguousarray(view[:, -s:]), cv2.COLOR_BGR2RGB)
        return np.asarray(out, dtype=np.uint8)


@dataclass(slots=True)
class ColumnSegmenter:
    """Belt columns in, parcels out (cut at runs of air columns)."""

    config: VideoConfig
    source_id: str
    session_id: str
    column: int = 0
    _cols: list[RGBArray] = field(default_factory=list)
    _first: int = 0
    _object: int = 0
    _air_run: int = 0
    _recent: list[RGBArray] = field(default_factory=list)
    _started_at: datetime | None = None

    def push(self, columns: RGBArray, now: datetime) -> list[VideoScan]:
        cfg = self.config
        out: list[VideoScan] = []
        if columns.shape[1] == 0:
            return out
        dark = (columns.min(axis=2) < cfg.white_level).mean(axis=0) >= cfg.air_dark_fraction
        for j in range(columns.shape[1]):
            col = columns[:, j : j + 1]
            is_air = not bool(dark[j])
            index = self.column
            self.column += 1
            if not self._cols:
                if is_air:
                    self._recent = [*self._recent, col][-cfg.margin_columns :]
                    continue
                self._first = index - len(self._recent)
                self._cols = [*self._recent, col]
                self._recent = []
                self._object = 1
                self._air_run = 0
                self._started_at = now
                continue
            self._cols.append(col)
            if is_air:
                self._air_run += 1
                if self._air_run >= cfg.gap_columns:
                    out += self._close(cut=False)
            else:
                self._air_run = 0
                self._object += 1
                if len(self._cols) >= cfg.max_columns:
                    out += self._close(cut=True)
        return out

    def _close(self, *, cut: bool) -> list[VideoScan]:
        cfg = self.config
        cols = self._cols
        if not cut:
            cols = cols[: len(cols) - max(0, self._air_run - cfg.margin_columns)]
        first = self._first
        started = self._started_at or datetime.now(UTC)
        self._cols, self._air_run = [], 0
        objects, self._object = self._object, 0
        if cut:
            self._first = first + len(cols)
        if objects < cfg.min_object_columns and not cut:
            return []
        strip = np.concatenate(cols, axis=1)  # rows x columns x 3
        image = np.ascontiguousarray(strip.transpose(1, 0, 2))
        return [
            VideoScan(
                self.source_id,
                self.session_id,
                first,
                first + image.shape[0] - 1,
                image,
                started,
                truncated=cut,
            )
        ]

    def flush(self) -> list[VideoScan]:
        return self._close(cut=False) if self._cols else []


class VideoSource:
    """Parcels from a capture device (int index) or a video file / stream URL."""

    def __init__(
        self,
        capture: str | int,
        *,
        config: VideoConfig | None = None,
        source_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.capture = capture
        self.config = config or VideoConfig()
        self.source_id = source_id or f"video:{capture}"
        self.session_id = session_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.roi: tuple[int, int, int, int] | None = self.config.roi
        self.frames = 0
        self.tracker: ScrollTracker | None = None
        # A camera or capture device (an index, or a /dev path): it has no end of its own, so
        # its stream ending is a fault to recover from, unlike a recording's last frame.
        self.live = isinstance(capture, int) or str(capture).startswith("/dev/")
        self._columns = 0  # belt columns seen in this session, over every opening
        self._stopping = False

    def stop(self) -> None:
        """Make ``scans()`` return after the current frame (thread-safe)."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _open(self) -> Any:
        cap = cv2.VideoCapture(self.capture)
        if not cap.isOpened():
            raise VideoSourceError(f"cannot open video source {self.capture!r}")
        return cap

    def scans(self) -> Iterator[VideoScan]:
        """Blocking iterator over parcels (run it in a thread next to an event loop)."""
        cfg = self.config
        cap = self._open()
        # Reopened after a stop, the stream does not go on from its last frame: the scroll is
        # measured afresh (the region on the screen, once found, stays).
        self.tracker = None
        start = datetime.now(UTC)
        # Columns count on from the last opening: a parcel's id names its first column, so a
        # parcel after a reopen must not take the id of one before it (and pass for a replay).
        segmenter = ColumnSegmenter(cfg, self.source_id, self.session_id, column=self._columns)
        pending: list[BGR] = []
        try:
            while not self._stopping:
                ok, frame = cap.read()
                if not ok:
                    break
                self.frames += 1
                if self.tracker is None:
                    pending.append(frame)
                    if self.roi is None:
                        recent = pending[-(cfg.learn_frames + 1) :]
                        if len(recent) <= cfg.learn_frames:
                            continue
                        self.roi = find_scroll_region(recent, cfg)
                        if self.roi is None:
                            if len(pending) > cfg.max_learn_frames:
                                raise VideoSourceError("the belt image never scrolled")
                            continue
                    self.tracker = self._tracker(pending)
                    batch, pending = pending, []
                else:
                    batch = [frame]
                for f in batch:
                    millis = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
                    now = start + timedelta(milliseconds=millis)
                    yield from segmenter.push(self.tracker.push(f), now)
            if self.tracker is None and pending and not self._stopping:
                raise VideoSourceError("the belt image never scrolled")
            yield from segmenter.flush()
        finally:
            self._columns = segmenter.column
            cap.release()

    def _tracker(self, frames: list[BGR]) -> ScrollTracker:
        assert self.roi is not None
        probe = ScrollTracker(self.roi, self.config)
        for f in frames:
            probe.push(f)
        moving = [s for s in probe.shifts if s > 0]
        default = int(np.median(moving)) if moving else 0
        return ScrollTracker(self.roi, self.config, default_shift=default)
