"""A request body validated whole, straight from its JSON text, means what validating each of
its events on its own means; anything not wholly valid is left to the per-event path."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from screening.api.schemas import validate_event, validate_whole_body
from tests.gateway.events import event, parcel_flow

CONTEXT = {"now": datetime(2026, 11, 21, tzinfo=UTC), "max_future_skew_s": 300.0}


def test_a_valid_batch_gives_the_events_each_would_give_alone() -> None:
    flow = parcel_flow("WH-001", "BV0000000001")
    whole = validate_whole_body(json.dumps(flow, ensure_ascii=False).encode(), CONTEXT, 1000)
    assert whole is not None
    single, events = whole
    assert single is False
    assert events == [validate_event(e, CONTEXT) for e in flow]
    one = validate_whole_body("  \n" + json.dumps(flow[1]), CONTEXT, 1000)  # text, leading space
    assert one == (True, [validate_event(flow[1], CONTEXT)])


def _received(**fields: Any) -> dict[str, Any]:
    return event("parcel.received", "WH-001", "BV0000000002", carrier="SF", flow="air", **fields)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps([_received(), _received(weight_g="500")]).encode(),  # one event invalid
        json.dumps(_received(weight_g=True)).encode(),
        b"[]",  # empty: the per-event path answers empty_batch
        json.dumps([_received()] * 3).encode(),  # longer than the limit below
        json.dumps({"type": "ping"}).encode(),  # a station stream's control message
        b'[{"type": "parcel.received", "carrier": "SF\\ud800"}]',  # a lone surrogate
        json.dumps([_received()]).encode("utf-16"),  # valid JSON, not UTF-8
        b"not json",
        b"42",
    ],
)
def test_anything_not_wholly_valid_is_left_to_the_per_event_path(body: bytes) -> None:
    assert validate_whole_body(body, CONTEXT, 2) is None
