"""Decoding raw model outputs into boxes in original image pixels (pure functions).

Two layouts (see docs.ultralytics.com, end2end-detection):
- YOLOv8/11 `[B, 4+nc, N]`: cx, cy, w, h in input pixels, then per-class sigmoid scores; no
  objectness, NMS outside the graph (class-aware here).
- YOLO26 end-to-end `[B, K, 6]`: x1, y1, x2, y2, score, class; already de-duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

from screening.inference.errors import OutputLayoutError
from screening.inference.preprocess import Letterbox

F32 = npt.NDArray[np.float32]


class OutputLayout(StrEnum):
    YOLOV8 = "yolov8"  # [B, 4+nc, N]
    END2END = "end2end"  # [B, K, 6]


@dataclass(frozen=True)
class Box:
    """One detection in original image pixels."""

    class_id: int
    score: float  # 0..1
    x1: float
    y1: float
    x2: float
    y2: float


def detect_layout(shape: tuple[int, ...], num_classes: int | None) -> OutputLayout:
    """Guess the layout from an output shape; with `num_classes`, [B, 4+nc, N] is exact."""
    if len(shape) != 3:
        raise OutputLayoutError(f"expected a 3-D output, got shape {shape}")
    _, a, b = shape
    if num_classes is not None and a == 4 + num_classes:
        return OutputLayout.YOLOV8
    if b == 6 and (num_classes is None or a != 4 + num_classes):
        return OutputLayout.END2END
    if num_classes is None and a > 4 and b > a:
        return OutputLayout.YOLOV8
    raise OutputLayoutError(f"output shape {shape} fits no known layout (nc={num_classes})")


def nms(
    boxes_xyxy: F32, scores: F32, class_ids: npt.NDArray[np.int64], iou: float, max_det: int
) -> npt.NDArray[np.int64]:
    """Class-aware NMS: indices kept, best first."""
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    # Offsetting each class into its own region makes one NMS pass class-aware. The stride is
    # the whole span of the coordinates, so that boxes reaching past the image's edges
    # (negative, or beyond it) of two classes can never meet.
    span = float(boxes_xyxy.max()) - min(float(boxes_xyxy.min()), 0.0) + 1.0
    offset = class_ids.astype(np.float32)[:, None] * span
    b = boxes_xyxy + offset
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    # top_k=0: every candidate takes part. OpenCV's top_k cuts the candidates before the
    # suppression, so with it a crowd of overlapping boxes around one object could push a
    # second, lower-scored object out before the crowd collapsed to one box.
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou, top_k=0)
    idx = np.asarray(keep, np.int64).reshape(-1)
    return idx[np.argsort(-scores[idx], kind="stable")][:max_det]


def decode_yolov8(
    pred: F32, conf: float, iou: float, max_det: int = 300, max_candidates: int = 3000
) -> list[tuple[F32, F32, npt.NDArray[np.int64]]]:
    """[B, 4+nc, N] -> per image (boxes x1y1x2y2 in input px, scores, classes) after NMS.

    Multi-label: every class of an anchor that scores ``conf`` or more is a candidate of its
    own, not only the anchor's best. Verdicts hold each class to its own threshold, so a
    firearm at 0.60 (its threshold 0.535) must not vanish behind a battery at 0.65 on the same
    anchor (its threshold 0.663): the parcel would be judged clear."""
    out = []
    for p in pred:
        p = p.T  # (N, 4+nc)
        anchor, cls = np.nonzero(p[:, 4:] >= conf)
        score = p[anchor, 4 + cls]
        p = p[anchor]
        if len(score) > max_candidates:
            top = np.argpartition(-score, max_candidates)[:max_candidates]
            p, cls, score = p[top], cls[top], score[top]
        xy, wh = p[:, :2], p[:, 2:4]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).astype(np.float32)
        k = nms(boxes, score.astype(np.float32), cls.astype(np.int64), iou, max_det)
        out.append((boxes[k], score[k].astype(np.float32), cls[k].astype(np.int64)))
    return out


def decode_end2end(
    pred: F32, conf: float, max_det: int = 300
) -> list[tuple[F32, F32, npt.NDArray[np.int64]]]:
    """[B, K, 6] -> per image (boxes, scores, classes); thresholded only (no NMS needed)."""
    out = []
    for p in pred:
        p = p[p[:, 4] >= conf]
        p = p[np.argsort(-p[:, 4], kind="stable")][:max_det]
        out.append(
            (p[:, :4].astype(np.float32), p[:, 4].astype(np.float32), p[:, 5].astype(np.int64))
        )
    return out


def postprocess(
    pred: F32,
    letterboxes: list[Letterbox],
    layout: OutputLayout,
    *,
    conf: float,
    iou: float = 0.5,
    max_det: int = 300,
) -> list[list[Box]]:
    """Raw output of a batch -> boxes in each image's original pixels."""
    if pred.shape[0] != len(letterboxes):
        raise OutputLayoutError(f"batch of {pred.shape[0]} outputs for {len(letterboxes)} images")
    decoded = (
        decode_yolov8(pred, conf, iou, max_det)
        if layout is OutputLayout.YOLOV8
        else decode_end2end(pred, conf, max_det)
    )
    result = []
    for (boxes, scores, classes), lb in zip(decoded, letterboxes, strict=True):
        mapped = lb.to_original(boxes)
        result.append(
            [
                Box(int(c), float(s), float(b[0]), float(b[1]), float(b[2]), float(b[3]))
                for b, s, c in zip(mapped, scores, classes, strict=True)
                if b[2] > b[0] and b[3] > b[1]
            ]
        )
    return result
