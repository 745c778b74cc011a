"""Transformers image-text dual encoders (CLIP, SigLIP, ALIGN, AltCLIP...): both towers in one pass per batch of
(image, text) pairs, and optionally their fusion.

Layers: `image_embeds` (`get_image_features`), `text_embeds` (`get_text_features`), and `fused_<fusion>` when
`fusion` is set (concat, sum, mul or mean of the two embeddings; L2-normalised first when `normalize: true`).
A bare integer (the 2.0 spelling) selects both embeddings. Each tower's own layers: `vision.last_hidden_state`,
`vision.hidden_states.N`, `text.last_hidden_state`, `text.hidden_states.N` (N < 0 counts from the end), pooled
with `pooling` (default: cls for the vision tower, attention-masked mean for the text tower; none keeps the tokens).
Text-tower layers are written under the textual output path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config.schema import JointModelSpec
from ..device import forward_context
from ..errors import ConfigError, bad_value
from ..model_store import locate
from .base import Layer, filled_rows
from .hf_vision import ImageLoader
from .pooling import pool
from .text_common import count_truncated, padded_width, token_limit

log = logging.getLogger("ducho")

EMBEDDINGS = ("image_embeds", "text_embeds")
TOWER = re.compile(r"^(vision|text)\.(last_hidden_state|hidden_states\.-?\d+)$")
DEFAULT_POOLING = {"vision": "cls", "text": "mean"}


class PairLoader:
    """Picklable per-record preprocessing of an (image path, text) pair: the image decoded and processed."""

    def __init__(self, images: ImageLoader) -> None:
        self.images = images

    def __call__(self, payload: tuple[str, str]) -> tuple[torch.Tensor, str]:
        path, text = payload
        return self.images(path), text


def parse_layers(spec: JointModelSpec) -> tuple[Layer, ...]:
    layers: list[Layer] = []
    for folder in spec.output_layers or list(EMBEDDINGS):
        if folder.lstrip("-").isdigit():
            log.info("output_layers %s (2.0 spelling) -> image_embeds and text_embeds", folder)
            layers += [Layer(name, name) for name in EMBEDDINGS if name not in {la.name for la in layers}]
        elif folder in EMBEDDINGS:
            layers.append(Layer(folder, folder))
        elif TOWER.match(folder):
            tower = folder.split(".", 1)[0]
            layers.append(Layer(folder, folder, "mean" if spec.pooling == "avg" else
                                spec.pooling or DEFAULT_POOLING[tower]))
        else:
            raise bad_value("output_layers", folder, [*EMBEDDINGS, "vision.last_hidden_state", "vision.hidden_states.N",
                                                      "text.last_hidden_state", "text.hidden_states.N",
                                                      "N (2.0: both)"], what="layer")
    if spec.fusion:
        layers.append(Layer(f"fused_{spec.fusion}", f"fused_{spec.fusion}"))
    return tuple(layers)


def fuse(image: torch.Tensor, text: torch.Tensor, how: str) -> torch.Tensor:
    if how == "concat":
        return torch.cat([image, text], dim=-1)
    if image.shape[-1] != text.shape[-1]:
        raise ValueError(f"fusion {how!r} needs embeddings of one size; image {image.shape[-1]}, text {text.shape[-1]}")
    return {"sum": image + text, "mul": image * text, "mean": (image + text) / 2}[how]


def _embeddings(output: Any) -> torch.Tensor:
    """`get_*_features` returns the projected embeddings, or (transformers 5) an output whose pooler is them."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class TransformersJoint:
    """A dual encoder; one call per batch gives both embeddings (and the fusion) of every pair."""

    def __init__(self, spec: JointModelSpec, device: str) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.spec = spec
        self.device = device
        self.location = locate(spec.model_name, spec.revision)
        trust = spec.trust_remote_code
        text_from = locate(spec.tokenizer_name) if spec.tokenizer_name else self.location
        images_from = locate(spec.image_processor_name) if spec.image_processor_name else self.location
        self.tokenizer = AutoTokenizer.from_pretrained(text_from.target, trust_remote_code=trust)
        processor = AutoImageProcessor.from_pretrained(images_from.target, trust_remote_code=trust)
        self.model = AutoModel.from_pretrained(self.location.target, trust_remote_code=trust,
                                               revision=self.location.revision, dtype=torch.float32)
        self.model.eval().to(device)
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(self.model, method, None)):
                raise bad_value("model_name", spec.model_name, ["an image-text dual encoder (CLIP, SigLIP, ALIGN...)"],
                                what=f"model ({type(self.model).__name__} has no {method})")
        self.loader = PairLoader(ImageLoader(processor, spec.reshape, spec.preprocessing, spec.mean, spec.std))
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.limit = token_limit(self.tokenizer, text_config, spec.max_length)
        self.layers = parse_layers(spec)
        self._check_hidden_ranges()
        self.truncated = 0
        self.batch_rows = filled_rows(spec.batch_size)

    def _check_hidden_ranges(self) -> None:
        for layer in self.layers:
            match = TOWER.match(layer.name)
            if not match or not match.group(2).startswith("hidden_states."):
                continue
            tower, index = match.group(1), int(match.group(2).rsplit(".", 1)[1])
            config = getattr(self.model.config, f"{tower}_config", None)
            count = getattr(config, "num_hidden_layers", None)
            if count is not None and not -(count + 1) <= index <= count:
                raise ConfigError(f"output_layers: {layer.folder!r} is out of range; the {tower} tower has "
                                  f"{count + 1} hidden states ({tower}.hidden_states.0 .. {count}, or negative)")

    def sort_key(self, payload: tuple[str, str]) -> int:
        return padded_width(self.tokenizer, [payload[1]], self.limit)

    def prepare(self, items: Sequence[tuple[torch.Tensor, str]]) -> dict[str, Any]:
        texts = [text for _, text in items]
        width = padded_width(self.tokenizer, texts, self.limit)
        encoded = self.tokenizer(texts, padding="max_length", truncation=True, max_length=width, return_tensors="pt")
        lengths = encoded["attention_mask"].sum(dim=1).tolist() if "attention_mask" in encoded else \
            [encoded["input_ids"].shape[1]] * len(texts)
        return {"pixels": torch.stack([pixels for pixels, _ in items]), "text": encoded,
                "truncated": count_truncated(self.tokenizer, texts, lengths, self.limit)}

    def forward(self, batch: dict[str, Any]) -> dict[str, Sequence[np.ndarray]]:
        self.truncated += batch["truncated"]
        text = {k: v.to(self.device) for k, v in batch["text"].items()}
        towers = {layer.name.split(".", 1)[0] for layer in self.layers if TOWER.match(layer.name)}
        with forward_context(self.device, self.spec.precision):
            seen = self.model.get_image_features(pixel_values=batch["pixels"].to(self.device), return_dict=True,
                                                 output_hidden_states="vision" in towers)
            read = self.model.get_text_features(**text, return_dict=True, output_hidden_states="text" in towers)
        image, words = _embeddings(seen).float(), _embeddings(read).float()
        values = {"image_embeds": image, "text_embeds": words}
        for layer in self.layers:
            if TOWER.match(layer.name):
                values[layer.name] = self._tower_layer(layer, seen, read, text.get("attention_mask"))
        if self.spec.fusion:
            if self.spec.normalize:
                image, words = (torch.nn.functional.normalize(v, dim=-1) for v in (image, words))
            values[f"fused_{self.spec.fusion}"] = fuse(image, words, self.spec.fusion)
        return {layer.folder: [v.float().cpu().numpy() for v in values[layer.name]] for layer in self.layers}

    @staticmethod
    def _tower_layer(layer: Layer, seen: Any, read: Any, mask: torch.Tensor | None) -> Any:
        """One tower's tokens (batch, tokens, dim), pooled; text padding is masked out."""
        tower, name = layer.name.split(".", 1)
        out = seen if tower == "vision" else read
        steps = out.last_hidden_state if name == "last_hidden_state" else \
            out.hidden_states[int(name.rsplit(".", 1)[1])]
        if tower == "vision" or mask is None:
            mask = torch.ones(steps.shape[:2], dtype=torch.long, device=steps.device)
        return pool(steps.float(), mask.to(steps.device), layer.pooling)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.location.describe(),
            "model_class": type(self.model).__name__,
            "tokenizer": self.spec.tokenizer_name or "model's own",
            "max_length": self.limit,
            "truncated_texts": self.truncated,
            "fusion": self.spec.fusion,
            "preprocessing": {"image": self.loader.images.describe(), "clear_text": self.spec.clear_text},
            "pairing": "by id (image file name = TSV id)",
        }
