"""The onnxruntime session, run off the event loop with a bounded queue and micro-batching.

One worker thread owns the session. `detect()` decodes and letterboxes the image in the loop's
default executor (so preprocessing of one image overlaps inference of another), puts it on a
bounded queue and awaits a future; the worker takes the first waiting image, then keeps
collecting for up to `max_wait_ms` or until `max_batch` images, runs them as one batch, decodes
the output and resolves the futures.
A full queue raises `InferenceOverloadedError` at once (the HTTP layer answers 503 with
Retry-After) instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from screening.inference.errors import (
    DetectorClosedError,
    InferenceError,
    InferenceOverloadedError,
    ModelLoadError,
)
from screening.inference.manifest import (
    ModelInfo,
    file_sha256,
    load_manifest,
    manifest_path_for,
    parse_onnx_metadata,
)
from screening.inference.postprocess import Box, OutputLayout, detect_layout, postprocess
from screening.inference.preprocess import Letterbox, decode_image, prepare, to_tensor


@dataclass(frozen=True)
class DetectorConfig:
    model_path: Path
    manifest_path: Path | None = None  # default: the model's path with `.json`, if it exists
    intra_op_threads: int = 1  # 0 = onnxruntime's default (all physical cores)
    allow_spinning: bool = False  # spinning burns idle CPU that the gateway shares
    max_batch: int = 4
    max_wait_ms: float = 5.0
    queue_size: int = 32
    # Images decoded at once (off the loop, in executor threads): each holds its full-size
    # pixels, up to hundreds of MB for a large 16-bit frame. Others wait for a slot; images
    # waiting or decoding count towards queue_size with the queued ones.
    max_decoding: int = 8
    conf: float = 0.05  # candidates below this never leave the detector
    iou: float = 0.5  # class-aware NMS overlap
    max_det: int = 100
    retry_after_s: float = 1.0
    verify_sha256: bool = True


@dataclass(frozen=True)
class Detections:
    """Boxes for one image, in its own pixels, with the model that produced them."""

    boxes: tuple[Box, ...]
    width: int
    height: int
    model_version: str
    batch_size: int  # how many images shared the session run
    inference_ms: float  # session.run time of that batch


def create_session(config: DetectorConfig) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = config.intra_op_threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if config.allow_spinning else "0"
    )
    try:
        return ort.InferenceSession(
            str(config.model_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(f"cannot load {config.model_path}: {e}") from e


def load_model_info(config: DetectorConfig, session: ort.InferenceSession) -> ModelInfo:
    path = config.manifest_path or manifest_path_for(config.model_path)
    if path.exists():
        info = load_manifest(path)
        if config.verify_sha256 and info.sha256 and info.sha256 != file_sha256(config.model_path):
            raise ModelLoadError(f"{config.model_path} does not match the sha256 in {path}")
    else:
        meta = session.get_modelmeta().custom_metadata_map
        info = parse_onnx_metadata(meta, list(session.get_inputs()[0].shape))
    _check_output(info, list(session.get_outputs()[0].shape), path)
    return info


def _check_output(info: ModelInfo, shape: list[Any], source: Path) -> None:
    """A layout named by the manifest is taken without looking at the output, so its static
    dimensions are checked here, once: a [B, N, 4+nc] export read as [B, 4+nc, N] would give
    boxes of classes that do not exist, judged against default thresholds."""
    if len(shape) != 3:
        raise ModelLoadError(f"output of rank {len(shape)}; expected [batch, ., .]")
    nc = len(info.classes)
    if info.layout is OutputLayout.YOLOV8 and isinstance(shape[1], int) and shape[1] != 4 + nc:
        raise ModelLoadError(
            f"output {shape} is not [batch, 4+{nc}, N] for the {nc} classes of {source.name}"
        )
    if info.layout is OutputLayout.END2END and isinstance(shape[2], int) and shape[2] != 6:
        raise ModelLoadError(f"output {shape} is not the end-to-end [batch, K, 6]")


@dataclass
class _Job:
    image: np.ndarray  # letterboxed RGB
    letterbox: Letterbox
    future: asyncio.Future[Detections]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class Detector:
    """Async front of one onnxruntime session. Use `await start()`, `await detect(bytes)`,
    `await close()`."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._queue: queue.Queue[_Job | object] = queue.Queue(maxsize=config.queue_size)
        self._thread: threading.Thread | None = None
        self._session: ort.InferenceSession | None = None
        self._info: ModelInfo | None = None
        self._layout: OutputLayout | None = None
        self._max_batch = config.max_batch
        self._closed = False
        self._admitted = 0  # images waiting to decode or decoding, not yet queued
        self._decode_slots = asyncio.Semaphore(max(1, config.max_decoding))

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise DetectorClosedError("detector not started")
        return self._info

    async def start(self) -> None:
        """Load the session (in a thread: it takes a while) and start the worker."""
        if self._thread is not None:
            return
        self._session, self._info = await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def _load(self) -> tuple[ort.InferenceSession, ModelInfo]:
        session = create_session(self.config)
        info = load_model_info(self.config, session)
        self._layout = info.layout
        batch_dim = session.get_inputs()[0].shape[0]
        if isinstance(batch_dim, int):  # a static batch size (often 1) caps micro-batching
            self._max_batch = min(self._max_batch, batch_dim)
        return session, info

    async def close(self) -> None:
        """Stop the worker; images still queued fail with DetectorClosedError."""
        self._closed = True
        if self._thread is None:
            return
        await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job):
                _resolve(job, DetectorClosedError("detector closed"))

    async def detect(self, image_bytes: bytes) -> Detections:
        """Detections for one encoded image. Raises InferenceOverloadedError when the queue is
        full, ImageDecodeError for a bad image."""
        self.check_admission()
        async with self.decoding():
            image, lb = await asyncio.to_thread(self.prepare, image_bytes)
        if self._closed:  # closed while decoding: no worker would ever take the job
            raise DetectorClosedError("detector closed")
        loop = asyncio.get_running_loop()
        job = _Job(image, lb, loop.create_future(), loop)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise InferenceOverloadedError(self._queue.qsize(), self.config.retry_after_s) from None
        return await job.future

    def check_admission(self) -> None:
        """Raises DetectorClosedError when not running, InferenceOverloadedError when a new
        image would not be taken now: shed load before spending CPU and memory on decoding."""
        if self._closed or self._thread is None:
            raise DetectorClosedError("detector not running")
        if self._queue.qsize() + self._admitted >= self.config.queue_size:
            raise InferenceOverloadedError(self._queue.qsize(), self.config.retry_after_s)

    @contextlib.asynccontextmanager
    async def decoding(self) -> AsyncIterator[None]:
        """One of the ``max_decoding`` slots for holding a full-size image (this detector's
        decode, or a caller's own, such as colourising a raw pair), counted as admitted."""
        self._admitted += 1  # (on the event loop: no other thread counts)
        try:
            async with self._decode_slots:
                yield
        finally:
            self._admitted -= 1

    def prepare(self, image_bytes: bytes) -> tuple[np.ndarray, Letterbox]:
        """Decode and letterbox as this model expects (pure; any thread)."""
        info = self.info
        return prepare(decode_image(image_bytes), info.input_size,
                       crop_to_content=info.crop_to_content, pad_value=info.letterbox_value)

    def queue_depth(self) -> int:
        return self._queue.qsize()

    # --- worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.config.max_wait_ms / 1000.0
            stop = False
            while len(batch) < self._max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = (
                        self._queue.get(timeout=max(remaining, 0.0))
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._process([j for j in batch if isinstance(j, _Job)])
            if stop:
                return

    def _process(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        info = self.info
        try:
            boxes, ms = self.run_prepared([j.image for j in jobs], [j.letterbox for j in jobs])
        except InferenceError as e:
            for job in jobs:
                _resolve(job, e)
            return
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors are untyped; fail the batch
            for job in jobs:
                _resolve(job, InferenceError(f"inference failed: {e}"))
            return
        for job, b in zip(jobs, boxes, strict=True):
            lb = job.letterbox
            _resolve(job, Detections(tuple(b), lb.width, lb.height, info.version, len(jobs), ms))

    def run_prepared(
        self, images: list[np.ndarray], letterboxes: list[Letterbox]
    ) -> tuple[list[list[Box]], float]:
        """Synchronous core: letterboxed RGB images -> boxes per image (also for evaluation)."""
        if self._session is None:
            raise DetectorClosedError("detector not started")
        info = self.info
        inp = self._session.get_inputs()[0].name
        x = to_tensor(images, info.scale)
        t0 = time.perf_counter()
        outputs: list[Any] = self._session.run(None, {inp: x})
        ms = (time.perf_counter() - t0) * 1000.0
        pred = np.asarray(outputs[0], np.float32)
        if self._layout is None:
            self._layout = detect_layout(tuple(pred.shape), len(info.classes))
        result = postprocess(
            pred,
            letterboxes,
            self._layout,
            conf=self.config.conf,
            iou=self.config.iou,
            max_det=self.config.max_det,
        )
        return result, ms

    def load_sync(self) -> None:
        """Load the session without a worker thread (offline evaluation, benchmarks)."""
        self._session, self._info = self._load()


def _resolve(job: _Job, outcome: Detections | BaseException) -> None:
    def apply() -> None:
        if job.future.done():
            return
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody is waiting
        job.loop.call_soon_threadsafe(apply)
