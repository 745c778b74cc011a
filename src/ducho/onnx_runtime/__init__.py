"""`runtime: onnx | auto` and `quantize: int8` for the torch and transformers backends: the extractor's model step
(`run_graph`) exported once to ONNX (cached), checked against torch on the run's first batch, and run by ONNX
Runtime; the extractor's preprocessing, pooling, batching, writers, resume and failure handling stay the same."""

from .switch import RuntimeSwitch, with_runtime

__all__ = ["RuntimeSwitch", "with_runtime"]
