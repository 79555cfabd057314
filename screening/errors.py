"""Errors the gateway answers with; each carries a stable machine-readable code and HTTP status.

    ScreeningError                      (500 internal)
    ├── BadRequestError                 400  malformed_json, invalid_body, invalid_query, ...
    ├── AuthenticationError             401  missing_credentials, invalid_api_key
    ├── ForbiddenError                  403  forbidden_role, forbidden_site
    ├── NotFoundError                   404  not_found, unknown_site, unknown_parcel
    ├── ConflictError                   409  ambiguous_waybill, conflict
    ├── PayloadTooLargeError            413  body_too_large, too_many_events
    ├── InvalidEventError               422  per-field validation failures (with a list of errors)
    └── ServiceUnavailableError         503  database_unavailable, overloaded (with Retry-After)

The HTTP edge turns these into ``application/problem+json`` bodies (RFC 9457).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class FieldError:
    """One validation failure: a stable code and the path of the offending field."""

    code: str
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}


class ScreeningError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.extra = extra


class BadRequestError(ScreeningError):
    status = 400
    default_code = "bad_request"
    title = "Bad request"


class AuthenticationError(ScreeningError):
    status = 401
    default_code = "invalid_api_key"
    title = "Authentication required"


class ForbiddenError(ScreeningError):
    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class NotFoundError(ScreeningError):
    status = 404
    default_code = "not_found"
    title = "Not found"


class ConflictError(ScreeningError):
    status = 409
    default_code = "conflict"
    title = "Conflict"


class PayloadTooLargeError(ScreeningError):
    status = 413
    default_code = "body_too_large"
    title = "Payload too large"


class InvalidEventError(ScreeningError):
    status = 422
    default_code = "invalid_event"
    title = "Invalid event"

    def __init__(self, detail: str, errors: list[FieldError], *, code: str | None = None) -> None:
        super().__init__(detail, code=code or (errors[0].code if errors else None))
        self.errors = errors


class ServiceUnavailableError(ScreeningError):
    status = 503
    default_code = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, code: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(detail, code=code)
        self.retry_after_s = retry_after_s
