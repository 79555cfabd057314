"""Alert policy as versioned data: per category, when a scan needs a human and when police hear at
once (pure; no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from screening.alerts.errors import InvalidPolicyError


@dataclass(frozen=True, slots=True)
class CategoryRule:
    """Scores are the detector's 0..1 confidence. ``police`` None: never alert police directly
    (a reviewer's confirmation still does)."""

    review: float
    police: float | None


# Why these numbers: weapons and explosives go to police on a fairly confident detection (a
# missed firearm costs far more than a visit); an organic mass is only "suspicious" in dual-energy
# X-ray, so police hear directly only on a very confident one; lithium batteries are restricted
# goods, not a police matter, so only reviewers see them.
DEFAULT_RULES: dict[str, CategoryRule] = {
    "firearms_and_parts": CategoryRule(review=0.25, police=0.80),
    "ammunition": CategoryRule(review=0.25, police=0.85),
    "explosives": CategoryRule(review=0.25, police=0.80),
    "controlled_knives": CategoryRule(review=0.35, police=0.95),
    "drugs_and_paraphernalia": CategoryRule(review=0.35, police=0.90),
    "compressed_gases": CategoryRule(review=0.40, police=None),
    "flammable_liquids": CategoryRule(review=0.40, police=None),
    "lithium_batteries": CategoryRule(review=0.50, police=None),
}
FALLBACK_RULE = CategoryRule(review=0.50, police=None)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the policy says about one scan's findings."""

    needs_review: bool
    police_category: str | None
    police_score: float | None
    top_category: str | None
    top_score: float | None


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    version: int = 0
    categories: Mapping[str, CategoryRule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    default: CategoryRule = FALLBACK_RULE
    inspection_prohibited_found: bool = True  # a clerk's prohibited_found alerts police
    watchlist: bool = True  # a registration matching the watchlist alerts police

    def rule(self, category: str | None) -> CategoryRule:
        return self.categories.get(category or "", self.default)

    def assess(self, findings: Iterable[Mapping[str, Any]]) -> Assessment:
        """``findings``: dicts with ``category`` and ``score`` (the stored verdict's findings)."""
        needs_review = False
        police: tuple[float, str] | None = None
        top: tuple[float, str] | None = None
        for f in findings:
            category = str(f.get("category") or f.get("class_name") or "unknown")
            score = float(f["score"])
            rule = self.rule(category)
            if top is None or score > top[0]:
                top = (score, category)
            if score >= rule.review:
                needs_review = True
            if (
                rule.police is not None
                and score >= rule.police
                and (police is None or score > police[0])
            ):
                police = (score, category)
        return Assessment(
            needs_review=needs_review,
            police_category=police[1] if police else None,
            police_score=police[0] if police else None,
            top_category=top[1] if top else None,
            top_score=top[0] if top else None,
        )

    def rules_json(self) -> dict[str, Any]:
        def one(r: CategoryRule) -> dict[str, Any]:
            return {"review": r.review, "police": r.police}

        return {
            "categories": {k: one(v) for k, v in sorted(self.categories.items())},
            "default": one(self.default),
            "inspection_prohibited_found": self.inspection_prohibited_found,
            "watchlist": self.watchlist,
        }

    @classmethod
    def from_rules_json(cls, version: int, data: Mapping[str, Any]) -> AlertPolicy:
        """Parse and check stored or uploaded rules; raises InvalidPolicyError."""

        def one(where: str, raw: Any) -> CategoryRule:
            if not isinstance(raw, Mapping):
                raise InvalidPolicyError(f"{where} must be an object")
            review, police = raw.get("review"), raw.get("police")
            if not isinstance(review, int | float) or not 0.0 <= review <= 1.0:
                raise InvalidPolicyError(f"{where}.review must be a score in 0..1")
            if police is not None and (
                not isinstance(police, int | float) or not review <= police <= 1.0
            ):
                raise InvalidPolicyError(f"{where}.police must be null or a score in review..1")
            return CategoryRule(float(review), None if police is None else float(police))

        cats = data.get("categories", {})
        if not isinstance(cats, Mapping):
            raise InvalidPolicyError("categories must be an object")
        default = data.get("default")
        return cls(
            version=version,
            categories={str(k): one(f"categories.{k}", v) for k, v in cats.items()},
            default=FALLBACK_RULE if default is None else one("default", default),
            inspection_prohibited_found=bool(data.get("inspection_prohibited_found", True)),
            watchlist=bool(data.get("watchlist", True)),
        )
