"""Verdict: detections against per-class thresholds -> `clear` or `flagged` (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from screening.inference.manifest import ModelInfo
from screening.inference.postprocess import Box


class Result(StrEnum):
    CLEAR = "clear"
    FLAGGED = "flagged"


@dataclass(frozen=True)
class Finding:
    """A detection at or above its class threshold, named by catalogue category."""

    class_name: str
    category: str
    alert: str  # human wording, e.g. "suspicious organic mass" (never "drug identified")
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    threshold: float


@dataclass(frozen=True)
class Verdict:
    result: Result
    findings: tuple[Finding, ...]
    model_version: str
    max_scores: Mapping[str, float]  # best score per class, flagged or not (for audit)


def judge(
    boxes: Sequence[Box], info: ModelInfo, thresholds: Mapping[str, float] | None = None
) -> Verdict:
    """Flag when any box reaches its class threshold. `thresholds` (a site's policy) override
    the model's per-class defaults class by class."""
    policy = thresholds or {}
    findings = []
    best: dict[str, float] = {}
    for b in boxes:
        name = (
            info.classes[b.class_id]
            if 0 <= b.class_id < len(info.classes)
            else f"class_{b.class_id}"
        )
        best[name] = max(best.get(name, 0.0), b.score)
        limit = policy.get(name, info.threshold(name))
        if b.score >= limit:
            cat = info.category(name)
            findings.append(
                Finding(name, cat.code, cat.alert or name, b.score, (b.x1, b.y1, b.x2, b.y2), limit)
            )
    findings.sort(key=lambda f: -f.score)
    return Verdict(
        Result.FLAGGED if findings else Result.CLEAR, tuple(findings), info.version, best
    )
