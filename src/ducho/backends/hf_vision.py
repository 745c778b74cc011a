"""Transformers vision backend: any AutoModel image model (ViT, DINOv2, ConvNeXt, Swin, ResNet, CLIP/SigLIP's image
tower) from a hub id or a folder, with the model's own image processor unless `reshape`/`preprocessing` are given."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config.schema import VisualModelSpec
from ..device import forward_context
from ..errors import ConfigError, bad_value
from ..media.image import decode_image
from ..model_store import locate
from .base import Layer
from .graph import Graph, GraphModule, batch_axes, transformer_fusion
from .hf_text import model_class
from .pooling import to_numpy

log = logging.getLogger("ducho")

STEP_LAYERS = ("last_hidden_state",)  # token sequences (B, T, D) or feature maps (B, C, H, W), pooled
VECTOR_LAYERS = ("pooler_output", "image_embeds", "logits")
OUTPUT_NAMES = (*VECTOR_LAYERS, *STEP_LAYERS)
HIDDEN = re.compile(r"^hidden_states\.(-?\d+)$")
CLS_PARAMETERS = ("cls_token", "class_embedding")  # the CLS token of ViT/DeiT/BEiT/DINOv2 and of CLIP
PIXELS = "pixel_values"
PROBE_SIZE = (224, 224)  # (width, height) of the blank image of the probe forward when the processor names none


class ImageLoader:
    """Picklable per-record preprocessing: decode a file, then the processor (or the user's reshape/scaling)."""

    def __init__(self, processor: Any, reshape: tuple[int, int] | None = None, scaling: str | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        self.processor = processor
        self.reshape = tuple(reshape) if reshape else None
        self.scaling = scaling
        self.mean = tuple(float(v) for v in (mean or getattr(processor, "image_mean", None) or (0.0, 0.0, 0.0)))
        self.std = tuple(float(v) for v in (std or getattr(processor, "image_std", None) or (1.0, 1.0, 1.0)))

    def __eq__(self, other: object) -> bool:
        """Loaders that preprocess alike (the same processor settings and overrides)."""
        return isinstance(other, ImageLoader) and self._settings() == other._settings()

    __hash__ = None  # type: ignore[assignment]

    def _settings(self) -> tuple[Any, ...]:
        return (type(self.processor).__name__, self.processor.to_json_string(), self.reshape, self.scaling,
                self.mean, self.std)

    @property
    def overridden(self) -> bool:
        return self.reshape is not None or self.scaling is not None

    def __call__(self, path: Any) -> torch.Tensor:
        return self.transform(decode_image(path))

    def transform(self, image: Any) -> torch.Tensor:
        """A PIL RGB image -> float32 (C, H, W) pixel values."""
        if not self.overridden:
            return self.processor(images=image, return_tensors="pt")["pixel_values"][0].float()
        if self.reshape is not None:
            from PIL import Image

            width, height = self.reshape
            resized = image.resize((width, height), Image.Resampling.BILINEAR)  # PIL filters antialias
            pixels = torch.from_numpy(np.array(resized, dtype=np.float32)).permute(2, 0, 1).contiguous()
        else:  # the processor's own resize and crop, without its scaling
            pixels = self.processor(images=image, do_rescale=False, do_normalize=False,
                                    return_tensors="pt")["pixel_values"][0].float()
        if self.scaling is None:  # reshape only: the processor's own rescale and normalisation
            if getattr(self.processor, "do_rescale", True):
                pixels = pixels * float(getattr(self.processor, "rescale_factor", 1 / 255))
            normalize = bool(getattr(self.processor, "do_normalize", False))
        else:
            pixels = pixels / 255.0
            normalize = self.scaling == "zscore"
        if normalize:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
            pixels = (pixels - mean) / std
        return pixels

    def describe(self) -> dict[str, Any]:
        processor = self.processor
        resample = getattr(processor, "resample", None)
        info: dict[str, Any] = {
            "processor_class": type(processor).__name__,
            "size": _plain(getattr(processor, "size", None)),
            "crop_size": _plain(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop",
                                                                                 False) else None,
            "resample": _resample_name(resample),
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.overridden:
            info["override"] = {"reshape_wh": list(self.reshape) if self.reshape else None,
                                "resize": "bilinear, antialiased, no crop" if self.reshape else "processor's own",
                                "scaling": self.scaling or "processor's own"}
        return info

    def probe_image(self) -> Any:
        """A blank image of the size the processor works at (for the probe forward)."""
        from PIL import Image

        size = _plain(getattr(self.processor, "size", None)) or {}
        crop = _plain(getattr(self.processor, "crop_size", None)) or {}
        if "height" in crop and "width" in crop:
            width, height = crop["width"], crop["height"]
        elif "height" in size and "width" in size:
            width, height = size["width"], size["height"]
        elif "shortest_edge" in size:
            width = height = size["shortest_edge"]
        else:
            width, height = PROBE_SIZE
        return Image.new("RGB", (int(width), int(height)), (128, 128, 128))


def _resample_name(value: Any) -> Any:
    """'BILINEAR' for PILImageResampling.BILINEAR or the 2 that a processor's JSON file holds."""
    if isinstance(value, int):
        from transformers.image_utils import PILImageResampling

        try:
            return PILImageResampling(value).name
        except ValueError:
            return value
    return getattr(value, "name", value)


def _plain(value: Any) -> Any:
    """A processor setting as plain JSON data (SizeDict and friends become dicts without None entries)."""
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    if hasattr(value, "items"):
        return {k: v for k, v in dict(value.items()).items() if v is not None}
    if hasattr(value, "__dict__"):
        return {k: v for k, v in vars(value).items() if v is not None and not k.startswith("_")}
    return value


def reduce(value: torch.Tensor, how: str) -> torch.Tensor:
    """Pool a batch of token sequences (B, T, D) or feature maps (B, C, H, W); `none` keeps the whole matrix."""
    if how == "none":
        return value
    if value.ndim == 4:
        if how == "mean":
            return value.mean(dim=(2, 3))
        if how == "max":
            return value.amax(dim=(2, 3))
    elif value.ndim == 3:
        if how == "cls":
            return value[:, 0]
        if how == "mean":
            return value.mean(dim=1)
        if how == "max":
            return value.amax(dim=1)
    raise ConfigError(f"pooling {how!r} does not apply to a layer of shape {tuple(value.shape[1:])}")


def as_vector(value: torch.Tensor) -> torch.Tensor:
    """Vector outputs per record; ResNet's (B, C, 1, 1) pooler output becomes (B, C)."""
    if value.ndim == 4 and value.shape[2:] == (1, 1):
        return value.flatten(1)
    return value


def pooled_shape(shape: tuple[int, ...], how: str) -> tuple[int, ...]:
    """The per-record shape `reduce` gives for a per-record input shape."""
    return shape if how == "none" or len(shape) < 2 else shape[:1] if len(shape) == 3 else shape[1:]


def _processor_location(spec: VisualModelSpec) -> Any:
    return locate(spec.image_processor_name) if spec.image_processor_name else locate(spec.model_name, spec.revision)


def _image_loader(spec: VisualModelSpec, location: Any) -> ImageLoader:
    from transformers import AutoImageProcessor

    trust = {"trust_remote_code": True} if spec.trust_remote_code else {}
    processor = AutoImageProcessor.from_pretrained(location.target, revision=location.revision, **trust)
    return ImageLoader(processor, spec.reshape, spec.preprocessing, spec.mean, spec.std)


def loader_for(spec: VisualModelSpec) -> ImageLoader:
    """The loader `TransformersVision(spec)` will have, from the image processor alone (decoding can start while
    the model loads)."""
    return _image_loader(spec, _processor_location(spec))


class TransformersVision:
    """A Hugging Face image model; one forward gives every requested layer."""

    loader_for = staticmethod(loader_for)

    def __init__(self, spec: VisualModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        self.location = locate(spec.model_name, spec.revision)
        self.processor_location = _processor_location(spec)
        trust = {"trust_remote_code": True} if spec.trust_remote_code else {}
        self.loader = _image_loader(spec, self.processor_location)
        self.batch_rows = spec.batch_size  # every forward the same rows (base.Extractor.batch_rows)
        self.model = model_class(spec.task).from_pretrained(self.location.target, revision=self.location.revision,
                                                             dtype=torch.float32, **trust)
        self.model.eval().to(device)
        self.base = self.model.base_model
        self.clip_like = self.base is self.model and callable(getattr(self.model, "get_image_features", None))
        entry = self.model.get_image_features if self.clip_like else self.model.forward
        # a user's reshape may differ from the size the position embeddings were trained at
        self.extra = {"interpolate_pos_encoding": True} if spec.reshape and "interpolate_pos_encoding" in \
            inspect.signature(entry).parameters else {}
        self.tower = getattr(self.model, "vision_model", None) if self.clip_like else None
        self.has_cls = any(name.rsplit(".", 1)[-1] in CLS_PARAMETERS for name, _ in self.model.named_parameters())
        self.default_pooling = "cls" if self.has_cls else "mean"
        self.shapes, self.hidden_shapes = self._probe()
        self.num_hidden_states = len(self.hidden_shapes)
        self.layers = self._parse_layers()
        self.need_hidden = any(HIDDEN.match(layer.name) for layer in self.layers)
        self.names = sorted({layer.name for layer in self.layers})

    # -- layers ---------------------------------------------------------------------------------------------------

    def _probe(self) -> tuple[dict[str, tuple[int, ...]], list[tuple[int, ...]]]:
        """One forward of a blank image: which outputs this model gives, and their per-record shapes."""
        pixels = self.loader.transform(self.loader.probe_image()).unsqueeze(0)
        fields = self._run(pixels, hidden=True)
        shapes = {name: tuple(value.shape[1:]) for name, value in fields.items() if name != "hidden_states"}
        hidden = [tuple(h.shape[1:]) for h in fields.get("hidden_states") or ()]
        return shapes, hidden

    def _pooling(self, name: str, shape: tuple[int, ...]) -> str:
        """The pooling of a layer of per-record `shape`: (T, D) token sequences or (C, H, W) feature maps."""
        feature_map = len(shape) == 3
        pooling = self.spec.pooling or ("mean" if feature_map else self.default_pooling)
        pooling = "mean" if pooling == "avg" else pooling
        if pooling == "cls" and feature_map:
            raise ConfigError(f"pooling: 'cls' does not apply to {name}, a feature map of shape {shape} "
                              "(channels, height, width); use mean, max or none")
        if pooling == "cls" and not self.has_cls:
            raise ConfigError(f"pooling: 'cls' needs a CLS token, and {self.spec.model_name} "
                              f"({type(self.model).__name__}) has none; use mean, max or none")
        return pooling

    def _accepted(self) -> list[str]:
        names = [n for n in OUTPUT_NAMES if n in self.shapes]
        if self.num_hidden_states:
            names.append(f"hidden_states.N (0..{self.num_hidden_states - 1}, or negative)")
        return names + ["N (1.0 spelling)"]

    def _resolve(self, folder: str) -> Layer:
        match = HIDDEN.match(folder)
        if folder.lstrip("-").isdigit():
            name = "image_embeds" if "image_embeds" in self.shapes else "pooler_output"
            if name not in self.shapes:
                name = "last_hidden_state"
            log.info("output_layers %s (1.0 layer index) -> %s", folder, name)
            return self._layer(folder, name)
        if match:
            index, count = int(match.group(1)), self.num_hidden_states
            if not -count <= index < count:
                raise ConfigError(f"output_layers: {folder!r} is out of range; the model has {count} hidden states "
                                  f"(hidden_states.0 .. hidden_states.{count - 1}, or negative)")
            name = f"hidden_states.{index % count}"
            return Layer(folder, name, self._pooling(name, self.hidden_shapes[index]))
        if folder in OUTPUT_NAMES and folder not in self.shapes:
            hint = {"logits": "it needs a task model (task: image-classification)",
                    "image_embeds": "only CLIP-like models (get_image_features) give it",
                    "pooler_output": "use last_hidden_state with a pooling"}[folder]
            raise ConfigError(f"output_layers: {self.spec.model_name} ({type(self.model).__name__}) gives no "
                              f"{folder!r}; {hint}. This model gives: {', '.join(self._accepted())}")
        if folder in OUTPUT_NAMES:
            return self._layer(folder, folder)
        raise bad_value("output_layers", folder, self._accepted(), what="layer")

    def _layer(self, folder: str, name: str) -> Layer:
        """A vector layer (pooling 'n/a'), or a sequence / feature map with its pooling."""
        shape = self.shapes[name]
        if name in STEP_LAYERS or (len(shape) > 1 and shape[1:] != (1, 1)):
            return Layer(folder, name, self._pooling(name, shape))
        return Layer(folder, name)

    def _parse_layers(self) -> tuple[Layer, ...]:
        if self.spec.output_layers:
            return tuple(self._resolve(folder) for folder in self.spec.output_layers)
        default = "pooler_output" if "pooler_output" in self.shapes else "last_hidden_state"
        return (self._layer(default, default),)

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every extractable layer with the per-record shape it is written with (this spec's or the default
        pooling for sequences and feature maps)."""
        result = {}
        for name in [n for n in OUTPUT_NAMES if n in self.shapes] + [f"hidden_states.{i}" for i in
                                                                     range(self.num_hidden_states)]:
            try:
                layer = self._resolve(name)
            except ConfigError:  # a pooling that this layer cannot take (cls of a feature map)
                layer = Layer(name, name, "mean")
            raw = self.hidden_shapes[int(name.split(".")[1])] if name.startswith("hidden_states.") \
                else self.shapes[name]
            if layer.pooling == "n/a":
                result[name] = (int(np.prod(raw)),)
            else:
                result[name] = pooled_shape(raw, layer.pooling)
        return result

    # -- extraction -----------------------------------------------------------------------------------------------

    def _run(self, pixels: torch.Tensor, hidden: bool) -> dict[str, Any]:
        """One forward on the model's device and numerics; the model's outputs by name."""
        with forward_context(self.device, self.spec.precision):
            return self._fields(pixels.to(self.device), hidden)

    def _fields(self, pixels: torch.Tensor, hidden: bool) -> dict[str, Any]:
        """The model's outputs by name (image_embeds, logits, and the base or image tower's)."""
        captured: dict[str, Any] = {}
        inner = self.tower if self.clip_like else (self.base if self.base is not self.model else None)
        hook = None
        if inner is not None:  # fields copied at once: get_image_features replaces pooler_output afterwards
            def keep(_module: Any, _inputs: Any, out: Any) -> None:
                captured.setdefault("inner", {k: getattr(out, k, None) for k in (*OUTPUT_NAMES, "hidden_states")})
            hook = inner.register_forward_hook(keep)
        try:
            if self.clip_like:
                out = self.model.get_image_features(pixel_values=pixels, output_hidden_states=hidden,
                                                    return_dict=True, **self.extra)
            else:
                out = self.model(pixel_values=pixels, output_hidden_states=hidden, return_dict=True, **self.extra)
        finally:
            if hook is not None:
                hook.remove()
        if isinstance(out, torch.Tensor):  # an older get_image_features: the embeddings alone
            return {"image_embeds": out, **{k: v for k, v in captured.get("inner", {}).items() if v is not None}}
        fields = {k: v for k, v in captured.get("inner", {}).items() if v is not None}
        if self.clip_like:  # its pooler_output is the projected one; the tower's own stays pooler_output
            fields["image_embeds"] = out.pooler_output
        for name in (*OUTPUT_NAMES, "hidden_states"):
            if name not in fields and getattr(out, name, None) is not None and not (self.clip_like and
                                                                                     name == "pooler_output"):
                fields[name] = getattr(out, name)
        return fields

    def sort_key(self, payload: Any) -> int:
        return 0

    def prepare(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(items))

    def forward(self, batch: torch.Tensor) -> dict[str, Sequence[np.ndarray]]:
        raw = self.run_graph({PIXELS: batch})
        result: dict[str, Sequence[np.ndarray]] = {}
        for layer in self.layers:
            value = raw[layer.name]
            result[layer.folder] = list(to_numpy(as_vector(value) if layer.pooling == "n/a"
                                                 else reduce(value, layer.pooling)))
        return result

    def run_graph(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The requested layers' raw outputs (before pooling) for a batch of images."""
        return self._select(self._run(feed[PIXELS], hidden=self.need_hidden))

    def _select(self, fields: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {name: fields["hidden_states"][int(name.split(".")[1])] if HIDDEN.match(name) else fields[name]
                for name in self.names}

    def graph(self, inputs: Sequence[str]) -> Graph:
        def step(feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return self._select(self._fields(feed[PIXELS], self.need_hidden))

        return Graph(GraphModule(self.model, step, inputs, self.names), batch_axes(inputs),
                     {"model_class": type(self.model).__name__, "image_features": self.clip_like},
                     None if self.clip_like else transformer_fusion(self.model))

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.location.describe(),
            "image_processor": self.processor_location.describe() if self.spec.image_processor_name
            else "model's own",
            "model_class": type(self.model).__name__,
            "task": self.spec.task,
            "image_features": "get_image_features" if self.clip_like else "forward",
            "preprocessing": self.loader.describe(),
            "num_hidden_states": self.num_hidden_states,
            "layers": {layer.folder: {"name": layer.name, "pooling": layer.pooling} for layer in self.layers},
        }
