"""The detector off the event loop: micro-batching, overload, bad images, shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from screening.inference import (
    DetectorClosedError,
    ImageDecodeError,
    InferenceOverloadedError,
)
from screening.inference.detector import Detector, DetectorConfig
from tests.inference.onnx_graphs import constant_model, yolov8_prediction


def png(w: int, h: int) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), 200, np.uint8))[1].tobytes()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    pred = yolov8_prediction(2, 20, [(32, 32, 16, 16, 0, 0.9)])
    return constant_model(tmp_path / "m.onnx", pred, metadata={"names": "{0: 'a', 1: 'b'}",
                                                               "imgsz": "64"})


def until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait in a plain thread until `condition` holds (polled every millisecond)."""
    tick = threading.Event()
    for _ in range(int(timeout * 1000)):
        if condition():
            return True
        tick.wait(0.001)
    return False


def hold_worker(det: Detector) -> tuple[threading.Event, threading.Event]:
    """Make the worker signal `entered` and wait for `release` before each batch."""
    entered, release = threading.Event(), threading.Event()
    original = det._process

    def gated(jobs: list) -> None:  # type: ignore[type-arg]
        entered.set()
        release.wait(10)
        original(jobs)

    det._process = gated  # type: ignore[method-assign]
    return entered, release


async def test_concurrent_images_share_one_session_run(model: Path) -> None:
    det = Detector(DetectorConfig(model_path=model, max_batch=4, max_wait_ms=500))
    await det.start()
    try:
        sizes = [(64, 64), (128, 64), (64, 128), (32, 32)]
        results = await asyncio.gather(*(det.detect(png(w, h)) for w, h in sizes))
        assert [r.batch_size for r in results] == [4, 4, 4, 4]
        # Each image's box is mapped through its own letterbox.
        assert [(r.width, r.height) for r in results] == sizes
        assert [round(r.boxes[0].x1) for r in results] == [24, 48, 16, 12]
    finally:
        await det.close()


async def test_batch_never_exceeds_max_batch(model: Path) -> None:
    det = Detector(DetectorConfig(model_path=model, max_batch=2, max_wait_ms=200))
    await det.start()
    try:
        results = await asyncio.gather(*(det.detect(png(64, 64)) for _ in range(5)))
        assert max(r.batch_size for r in results) == 2
    finally:
        await det.close()


async def test_full_queue_raises_overloaded(model: Path) -> None:
    det = Detector(DetectorConfig(model_path=model, queue_size=2, max_batch=1,
                                  retry_after_s=3.0))
    await det.start()
    entered, release = hold_worker(det)
    try:
        first = asyncio.ensure_future(det.detect(png(64, 64)))
        assert await asyncio.to_thread(entered.wait, 10)  # the worker holds it, queue empty
        queued = [asyncio.ensure_future(det.detect(png(64, 64))) for _ in range(2)]
        # detect() decodes in a worker thread before queueing: wait until both are queued.
        assert await asyncio.to_thread(until, lambda: det.queue_depth() == 2)
        with pytest.raises(InferenceOverloadedError) as err:
            await det.detect(png(64, 64))
        assert err.value.retry_after_s == 3.0
        release.set()
        done = await asyncio.gather(first, *queued)
        assert all(d.boxes for d in done)
    finally:
        release.set()
        await det.close()


async def test_bad_image_fails_alone_in_its_batch(model: Path) -> None:
    det = Detector(DetectorConfig(model_path=model, max_batch=4, max_wait_ms=300))
    await det.start()
    try:
        good, bad = await asyncio.gather(det.detect(png(64, 64)), det.detect(b"garbage"),
                                         return_exceptions=True)
        assert not isinstance(good, BaseException)
        assert good.boxes
        assert isinstance(bad, ImageDecodeError)
    finally:
        await det.close()


async def test_closed_detector_refuses_work(model: Path) -> None:
    det = Detector(DetectorConfig(model_path=model))
    await det.start()
    await det.close()
    with pytest.raises(DetectorClosedError):
        await det.detect(png(64, 64))


async def test_an_image_still_decoding_when_the_detector_closes_is_answered(model: Path) -> None:
    """The worker is gone once close() returns: a job queued after it would wait for ever."""
    det = Detector(DetectorConfig(model_path=model))
    await det.start()
    decoding, finish = threading.Event(), threading.Event()
    original = det.prepare

    def slow_prepare(data: bytes) -> object:
        decoding.set()
        finish.wait(10)
        return original(data)

    det.prepare = slow_prepare  # type: ignore[assignment,method-assign]
    pending = asyncio.ensure_future(det.detect(png(64, 64)))
    await asyncio.to_thread(decoding.wait, 10)
    await det.close()
    finish.set()
    with pytest.raises(DetectorClosedError):
        await asyncio.wait_for(pending, 5)


async def test_at_most_max_decoding_uploads_decode_at_once_and_the_rest_wait(
    model: Path,
) -> None:
    """Each decode holds a full-size image: past max_decoding an upload waits for a slot; the
    queue bound counts it while it waits, so a burst past queue_size is still shed."""
    det = Detector(DetectorConfig(model_path=model, max_decoding=2, queue_size=3,
                                  retry_after_s=2.0))
    await det.start()
    started, finish = threading.Semaphore(0), threading.Event()
    original = det.prepare
    running = 0
    most = 0
    lock = threading.Lock()

    def slow_prepare(data: bytes) -> object:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        started.release()
        finish.wait(10)
        with lock:
            running -= 1
        return original(data)

    det.prepare = slow_prepare  # type: ignore[assignment,method-assign]
    try:
        admitted = [asyncio.ensure_future(det.detect(png(64, 64))) for _ in range(3)]
        for _ in range(2):
            assert await asyncio.to_thread(started.acquire, True, 10)
        await asyncio.sleep(0.1)
        assert most == 2  # the third waits for a slot
        with pytest.raises(InferenceOverloadedError) as err:  # a fourth: past queue_size
            await det.detect(png(64, 64))
        assert err.value.retry_after_s == 2.0
        finish.set()
        assert all(d.boxes for d in await asyncio.gather(*admitted))
        assert most == 2
    finally:
        finish.set()
        await det.close()
