"""Handcrafted audio features (librosa): each "layer" is a named feature family of a whole clip.

`model_name` is a free label; `output_layers` picks families (all when empty); settings go in `params`:
`sample_rate` (22050; the spec's `sample_rate` is accepted too) and `n_mfcc` (20). Every file is read with
`read_audio` (mono, resampled with soxr; `offset` and `max_seconds` apply). Frame features use librosa's defaults
(n_fft 2048, hop 512, centred frames); one magnitude STFT is shared by the spectral families. A clip shorter than
2048 samples is zero-padded to 2048 (librosa warns below one frame). Statistics are taken
over all frames of the clip, so lengths depend only on the params. All values are float32.

=========  ==========  ==================================================================================
family     dimension   computed with
=========  ==========  ==================================================================================
mfcc       6*n_mfcc    `librosa.feature.mfcc`, `librosa.feature.delta` (order 1 and 2; width 9, or mode
                       "nearest" for clips under 9 frames): [mean, std] of mfcc, then delta, then delta2
chroma     24          `librosa.feature.chroma_stft` (12 pitch classes, C=0 ... A=9, B=11): mean, std
spectral   22          mean, std of `spectral_centroid`, `spectral_bandwidth`, `spectral_rolloff`,
                       `spectral_flatness` (8), then mean (7 bands), std (7 bands) of `spectral_contrast` (14);
                       needs sample_rate > 12800 (its top band starts at 6400 Hz)
zcr        2           `librosa.feature.zero_crossing_rate`: mean, std
rms        2           `librosa.feature.rms` (on the waveform): mean, std
tempo      1           `librosa.feature.tempo` (beats per minute, from the onset strength envelope)
=========  ==========  ==================================================================================
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..config.schema import AudioModelSpec
from ..errors import ConfigError
from .handcrafted_common import (
    Family,
    HandcraftedExtractor,
    Param,
    choose_layers,
    compute_families,
    read_params,
    reject_unused,
    require,
)

PARAMS = {
    "sample_rate": Param(22050, 1000, "sample rate the audio is resampled to"),
    "n_mfcc": Param(20, 1, "number of MFCC coefficients"),
}
DELTA_WIDTH = 9
CONTRAST_MIN_RATE = 12800  # spectral_contrast: 6 octave bands from 200 Hz, each must start below Nyquist
N_FFT = 2048  # librosa's default frame; shorter clips are zero-padded to it


class Clip:
    """One mono waveform and the magnitude STFT the spectral families share (computed once)."""

    def __init__(self, wave: np.ndarray, sample_rate: int) -> None:
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        self.wave = np.pad(wave, (0, N_FFT - len(wave))) if len(wave) < N_FFT else wave
        self.sample_rate = sample_rate

    @cached_property
    def magnitude(self) -> np.ndarray:
        import librosa

        return np.abs(librosa.stft(self.wave))


def mean_std(frames: np.ndarray) -> np.ndarray:
    """[mean per row, std per row] of a (rows, frames) array."""
    return np.concatenate([frames.mean(axis=-1), frames.std(axis=-1)])


def mfcc(clip: Clip, params: dict[str, int]) -> np.ndarray:
    import librosa

    coefficients = librosa.feature.mfcc(y=clip.wave, sr=clip.sample_rate, n_mfcc=params["n_mfcc"])
    mode = "interp" if coefficients.shape[-1] >= DELTA_WIDTH else "nearest"
    deltas = [librosa.feature.delta(coefficients, width=DELTA_WIDTH, order=order, mode=mode) for order in (1, 2)]
    return np.concatenate([mean_std(part) for part in (coefficients, *deltas)])


def chroma(clip: Clip, params: dict[str, int]) -> np.ndarray:
    import librosa

    return mean_std(librosa.feature.chroma_stft(S=clip.magnitude**2, sr=clip.sample_rate))


def spectral(clip: Clip, params: dict[str, int]) -> np.ndarray:
    import librosa

    s, sr = clip.magnitude, clip.sample_rate
    shapes = np.concatenate([librosa.feature.spectral_centroid(S=s, sr=sr),
                             librosa.feature.spectral_bandwidth(S=s, sr=sr),
                             librosa.feature.spectral_rolloff(S=s, sr=sr), librosa.feature.spectral_flatness(S=s)])
    return np.concatenate([mean_std(shapes), mean_std(librosa.feature.spectral_contrast(S=s, sr=sr))])


def zcr(clip: Clip, params: dict[str, int]) -> np.ndarray:
    import librosa

    return mean_std(librosa.feature.zero_crossing_rate(clip.wave))


def rms(clip: Clip, params: dict[str, int]) -> np.ndarray:
    import librosa

    return mean_std(librosa.feature.rms(y=clip.wave))


def tempo(clip: Clip, params: dict[str, int]) -> np.ndarray:
    import librosa

    return np.atleast_1d(librosa.feature.tempo(y=clip.wave, sr=clip.sample_rate))


FAMILIES: dict[str, Family] = {
    "mfcc": Family(lambda p: 6 * p["n_mfcc"], mfcc, "librosa.feature.mfcc + librosa.feature.delta"),
    "chroma": Family(lambda p: 24, chroma, "librosa.feature.chroma_stft"),
    "spectral": Family(lambda p: 22, spectral, "librosa.feature.spectral_centroid/bandwidth/rolloff/flatness/"
                                               "contrast"),
    "zcr": Family(lambda p: 2, zcr, "librosa.feature.zero_crossing_rate"),
    "rms": Family(lambda p: 2, rms, "librosa.feature.rms"),
    "tempo": Family(lambda p: 1, tempo, "librosa.feature.tempo"),
}


def audio_features(wave: np.ndarray, names: tuple[str, ...] | list[str], params: dict[str, int]) -> dict[str, Any]:
    """The requested families of an already decoded mono waveform at params['sample_rate']."""
    return compute_families(Clip(wave, params["sample_rate"]), names, FAMILIES, params)


@dataclass(frozen=True)
class AudioFamiliesLoader:
    """Runs in worker processes: decodes one file (mono, resampled) and computes every requested family."""

    families: tuple[str, ...]
    params: dict[str, int] = field(default_factory=dict)
    offset: float = 0.0
    max_seconds: float | None = None

    def __call__(self, path: Any) -> dict[str, np.ndarray]:
        from ..media.audio import read_audio

        full = {**{k: p.default for k, p in PARAMS.items()}, **self.params}
        wave = read_audio(path, sample_rate=full["sample_rate"], mono=True, offset=self.offset,
                          max_seconds=self.max_seconds)
        return audio_features(wave, self.families, full)


UNUSED = {"weights": None, "pooling": None, "window_seconds": None, "hop_seconds": None,
          "feature_extractor_name": None, "mono": True}


def _params(spec: AudioModelSpec) -> dict[str, int]:
    """params with the spec's own sample_rate as the default (a conflicting pair is an error)."""
    given = dict(spec.params)
    if spec.sample_rate is not None:
        if given.setdefault("sample_rate", spec.sample_rate) != spec.sample_rate:
            raise ConfigError(f"sample_rate {spec.sample_rate} and params.sample_rate {given['sample_rate']} "
                              "differ; give one")
    return read_params(given, PARAMS, "handcrafted audio")


def _checked(spec: AudioModelSpec) -> tuple[dict[str, int], str]:
    params = _params(spec)
    reject_unused(spec, UNUSED)
    layers = choose_layers(spec.output_layers, FAMILIES)
    if params["sample_rate"] <= CONTRAST_MIN_RATE and any(layer.name == "spectral" for layer in layers):
        raise ConfigError(f"spectral needs a sample_rate above {CONTRAST_MIN_RATE} (spectral_contrast's top octave "
                          f"band starts at 6400 Hz), got {params['sample_rate']}")
    version = require("librosa", "librosa")
    return params, f"handcrafted audio features (librosa {version}): {', '.join(x.name for x in layers)}"


class HandcraftedAudio(HandcraftedExtractor):
    """Handcrafted audio features; see the module docstring for the families."""

    families = FAMILIES

    @staticmethod
    def check(spec: AudioModelSpec) -> str:
        return _checked(spec)[1]

    def __init__(self, spec: AudioModelSpec, device: str) -> None:
        params, _ = _checked(spec)
        super().__init__(spec, params)
        self.libraries = {name: importlib.metadata.version(name) for name in ("librosa", "numpy", "scipy", "soxr")}
        self.loader = AudioFamiliesLoader(tuple(layer.name for layer in self.layers), params, spec.offset,
                                          spec.max_seconds)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_facts("audio"),
                "preprocessing": {"decode": "read_audio (mono channel mean, soxr HQ resampling)",
                                  "offset": self.spec.offset, "max_seconds": self.spec.max_seconds,
                                  "frames": "librosa defaults: n_fft 2048, hop 512, centred", **self.params}}
