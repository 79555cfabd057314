"""A request body validated whole, straight from its JSON text, means what validating each of
its events on its own means; anything not wholly valid is left to the per-event path."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from screening.api.problems import field_errors
from screening.api.schemas import validate_event, validate_whole_body, validation_context
from tests.gateway.events import event, parcel_flow

NOW = datetime(2026, 11, 21, tzinfo=UTC)
CONTEXT = {"now": NOW, "max_future_skew_s": 300.0}


def test_a_valid_batch_gives_the_events_each_would_give_alone() -> None:
    flow = parcel_flow("WH-001", "BV0000000001")
    whole = validate_whole_body(json.dumps(flow, ensure_ascii=False).encode(), CONTEXT, 1000)
    assert whole is not None
    single, events = whole
    assert single is False
    assert events == [validate_event(e, CONTEXT) for e in flow]
    one = validate_whole_body("  \n" + json.dumps(flow[1]), CONTEXT, 1000)  # text, leading space
    assert one == (True, [validate_event(flow[1], CONTEXT)])


@pytest.mark.parametrize(
    "context",
    [CONTEXT, validation_context(NOW, 300.0)],
    ids=["plain", "made"],
)
def test_the_future_bound_is_the_clock_plus_the_skew_whichever_way_the_context_is_made(
    context: dict[str, Any],
) -> None:
    at_bound = _received(occurred_at=(NOW + timedelta(seconds=300)).isoformat())
    assert validate_event(at_bound, context).occurred_at == NOW + timedelta(seconds=300)
    past = _received(occurred_at=(NOW + timedelta(seconds=300, microseconds=1)).isoformat())
    with pytest.raises(ValidationError) as caught:
        validate_event(past, context)
    (error,) = caught.value.errors()
    assert (error["type"], error["loc"]) == ("future_timestamp", ("parcel.received", "occurred_at"))
    assert "300 s in the future (tolerance 300 s)" in error["msg"]


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


def test_a_value_too_deep_to_re_encode_is_an_error_of_the_event_not_a_crash() -> None:
    """The station stream parses a frame one call shallower than validate_event re-encodes
    it: a value just deep enough to parse there must still come back as the event's error."""
    deep: Any = []
    for _ in range(sys.getrecursionlimit() + 100):
        deep = [deep]
    with pytest.raises(ValidationError) as caught:
        validate_event(_received(declared_contents=deep), CONTEXT)
    assert [(e.code, e.path) for e in field_errors(caught.value)] == [("nested_too_deeply", "")]
