"""Detection metrics: COCO-style AP (101-point), per class, per occlusion level; parcel-level
detection rate at fixed false-alarm rates on clean parcels. numpy only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


@dataclass(frozen=True)
class GroundTruth:
    cls: int
    box: tuple[float, float, float, float]
    occlusion_level: int


@dataclass(frozen=True)
class Prediction:
    cls: int
    score: float
    box: tuple[float, float, float, float]


def iou_matrix(a: F64, b: F64) -> F64:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return np.asarray(inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9))


def _ap(tp: F64, scores: F64, n_gt: int) -> tuple[float, F64, F64]:
    """101-point interpolated AP (COCO) and the PR curve."""
    if n_gt == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-9)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    pts = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, pts, side="left")
    interp = np.array([envelope[i] if i < len(envelope) else 0.0 for i in idx])
    return float(interp.mean()), recall, precision


def average_precision(
    gts: Sequence[Sequence[GroundTruth]],
    preds: Sequence[Sequence[Prediction]],
    cls: int,
    iou_thr: float,
    level: int | None = None,
) -> tuple[float, F64, F64]:
    """AP of one class at one IoU over images. With `level`, ground truths of other occlusion
    levels are 'ignore' regions: detections matching them count neither way. Unlike COCO's
    area ranges (where a detection has an area of its own), a detection matching nothing has no
    level, so it counts as a false positive at every level: a level with fewer objects reads
    lower for it (models.evaluate.found_by_level compares levels without that bias)."""
    tps, scores, n_gt = [], [], 0
    for g_img, p_img in zip(gts, preds, strict=True):
        g = [x for x in g_img if x.cls == cls]
        p = sorted((x for x in p_img if x.cls == cls), key=lambda x: -x.score)
        ignore = np.array([level is not None and x.occlusion_level != level for x in g], bool)
        n_gt += int((~ignore).sum())
        ious = iou_matrix(np.array([x.box for x in p], float).reshape(-1, 4),
                          np.array([x.box for x in g], float).reshape(-1, 4))
        taken = np.zeros(len(g), bool)
        for i, pr in enumerate(p):
            best, best_j = iou_thr, -1
            # Prefer a real (non-ignored) ground truth, as COCO does.
            for j in np.argsort(ignore, kind="stable"):
                if taken[j] or ious[i, j] < best:
                    continue
                if best_j >= 0 and not ignore[best_j] and ignore[j]:
                    break
                best, best_j = ious[i, j], int(j)
            if best_j >= 0:
                taken[best_j] = True
                if ignore[best_j]:
                    continue
                tps.append(1.0)
            else:
                tps.append(0.0)
            scores.append(pr.score)
    return _ap(np.array(tps), np.array(scores), n_gt)


def map_table(gts: Sequence[Sequence[GroundTruth]], preds: Sequence[Sequence[Prediction]],
              n_classes: int, level: int | None = None) -> dict[str, F64]:
    """AP50 and AP50:95 per class (nan where a class has no ground truth)."""
    ap50 = np.full(n_classes, np.nan)
    ap5095 = np.full(n_classes, np.nan)
    for c in range(n_classes):
        aps = [average_precision(gts, preds, c, float(t), level)[0] for t in IOU_THRESHOLDS]
        ap50[c], ap5095[c] = aps[0], float(np.mean(aps))
    return {"ap50": ap50, "ap50_95": ap5095}


def threshold_at_false_alarm(clean_scores: F64, rate: float) -> float:
    """Smallest alarm threshold with at most `rate` of clean parcels at or above it."""
    s = np.sort(clean_scores)[::-1]
    k = int(np.floor(rate * len(s)))  # this many clean parcels may alarm
    return float(s[k]) + 1e-6 if k < len(s) else 0.0
