"""Export an extractor's graph (`backends.graph.Graph`) to ONNX and quantize it; the cache key of both."""

from __future__ import annotations

import hashlib
import logging
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..backends.graph import Graph
from ..errors import RunAbort

log = logging.getLogger("ducho")

OPSET = 17
LIBRARIES = ("ducho", "torch", "transformers", "onnx", "onnxruntime")
INT8 = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False}
"""Dynamic quantization: weights int8 per output channel, activations uint8 per tensor quantized at run time (ONNX
Runtime's U8S8 kernels); what `quantize: int8` means, part of the cache key. Per channel: all-MiniLM-L6-v2's mean
vectors came 0.988 (mean cosine to fp32) instead of 0.942 per tensor; reduce_range (7-bit weights, against the
saturation of AVX2's u8*s8 instruction) made them worse (0.61 per tensor) on this AVX2 CPU."""


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def key_parts(graph: Graph, feed: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What decides the exported graph: the weights, the layers, every input's dtype and shape (a dynamic axis by
    its label, a fixed one by its size), the opset and the library versions."""
    module = graph.module
    shapes = {name: [graph.dynamic.get(name, {}).get(axis, size) for axis, size in enumerate(feed[name].shape)]
              for name in module.inputs}
    return {"weights": weights_digest(module), "outputs": list(module.outputs), "inputs": shapes,
            "dtypes": {name: str(feed[name].dtype) for name in module.inputs}, "facts": graph.facts,
            "opset": OPSET, "versions": versions(), "format": 1}


def trace_inputs(graph: Graph, feed: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The feed with every dynamic axis one shorter (one longer when it has one step): traced on other sizes than
    the first batch's, a graph that kept a traced size fails the check on the first batch. Shorter, not longer, so
    a text at the model's token limit stays within it."""
    device = next(iter(graph.module.parameters()), torch.empty(0)).device
    tensors = []
    for name in graph.module.inputs:
        value = feed[name]
        for axis in sorted(graph.dynamic.get(name, {})):
            size = value.shape[axis]
            value = value.narrow(axis, 0, size - 1) if size > 1 else torch.cat([value, value], dim=axis)
        tensors.append(value.to(device))
    return tuple(tensors)


def export_graph(graph: Graph, feed: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Export with the TorchScript exporter (the dynamo one needs onnxscript); every output axis is left dynamic."""
    module = graph.module.eval()
    trace = trace_inputs(graph, feed)
    try:
        with torch.inference_mode(False), torch.no_grad():
            outputs = module(*trace)
        axes = {**{name: dict(graph.dynamic.get(name, {})) for name in module.inputs},
                **{name: {axis: f"{name}_{axis}" for axis in range(value.dim())}
                   for name, value in zip(module.outputs, outputs, strict=True)}}
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, trace, str(path), dynamo=False, opset_version=OPSET, do_constant_folding=True,
                              input_names=list(module.inputs), output_names=list(module.outputs), dynamic_axes=axes)
    except Exception as error:
        raise RunAbort(f"runtime onnx: the model could not be exported to ONNX ({type(error).__name__}: "
                       f"{str(error).splitlines()[0][:300]}); use runtime: torch") from error
    return {"exporter": f"torch.onnx TorchScript exporter, opset {OPSET}", "inputs": list(module.inputs),
            "outputs": list(module.outputs), "dynamic_axes": axes}


def quantize_graph(source: Path, path: Path) -> dict[str, Any]:
    """Dynamic int8 quantization (MatMul, Gemm, Conv... weights int8, activations uint8 at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "please run pre-processing" notice goes to the root logger
    try:
        quantize_dynamic(str(source), str(path), weight_type=getattr(QuantType, INT8["weight_type"]),
                         per_channel=INT8["per_channel"], reduce_range=INT8["reduce_range"])
    finally:
        root.setLevel(level)
    return {"quantization": "onnxruntime.quantization.quantize_dynamic", **INT8}
