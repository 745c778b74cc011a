"""Keras (TensorFlow) text backend: keras-hub text encoders (BERT, DistilBERT, RoBERTa, ... backbones) from a
built-in preset name (`bert_base_en_uncased`, read from the kagglehub cache), a `kaggle://` or `hf://` handle, or a
local preset folder written by `save_to_preset`.

Layers: `sequence_output` (the backbone's token states), `pooled_output` (BERT's [CLS] dense, where the backbone
has one) and `transformer_layer_N` (the N-th encoder block's token states); token layers are pooled with the
padding mask (`pooling: mean` default, `cls`, `max`, `none`). Every requested layer comes from one forward of a
multi-output `keras.Model` built once. Texts are tokenized by the preset's own tokenizer and packed as keras-hub's
single-segment packer does: start token + ids (truncated to `max_length - 2`) + end token, padded to the longest
text of the batch. Presets load with Keras safe mode on (no code from files); TensorFlow is imported only when a
model is built (`keras_common.import_keras`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.schema import TextModelSpec
from ..errors import ConfigError, ModelNotFoundError, did_you_mean
from ..model_store import file_hashes
from . import keras_common as common
from .base import Layer, filled_rows
from .pooling import pool, to_numpy
from .text_common import PADDING, padded_length

SEQUENCE, POOLED = "sequence_output", "pooled_output"
HIDDEN = re.compile(r"^transformer_layer_(\d+)$")
DEFAULT_POOLING = "mean"
DEFAULT_LIMIT = 512


def import_keras_hub() -> Any:
    common.import_keras()  # torch._dynamo first, GPU memory growth
    import keras_hub

    return keras_hub


def _kaggle_cache(handle: str) -> Path | None:
    """The kagglehub cache copy of a versioned `kaggle://` preset (its config and tokenizer files), else None."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle

    model = parse_model_handle(handle.removeprefix("kaggle://"))
    if model.version is None:  # the latest version is looked up online
        return None
    found = [Cache().load_from_cache(model, file) for file in ("config.json", "tokenizer.json")]
    return Path(found[0]).parent if all(found) else None


def _handle(name: str) -> str:
    """The download handle of a built-in preset name (`kaggle://keras/bert/keras/bert_base_en_uncased/3`)."""
    from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

    return BUILTIN_PRESETS[name]["kaggle_handle"] if name in BUILTIN_PRESETS else name


def preset_folder(name: str) -> Path | None:
    """The local folder a preset loads from: the folder given, or its kagglehub cache copy."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder.resolve()
    handle = _handle(name)
    return _kaggle_cache(handle) if handle.startswith("kaggle://") else None


def check(spec: TextModelSpec) -> str:
    """Where the preset comes from, without building it; ModelNotFoundError when it cannot be loaded offline."""
    name = spec.model_name
    folder = Path(name).expanduser()
    if folder.exists():
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(f"model_name {name!r} is not a keras-hub preset folder (no config.json; write "
                                     "one with backbone.save_to_preset and tokenizer.save_to_preset)")
        return f"keras-hub preset folder: {folder.resolve()}"
    if name.startswith(("/", ".", "~")):
        raise ModelNotFoundError(f"keras-hub preset folder {name!r} does not exist")
    keras_hub = import_keras_hub()
    handle = _handle(name)
    if handle.startswith("kaggle://"):
        cached = _kaggle_cache(handle)
        if cached is not None:
            return f"keras-hub preset {name} (kagglehub cache: {cached})"
        if common.offline():
            raise ModelNotFoundError(f"keras-hub preset {name!r} is not in the kagglehub cache ({handle}) and no "
                                     "download is made while offline; run once online, or give a local preset folder")
        return f"keras-hub preset {name} ({handle}: not cached, kagglehub downloads it)"
    if handle.startswith("hf://"):
        from ..model_store import locate

        return f"keras-hub preset {name} ({locate(handle.removeprefix('hf://')).origin})"
    text = sorted(keras_hub.models.TextClassifierPreprocessor.presets)  # the presets of text encoders
    raise ModelNotFoundError(f"model_name {name!r} is not a keras-hub preset or a preset folder"
                             f"{did_you_mean(name, text)}; text presets include {', '.join(text[:8])}...")


class KerasText:
    """A keras-hub text backbone and its tokenizer; one forward of a multi-output model gives every layer."""

    check = staticmethod(check)
    loader = None  # texts are tokenised per batch in `prepare`

    def __init__(self, spec: TextModelSpec, device: str) -> None:
        self.spec = spec
        self.where = check(spec)
        self.keras_hub = import_keras_hub()
        import tensorflow as tf
        from keras.src.saving.serialization_lib import SafeModeScope

        self.device = common.tf_device(device)
        if spec.tokenizer_name:
            check(spec.model_copy(update={"model_name": spec.tokenizer_name}))
        try:
            with tf.device(self.device):
                with SafeModeScope(True):  # no Lambda code from config.json, even after enable_unsafe_deserialization
                    self.backbone = self.keras_hub.models.Backbone.from_preset(spec.model_name)
                # deserialized in Keras's default safe mode; its vocabulary is then read from the preset's assets,
                # which keras-hub refuses inside an explicit safe-mode scope
                self.tokenizer = self.keras_hub.models.Tokenizer.from_preset(spec.tokenizer_name or spec.model_name)
        except (ValueError, FileNotFoundError) as error:
            raise ConfigError(f"{spec.model_name}: keras-hub cannot load this preset as a text backbone with its "
                              f"tokenizer: {str(error).splitlines()[0][:300]}") from error
        self.inputs = set(self.backbone.input)
        if not {"token_ids", "padding_mask"} <= self.inputs <= {"token_ids", "padding_mask", "segment_ids"}:
            raise ConfigError(f"{spec.model_name}: {type(self.backbone).__name__} takes {sorted(self.inputs)}, "
                              "not token_ids, padding_mask (and segment_ids) as a text encoder does")
        if getattr(self.tokenizer, "sequence_length", None):  # a preset's fixed length: pad per batch instead
            self.tokenizer.sequence_length = None
        self.special = {key: getattr(self.tokenizer, f"{key}_token_id", None) for key in ("start", "end", "pad")}
        if self.special["pad"] is None:
            raise ConfigError(f"{spec.model_name}: its tokenizer has no pad token")
        positions = getattr(self.backbone, "max_sequence_length", None) or DEFAULT_LIMIT
        self.limit = min(spec.max_length or positions, positions)
        self.outputs = self._symbolic_outputs()
        self.layers = self._parse_layers()
        self.names = list(dict.fromkeys(layer.name for layer in self.layers))
        keras = common.import_keras()
        self.extractor = keras.Model(self.backbone.input, [self.outputs[name] for name in self.names])
        # one trace for every batch shape: batches are padded to their own longest text, so their widths vary
        signature = {name: tf.TensorSpec((None, None), tf.int32) for name in self.backbone.input}
        self.graph = common.traced_call(self.extractor, signature)
        self.truncated = 0
        per_record = any(layer.name == POOLED for layer in self.layers)  # a matmul per text: base.MIN_ROWS
        self.batch_rows = filled_rows(spec.batch_size) if per_record else None
        self.model_facts = self._model_facts()  # hashed once: describe() runs for every manifest

    def _symbolic_outputs(self) -> dict[str, Any]:
        """Layer name -> symbolic tensor: the backbone's own outputs and every encoder block's output."""
        output = self.backbone.output
        outputs = dict(output) if isinstance(output, dict) else {SEQUENCE: output}
        blocks = sorted((int(m.group(1)), layer.name) for layer in self.backbone.layers
                        if (m := HIDDEN.match(layer.name)))
        outputs.update({name: self.backbone.get_layer(name).output for _, name in blocks})
        return {name: value for name, value in outputs.items() if name in (SEQUENCE, POOLED) or HIDDEN.match(name)}

    def _parse_layers(self) -> tuple[Layer, ...]:
        pooling = self.spec.pooling or DEFAULT_POOLING
        layers = []
        for folder in self.spec.output_layers or [SEQUENCE]:
            if folder not in self.outputs:
                names = list(self.outputs)
                raise ConfigError(f"output_layers: {folder!r} is not a layer of {self.spec.model_name}"
                                  f"{did_you_mean(folder, names)}; layers: {', '.join(names)}")
            layers.append(Layer(folder, folder, "n/a" if folder == POOLED else pooling))
        return tuple(layers)

    def sort_key(self, payload: str) -> int:
        return padded_length(len(self._rows([payload])[0][0]), self.limit)

    def _rows(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Start + ids + end per text, cut at the limit; and how many texts were cut."""
        start = [self.special["start"]] if self.special["start"] is not None else []
        end = [self.special["end"]] if self.special["end"] is not None else []
        room = self.limit - len(start) - len(end)
        ids = self.tokenizer.tokenize(list(texts))
        ids = [np.asarray(row, dtype=np.int64).tolist() for row in (ids.to_list() if hasattr(ids, "to_list") else ids)]
        return [start + row[:room] + end for row in ids], sum(len(row) > room for row in ids)

    def prepare(self, texts: Sequence[str]) -> dict[str, Any]:
        """Tokenize, add the start/end tokens, truncate to the limit, pad to a multiple of 8 tokens."""
        rows, truncated = self._rows(texts)
        width = padded_length(max(len(row) for row in rows), self.limit)
        token_ids = np.full((len(rows), width), self.special["pad"], dtype=np.int32)
        mask = np.zeros((len(rows), width), dtype=np.int32)
        for i, row in enumerate(rows):
            token_ids[i, :len(row)], mask[i, :len(row)] = row, 1
        inputs = {"token_ids": token_ids, "padding_mask": mask}
        if "segment_ids" in self.inputs:
            inputs["segment_ids"] = np.zeros_like(token_ids)
        return {"inputs": inputs, "truncated": truncated}

    def forward(self, batch: dict[str, Any]) -> dict[str, Sequence[np.ndarray]]:
        import tensorflow as tf

        self.truncated += batch["truncated"]
        with tf.device(self.device):
            outputs = self.graph({name: tf.constant(value) for name, value in batch["inputs"].items()})
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        by_name = {name: torch.from_numpy(np.asarray(value.numpy(), dtype=np.float32)) for name, value in
                   zip(self.names, outputs)}
        mask = torch.from_numpy(batch["inputs"]["padding_mask"])
        return {layer.folder: list(to_numpy(by_name[layer.name] if layer.name == POOLED
                                            else pool(by_name[layer.name], mask, layer.pooling)))
                for layer in self.layers}

    def layer_shapes(self) -> dict[str, tuple[int | None, ...]]:
        """Every layer's per-text output shape with pooling none (None: the text's token count)."""
        return {name: tuple(None if d is None else int(d) for d in value.shape[1:])
                for name, value in self.outputs.items()}

    def _model_facts(self) -> dict[str, Any]:
        folder = preset_folder(self.spec.model_name)
        model: dict[str, Any] = {"requested": self.spec.model_name, "loaded_from": self.where}
        if folder is not None:
            model["file_sha256"] = file_hashes(str(folder))
        return model

    def describe(self) -> dict[str, Any]:
        import tensorflow as tf

        return {
            "model": self.model_facts,
            "tokenizer": self.spec.tokenizer_name or "preset's own",
            "model_class": type(self.backbone).__name__,
            "tokenizer_class": type(self.tokenizer).__name__,
            "capture": "keras.Model(backbone.input, [layer outputs]) in one tf.function (any batch shape)",
            "packing": f"start + ids + end, padded {PADDING}",
            "max_length": self.limit,
            "truncated_texts": self.truncated,
            "keras_hub_version": self.keras_hub.__version__,
            "keras_version": common.import_keras().__version__,
            "tensorflow_version": tf.__version__,
        }
