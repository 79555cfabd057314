"""Model information from our manifest or from Ultralytics ONNX metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from screening.inference import ModelLoadError, OutputLayout
from screening.inference.manifest import load_manifest, parse_manifest, parse_onnx_metadata

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_ultralytics_names_and_imgsz_are_read() -> None:
    info = parse_onnx_metadata({"names": "{0: 'person', 1: 'bicycle'}", "imgsz": "[640, 480]",
                                "stride": "32"}, [1, 3, 640, 480])
    assert info.classes == ("person", "bicycle")
    assert info.input_size == (640, 480)
    assert info.layout is None  # decided from the output shape
    assert info.source == "onnx-metadata"


def test_end2end_export_is_recognised() -> None:
    info = parse_onnx_metadata({"names": "{0: 'a'}", "end2end": "True"}, [1, 3, 320, 320])
    assert info.layout is OutputLayout.END2END
    assert info.input_size == (320, 320)


@pytest.mark.parametrize("meta", [{}, {"names": "{0: 'a'"}, {"names": "{0: 'a'}"}])
def test_unusable_metadata_raises(meta: dict[str, str]) -> None:
    with pytest.raises(ModelLoadError):
        parse_onnx_metadata(meta, [1, 3, "h", "w"])


def test_malformed_manifest_raises() -> None:
    with pytest.raises(ModelLoadError):
        parse_manifest({"format": "parcel-screening/model-manifest@1", "classes": ["a"]})
    with pytest.raises(ModelLoadError):
        parse_manifest({"format": "something-else"})


def test_shipped_manifest_names_every_class_with_a_category() -> None:
    path = MODELS / "xray-detector.json"
    info = load_manifest(path)
    doc = json.loads(path.read_text())
    assert info.layout is OutputLayout.YOLOV8
    assert info.letterbox_value == 114
    assert set(info.categories) == set(info.classes)
    assert all(0 < info.threshold(c) < 1 for c in info.classes)
    assert doc["metrics"]["test"]["map50"] > 0
    assert doc["generator"]["version"]
