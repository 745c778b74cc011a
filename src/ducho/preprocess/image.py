"""Image preprocessing as data: a frozen description (resize, crop, scaling) that a worker process applies to a
decoded image. It reproduces torchvision's `ImageClassification` transforms step for step, bit for bit, so a model gets
exactly the preprocessing its weights were trained with unless the user's `reshape`/`preprocessing` override it.
It needs Pillow and numpy only: a decoding process (a local worker, a Ray task) imports neither torch nor torchvision
(on a Ray node that import is a fresh process's longest start-up step, and their memory)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..config.schema import VisualModelSpec
from ..media.image import decode_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's InterpolationMode values -> the Pillow filter its `resize` uses for them (`pil_modes_mapping`)
PIL_FILTERS = {"nearest": Image.Resampling.NEAREST, "nearest-exact": Image.Resampling.NEAREST,
               "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
               "lanczos": Image.Resampling.LANCZOS}


@dataclass(frozen=True)
class ImagePipeline:
    """decode -> resize -> center crop -> [0, 1] -> normalise. `resize` is the shorter side (int) or an exact
    [height, width]; `crop` is [height, width]; mean/std None means minmax ([0, 1] only)."""

    resize: int | tuple[int, int] | None = 256
    crop: tuple[int, int] | None = (224, 224)
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    interpolation: str = "bilinear"
    antialias: bool = True

    def __call__(self, path: str) -> np.ndarray:
        return self.apply(decode_image(path))

    def apply(self, image: Image.Image) -> np.ndarray:
        """A PIL RGB image -> float32 (3, H, W) array, equal bit for bit to torchvision's `resize`, `center_crop`,
        `pil_to_tensor`, `convert_image_dtype` and `normalize` (each an exactly rounded float32 operation)."""
        if self.resize is not None:  # on the PIL image, as torchvision's ImageClassification does
            height, width = _resized(image.height, image.width, self.resize)
            if (height, width) != (image.height, image.width):  # `interpolation` comes from torchvision's weights
                image = image.resize((width, height), PIL_FILTERS[self.interpolation])  # Pillow always antialiases
        pixels = np.asarray(image, dtype=np.uint8)
        if self.crop is not None:
            pixels = _center_crop(pixels, self.crop)
        array = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
        array /= np.float32(255)
        if self.mean is not None and self.std is not None:
            array -= np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
            array /= np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
        return array

    def describe(self) -> dict[str, Any]:
        described = asdict(self)
        return described


def from_weights(weights: Any) -> ImagePipeline:
    """The pipeline of a torchvision weights enum (its `transforms()`: ImageClassification)."""
    transform = weights.transforms()
    return ImagePipeline(resize=_one(transform.resize_size), crop=_pair(transform.crop_size),
                         mean=tuple(transform.mean), std=tuple(transform.std),
                         interpolation=transform.interpolation.value, antialias=bool(transform.antialias))


def with_overrides(pipeline: ImagePipeline, spec: VisualModelSpec) -> ImagePipeline:
    """The reference keys override the model's own: `reshape: [w, h]` resizes exactly (no crop);
    `preprocessing: zscore` normalises with `mean`/`std` (the model's when unset); `minmax` keeps [0, 1]."""
    changes: dict[str, Any] = {}
    if spec.reshape is not None:
        width, height = spec.reshape
        changes.update(resize=(height, width), crop=None)
    if spec.preprocessing == "minmax":
        changes.update(mean=None, std=None)
    elif spec.preprocessing == "zscore" or spec.mean is not None or spec.std is not None:
        changes.update(mean=spec.mean or pipeline.mean or IMAGENET_MEAN, std=spec.std or pipeline.std or IMAGENET_STD)
    return ImagePipeline(**{**asdict(pipeline), **changes})


def _resized(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """torchvision's `_compute_resized_output_size`: an int is the shorter side (the longer one scaled, truncated)."""
    if not isinstance(size, int):
        return size[0], size[1]
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


def _center_crop(pixels: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """torchvision's `center_crop`: zero padding (left/top get the smaller half) where the crop is larger than the
    image, then the crop's top left corner at the rounded centre offsets."""
    crop_height, crop_width = crop
    height, width = pixels.shape[:2]
    if crop_width > width or crop_height > height:
        pad_w, pad_h = max(crop_width - width, 0), max(crop_height - height, 0)
        pixels = np.pad(pixels, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        height, width = pixels.shape[:2]
    top, left = int(round((height - crop_height) / 2.0)), int(round((width - crop_width) / 2.0))
    return pixels[top:top + crop_height, left:left + crop_width]


def _one(size: Any) -> int | tuple[int, int]:
    values = list(size) if isinstance(size, (list, tuple)) else [size]
    return int(values[0]) if len(values) == 1 else (int(values[0]), int(values[1]))


def _pair(size: Any) -> tuple[int, int]:
    values = list(size) if isinstance(size, (list, tuple)) else [size]
    return (int(values[0]), int(values[-1]))
