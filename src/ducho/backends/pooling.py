"""Pooling of token or time steps, masked so that padding never changes a record's vector."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, bad_value, did_you_mean
from .base import Layer

POOLINGS = ("mean", "avg", "cls", "max", "none")  # avg is mean (the reference spelling for images)


def pool(steps: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor | list[torch.Tensor]:
    """Reduce `steps` (batch, steps, dim) over the valid steps of `mask` (batch, steps).

    `none` returns one (valid_steps, dim) tensor per record, padding removed.
    """
    if how == "none":
        keep = mask.bool()
        return [steps[i][keep[i]] for i in range(steps.shape[0])]
    if how == "cls":
        first = mask.long().argmax(dim=1)  # the first valid step (left or right padding alike)
        return steps[torch.arange(steps.shape[0], device=steps.device), first]
    weights = mask.to(steps.dtype).unsqueeze(-1)
    if how in ("mean", "avg"):
        return (steps * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if how == "max":
        return steps.masked_fill(weights == 0, torch.finfo(steps.dtype).min).amax(dim=1)
    raise ValueError(f"pooling {how!r} is not one of {', '.join(POOLINGS)}")


def pool_spatial(maps: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce a (batch, C, H, W) feature map: mean/avg or max over H and W; `none` keeps it, except that a 1x1
    map (a global pooling layer's output) becomes a (batch, C) vector."""
    if how in ("mean", "avg"):
        return maps.mean(dim=(2, 3))
    if how == "max":
        return maps.amax(dim=(2, 3))
    if how == "none":
        return maps.flatten(1) if maps.shape[2:] == (1, 1) else maps
    raise ValueError(f"pooling {how!r} of a feature map must be avg, mean, max or none")


def to_numpy(value: torch.Tensor | list[torch.Tensor]) -> np.ndarray | list[np.ndarray]:
    """float32 numpy on the CPU: an array for stacked features, a list for ragged ones."""
    if isinstance(value, list):
        return [v.detach().float().cpu().numpy() for v in value]
    return value.detach().float().cpu().numpy()


def feature_map_layers(spec: Any, names: list[str], also: set[str], default: str, listing: str) -> tuple[Layer, ...]:
    """The requested layers of a CNN-style backend (names as the library spells them; `also` are further accepted
    names), pooled as `spec.pooling` says (none by default; cls has no meaning for a feature map)."""
    pooling = spec.pooling or "none"
    if pooling == "cls":
        raise bad_value("pooling", pooling, ["avg", "mean", "max", "none"], what="pooling of a feature map")
    layers = []
    for folder in spec.output_layers or [default]:
        if folder not in names and folder not in also:
            raise ConfigError(f"output_layers: {folder!r} is not a layer of {spec.model_name}"
                              f"{did_you_mean(folder, names)}; `{listing}` lists all {len(names)}, e.g. "
                              f"{', '.join(names[-6:])}")
        layers.append(Layer(folder, folder, pooling))
    return tuple(layers)
