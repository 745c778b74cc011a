"""Transformers text backend: any AutoModel (or the task variant the user names) from a hub id or a folder."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config.schema import TextModelSpec
from ..errors import ConfigError, bad_value
from ..model_store import locate
from .base import Layer, filled_rows
from .graph import Graph, GraphModule, on_device, sequence_axes, transformer_fusion
from .pooling import pool, to_numpy
from .text_common import count_truncated, padded_width, token_limit

log = logging.getLogger("ducho")

TOKEN_LAYERS = ("last_hidden_state",)
VECTOR_LAYERS = ("pooler_output", "logits")
HIDDEN = re.compile(r"^hidden_states\.(-?\d+)$")
DEFAULT_LAYER = "last_hidden_state"
DEFAULT_POOLING = "mean"


def token_level(name: str) -> bool:
    """A layer of one vector per token (pooled here), not one per text (pooler, logits)."""
    return name in TOKEN_LAYERS or HIDDEN.match(name) is not None


def model_class(task: str | None) -> Any:
    """The Auto class for `task`: a pipeline task name ('sentiment-analysis'), an Auto class name, or AutoModel."""
    import transformers
    from transformers.pipelines import SUPPORTED_TASKS, TASK_ALIASES

    if task is None or task == "feature-extraction":
        return transformers.AutoModel
    if task.startswith("Auto") and hasattr(transformers, task):
        return getattr(transformers, task)
    name = TASK_ALIASES.get(task, task)
    if name in SUPPORTED_TASKS and SUPPORTED_TASKS[name].get("pt"):
        return SUPPORTED_TASKS[name]["pt"][0]
    accepted = sorted(set(SUPPORTED_TASKS) | set(TASK_ALIASES))
    raise bad_value("task", task, accepted + ["AutoModel...class name"])


def parse_layers(spec: TextModelSpec, num_hidden: int | None) -> tuple[Layer, ...]:
    """Resolve the config's layer names; a bare integer is the 1.0 spelling for the pooled output."""
    pooling = spec.pooling or DEFAULT_POOLING
    layers = []
    for folder in spec.output_layers or [DEFAULT_LAYER]:
        match = HIDDEN.match(folder)
        if folder.lstrip("-").isdigit():
            log.info("output_layers %s (1.0 layer index) -> pooler_output", folder)
            layers.append(Layer(folder, "pooler_output"))
        elif match:
            index = int(match.group(1))
            if num_hidden is not None and not -num_hidden <= index < num_hidden:
                raise ConfigError(f"output_layers: {folder!r} is out of range; the model has {num_hidden} "
                                  f"hidden states (hidden_states.0 .. hidden_states.{num_hidden - 1}, or negative)")
            layers.append(Layer(folder, folder, pooling))
        elif folder in TOKEN_LAYERS:
            layers.append(Layer(folder, folder, pooling))
        elif folder in VECTOR_LAYERS:
            layers.append(Layer(folder, folder))
        else:
            raise bad_value("output_layers", folder, [*TOKEN_LAYERS, *VECTOR_LAYERS, "hidden_states.N", "N (1.0)"],
                            what="layer")
    return tuple(layers)


class TransformersText:
    """A Hugging Face text model; one forward gives every requested layer."""

    loader = None  # texts are tokenised per batch in `prepare`

    def __init__(self, spec: TextModelSpec, device: str) -> None:
        from transformers import AutoTokenizer

        self.spec = spec
        self.device = device
        self.location = locate(spec.model_name, spec.revision)
        self.tokenizer_location = locate(spec.tokenizer_name) if spec.tokenizer_name else self.location
        trust = spec.trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_location.target, trust_remote_code=trust,
                                                       revision=self.tokenizer_location.revision)
        self.model = model_class(spec.task).from_pretrained(self.location.target, trust_remote_code=trust,
                                                             revision=self.location.revision)
        self.model.eval().to(device)
        self.base = self.model.base_model
        num_hidden = getattr(self.model.config, "num_hidden_layers", None)
        self.layers = parse_layers(spec, num_hidden + 1 if num_hidden is not None else None)
        self.limit = token_limit(self.tokenizer, self.model.config, spec.max_length)
        self.need_hidden = any(HIDDEN.match(layer.name) for layer in self.layers)
        self.names = sorted({layer.name for layer in self.layers})
        self.truncated = 0
        per_record = any(not token_level(layer.name) for layer in self.layers)  # pooler, logits: base.MIN_ROWS
        self.batch_rows = filled_rows(spec.batch_size) if per_record else None
        self._check_outputs()

    def _check_outputs(self) -> None:
        names = {layer.name for layer in self.layers}
        if "pooler_output" in names and getattr(self.base, "pooler", True) is None:
            raise ConfigError(f"output_layers: {self.spec.model_name} has no pooler; use last_hidden_state "
                              "with pooling: cls|mean|max")
        if "logits" in names and self.base is self.model:
            raise ConfigError(f"output_layers: 'logits' needs a task model (task: e.g. sentiment-analysis); "
                              f"{self.spec.model_name} was loaded as {type(self.model).__name__}")

    def sort_key(self, payload: str) -> int:
        return padded_width(self.tokenizer, [payload], self.limit)

    def prepare(self, texts: Sequence[str]) -> dict[str, Any]:
        width = padded_width(self.tokenizer, texts, self.limit)
        encoded = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=width,
                                 return_tensors="pt")
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        return {"inputs": encoded, "truncated": count_truncated(self.tokenizer, texts, lengths, self.limit)}

    def forward(self, batch: dict[str, Any]) -> dict[str, Sequence[np.ndarray]]:
        self.truncated += batch["truncated"]
        raw = self.run_graph(dict(batch["inputs"]))
        mask = batch["inputs"]["attention_mask"].to(self.device)
        result: dict[str, Sequence[np.ndarray]] = {}
        for layer in self.layers:
            value = raw[layer.name]
            result[layer.folder] = to_numpy(pool(value, mask, layer.pooling) if token_level(layer.name) else value)
        return result

    def run_graph(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The requested layers' raw outputs (tokens before pooling) for a tokenised batch."""
        return on_device(self._raw, feed, self.device, self.spec.precision)

    def _raw(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        captured: dict[str, Any] = {}
        hook = None
        if self.base is not self.model:  # task model: the base model's own outputs, captured in the same pass
            hook = self.base.register_forward_hook(lambda _m, _i, out: captured.setdefault("base", out))
        try:
            out = self.model(**inputs, output_hidden_states=self.need_hidden, return_dict=True)
        finally:
            if hook is not None:
                hook.remove()
        base = captured.get("base", out)
        return {name: self._layer(name, out, base) for name in self.names}

    @staticmethod
    def _layer(name: str, out: Any, base: Any) -> torch.Tensor:
        match = HIDDEN.match(name)
        if match:
            return out.hidden_states[int(match.group(1))]
        return out.logits if name == "logits" else getattr(base, name)

    def graph(self, inputs: Sequence[str]) -> Graph:
        return Graph(GraphModule(self.model, self._raw, inputs, self.names), sequence_axes(inputs),
                     {"model_class": type(self.model).__name__}, transformer_fusion(self.model))

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.location.describe(),
            "tokenizer": self.tokenizer_location.describe() if self.spec.tokenizer_name else "model's own",
            "model_class": type(self.model).__name__,
            "task": self.spec.task,
            "max_length": self.limit,
            "truncated_texts": self.truncated,
        }
