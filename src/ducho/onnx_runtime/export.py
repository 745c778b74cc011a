"""Export an extractor's graph (`backends.graph.Graph`) to ONNX and quantize it; the cache key of both."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backends.graph import Graph
from ..errors import RunAbort

log = logging.getLogger("ducho")

OPSET = 17
LIBRARIES = ("ducho", "torch", "transformers", "onnx", "onnxruntime")
DYNAMIC_INT8 = {"method": "dynamic", "weight_type": "QInt8", "per_channel": True, "reduce_range": False}
"""Transformer graphs: weights int8 per output channel, activations uint8 per tensor quantized at run time (ONNX
Runtime's U8S8 kernels). The embedding tables (Gather) stay fp32: quantized, they cost all-MiniLM-L6-v2 0.005 of
cosine and saved no time. Per channel: its mean vectors came 0.988 instead of 0.942 per tensor; reduce_range (7-bit
weights, against the saturation of AVX2's u8*s8 instruction) gained little (0.9865 -> 0.9875)."""
INT8_RECIPES = (
    {**DYNAMIC_INT8, "op_types": ["MatMul", "Attention"], "fp32": "none"},
    {**DYNAMIC_INT8, "op_types": ["MatMul", "Attention"], "fp32": "after_activation"},
    {**DYNAMIC_INT8, "op_types": ["MatMul"], "fp32": "after_activation"},
)
"""The int8 graphs tried in turn on the first batch, fastest first; the first whose cosine reaches min_cosine runs.
`Attention` is the fused attention (its Q, K, V projections and scores: QAttention); `after_activation` keeps fp32
the MatMuls fed by an activation (a Transformer's FFN output projection, fed by GELU), whose heavy-tailed inputs
uint8 per tensor fits worst. all-MiniLM-L6-v2 (fused graph; min cosine on its longest / shortest batch of 32, time
per batch at 2 threads): 0.985/0.987 at 2.5x torch; 0.994/0.993 at 2.1x; 0.997/0.994 at 1.9x (fp32 graph 1.6x, all
on a machine with other load). BERT-base-sized (random weights): 0.9996 with all of it int8."""
STATIC_INT8 = {"method": "static QDQ", "activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True,
               "calibration": "MinMax on the first batch of the run that quantized it"}
"""Convolution graphs: weights int8 per channel and activations uint8 with ranges calibrated beforehand (QLinearConv,
NHWC kernels). Dynamic quantization there (ConvInteger, activations quantized at run time) ran ResNet-50 4x slower
than fp32; static ran it 2x faster (single-thread CPU time, cosine 0.9998). The graph is calibrated on the first
batch of the run that builds it and reused by later runs (a resumed run keeps its graph); each run checks its own
cosine."""
ACTIVATIONS = frozenset({"Erf", "Gelu", "FastGelu", "BiasGelu", "Tanh", "Sigmoid", "HardSigmoid", "Relu", "Elu",
                         "Softplus", "Mish", "HardSwish"})
WEIGHTED = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})
SHAPE_OPS = frozenset({"Shape", "Size", "Constant", "ConstantOfShape"})
CALIBRATION_CHUNK = 8  # records per calibration forward (the calibration keeps each tensor's min and max only)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy())
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
            "fusion": graph.fusion, "opset": OPSET, "versions": versions(), "format": 2}


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
    """Export with the TorchScript exporter (the dynamo one needs onnxscript); every output axis is left dynamic.
    With `graph.fusion`, exported with eager attention and fused by ONNX Runtime's transformer optimizer."""
    module = graph.module.eval()
    trace = trace_inputs(graph, feed)
    try:
        with torch.inference_mode(False), torch.no_grad(), attention("eager" if graph.fusion else None, module.model):
            outputs = module(*trace)
            axes = {**{name: dict(graph.dynamic.get(name, {})) for name in module.inputs},
                    **{name: {axis: f"{name}_{axis}" for axis in range(value.dim())}
                       for name, value in zip(module.outputs, outputs, strict=True)}}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, trace, str(path), dynamo=False, opset_version=OPSET,
                                  do_constant_folding=True, input_names=list(module.inputs),
                                  output_names=list(module.outputs), dynamic_axes=axes)
    except Exception as error:
        raise RunAbort(f"runtime onnx: the model could not be exported to ONNX ({type(error).__name__}: "
                       f"{str(error).splitlines()[0][:300]}); use runtime: torch") from error
    facts = {"exporter": f"torch.onnx TorchScript exporter, opset {OPSET}", "inputs": list(module.inputs),
             "outputs": list(module.outputs), "dynamic_axes": axes}
    if graph.fusion:
        facts["fusion"] = fuse(path, graph.fusion)
    return facts


@contextlib.contextmanager
def attention(implementation: str | None, model: torch.nn.Module) -> Iterator[None]:
    """The Transformers model with this attention implementation for the block (None: as it is)."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if implementation is None or before is None or before == implementation:
        yield
        return
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def fuse(path: Path, fusion: dict[str, Any]) -> dict[str, Any]:
    """ONNX Runtime's transformer optimizer on the graph, in place (its Python fusions only: the session applies
    ONNX Runtime's own when it loads the graph). Fused Attention, EmbedLayerNormalization, SkipLayerNormalization and
    BiasGelu ran all-MiniLM-L6-v2 1.28x faster than the plain graph (2 threads; 1.0-1.06x torch before), and its
    int8 graph 1.1-1.2x; the sdpa attention Transformers exports by default is not fused, hence eager. A graph the
    optimizer fails on is kept as exported (the facts say why)."""
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = logging.getLogger("onnxruntime.transformers")  # its per-fusion notices
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        optimized = optimize_model(str(path), opt_level=0, **fusion)
        fused = {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
        optimized.save_model_to_file(str(path))
    except Exception as error:  # the plain graph stays; the check on the first batch judges it as any other
        log.warning("runtime onnx: ONNX Runtime's transformer optimizer failed (%s: %s); the graph stays unfused",
                    type(error).__name__, str(error).splitlines()[0][:200])
        return {**fusion, "failed": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    finally:
        quiet.setLevel(level)
    return {**fusion, "fused": fused}


def int8_recipes(path: Path) -> tuple[dict[str, Any], ...]:
    """The int8 recipes to try for a graph: static for a convolution network (more Conv than MatMul/Gemm nodes),
    else the dynamic ladder."""
    import onnx

    ops = [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]
    convolutions = sum(op in ("Conv", "ConvTranspose") for op in ops)
    return (STATIC_INT8,) if convolutions > sum(op in ("MatMul", "Gemm") for op in ops) else INT8_RECIPES


def after_activation(model: Any, depth: int = 6) -> list[str]:
    """The MatMul nodes whose data input comes from an activation function: walking back from the input through at
    most `depth` nodes that carry no weights (reshapes, the GELU formula's own Mul/Add/Div), an activation is met."""
    producers = {output: node for node in model.graph.node for output in node.output}
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        frontier, seen = [node.input[0]], set()
        for _ in range(depth):
            step = []
            for name in frontier:
                source = producers.get(name)
                if source is None or id(source) in seen or source.op_type in WEIGHTED | SHAPE_OPS:
                    continue
                seen.add(id(source))
                if source.op_type in ACTIVATIONS:
                    found.append(node.name)
                    step = []
                    break
                step.extend(source.input)
            frontier = step
            if not frontier:
                break
    return found


def quantize_graph(source: Path, path: Path, recipe: dict[str, Any], feeds: list[dict[str, np.ndarray]],
                   ) -> dict[str, Any]:
    """The int8 graph of `recipe` (INT8_RECIPES, STATIC_INT8); `feeds`: the first batch's inputs, to calibrate."""
    from onnxruntime.quantization import QuantType

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "please run pre-processing" notice goes to the root logger
    try:
        if recipe["method"] == "dynamic":
            return _dynamic(source, path, recipe, QuantType)
        return _static(source, path, recipe, feeds, QuantType)
    finally:
        root.setLevel(level)


def _dynamic(source: Path, path: Path, recipe: dict[str, Any], types: Any) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    fp32 = after_activation(onnx.load(str(source), load_external_data=False)) \
        if recipe["fp32"] == "after_activation" else []
    quantize_dynamic(str(source), str(path), weight_type=getattr(types, recipe["weight_type"]),
                     per_channel=recipe["per_channel"], reduce_range=recipe["reduce_range"],
                     op_types_to_quantize=list(recipe["op_types"]), nodes_to_exclude=fp32,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fused ops' outputs: no type
    return {"quantization": "onnxruntime.quantization.quantize_dynamic", **recipe, "fp32_nodes": len(fp32)}


def _static(source: Path, path: Path, recipe: dict[str, Any], feeds: list[dict[str, np.ndarray]],
            types: Any) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    chunks = [{name: value[start:start + CALIBRATION_CHUNK] for name, value in feed.items()}
              for feed in feeds for start in range(0, len(next(iter(feed.values()))), CALIBRATION_CHUNK)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(chunks)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.pending, None)

    quantize_static(str(source), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=recipe["per_channel"],
                    activation_type=getattr(types, recipe["activation_type"]),
                    weight_type=getattr(types, recipe["weight_type"]))
    records = sum(len(next(iter(feed.values()))) for feed in feeds)
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    return {"quantization": "onnxruntime.quantization.quantize_static", **recipe, "calibration_records": records,
            "calibration_sha256": digest.hexdigest()}
