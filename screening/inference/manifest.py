"""What the gateway needs to know about a model: classes, categories, input, output layout.

Read from our manifest JSON (models/xray-detector.json) when there is one, else from the ONNX
metadata an Ultralytics export carries (`names`, `imgsz`), so any such export runs as-is.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from screening.inference.errors import ModelLoadError
from screening.inference.postprocess import OutputLayout
from screening.inference.preprocess import LETTERBOX_VALUE

MANIFEST_FORMAT = "parcel-screening/model-manifest@1"
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Category:
    """A class's place in the prohibited-items catalogue."""

    code: str  # e.g. "firearms_and_parts"
    zh: str = ""
    catalogue_no: int | None = None
    alert: str = ""  # what an alert says, e.g. "suspicious organic mass"


@dataclass(frozen=True)
class ModelInfo:
    version: str
    classes: tuple[str, ...]
    input_size: tuple[int, int]  # (h, w)
    layout: OutputLayout | None = None  # None: detect from the output shape
    scale: float = 1.0 / 255.0
    letterbox_value: int = LETTERBOX_VALUE
    crop_to_content: bool = False  # crop near-white air around the parcel before letterboxing
    categories: Mapping[str, Category] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    default_threshold: float = DEFAULT_THRESHOLD
    sha256: str | None = None
    source: str = "manifest"  # or "onnx-metadata"

    def category(self, class_name: str) -> Category:
        return self.categories.get(class_name, Category(code=class_name, alert=class_name))

    def threshold(self, class_name: str) -> float:
        return self.thresholds.get(class_name, self.default_threshold)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_manifest(doc: Mapping[str, Any]) -> ModelInfo:
    """Our manifest document -> ModelInfo (raises ModelLoadError on a malformed one)."""
    try:
        if doc.get("format") != MANIFEST_FORMAT:
            raise ModelLoadError(f"unknown manifest format {doc.get('format')!r}")
        inp, out = doc["input"], doc["output"]
        cats = {
            name: Category(
                c["category"], c.get("zh", ""), c.get("catalogue_no"), c.get("alert", name)
            )
            for name, c in doc.get("categories", {}).items()
        }
        thr = doc.get("thresholds", {})
        return ModelInfo(
            version=str(doc["version"]),
            classes=tuple(doc["classes"]),
            input_size=(int(inp["size"][0]), int(inp["size"][1])),
            layout=OutputLayout(out["layout"]),
            scale=float(inp.get("scale", 1.0 / 255.0)),
            letterbox_value=int(inp.get("letterbox_value", LETTERBOX_VALUE)),
            crop_to_content=bool(inp.get("crop_to_content", False)),
            categories=cats,
            thresholds={k: float(v) for k, v in thr.get("per_class", {}).items()},
            default_threshold=float(thr.get("default", DEFAULT_THRESHOLD)),
            sha256=doc.get("sha256"),
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelLoadError(f"malformed manifest: {e}") from e


def parse_onnx_metadata(meta: Mapping[str, str], input_shape: list[Any]) -> ModelInfo:
    """Ultralytics export metadata (`names` as a Python dict literal, `imgsz`) -> ModelInfo."""
    if "names" not in meta:
        raise ModelLoadError("no manifest and no `names` in the ONNX metadata")
    try:
        names = ast.literal_eval(meta["names"])
        classes = (
            tuple(str(names[i]) for i in sorted(names))
            if isinstance(names, dict)
            else tuple(str(n) for n in names)
        )
    except (ValueError, SyntaxError, TypeError) as e:
        raise ModelLoadError(f"unreadable `names` metadata: {e}") from e
    size: tuple[int, int] | None = None
    if "imgsz" in meta:
        try:
            sz = ast.literal_eval(meta["imgsz"])
            size = (int(sz[0]), int(sz[1])) if isinstance(sz, list | tuple) else (int(sz), int(sz))
        except (ValueError, SyntaxError, TypeError, IndexError) as e:
            raise ModelLoadError(f"unreadable `imgsz` metadata: {e}") from e
    if size is None:
        if len(input_shape) == 4 and all(isinstance(d, int) for d in input_shape[2:]):
            size = (int(input_shape[2]), int(input_shape[3]))
        else:
            raise ModelLoadError("input size unknown: no `imgsz` metadata and dynamic H, W")
    layout = OutputLayout.END2END if meta.get("end2end", "").lower() == "true" else None
    return ModelInfo(
        version=meta.get("version", "unknown"),
        classes=classes,
        input_size=size,
        layout=layout,
        source="onnx-metadata",
    )


def load_manifest(path: Path) -> ModelInfo:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read manifest {path}: {e}") from e
    return parse_manifest(doc)


def manifest_path_for(model_path: Path) -> Path:
    """Our convention: the manifest sits next to the model, same stem, `.json`."""
    return model_path.with_suffix(".json")
