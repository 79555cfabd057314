"""X-ray detector: synthetic dual-energy data, training, evaluation and the shipped ONNX model."""
