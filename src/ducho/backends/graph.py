"""The tensor step of a torch extractor as a module another runtime can replace.

An exportable extractor runs its model through one method, `run_graph(feed)`: named input tensors (token ids, pixel
values, waveforms) in, named raw outputs (layers before pooling) out; its preprocessing before and its pooling after
stay the same whatever runs that step. `graph(names)` gives the same step as an `nn.Module` taking the inputs as
positional tensors in `names` order, which is what `torch.onnx.export` traces (`ducho.onnx_runtime`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class GraphModule(torch.nn.Module):
    """`step(feed) -> {name: tensor}` as a module: positional tensors in, a tuple in `outputs` order out. `model`
    is registered so its weights are the module's (hashed for the cache, embedded by the exporter)."""

    def __init__(self, model: torch.nn.Module, step: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                 inputs: Sequence[str], outputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.step = step
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = self.step(dict(zip(self.inputs, tensors, strict=True)))
        return tuple(values[name] for name in self.outputs)


@dataclass
class Graph:
    """What to export: the module, and per input the axes that vary between batches (axis -> label); every other
    axis is fixed at the first batch's size (e.g. an image model's height and width)."""

    module: GraphModule
    dynamic: dict[str, dict[int, str]]
    facts: dict[str, Any] = field(default_factory=dict)
    """What else decides the graph (e.g. the model class), for the cache key."""
    fusion: dict[str, Any] | None = None
    """ONNX Runtime's transformer fusions for the exported graph (`transformer_fusion`), or None."""


FUSED_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert", "distilbert": "bert",
               "electra": "bert", "vit": "vit"}
"""Transformers model types whose encoder ONNX Runtime's optimizer fuses (attention, embedding and skip LayerNorm,
bias GELU) -> its model_type."""


def transformer_fusion(model: torch.nn.Module) -> dict[str, Any] | None:
    """The fusion settings of a Transformers encoder of a type in FUSED_TYPES (exported with eager attention, whose
    pattern the fusions know), else None."""
    config = getattr(model, "config", None)
    kind = FUSED_TYPES.get(getattr(config, "model_type", ""))
    heads, width = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if kind is None or not heads or not width or not hasattr(model, "set_attn_implementation"):
        return None
    return {"model_type": kind, "num_heads": int(heads), "hidden_size": int(width)}


class Exportable(Protocol):
    """An extractor whose forward runs its model only through `run_graph`."""

    def run_graph(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The torch forward of the model on one model-ready feed: raw outputs by name."""

    def graph(self, inputs: Sequence[str]) -> Graph:
        """`run_graph` as a module for a feed with these input names."""


def on_device(step: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], feed: dict[str, torch.Tensor],
              device: str, precision: str) -> dict[str, torch.Tensor]:
    """`step` on the feed moved to `device`, under the forward numerics (inference mode, autocast)."""
    from ..device import forward_context

    inputs = {name: value.to(device) for name, value in feed.items()}
    with forward_context(device, precision):
        return step(inputs)


def sequence_axes(names: Sequence[str]) -> dict[str, dict[int, str]]:
    """Inputs of shape (batch, steps): tokens or samples vary in both axes."""
    return {name: {0: "batch", 1: "steps"} for name in names}


def batch_axes(names: Sequence[str]) -> dict[str, dict[int, str]]:
    """Inputs whose only varying axis is the batch (images of the crop size, fixed-length audio features)."""
    return {name: {0: "batch"} for name in names}
