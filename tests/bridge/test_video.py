"""Video input: parcels recovered from a simulator-rendered monitor recording (MJPG .avi)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import firmware_bridge.app as app_module
from firmware_bridge.app import Bridge
from firmware_bridge.display import DisplayLayout, render_frames, render_video
from firmware_bridge.errors import VideoSourceError
from firmware_bridge.video import VideoSource

from .conftest import bridge_config, wait_until
from .fake_gateway import FakeGateway


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("video") / "monitor.avi"
    _, truth = render_frames(4, seed=1)
    assert render_video(path, 4, seed=1) == 4
    return path, [p.last_column - p.first_column + 1 for p in truth]


def test_mjpg_avi_is_written_and_readable(recording: tuple[Path, list[int]]) -> None:
    cap = cv2.VideoCapture(str(recording[0]))
    ok, frame = cap.read()
    cap.release()
    assert ok
    assert frame.shape == (360, 640, 3)


def test_video_source_recovers_each_parcel_and_masks_the_ui(
    recording: tuple[Path, list[int]],
) -> None:
    path, widths = recording
    source = VideoSource(str(path), source_id="monitor-1", session_id="s1")
    scans = list(source.scans())
    lay = DisplayLayout()
    assert source.roi is not None
    top, bottom, _left, right = source.roi
    # inside the belt image: clear of the clock bar, the logo bar and the side panel
    assert lay.top_bar <= top <= lay.top_bar + 3
    assert lay.height - lay.bottom_bar - 3 <= bottom <= lay.height - lay.bottom_bar
    assert right <= lay.width - lay.side_panel
    assert source.tracker is not None
    assert set(source.tracker.shifts) == {lay.scroll_px}
    assert len(scans) == 4
    for scan, width in zip(scans, widths, strict=True):
        assert scan.line_count == pytest.approx(width + 4, rel=0.12)
        assert scan.image.shape[1] == bottom - top
        edge = scan.image[:2].reshape(-1, 3)
        assert (edge.min(axis=1) > 200).mean() > 0.95  # margins are air
        assert (scan.image.min(axis=2) < 150).any()  # the objects are there
    assert len({s.scan_id for s in scans}) == 4
    assert [s.first_column for s in scans] == sorted(s.first_column for s in scans)


def test_missing_video_is_a_video_source_error(tmp_path: Path) -> None:
    with pytest.raises(VideoSourceError):
        list(VideoSource(str(tmp_path / "none.avi")).scans())


def test_static_screen_never_learns_a_region(tmp_path: Path) -> None:
    path = tmp_path / "still.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (64, 48))
    for _ in range(40):
        writer.write(np.full((48, 64, 3), 255, np.uint8))
    writer.release()
    with pytest.raises(VideoSourceError):
        list(VideoSource(str(path)).scans())


async def test_bridge_uploads_parcels_from_a_monitor_recording(
    recording: tuple[Path, list[int]], gateway: FakeGateway, tmp_path: Path
) -> None:
    path, widths = recording
    config = bridge_config(f"video://{path}", gateway.url, tmp_path / "v.db", holds=False)
    bridge = Bridge(config)
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.scans) == len(widths))
        assert {m["waybill_no"] for m in gateway.scans.values()} == {None}
        assert (await bridge.status())["unbound_scans"] == len(widths)
    finally:
        await bridge.stop()


async def test_a_live_video_source_that_stops_is_reopened_and_counted(
    recording: tuple[Path, list[int]],
    gateway: FakeGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A capture device whose stream ends (a USB glitch) is a fault: reopened with a pause and
    shown in the status, not left recording nothing while the bridge looks healthy. The
    recording stands in for a device here: what it shows after a reopen is new belt, whose
    parcels must not take the ids of earlier ones (and be skipped as replays)."""
    monkeypatch.setattr(app_module, "VIDEO_REOPEN_FIRST_S", 0.05)
    path, widths = recording
    config = bridge_config(f"video://{path}", gateway.url, tmp_path / "v.db", holds=False)
    bridge = Bridge(config)
    assert bridge.video is not None
    assert not bridge.video.live  # a file ends; only a device is reopened
    bridge.video.live = True
    await bridge.start()
    try:
        await wait_until(lambda: bridge.stats.video_reopens >= 2)
        await wait_until(lambda: len(gateway.scans) >= 2 * len(widths))
        status = await bridge.status()
        assert status["video_reopens"] >= 2
        assert status["failed_tasks"] == []
        assert bridge.stats.replays_skipped == 0
    finally:
        await bridge.stop()
