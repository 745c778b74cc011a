"""Transformers audio backend: an AutoModel audio encoder (wav2vec2, HuBERT, WavLM, AST, Whisper's encoder, CLAP's
audio tower...) with its feature extractor, from a hub id or a folder.

Each window goes through the feature extractor alone (Whisper's is padded to its 30 s chunk, AST's to its
`max_length` frames, CLAP's repeat-padded to its `max_length_s`), and windows with equal input shapes are stacked.
Extractors with a fixed input length set the default window to that length and refuse a longer `window_seconds`
(they would silently truncate it).

Whisper's padding is left out of pooling: a window of n samples fills m = ceil(n / hop_length) mel frames (the
extractor's attention mask), and the encoder keeps (m - 1) // 2 + 1 of its frames (its stride-2 convolution); the
frames after those are cut. wav2vec2-style masks are mapped the same way (`_get_feat_extract_output_lengths`). AST's
and CLAP's padding has no mask and stays part of the window.

Layers: `last_hidden_state`, `hidden_states.N` (frames, pooled over the frames of all windows of a record;
(batch, C, F, T) maps like CLAP's become T frames of C*F), `pooler_output` (the encoder's vector per window) and
`audio_embeds` (the model's `get_audio_features`, e.g. CLAP's projected, normalised embedding); vector layers are
averaged over windows weighted by window length.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config.schema import AudioModelSpec
from ..errors import ConfigError, bad_value
from ..media.audio import AudioLoader
from ..model_store import locate
from .audio_common import (
    as_tensors,
    audio_pooling,
    channels_first_frames,
    dummy_wave,
    make_windows,
    preprocessing,
    run_windows,
    windowing,
)
from .base import Layer
from .graph import Graph, GraphModule, batch_axes, on_device, sequence_axes
from .hf_text import model_class

log = logging.getLogger("ducho")

HIDDEN = re.compile(r"^hidden_states\.(-?\d+)$")
LAST = "last_hidden_state"
POOLER = "pooler_output"
EMBEDS = "audio_embeds"
DEFAULT_WINDOW = 10.0


def audio_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The part that encodes audio: Whisper-like encoder-decoders give their encoder, CLAP its audio tower."""
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    if hasattr(model, "audio_model"):
        return model.audio_model
    return model


def fixed_window(extractor: Any, sample_rate: int) -> float | None:
    """Seconds an extractor pads or truncates every input to: Whisper's chunk, CLAP's `max_length_s`, AST's
    `max_length` frames of 10 ms; None when inputs keep their length."""
    if getattr(extractor, "n_samples", None):
        return extractor.n_samples / sample_rate
    if getattr(extractor, "nb_max_samples", None):
        return extractor.nb_max_samples / sample_rate
    if type(extractor).__name__ == "ASTFeatureExtractor":
        return extractor.max_length / 100.0
    return None


def default_window(extractor: Any, sample_rate: int) -> float | None:
    """The extractor's fixed input length, otherwise 10 s."""
    return fixed_window(extractor, sample_rate) or DEFAULT_WINDOW


class TransformersAudio:
    """A Hugging Face audio encoder; one forward per sub-batch of windows gives every requested layer."""

    def __init__(self, spec: AudioModelSpec, device: str) -> None:
        from transformers import AutoFeatureExtractor

        self.spec = spec
        self.device = device
        self.location = locate(spec.model_name, spec.revision)
        self.fe_location = locate(spec.feature_extractor_name) if spec.feature_extractor_name else self.location
        trust = spec.trust_remote_code
        self.extractor = AutoFeatureExtractor.from_pretrained(self.fe_location.target, trust_remote_code=trust,
                                                              revision=self.fe_location.revision)
        self.model = model_class(spec.task).from_pretrained(self.location.target, trust_remote_code=trust,
                                                             revision=self.location.revision)
        self.model.eval().to(device)
        self.encoder = audio_encoder(self.model)
        self.accepted = set(inspect.signature(self.encoder.forward).parameters)
        self.model_rate = int(self.extractor.sampling_rate)
        self.sample_rate = spec.sample_rate or self.model_rate
        if self.sample_rate != self.model_rate:
            log.warning("%s expects %d Hz audio; reading at sample_rate %d as configured", spec.model_name,
                        self.model_rate, self.sample_rate)
        self.layers = self._parse_layers()
        self.need_hidden = any(HIDDEN.match(layer.name) for layer in self.layers)
        self.need_embeds = any(layer.name == EMBEDS for layer in self.layers)
        self.names = sorted({layer.name for layer in self.layers})
        limit = fixed_window(self.extractor, self.sample_rate)
        if limit is not None and spec.window_seconds is not None and spec.window_seconds > limit + 1e-9:
            raise ConfigError(f"window_seconds: {spec.window_seconds} is longer than the {limit:g} s that "
                              f"{type(self.extractor).__name__} pads or truncates every input to; "
                              f"use at most {limit:g}")
        self.windowing = windowing(spec, self.sample_rate, default_window(self.extractor, self.sample_rate))
        self.loader = AudioLoader(self.sample_rate, mono=True, offset=spec.offset, max_seconds=spec.max_seconds)

    def _parse_layers(self) -> tuple[Layer, ...]:
        pooling = audio_pooling(self.spec)
        config = getattr(self.encoder, "config", self.model.config)
        depths = getattr(config, "depths", None)  # Swin-like towers (CLAP): one hidden state per stage
        num_hidden = (len(depths) if depths else None) or getattr(config, "num_hidden_layers", None) \
            or getattr(config, "encoder_layers", None)
        layers = []
        for folder in self.spec.output_layers or [LAST]:
            match = HIDDEN.match(folder)
            if match and num_hidden is not None and not -(num_hidden + 1) <= int(match.group(1)) <= num_hidden:
                raise ConfigError(f"output_layers: {folder!r} is out of range; the model has {num_hidden + 1} "
                                  f"hidden states (hidden_states.0 .. hidden_states.{num_hidden}, or negative)")
            if folder == EMBEDS and not hasattr(self.model, "get_audio_features"):
                raise ConfigError(f"output_layers: {type(self.model).__name__} has no get_audio_features, so no "
                                  f"{EMBEDS}; use {LAST}, hidden_states.N or {POOLER}")
            if folder in (POOLER, EMBEDS):
                layers.append(Layer(folder, folder))
            elif match or folder == LAST:
                layers.append(Layer(folder, folder, pooling))
            else:
                raise bad_value("output_layers", folder, [LAST, "hidden_states.N", POOLER, EMBEDS], what="layer")
        return tuple(layers)

    def sort_key(self, payload: Any) -> int:
        return 0

    def _inputs(self, piece: torch.Tensor) -> dict[str, torch.Tensor]:
        """The feature extractor on one window; Whisper-style extractors also give the mask of real audio."""
        options: dict[str, Any] = {"sampling_rate": self.model_rate, "return_tensors": "pt"}
        if "attention_mask" in self.accepted or hasattr(self.extractor, "n_samples"):
            options["return_attention_mask"] = True
        encoded = self.extractor(piece.numpy(), **options)
        return {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}

    def prepare(self, waves: Sequence[torch.Tensor]) -> dict[str, Any]:
        waves = [w if w.dim() == 1 else w.mean(dim=0) for w in as_tensors(waves)]
        return {"windows": make_windows(waves, self.windowing, self._inputs), "records": len(waves)}

    def forward(self, batch: dict[str, Any]) -> dict[str, Sequence[np.ndarray]]:
        return run_windows(batch["windows"], batch["records"], self.layers, self.spec.batch_size, self._encode)

    def _encode(self, stacked: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        raw = self.run_graph({k: v for k, v in stacked.items() if k in self.accepted})
        valid = self._valid_frames(stacked)
        result: dict[str, list[torch.Tensor]] = {}
        for layer in self.layers:
            value = raw[layer.name]
            if layer.name in (EMBEDS, POOLER):
                result[layer.name] = list(value.flatten(1))
                continue
            if value.dim() == 4:  # (batch, channels, freq, time) spectrogram-like towers
                value = channels_first_frames(value)
            result[layer.name] = [s[:n] if n is not None else s for s, n in zip(value, valid)]
        return result

    def run_graph(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The requested layers' raw outputs (frames before pooling) for a stack of windows."""
        return on_device(self._raw, feed, self.device, self.spec.precision)

    def _raw(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, pooled, embeds = self._run(inputs)
        raw: dict[str, torch.Tensor] = {}
        for name in self.names:
            if name == EMBEDS:
                raw[name] = embeds
            elif name == POOLER:
                if pooled is None:
                    raise ConfigError(f"output_layers: {self.spec.model_name} gives no pooler_output")
                raw[name] = pooled
            else:
                match = HIDDEN.match(name)
                raw[name] = out.hidden_states[int(match.group(1))] if match else out.last_hidden_state
        return raw

    def graph(self, inputs: Sequence[str]) -> Graph:
        fixed = fixed_window(self.extractor, self.sample_rate) is not None  # Whisper, AST, CLAP: fixed-size inputs
        return Graph(GraphModule(self.model, self._raw, inputs, self.names),
                     batch_axes(inputs) if fixed else sequence_axes(inputs),
                     {"model_class": type(self.model).__name__, "encoder_class": type(self.encoder).__name__})

    def _run(self, inputs: dict[str, torch.Tensor]) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
        """The encoder's output, its own pooler_output, and `get_audio_features` when `audio_embeds` is asked for:
        then one forward, the encoder's output caught by a hook before the model replaces its pooler_output."""
        options = {"output_hidden_states": self.need_hidden, "return_dict": True}
        if not self.need_embeds:
            out = self.encoder(**inputs, **options)
            return out, getattr(out, POOLER, None), None
        caught: list[tuple[Any, torch.Tensor | None]] = []
        handle = self.encoder.register_forward_hook(
            lambda module, args, output: caught.append((output, getattr(output, POOLER, None))))
        try:
            projected = self.model.get_audio_features(**inputs, **options)
        finally:
            handle.remove()
        embeds = projected if isinstance(projected, torch.Tensor) else projected.pooler_output
        if len(caught) != 1 or self.encoder is self.model:  # the encoder did not run once, on its own, inside
            if any(layer.name != EMBEDS for layer in self.layers):
                out = self.encoder(**inputs, **options)
                return out, getattr(out, POOLER, None), embeds
            return None, None, embeds
        return caught[0][0], caught[0][1], embeds

    def _valid_frames(self, stacked: dict[str, torch.Tensor]) -> list[int | None]:
        """Encoder frames holding real audio per window, from the input mask; None when all are real."""
        mask = stacked.get("attention_mask")
        lengths = getattr(self.encoder, "_get_feat_extract_output_lengths", None)
        if mask is None or lengths is None or bool(mask.all()):
            return [None] * next(iter(stacked.values())).shape[0]
        out = lengths(mask.sum(dim=-1))
        return [int(n) for n in out]

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per layer folder, the shape of one record's feature for a 1 s noise clip."""
        out = self.forward(self.prepare([dummy_wave(self.sample_rate)]))
        return {folder: tuple(arrays[0].shape) for folder, arrays in out.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.location.describe(),
            "feature_extractor": self.fe_location.describe() if self.spec.feature_extractor_name else "model's own",
            "model_class": type(self.model).__name__,
            "encoder_class": type(self.encoder).__name__,
            "sample_rate": self.sample_rate,
            **self.windowing.describe(),
            "pooling": {layer.folder: layer.pooling for layer in self.layers},
            "preprocessing": preprocessing(self.spec, self.sample_rate, self.windowing,
                                           feature_extractor=type(self.extractor).__name__),
        }
