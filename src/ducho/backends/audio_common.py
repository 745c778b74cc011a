"""What the audio backends share: the picklable file loader, windows, sub-batches of windows, and time pooling.

A record's waveform is cut into windows (`window_seconds`, `hop_seconds`); the windows of every record of a batch
run in sub-batches of at most `batch_size` windows, and only windows whose model inputs have the same shape are
stacked, so nothing is ever padded: a record's features never depend on the other records of its batch, and memory
per forward is bounded by `batch_size` windows, never by the length of a track. Pooling runs over all frames of all
windows of a record (frame-weighted), so windowing only matters at window edges. Vector layers (one vector per
window, e.g. `pooler_output`) are averaged over windows, weighted by each window's length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config.schema import AudioModelSpec
from ..errors import ConfigError, bad_value
from .base import Layer

log = logging.getLogger("ducho")

AUDIO_POOLINGS = ("mean", "avg", "max", "none")
DEFAULT_POOLING = "mean"
DUMMY_SECONDS = 1.0


def as_tensors(waves: Sequence[Any]) -> list[torch.Tensor]:
    """The loader's arrays (`AudioLoader`, torch-free for decoding processes) as tensors sharing their memory."""
    return [torch.from_numpy(wave) if isinstance(wave, np.ndarray) else wave for wave in waves]


def audio_pooling(spec: AudioModelSpec) -> str:
    """The time pooling of frame layers: mean (avg is its alias), max or none."""
    how = spec.pooling or DEFAULT_POOLING
    if how not in AUDIO_POOLINGS:
        raise bad_value("pooling", how, AUDIO_POOLINGS, what="pooling for audio frames")
    return "mean" if how == "avg" else how


@dataclass(frozen=True)
class Windowing:
    """Window and hop in samples; `window` None takes the whole clip as one window."""

    sample_rate: int
    window_seconds: float | None
    hop_seconds: float | None = None

    @property
    def window(self) -> int | None:
        return None if self.window_seconds is None else max(1, round(self.window_seconds * self.sample_rate))

    @property
    def hop(self) -> int | None:
        return None if self.hop_seconds is None else max(1, round(self.hop_seconds * self.sample_rate))

    def split(self, wave: torch.Tensor) -> list[torch.Tensor]:
        """Views of the last axis (`split_windows`): no copy of the track is made."""
        from ..media.audio import split_windows

        return [wave] if self.window is None else split_windows(wave, self.window, self.hop)

    def describe(self) -> dict[str, Any]:
        return {"window_seconds": self.window_seconds if self.window_seconds is not None else "whole clip",
                "hop_seconds": self.hop_seconds if self.hop_seconds is not None else self.window_seconds}


def windowing(spec: AudioModelSpec, sample_rate: int, default_seconds: float | None) -> Windowing:
    """The spec's window/hop, or the backend's default window."""
    window = spec.window_seconds if spec.window_seconds is not None else default_seconds
    if spec.hop_seconds is not None and window is None:
        raise ConfigError("hop_seconds needs window_seconds: this model reads the whole clip by default")
    return Windowing(sample_rate, window, spec.hop_seconds)


@dataclass
class Window:
    """One window of a record: model inputs with a leading batch axis of 1; windows with equal `key` stack.
    Inputs are given, or made from `piece` (a view of the waveform) by `to_inputs` only when their sub-batch runs,
    so a long track never has all its windows' inputs in memory at once."""

    record: int
    position: int
    inputs: dict[str, torch.Tensor] | None
    weight: float
    key: Hashable = field(default=None)
    piece: torch.Tensor | None = None
    to_inputs: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        if self.key is None and self.inputs is not None:
            self.key = tuple((name, tuple(value.shape), value.dtype) for name, value in sorted(self.inputs.items()))
        elif self.key is None and self.piece is not None:
            self.key = (tuple(self.piece.shape), self.piece.dtype)  # equal pieces give equal input shapes

    def model_inputs(self) -> dict[str, torch.Tensor]:
        if self.inputs is not None:
            return self.inputs
        assert self.to_inputs is not None and self.piece is not None
        return self.to_inputs(self.piece)


def make_windows(waves: Sequence[torch.Tensor], windows: Windowing,
                 to_inputs: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> list[Window]:
    """Every window of every record (views; `to_inputs` runs per sub-batch); weight = window samples."""
    return [Window(record, position, None, float(piece.shape[-1]), piece=piece, to_inputs=to_inputs)
            for record, wave in enumerate(waves) for position, piece in enumerate(windows.split(wave))]


def sub_batches(windows: Sequence[Window], batch_size: int) -> Iterator[tuple[list[Window], dict[str, torch.Tensor]]]:
    """Windows with the same input shapes, at most `batch_size` at a time, with their stacked inputs."""
    groups: dict[Hashable, list[Window]] = {}
    for window in windows:
        groups.setdefault(window.key, []).append(window)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            chosen = group[start:start + batch_size]
            inputs = [w.model_inputs() for w in chosen]
            yield chosen, {name: torch.cat([i[name] for i in inputs]) for name in inputs[0]}


class RecordPool:
    """Accumulates one layer of one record: frames (frames, D) pooled over all windows, or window vectors (D,)."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.total: torch.Tensor | None = None
        self.count = 0.0
        self.vector = False
        self.parts: dict[int, torch.Tensor] = {}

    def add(self, value: torch.Tensor, position: int, weight: float) -> None:
        value = value.detach().float().cpu()
        if value.dim() == 1:  # a window vector: weighted mean over windows
            self.vector = True
            self._merge(value * weight, weight)
        elif self.how == "none":
            self.parts[position] = value
        elif self.how == "max":
            self.total = value.amax(dim=0) if self.total is None else torch.maximum(self.total, value.amax(dim=0))
        else:
            self._merge(value.sum(dim=0), float(value.shape[0]))

    def _merge(self, value: torch.Tensor, count: float) -> None:
        self.total = value.clone() if self.total is None else self.total + value
        self.count += count

    def result(self) -> np.ndarray:
        if self.parts:
            return torch.cat([self.parts[p] for p in sorted(self.parts)]).numpy()
        if self.total is None:
            raise RuntimeError("no window of this record produced frames")
        if self.how == "max" and not self.vector:
            return self.total.numpy()
        return (self.total / max(self.count, 1e-12)).numpy()


def run_windows(windows: Sequence[Window], records: int, layers: Sequence[Layer], batch_size: int,
                encode: Callable[[dict[str, torch.Tensor]], dict[str, list[torch.Tensor]]],
                ) -> dict[str, list[np.ndarray]]:
    """Run `encode` on sub-batches of windows and pool per record; `encode` gives, per layer name, one tensor per
    window: (frames, D) for frame layers, (D,) for vector layers. Returns per layer folder one array per record."""
    pools = {layer.folder: [RecordPool(layer.pooling) for _ in range(records)] for layer in layers}
    for chosen, stacked in sub_batches(windows, batch_size):
        outputs = encode(stacked)
        for layer in layers:
            for window, value in zip(chosen, outputs[layer.name]):
                pools[layer.folder][window.record].add(value, window.position, window.weight)
    return {folder: [pool.result() for pool in record_pools] for folder, record_pools in pools.items()}


def channels_first_frames(value: torch.Tensor) -> torch.Tensor:
    """(batch, C, T) or (batch, C, F, T) with time last -> (batch, T, C*F); (batch, D) stays a vector per window."""
    if value.dim() <= 2:
        return value
    return value.flatten(1, -2).transpose(1, 2)


def dummy_wave(sample_rate: int, channels: int | None = None, seconds: float = DUMMY_SECONDS) -> torch.Tensor:
    """A reproducible noise clip for `layer_shapes`."""
    generator = torch.Generator().manual_seed(0)
    shape = (round(seconds * sample_rate),) if not channels else (channels, round(seconds * sample_rate))
    return (torch.rand(shape, generator=generator) - 0.5) * 0.2


def preprocessing(spec: AudioModelSpec, sample_rate: int, windows: Windowing, **extra: Any) -> dict[str, Any]:
    """The audio settings for the manifest."""
    return {"sample_rate": sample_rate, "mono": spec.mono, "offset": spec.offset, "max_seconds": spec.max_seconds,
            **windows.describe(), "padding": "none (only windows of equal shape are batched)", **extra}
