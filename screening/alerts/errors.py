"""Errors of the flagged-parcel features; each maps to an HTTP status through screening.errors.

ScreeningError
├── InvalidPolicyError        422  invalid_policy
├── ConflictError
│   ├── LeaseLostError        409  lease_lost (the review lease expired or is someone else's)
│   └── AlertClosedError      409  alert_closed
└── NotFoundError
    └── UnknownAlertError     404  unknown_alert, unknown_review_item, unknown_hold, ...
"""

from __future__ import annotations

from typing import Any

from screening.errors import ConflictError, NotFoundError, ScreeningError


class InvalidPolicyError(ScreeningError):
    status = 422
    default_code = "invalid_policy"
    title = "Invalid alert policy"


class LeaseLostError(ConflictError):
    default_code = "lease_lost"


class AlertClosedError(ConflictError):
    default_code = "alert_closed"


class UnknownAlertError(NotFoundError):
    default_code = "unknown_alert"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail, code=code, **extra)
