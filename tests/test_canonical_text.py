"""The canonical JSON text events are digested as: the json module's sorted, compact output.

Stored payload digests were made from it, so any change to a single character would turn every
resend of an older event into a conflict."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.services import ingest
from screening.services.ingest import canonical_text

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities too: compared as text
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


def reference(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_canonical_text_is_the_json_modules_sorted_compact_text(value: Any) -> None:
    assert canonical_text(value) == reference(value)


def test_an_event_payload_keeps_its_text() -> None:
    payload = {
        "type": "xray.scanned",
        "waybill_no": "SF1234567890",
        "detections": [{"score": 1e-05, "label": "刀具", "box": [0.5, 2.0, 10, 20]}],
        "sender": None,
        "ok": True,
        "quote": 'a"\\\u2028\x00',
    }
    assert canonical_text(payload) == (
        '{"detections":[{"box":[0.5,2.0,10,20],"label":"刀具","score":1e-05}],"ok":true,'
        '"quote":"a\\"\\\\\u2028\\u0000","sender":null,"type":"xray.scanned",'
        '"waybill_no":"SF1234567890"}'
    )


def test_without_the_c_encoder_the_text_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = {"b": [1, 2.5, "中"], "a": {"d": None, "c": False}}
    fast = canonical_text(payload)
    monkeypatch.setattr(ingest, "_CANONICAL_C", None)
    assert canonical_text(payload) == fast == reference(payload)


def test_what_json_cannot_encode_fails_as_the_json_module_does() -> None:
    for bad in ({"a": object()}, {1: "x", "b": 2}):
        with pytest.raises(TypeError):
            reference(bad)
        with pytest.raises(TypeError):
            canonical_text(bad)
