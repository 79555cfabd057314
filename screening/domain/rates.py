"""Site rates: what one dispatched parcel adds to its site's daily rollup, and rate arithmetic.

The rollup keeps counters per (site, day, flow). A parcel's status is recomputed whenever one of
its events arrives, even late; the store subtracts the old contribution and adds the new one, so
past days are corrected without rescanning them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date

from screening.domain.compliance import ParcelStatus, Rule


@dataclass(frozen=True, slots=True)
class RateKey:
    day: date
    flow: str


@dataclass(frozen=True, slots=True)
class RateCounts:
    dispatched: int = 0
    realname_ok: int = 0
    inspection_ok: int = 0
    xray_ok: int = 0
    all_ok: int = 0
    xray_required: int = 0

    def __add__(self, other: RateCounts) -> RateCounts:
        return RateCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __neg__(self) -> RateCounts:
        return RateCounts(*(-getattr(self, f.name) for f in fields(self)))

    def __sub__(self, other: RateCounts) -> RateCounts:
        return self + (-other)

    def is_zero(self) -> bool:
        return all(getattr(self, f.name) == 0 for f in fields(self))

    def rate(self, numerator: str) -> float | None:
        """Share of dispatched parcels that hold ``numerator``; None when nothing was dispatched."""
        if self.dispatched == 0:
            return None
        return float(getattr(self, numerator)) / float(self.dispatched)

    def screened_rate(self) -> float | None:
        """Share of the dispatched parcels the site's policy X-rays that met the X-ray rule; None
        when none had to be. ``rate("xray_ok")`` is over every dispatched parcel, and a parcel
        whose flow the policy exempts meets the rule by definition (design.md §2), so it also
        counts parcels that were never to be scanned."""
        if self.xray_required == 0:
            return None
        exempt = self.dispatched - self.xray_required
        return float(self.xray_ok - exempt) / float(self.xray_required)


def contribution(status: ParcelStatus) -> tuple[RateKey, RateCounts] | None:
    """The parcel's counters in the rollup, or None while it has not been dispatched."""
    if status.dispatch_day is None:
        return None
    ok = status.rules_ok
    return (
        RateKey(day=status.dispatch_day, flow=status.rate_bucket),
        RateCounts(
            dispatched=1,
            realname_ok=int(ok[Rule.REALNAME]),
            inspection_ok=int(ok[Rule.INSPECTION]),
            xray_ok=int(ok[Rule.XRAY]),
            all_ok=int(status.compliant),
            xray_required=int(status.xray_required),
        ),
    )


def rollup_delta(
    changes: Iterable[tuple[tuple[RateKey, RateCounts] | None, tuple[RateKey, RateCounts] | None]],
) -> dict[RateKey, RateCounts]:
    """Net counter changes for a batch of (old, new) parcel contributions; zero rows dropped."""
    delta: dict[RateKey, RateCounts] = {}
    for old, new in changes:
        if old is not None:
            delta[old[0]] = delta.get(old[0], RateCounts()) - old[1]
        if new is not None:
            delta[new[0]] = delta.get(new[0], RateCounts()) + new[1]
    return {key: counts for key, counts in delta.items() if not counts.is_zero()}
