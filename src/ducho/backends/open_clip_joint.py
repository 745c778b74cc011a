"""open_clip dual encoders for visual_textual: `model_name: open_clip:ARCH/PRETRAINED` (e.g.
`open_clip:ViT-B-32/laion2b_s34b_b79k`), or `open_clip:ARCH` with `weights:` a local checkpoint (loaded
`weights_only`) or `none`. A custom architecture is registered from `params.model_config` (an open_clip model
JSON). Layers and fusion as the transformers dual encoders: `image_embeds`, `text_embeds`, `fused_<fusion>`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.schema import JointModelSpec
from ..device import forward_context
from ..errors import ConfigError, ModelNotFoundError, did_you_mean
from ..media.image import decode_image
from .base import Layer, filled_rows
from .hf_joint import fuse, parse_layers
from .torch_common import RANDOM_WEIGHTS, file_sha256, seeded

PREFIX = "open_clip:"
PARAMS = ("model_config",)


class OpenClipPairLoader:
    """Picklable: decode an image and apply open_clip's own eval transform; the text passes through."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, payload: tuple[str, str]) -> tuple[torch.Tensor, str]:
        path, text = payload
        return self.transform(decode_image(path)), text


def parse_name(spec: JointModelSpec) -> tuple[str, str | None]:
    """(architecture, pretrained tag or checkpoint file or None for random weights)."""
    import open_clip

    unknown = set(spec.params) - set(PARAMS)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"params.{key}: unknown key for open_clip{did_you_mean(key, PARAMS)}; accepted: "
                          f"{', '.join(PARAMS)}")
    if spec.params.get("model_config"):
        open_clip.add_model_config(str(Path(spec.params["model_config"]).expanduser()))
    arch, _, tag = spec.model_name[len(PREFIX):].partition("/")
    if arch not in open_clip.list_models():
        raise ModelNotFoundError(f"model_name {spec.model_name!r}: {arch!r} is not an open_clip architecture"
                                 f"{did_you_mean(arch, open_clip.list_models())}")
    if spec.weights is not None:
        return arch, None if spec.weights.lower() in RANDOM_WEIGHTS else spec.weights
    return arch, tag or None


def check(spec: JointModelSpec) -> str:
    """Where the weights come from; a pretrained tag must be in the Hugging Face cache while offline."""
    from open_clip import pretrained

    arch, weights = parse_name(spec)
    if weights is None:
        return f"open_clip {arch} (random weights)"
    if Path(weights).expanduser().is_file():
        return f"open_clip {arch} + {weights}"
    config = pretrained.get_pretrained_cfg(arch, weights)
    if not config:
        tags = [tag for name, tag in __import__("open_clip").list_pretrained() if name == arch]
        raise ModelNotFoundError(f"open_clip {arch}: no pretrained weights {weights!r}{did_you_mean(weights, tags)}; "
                                 f"known: {', '.join(tags) or 'none'}; or weights: <checkpoint file> | none")
    try:
        return f"open_clip {arch}/{weights}: {pretrained.download_pretrained(config)}"
    except Exception as error:
        raise ModelNotFoundError(f"open_clip {arch}/{weights}: weights not available offline ({type(error).__name__})"
                                 "; give weights: <checkpoint file> or weights: none") from error


class OpenClipJoint:
    """An open_clip model: `encode_image` and `encode_text` once per batch of pairs."""

    check = staticmethod(check)

    def __init__(self, spec: JointModelSpec, device: str) -> None:
        import open_clip

        self.spec = spec
        self.device = device
        arch, weights = parse_name(spec)
        check(spec)
        model, _, transform = seeded(lambda: open_clip.create_model_and_transforms(arch, pretrained=weights))
        self.model = model.eval().to(device)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.loader = OpenClipPairLoader(transform)
        self.batch_rows = filled_rows(spec.batch_size)
        self.layers: tuple[Layer, ...] = parse_layers(spec)
        self.source = {"requested": spec.model_name, "architecture": arch, "weights": weights or "random (seeded)"}
        if weights and Path(weights).expanduser().is_file():
            self.source["weights_sha256"] = file_sha256(weights)

    def sort_key(self, payload: tuple[str, str]) -> int:
        return 0  # open_clip pads every text to the context length

    def prepare(self, items: Sequence[tuple[torch.Tensor, str]]) -> dict[str, torch.Tensor]:
        return {"pixels": torch.stack([pixels for pixels, _ in items]),
                "tokens": self.tokenizer([text for _, text in items])}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Sequence[np.ndarray]]:
        with forward_context(self.device, self.spec.precision):
            image = self.model.encode_image(batch["pixels"].to(self.device)).float()
            words = self.model.encode_text(batch["tokens"].to(self.device)).float()
        values = {"image_embeds": image, "text_embeds": words}
        if self.spec.fusion:
            if self.spec.normalize:
                image, words = (torch.nn.functional.normalize(v, dim=-1) for v in (image, words))
            values[f"fused_{self.spec.fusion}"] = fuse(image, words, self.spec.fusion)
        return {layer.folder: list(values[layer.name].cpu().numpy()) for layer in self.layers}

    def describe(self) -> dict[str, Any]:
        return {"model": self.source, "model_class": type(self.model).__name__, "fusion": self.spec.fusion,
                "context_length": getattr(self.tokenizer, "context_length", None),
                "preprocessing": {"image": repr(self.loader.transform), "clear_text": self.spec.clear_text},
                "pairing": "by id (image file name = TSV id)"}
