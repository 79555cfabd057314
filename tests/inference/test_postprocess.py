"""Output decoders on real onnxruntime sessions of tiny graphs in each layout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from screening.inference import Detector, DetectorConfig, OutputLayout
from screening.inference.errors import ModelLoadError, OutputLayoutError
from screening.inference.postprocess import detect_layout, nms
from tests.inference.onnx_graphs import constant_model, end2end_prediction, yolov8_prediction

SIZE = 64
NAMES = "{0: 'gun', 1: 'knife', 2: 'battery'}"


def png(w: int, h: int) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), 200, np.uint8))[1].tobytes()


async def run(model: Path, data: bytes, **kw: object) -> list[tuple[int, float, list[float]]]:
    det = Detector(DetectorConfig(model_path=model, **kw))  # type: ignore[arg-type]
    await det.start()
    try:
        out = await det.detect(data)
    finally:
        await det.close()
    return [(b.class_id, round(b.score, 3), [round(v, 2) for v in (b.x1, b.y1, b.x2, b.y2)])
            for b in out.boxes]


async def test_yolov8_layout_maps_boxes_back_to_image_pixels(tmp_path: Path) -> None:
    # Image 128 x 64 -> gain 0.5, pad_y 16 in a 64 x 64 input.
    pred = yolov8_prediction(3, 50, [(32, 32, 16, 8, 1, 0.9), (10, 20, 4, 4, 2, 0.6)])
    model = constant_model(tmp_path / "m.onnx", pred, size=SIZE, metadata={"names": NAMES,
                                                                           "imgsz": "[64, 64]"})
    boxes = await run(model, png(128, 64))
    assert boxes == [(1, 0.9, [48.0, 24.0, 80.0, 40.0]), (2, 0.6, [16.0, 4.0, 24.0, 12.0])]


async def test_nms_is_class_aware(tmp_path: Path) -> None:
    same_place = [(32, 32, 20, 20, 0, 0.9), (33, 32, 20, 20, 0, 0.8), (32, 33, 20, 20, 1, 0.7)]
    model = constant_model(tmp_path / "m.onnx", yolov8_prediction(3, 20, same_place), size=SIZE,
                           metadata={"names": NAMES, "imgsz": "64"})
    boxes = await run(model, png(64, 64))
    assert [(c, s) for c, s, _ in boxes] == [(0, 0.9), (1, 0.7)]


async def test_every_class_of_an_anchor_over_the_confidence_is_a_detection(
    tmp_path: Path,
) -> None:
    """A gun at 0.60 must not hide behind a battery at 0.65 on the same anchor: each class is
    held to its own threshold later, and the gun's may be the lower one."""
    pred = yolov8_prediction(3, 20, [(32, 32, 20, 20, 2, 0.65)])
    pred[0, 4 + 0, 0] = 0.60  # the same anchor's gun score
    pred[0, 4 + 1, 0] = 0.04  # and a knife score under the confidence
    model = constant_model(tmp_path / "m.onnx", pred, size=SIZE,
                           metadata={"names": NAMES, "imgsz": "64"})  # fmt: skip
    boxes = await run(model, png(64, 64), conf=0.05)
    assert [(c, s) for c, s, _ in boxes] == [(2, 0.65), (0, 0.6)]
    assert boxes[0][2] == boxes[1][2]  # one box, two classes


async def test_confidence_threshold_drops_weak_boxes(tmp_path: Path) -> None:
    model = constant_model(tmp_path / "m.onnx",
                           yolov8_prediction(3, 20, [(32, 32, 8, 8, 0, 0.04)]), size=SIZE,
                           metadata={"names": NAMES})
    assert await run(model, png(64, 64), conf=0.05) == []


async def test_end2end_layout_is_thresholded_without_nms(tmp_path: Path) -> None:
    rows = [(0, 16, 64, 48, 0.95, 2), (2, 18, 62, 46, 0.85, 2), (10, 20, 12, 22, 0.01, 0)]
    model = constant_model(tmp_path / "m.onnx", end2end_prediction(300, rows), size=SIZE,
                           metadata={"names": NAMES, "imgsz": "[64, 64]", "end2end": "True"})
    boxes = await run(model, png(128, 64))
    assert boxes == [(2, 0.95, [0.0, 0.0, 128.0, 64.0]), (2, 0.85, [4.0, 4.0, 124.0, 60.0])]


async def test_manifest_takes_precedence_over_metadata(tmp_path: Path) -> None:
    model = constant_model(tmp_path / "m.onnx",
                           yolov8_prediction(2, 10, [(32, 32, 8, 8, 1, 0.9)]), size=SIZE)
    (tmp_path / "m.json").write_text(json.dumps({
        "format": "parcel-screening/model-manifest@1", "version": "7.1", "classes": ["a", "b"],
        "input": {"size": [64, 64]}, "output": {"layout": "yolov8"},
    }))
    det = Detector(DetectorConfig(model_path=model))
    await det.start()
    try:
        out = await det.detect(png(64, 64))
        assert det.info.classes == ("a", "b")
        assert out.model_version == "7.1"
    finally:
        await det.close()


def test_layout_detection() -> None:
    assert detect_layout((1, 84, 8400), 80) is OutputLayout.YOLOV8
    assert detect_layout((1, 84, 8400), None) is OutputLayout.YOLOV8
    assert detect_layout((1, 300, 6), 80) is OutputLayout.END2END
    assert detect_layout((1, 6, 300), 2) is OutputLayout.YOLOV8  # 4 + 2 classes
    with pytest.raises(OutputLayoutError):
        detect_layout((1, 7, 5), 80)


def test_nms_keeps_best_first() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    keep = nms(boxes, scores, np.zeros(3, np.int64), 0.5, 10)
    assert keep.tolist() == [1, 2]


def test_boxes_of_two_classes_past_the_image_edges_never_suppress_each_other() -> None:
    """Raw boxes can reach past the input (negative corners): shifting each class by the
    largest coordinate alone then let one class's region overlap the next one's."""
    boxes = np.array([[280, 280, 330, 330], [-50, -50, 0.5, 0.5]], np.float32)
    kept = nms(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int64), 0.5, 10)
    assert kept.tolist() == [0, 1]


def test_a_crowd_of_boxes_around_one_object_does_not_push_out_another_object() -> None:
    """120 overlapping candidates around a battery pack, one knife elsewhere with a lower score:
    with at most 100 detections, the crowd collapses to one box and the knife is kept."""
    crowd = np.array([[10 + i * 0.1, 10, 60 + i * 0.1, 60] for i in range(120)], np.float32)
    knife = np.array([[200, 200, 240, 210]], np.float32)
    boxes = np.concatenate([crowd, knife])
    scores = np.array([0.9] * 120 + [0.7], np.float32)
    classes = np.array([7] * 120 + [1], np.int64)
    kept = nms(boxes, scores, classes, iou=0.5, max_det=100)
    assert sorted(classes[kept].tolist()) == [1, 7]


async def test_a_manifest_layout_the_output_does_not_have_is_refused_at_load(
    tmp_path: Path,
) -> None:
    """A [1, N, 4+nc] export with a manifest saying yolov8 ([1, 4+nc, N]) would decode into
    boxes of classes that do not exist: the model is refused when it loads."""
    transposed = yolov8_prediction(2, 10, [(32, 32, 8, 8, 1, 0.9)]).transpose(0, 2, 1).copy()
    model = constant_model(tmp_path / "m.onnx", transposed, size=SIZE)
    (tmp_path / "m.json").write_text(json.dumps({
        "format": "parcel-screening/model-manifest@1", "version": "7.1", "classes": ["a", "b"],
        "input": {"size": [64, 64]}, "output": {"layout": "yolov8"},
    }))
    det = Detector(DetectorConfig(model_path=model))
    with pytest.raises(ModelLoadError, match=r"not \[batch, 4\+2, N\]"):
        await det.start()
