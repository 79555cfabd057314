"""Renders what a scanner's operator monitor shows: parcels scrolling right to left under a UI.

Used to produce test videos for ``video.VideoSource`` (scanners that only have a monitor output):
a status bar with a running clock on top, a static logo bar at the bottom, a static side panel on
the right, and the pseudo-colour belt image scrolling in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from .colour import RGBArray, pseudo_colour
from .phantoms import ParcelSource, ProceduralSource, make_source


@dataclass(frozen=True, slots=True)
class DisplayLayout:
    width: int = 640
    height: int = 360
    top_bar: int = 28
    bottom_bar: int = 22
    side_panel: int = 48  # on the right: new belt columns appear at its left edge
    fps: float = 25.0
    scroll_px: int = 6  # belt columns per frame

    @property
    def image_rows(self) -> tuple[int, int]:
        return self.top_bar, self.height - self.bottom_bar

    @property
    def image_cols(self) -> tuple[int, int]:
        return 0, self.width - self.side_panel


@dataclass(frozen=True, slots=True)
class RenderedParcel:
    """Where a parcel lies on the belt strip, in display columns."""

    first_column: int
    last_column: int
    labels: tuple[str, ...]


def _strip(
    source: ParcelSource, parcels: int, seed: int, rows: int, pixels: int
) -> tuple[RGBArray, list[RenderedParcel]]:
    rng = np.random.default_rng(seed)
    columns: list[RGBArray] = []
    truth: list[RenderedParcel] = []
    pos = 0
    for n in range(parcels + 1):
        gap = int(rng.integers(50, 90))
        columns.append(np.full((rows, gap, 3), 255, np.uint8))
        pos += gap
        if n == parcels:
            break
        phantom = source.parcel(seed * 7919 + n, pixels)
        a_h = -np.log(np.clip(phantom.t_high, 1e-5, 1.0)).astype(np.float32)
        a_l = -np.log(np.clip(phantom.t_low, 1e-5, 1.0)).astype(np.float32)
        rgb = pseudo_colour(a_h, a_l)  # (lines, pixels, 3)
        # along the belt = display columns; across the belt = display rows
        resized = cv2.resize(
            np.ascontiguousarray(rgb.transpose(1, 0, 2)),
            (rgb.shape[0], rows),
            interpolation=cv2.INTER_AREA,
        )
        img: RGBArray = np.asarray(resized, dtype=np.uint8)
        # trim the phantom's own air so the truth is the object's extent
        dark: npt.NDArray[np.bool_] = np.asarray((img < 235).any(axis=(0, 2)))
        if dark.any():
            lo, hi = int(np.argmax(dark)), int(dark.shape[0] - np.argmax(dark[::-1]))
            img = img[:, lo:hi]
        columns.append(img)
        truth.append(RenderedParcel(pos, pos + img.shape[1] - 1, phantom.labels))
        pos += img.shape[1]
    return np.concatenate(columns, axis=1), truth


def render_frames(
    parcels: int = 4,
    *,
    seed: int = 0,
    source: str | ParcelSource = "procedural",
    layout: DisplayLayout | None = None,
    pixels: int = 160,
) -> tuple[list[npt.NDArray[np.uint8]], list[RenderedParcel]]:
    """BGR frames of the monitor, and where each parcel lies on the strip."""
    lay = layout or DisplayLayout()
    src = ProceduralSource() if source == "procedural" else source
    if isinstance(src, str):
        src = make_source(src)
    r0, r1 = lay.image_rows
    c0, c1 = lay.image_cols
    view = c1 - c0
    strip, truth = _strip(src, parcels, seed, r1 - r0, pixels)
    # the belt starts empty: prepend a screenful of air so the first frame is all white
    strip = np.concatenate([np.full((r1 - r0, view, 3), 255, np.uint8), strip], axis=1)
    truth = [RenderedParcel(p.first_column + view, p.last_column + view, p.labels) for p in truth]
    frames: list[npt.NDArray[np.uint8]] = []
    base = np.zeros((lay.height, lay.width, 3), np.uint8)
    base[:r0] = (60, 50, 40)
    base[r1:] = (40, 40, 40)
    base[r0:r1, c1:] = (90, 90, 90)
    cv2.putText(
        base,
        "VIRTUAL X-RAY 6550",
        (8, lay.height - 6),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (200, 200, 200),
        1,
        cv2.LINE_AA,
    )
    for i, label in enumerate(("ZOOM", "HI", "LO", "OS")):
        cv2.putText(
            base,
            label,
            (c1 + 4, r0 + 30 + 40 * i),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (230, 230, 230),
            1,
            cv2.LINE_AA,
        )
    end = strip.shape[1]
    right = view
    frame_no = 0
    while right <= end:
        frame = base.copy()
        frame[r0:r1, c0:c1] = strip[:, right - view : right, ::-1]  # RGB -> BGR
        seconds = frame_no / lay.fps
        clock = f"SIM-0001  12:{int(seconds) // 60:02d}:{int(seconds) % 60:02d}  #{frame_no:05d}"
        cv2.putText(
            frame,
            clock,
            (8, r0 - 8),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        frames.append(frame)
        right += lay.scroll_px
        frame_no += 1
    return frames, truth


def render_video(
    path: str | Path,
    parcels: int = 4,
    *,
    seed: int = 0,
    source: str | ParcelSource = "procedural",
    layout: DisplayLayout | None = None,
) -> int:
    """Write an MJPG .avi of the scrolling monitor; returns the number of parcels shown."""
    lay = layout or DisplayLayout()
    frames, truth = render_frames(parcels, seed=seed, source=source, layout=lay)
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), lay.fps, (lay.width, lay.height)
    )
    if not writer.isOpened():
        raise OSError(f"cannot open a MJPG writer for {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return len(truth)
