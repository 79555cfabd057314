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


def outcome(encode: Any, value: Any) -> str:
    try:
        return str(encode(value))
    except (TypeError, ValueError) as exc:
        return type(exc).__name__


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers() | st.booleans() | st.none() | st.floats(), JSON_VALUES))
def test_keys_that_are_not_text_come_out_as_the_json_module_writes_them(value: Any) -> None:
    # Turned into text, or a TypeError where keys of different types cannot be sorted.
    assert outcome(canonical_text, value) == outcome(reference, value)


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


def test_on_cpython_the_c_encoder_is_used() -> None:
    assert ingest._CANONICAL_C is not None


def test_without_the_c_encoder_the_text_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = {"b": [1, 2.5, "中", float("inf")], "a": {"d": None, "c": False}}
    fast = canonical_text(payload)
    # As off CPython: no C encoder at all, so JSONEncoder takes its pure-Python path too.
    monkeypatch.setattr(ingest, "_CANONICAL_C", None)
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    assert canonical_text(payload) == fast
    monkeypatch.undo()
    assert fast == reference(payload)


def test_what_json_cannot_encode_fails_as_the_json_module_does() -> None:
    for bad in ({"a": object()}, {1: "x", "b": 2}):
        with pytest.raises(TypeError):
            reference(bad)
        with pytest.raises(TypeError):
            canonical_text(bad)
