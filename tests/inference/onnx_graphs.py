"""Tiny ONNX models with known outputs, built with onnx.helper, for real onnxruntime sessions.

The output ignores the pixels (multiplied by zero) but keeps the input's batch dimension, so a
batch of B images yields B copies of the constant prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def constant_model(path: Path, prediction: np.ndarray, *, size: int = 64,
                   metadata: dict[str, str] | None = None, batch: int | str = "batch") -> Path:
    """A model whose output is `prediction` (shape [1, ...], 3-D) for every image."""
    pred = prediction.astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Reshape", ["m", "shape"], ["m3"]),
        helper.make_node("Mul", ["m3", "zero"], ["z"]),
        helper.make_node("Add", ["z", "pred"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape"),
        numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "zero"),
        numpy_helper.from_array(pred, "pred"),
    ]
    graph = helper.make_graph(
        nodes, "constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                       [batch, pred.shape[1], pred.shape[2]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def yolov8_prediction(nc: int, n: int, boxes: list[tuple[float, float, float, float, int, float]]
                      ) -> np.ndarray:
    """[1, 4+nc, n]: the given (cx, cy, w, h, class, score) columns first, the rest empty."""
    p = np.zeros((1, 4 + nc, n), np.float32)
    p[0, 2:4] = 1.0  # 1-px boxes with zero score elsewhere
    for i, (cx, cy, w, h, c, s) in enumerate(boxes):
        p[0, :4, i] = (cx, cy, w, h)
        p[0, 4 + c, i] = s
    return p


def end2end_prediction(k: int, rows: list[tuple[float, float, float, float, float, int]]
                       ) -> np.ndarray:
    """[1, k, 6]: (x1, y1, x2, y2, score, class) rows first, zero-score padding after."""
    p = np.zeros((1, k, 6), np.float32)
    for i, r in enumerate(rows):
        p[0, i] = r
    return p
