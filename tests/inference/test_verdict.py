"""Verdicts: per-class thresholds, site overrides, categories and the model version."""

from __future__ import annotations

from screening.inference import Box, Category, ModelInfo, Result, judge

INFO = ModelInfo(
    version="1.2.3",
    classes=("firearm", "organic_mass"),
    input_size=(256, 256),
    categories={"organic_mass": Category("drugs_and_paraphernalia", "毒品及吸毒工具", 12,
                                         "suspicious organic mass")},
    thresholds={"firearm": 0.3, "organic_mass": 0.6},
)


def box(cls: int, score: float) -> Box:
    return Box(cls, score, 1.0, 2.0, 30.0, 40.0)


def test_nothing_above_threshold_is_clear() -> None:
    v = judge([box(0, 0.29), box(1, 0.59)], INFO)
    assert v.result is Result.CLEAR
    assert v.findings == ()
    assert v.model_version == "1.2.3"
    assert v.max_scores == {"firearm": 0.29, "organic_mass": 0.59}


def test_a_box_at_its_class_threshold_flags_with_category_and_wording() -> None:
    v = judge([box(1, 0.6), box(0, 0.1)], INFO)
    assert v.result is Result.FLAGGED
    (f,) = v.findings
    assert f.class_name == "organic_mass"
    assert f.category == "drugs_and_paraphernalia"
    assert f.alert == "suspicious organic mass"
    assert f.box == (1.0, 2.0, 30.0, 40.0)


def test_site_policy_overrides_model_thresholds() -> None:
    assert judge([box(0, 0.5)], INFO, {"firearm": 0.9}).result is Result.CLEAR
    assert judge([box(1, 0.2)], INFO, {"organic_mass": 0.15}).result is Result.FLAGGED


def test_findings_are_ordered_by_score_and_unknown_classes_are_named() -> None:
    v = judge([box(0, 0.4), box(0, 0.9), box(5, 0.99)], INFO)
    assert [f.score for f in v.findings] == [0.99, 0.9, 0.4]
    assert v.findings[0].class_name == "class_5"
