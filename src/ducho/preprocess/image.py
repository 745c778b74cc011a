"""Image preprocessing as data: a frozen description (resize, crop, scaling) that a worker process applies to a
decoded image. It reproduces torchvision's `ImageClassification` transforms step for step, so a model gets
exactly the preprocessing its weights were trained with unless the user's `reshape`/`preprocessing` override it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..config.schema import VisualModelSpec
from ..media.image import decode_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    def __call__(self, path: str) -> torch.Tensor:
        return self.apply(decode_image(path))

    def apply(self, image: Any) -> torch.Tensor:
        """A PIL RGB image -> float32 (3, H, W) tensor."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        if self.resize is not None:  # on the PIL image, as torchvision's ImageClassification does
            size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
            image = F.resize(image, size, interpolation=InterpolationMode(self.interpolation),
                             antialias=self.antialias)
        if self.crop is not None:
            image = F.center_crop(image, list(self.crop))
        # the operations of convert_image_dtype + normalize, in their order (same bits), in place on one copy
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)
        if self.mean is not None and self.std is not None:
            tensor = tensor.sub_(torch.tensor(self.mean).view(-1, 1, 1)).div_(torch.tensor(self.std).view(-1, 1, 1))
        return tensor.contiguous()

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


def _one(size: Any) -> int | tuple[int, int]:
    values = list(size) if isinstance(size, (list, tuple)) else [size]
    return int(values[0]) if len(values) == 1 else (int(values[0]), int(values[1]))


def _pair(size: Any) -> tuple[int, int]:
    values = list(size) if isinstance(size, (list, tuple)) else [size]
    return (int(values[0]), int(values[-1]))
