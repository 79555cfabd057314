"""Who may do what: roles, a principal's site scope, and the permission table."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    STATION = "station"
    REVIEWER = "reviewer"
    SUPERVISOR = "supervisor"
    POLICE = "police"
    ADMIN = "admin"


class Permission(StrEnum):
    WRITE_EVENTS = "write_events"
    READ_PARCELS = "read_parcels"
    READ_RATES = "read_rates"
    READ_VIOLATIONS = "read_violations"
    # Flagged parcels (screening.alerts).
    REVIEW_SCANS = "review_scans"
    READ_REVIEW_STATS = "read_review_stats"
    READ_ALERTS = "read_alerts"
    HANDLE_ALERTS = "handle_alerts"
    READ_IDENTITY = "read_identity"  # the alerts service also insists on the police role
    MANAGE_WATCHLIST = "manage_watchlist"
    MANAGE_ALERTING = "manage_alerting"  # endpoints, dead letters, policy, reviewer levels
    READ_HOLDS = "read_holds"
    CLOSE_HOLDS = "close_holds"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.STATION: frozenset(
        {
            Permission.WRITE_EVENTS,
            Permission.READ_PARCELS,
            Permission.READ_RATES,
            Permission.READ_VIOLATIONS,
            Permission.READ_HOLDS,
        }
    ),
    Role.REVIEWER: frozenset({Permission.READ_PARCELS, Permission.REVIEW_SCANS}),
    Role.SUPERVISOR: frozenset(
        {
            Permission.READ_PARCELS,
            Permission.READ_RATES,
            Permission.READ_VIOLATIONS,
            Permission.READ_ALERTS,
            Permission.READ_HOLDS,
            Permission.READ_REVIEW_STATS,
        }
    ),
    Role.POLICE: frozenset(
        {
            Permission.READ_PARCELS,
            Permission.READ_RATES,
            Permission.READ_VIOLATIONS,
            Permission.READ_ALERTS,
            Permission.HANDLE_ALERTS,
            Permission.READ_IDENTITY,
            Permission.MANAGE_WATCHLIST,
            Permission.READ_HOLDS,
            Permission.CLOSE_HOLDS,
        }
    ),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated API key: its role and the sites it may act on (None: every site)."""

    key_id: str
    role: Role
    sites: frozenset[str] | None

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    def covers(self, site_id: str) -> bool:
        return self.sites is None or site_id in self.sites
