"""COCO-style AP and false-alarm thresholds on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import (
    GroundTruth,
    Prediction,
    average_precision,
    map_table,
    threshold_at_false_alarm,
)

BOX = (10.0, 10.0, 50.0, 50.0)


def test_perfect_detections_score_one() -> None:
    gts = [[GroundTruth(0, BOX, 1)], [GroundTruth(1, BOX, 2)]]
    preds = [[Prediction(0, 0.9, BOX)], [Prediction(1, 0.8, BOX)]]
    table = map_table(gts, preds, 2)
    assert table["ap50"].tolist() == [1.0, 1.0]
    assert table["ap50_95"].tolist() == [1.0, 1.0]


def test_false_positive_ranked_first_halves_precision() -> None:
    gts = [[GroundTruth(0, BOX, 1)], []]
    preds = [[Prediction(0, 0.5, BOX)], [Prediction(0, 0.9, BOX)]]
    ap, _, _ = average_precision(gts, preds, 0, 0.5)
    assert ap == pytest.approx(0.5, abs=0.01)


def test_other_occlusion_levels_are_ignored() -> None:
    gts = [[GroundTruth(0, BOX, 1), GroundTruth(0, (100, 100, 140, 140), 3)]]
    preds = [[Prediction(0, 0.9, (100, 100, 140, 140)), Prediction(0, 0.8, BOX)]]
    ap, _, _ = average_precision(gts, preds, 0, 0.5, level=1)
    assert ap == pytest.approx(1.0)


def test_threshold_at_false_alarm_rate() -> None:
    clean = np.linspace(0, 0.99, 100)
    thr = threshold_at_false_alarm(clean, 0.05)
    assert (clean >= thr).mean() <= 0.05
    assert (clean >= thr - 0.011).mean() > 0.05
