"""Builders of valid wire events for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from stdnum.iso7064 import mod_11_2

from screening.domain.identity import DocumentType

BASE = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai


def resident_id(body17: str = "11010519491231002") -> str:
    return body17 + mod_11_2.calc_check_digit(body17)


def event(
    kind: str, site: str, waybill: str, at: datetime | None = None, **fields: Any
) -> dict[str, Any]:
    return {
        "type": kind,
        "event_id": str(uuid.uuid4()),
        "site_id": site,
        "waybill_no": waybill,
        "occurred_at": (at or BASE).isoformat(),
        **fields,
    }


def parcel_flow(
    site: str,
    waybill: str,
    *,
    start: datetime = BASE,
    flow: str = "inter_province",
    skip: frozenset[str] = frozenset(),
    seal_first: bool = False,
    inspection_result: str = "pass",
    verdict: str = "clear",
) -> list[dict[str, Any]]:
    """A complete parcel life: received, real name, inspection, seal, X-ray, dispatch."""
    t = [start + timedelta(minutes=i) for i in range(6)]
    out = [event("parcel.received", site, waybill, t[0], carrier="SF", flow=flow)]
    if "realname" not in skip:
        out.append(
            event(
                "realname.registered",
                site,
                waybill,
                t[1],
                sender={
                    "document_type": DocumentType.resident_id.value,
                    "document_number": resident_id(),
                    "name": "张三",
                    "phone": "13812345678",
                },
            )
        )
    inspect_at, seal_at = (t[3], t[2]) if seal_first else (t[2], t[3])
    if "inspection" not in skip:
        out.append(
            event(
                "inspection.completed",
                site,
                waybill,
                inspect_at,
                clerk_id="c1",
                result=inspection_result,
            )
        )
    if "seal" not in skip:
        out.append(event("parcel.sealed", site, waybill, seal_at, clerk_id="c1"))
    if "xray" not in skip:
        out.append(event("xray.scanned", site, waybill, t[4], scanner_id="x1", verdict=verdict))
    if "dispatch" not in skip:
        out.append(event("parcel.dispatched", site, waybill, t[5], carrier="SF"))
    return out
