"""Errors of the inference edge.

InferenceError
├── ImageDecodeError          the upload is not a decodable image of a supported kind
├── ModelLoadError            the model file or its manifest is unusable
├── OutputLayoutError         the model's output matches no known layout
└── InferenceOverloadedError  the bounded queue is full: answer 503 with Retry-After
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base of all inference errors."""


class ImageDecodeError(InferenceError):
    """The bytes are not a PNG/JPEG (8- or 16-bit) image we can decode."""


class ModelLoadError(InferenceError):
    """The ONNX file or its manifest cannot be used."""


class OutputLayoutError(InferenceError):
    """An output tensor's shape fits neither [B, 4+nc, N] nor [B, K, 6]."""


class InferenceOverloadedError(InferenceError):
    """The detector's queue is full; `retry_after_s` is a hint for the Retry-After header."""

    def __init__(self, queue_size: int, retry_after_s: float) -> None:
        super().__init__(f"inference queue full ({queue_size} waiting)")
        self.queue_size = queue_size
        self.retry_after_s = retry_after_s


class DetectorClosedError(InferenceError):
    """detect() was called on a detector that is not started or already closed."""
