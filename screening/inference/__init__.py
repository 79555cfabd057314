"""Model edge of the gateway: decode and letterbox images, run the ONNX detector off the event
loop with micro-batching, decode its output and judge a verdict.

    detector = Detector(DetectorConfig(model_path=DEFAULT_MODEL_PATH))
    await detector.start()
    detections = await detector.detect(png_bytes)
    verdict = judge(detections.boxes, detector.info, site_thresholds)
    await detector.close()
"""

from pathlib import Path

from screening.inference.detector import Detections, Detector, DetectorConfig
from screening.inference.errors import (
    DetectorClosedError,
    ImageDecodeError,
    InferenceError,
    InferenceOverloadedError,
    ModelLoadError,
    OutputLayoutError,
)
from screening.inference.manifest import Category, ModelInfo
from screening.inference.postprocess import Box, OutputLayout
from screening.inference.verdict import Finding, Result, Verdict, judge

# The shipped model (models/xray-detector.onnx) and its manifest beside it.
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[2] / "models" / "xray-detector.onnx"

__all__ = [
    "DEFAULT_MODEL_PATH",
    "Box",
    "Category",
    "Detections",
    "Detector",
    "DetectorClosedError",
    "DetectorConfig",
    "Finding",
    "ImageDecodeError",
    "InferenceError",
    "InferenceOverloadedError",
    "ModelInfo",
    "ModelLoadError",
    "OutputLayout",
    "OutputLayoutError",
    "Result",
    "Verdict",
    "judge",
]
