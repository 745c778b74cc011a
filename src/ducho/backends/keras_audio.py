"""TensorFlow audio backend: the musicnn music-tagging CNNs (Pons & Serra), from the checkpoints packaged in `musicnn`.

model_name (case-insensitive): `musicnn_mtt`, `musicnn_msd` (musicnn trained on MagnaTagATune / the Million Song
Dataset), `vgg_mtt`, `vgg_msd` (the VGG-like baselines); the package's folder names (`MTT_musicnn`...) work too.
Install with `pip install musicnn --no-deps`: its declared dependencies pin ancient versions, and only its
checkpoint files are used (its `extractor` module does not run on current numpy / librosa / TensorFlow).

Loading: the TF1 meta graph minus its training nodes (gradients, Adam, save, init) and `_output_shapes` is imported
ONCE per extractor into a `tf.compat.v1` Graph + Session, and its variables are assigned from
`NewCheckpointReader(<dir>/)`; the `is_training` placeholder is fed False (batch-norm moving statistics, no dropout).

Front end, as musicnn's `batch_data`: 16 kHz mono; librosa mel power spectrogram (n_fft 512, hop 256, 96 mels, librosa
defaults otherwise); stored as float16 (musicnn's and its training data's quantisation), then `log10(10000 * mel + 1)`
computed in float32 (in float16, as musicnn wrote it, 10000 * mel overflows to inf on current numpy for any loud bin
and every tag becomes NaN). The log-mel is cut into 187-frame (3 s) patches, the model's windows: non-overlapping by
default, `hop_seconds` sets the patch step (frames = `librosa.time_to_frames(hop_seconds)`, as musicnn's
`input_overlap`); like musicnn, frames after the last whole patch are dropped, and a clip shorter than one patch is
repeat-padded to 187 frames (the models' training `pad_short: repeat-pad`). Patches of all records of a batch run
`batch_size` at a time.

Layers (one vector per patch, pooled over the patches of a record: mean (default), max, or none -> (patches, D)):
- `taggram`: the 50 tag probabilities (`model/Sigmoid`); tag names in `describe()["tags"]`.
- musicnn: `penultimate` (default; the 200-d dense layer after its batch norm, `model/batch_normalization_10/
  batchnorm/add_1`, musicnn's `penultimate` feature), `max_pool` / `mean_pool` (the 753-d temporal max / mean
  of the mid-end features, `model/Max` / `model/moments/Squeeze`, musicnn's `max_pool` / `mean_pool`).
- vgg: `pool5` (default; `penultimate` is its alias): the last pooling block flattened, 256-d
  (`model/Flatten/flatten/Reshape`, the input of the output layer).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.schema import AudioModelSpec
from ..errors import ConfigError, ModelNotFoundError
from ..media.audio import AudioLoader
from .audio_common import Window, Windowing, as_tensors, audio_pooling, dummy_wave, preprocessing, run_windows
from .base import Layer
from .keras_common import file_sha256, import_keras, tf_device

log = logging.getLogger("ducho")

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # musicnn's input_length 3 s: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
PATCH_SECONDS = 3.0
INSTALL = "pip install musicnn --no-deps"
CHECKPOINT_FILES = (".meta", ".index", ".data-00000-of-00001")
TRAINING_NODES = re.compile(r"^(gradients|save|init)(/|_|$)|Adam|beta[12]_power")

INPUT = "model/Placeholder:0"  # (None, 187, 96) float32 log-mel patches
IS_TRAINING = "model/Placeholder_2:0"  # bool (model/Placeholder_1 is the training labels)
TAGGRAM = "model/Sigmoid:0"
MUSICNN_TENSORS = {
    "taggram": TAGGRAM,
    "penultimate": "model/batch_normalization_10/batchnorm/add_1:0",
    "max_pool": "model/Max:0",
    "mean_pool": "model/moments/Squeeze:0",
}
VGG_TENSORS = {"taggram": TAGGRAM, "pool5": "model/Flatten/flatten/Reshape:0"}
VGG_ALIASES = {"penultimate": "pool5"}

MODELS = {"musicnn_mtt": "MTT_musicnn", "musicnn_msd": "MSD_musicnn", "vgg_mtt": "MTT_vgg", "vgg_msd": "MSD_vgg"}

# musicnn/configuration.py (0.1.0): the order of the 50 outputs.
MTT_LABELS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
)
MSD_LABELS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock", "jazz",
    "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow", "electronica",
    "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy",
    "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)


@dataclass(frozen=True)
class Checkpoint:
    """One packaged model: its Ducho name, the package folder, tag names and layer tensors."""

    name: str
    folder: str

    @property
    def vgg(self) -> bool:
        return self.folder.endswith("_vgg")

    @property
    def labels(self) -> tuple[str, ...]:
        return MTT_LABELS if self.folder.startswith("MTT") else MSD_LABELS

    @property
    def tensors(self) -> dict[str, str]:
        return VGG_TENSORS if self.vgg else MUSICNN_TENSORS

    @property
    def default_layer(self) -> str:
        return "pool5" if self.vgg else "penultimate"

    def layer_name(self, folder: str) -> str:
        name = folder.lower()
        if self.vgg:
            name = VGG_ALIASES.get(name, name)
        if name not in self.tensors:
            raise ConfigError(f"output_layers: {folder!r} is not a layer of {self.name}; use "
                              f"{', '.join([*self.tensors, *(VGG_ALIASES if self.vgg else ())])}")
        return name


def resolve(model_name: str) -> Checkpoint:
    """The packaged checkpoint called `model_name` (any case); ModelNotFoundError for another name."""
    key = model_name.strip().lower()
    for name, folder in MODELS.items():
        if key in (name, folder.lower()):
            return Checkpoint(name, folder)
    raise ModelNotFoundError(f"model {model_name!r} is not a musicnn model of the tensorflow audio backend; use "
                             f"{', '.join(MODELS)} (the checkpoints packaged in musicnn: {INSTALL})")


def package_dir() -> Path:
    """The installed musicnn package folder, found without importing it (its modules import TensorFlow)."""
    found = importlib.util.find_spec("musicnn")
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(f"the musicnn models need the musicnn package, which is not installed: {INSTALL} "
                                 f"(only its checkpoint files are used)")
    return Path(list(found.submodule_search_locations)[0])


def checkpoint_dir(checkpoint: Checkpoint) -> Path:
    """The checkpoint folder (`<musicnn>/<folder>/` holding `.meta`, `.index`, `.data-00000-of-00001`)."""
    where = package_dir() / checkpoint.folder
    missing = [f for f in CHECKPOINT_FILES if not (where / f).is_file()]
    if missing:
        raise ModelNotFoundError(f"checkpoint {str(where)!r} of {checkpoint.name} lacks {', '.join(missing)}; "
                                 f"reinstall musicnn ({INSTALL})")
    return where


def musicnn_version() -> str:
    try:
        return metadata.version("musicnn")
    except metadata.PackageNotFoundError:
        return "unknown"


def log_mel(wave: np.ndarray) -> np.ndarray:
    """(frames, 96) float32: musicnn's librosa mel spectrogram, float16-quantised, then log10(10000 * mel + 1)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=np.asarray(wave, dtype=np.float32), sr=SAMPLE_RATE, hop_length=HOP,
                                         n_fft=N_FFT, n_mels=N_MELS).T
    mel = mel.astype(np.float16).astype(np.float32)
    return np.log10(10000 * mel + 1).astype(np.float32)


def patches(rep: np.ndarray, hop: int) -> list[np.ndarray]:
    """187-frame patches every `hop` frames (the tail after the last whole patch is dropped, as in musicnn); a
    shorter spectrogram is repeat-padded to one patch."""
    if rep.shape[0] < PATCH_FRAMES:
        return [np.resize(rep, (PATCH_FRAMES, rep.shape[1])).astype(np.float32)]
    return [rep[start:start + PATCH_FRAMES] for start in range(0, rep.shape[0] - PATCH_FRAMES + 1, hop)]


def _frames(seconds: float) -> int:
    import librosa

    return int(librosa.time_to_frames(seconds, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP))


def patch_hop(spec: AudioModelSpec) -> int:
    """The patch step in frames: 187 (non-overlapping) unless `hop_seconds` is set."""
    if spec.window_seconds is not None and _frames(spec.window_seconds) + 1 != PATCH_FRAMES:
        raise ConfigError(f"window_seconds: musicnn models read {PATCH_FRAMES}-frame ({PATCH_SECONDS:g} s) patches; "
                          f"leave window_seconds unset (or {PATCH_SECONDS:g})")
    if spec.hop_seconds is None:
        return PATCH_FRAMES
    return max(1, _frames(spec.hop_seconds))


def load_session(directory: Path, device: str) -> tuple[Any, Any]:
    """The checkpoint's inference graph in its own Graph + Session, variables assigned from the checkpoint."""
    import_keras()  # TensorFlow after torch._dynamo (else triton segfaults), GPU memory growth on
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString((directory / ".meta").read_bytes())
    graph_def = tf.compat.v1.GraphDef()
    graph_def.versions.CopyFrom(meta.graph_def.versions)
    for node in meta.graph_def.node:
        if not TRAINING_NODES.search(node.name):
            kept = graph_def.node.add()
            kept.CopyFrom(node)
            kept.attr.pop("_output_shapes", None)
            kept.device = ""
    graph = tf.Graph()
    reader = tf.compat.v1.train.NewCheckpointReader(str(directory) + "/")
    with graph.as_default(), tf.device(tf_device(device)):
        tf.compat.v1.import_graph_def(graph_def, name="")
        assigns, feeds = [], {}
        for node in graph_def.node:
            if node.op in ("VariableV2", "Variable"):
                variable = graph.get_tensor_by_name(node.name + ":0")
                value = reader.get_tensor(node.name)
                placeholder = tf.compat.v1.placeholder(variable.dtype.base_dtype, value.shape)
                assigns.append(tf.compat.v1.assign(variable, placeholder))
                feeds[placeholder] = value
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    session = tf.compat.v1.Session(graph=graph, config=config)
    session.run(assigns, feeds)
    graph.finalize()
    return graph, session


class KerasAudio:
    """A packaged musicnn / vgg tagger; the graph loads once, patches run `batch_size` at a time."""

    def __init__(self, spec: AudioModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        self.checkpoint = resolve(spec.model_name)
        if spec.weights is not None and spec.weights.upper() != "DEFAULT":
            raise ConfigError(f"weights: {spec.weights!r}; {self.checkpoint.name} loads only its packaged "
                              f"checkpoint (leave weights unset)")
        if spec.sample_rate is not None and spec.sample_rate != SAMPLE_RATE:
            raise ConfigError(f"sample_rate: {spec.sample_rate}; musicnn models read {SAMPLE_RATE} Hz audio "
                              f"(leave sample_rate unset)")
        if spec.params:
            raise ConfigError(f"params: the tensorflow audio backend takes none, got {sorted(spec.params)}")
        if not spec.mono:
            log.info("%s reads mono audio: channels are averaged", self.checkpoint.name)
        self.hop = patch_hop(spec)
        pooling = audio_pooling(spec)
        folders = spec.output_layers or [self.checkpoint.default_layer]
        self.layers = tuple(Layer(f, self.checkpoint.layer_name(f), pooling) for f in folders)
        self.names = sorted({layer.name for layer in self.layers})
        self.loader = AudioLoader(SAMPLE_RATE, mono=True, offset=spec.offset, max_seconds=spec.max_seconds)
        self.directory = checkpoint_dir(self.checkpoint)
        self.graph, self.session = load_session(self.directory, device)
        self.fetches = [self.graph.get_tensor_by_name(self.checkpoint.tensors[n]) for n in self.names]
        self.input = self.graph.get_tensor_by_name(INPUT)
        self.is_training = self.graph.get_tensor_by_name(IS_TRAINING)

    @staticmethod
    def check(spec: AudioModelSpec) -> str:
        """Where the checkpoint is, without loading it; ModelNotFoundError when it is not installed."""
        checkpoint = resolve(spec.model_name)
        return f"packaged musicnn {musicnn_version()} checkpoint {checkpoint.folder}: {checkpoint_dir(checkpoint)}"

    def sort_key(self, payload: Any) -> int:
        return 0

    def windows(self, waves: Sequence[torch.Tensor]) -> list[Window]:
        """Every 187-frame log-mel patch of every record (weight 1 each: pooling is over patches)."""
        out = []
        for record, wave in enumerate(as_tensors(waves)):
            mono = wave.float().numpy() if wave.dim() == 1 else wave.float().mean(dim=0).numpy()
            for position, patch in enumerate(patches(log_mel(mono), self.hop)):
                out.append(Window(record, position, {"mel": torch.from_numpy(np.ascontiguousarray(patch)[None])},
                                  1.0))
        return out

    def prepare(self, waves: Sequence[torch.Tensor]) -> dict[str, Any]:
        return {"windows": self.windows(waves), "records": len(waves)}

    def run(self, mels: np.ndarray) -> dict[str, np.ndarray]:
        """Per layer name, (patches, D) for a (patches, 187, 96) batch."""
        values = self.session.run(self.fetches, {self.input: mels, self.is_training: False})
        return {n: np.asarray(v, dtype=np.float32).reshape(mels.shape[0], -1) for n, v in zip(self.names, values)}

    def forward(self, batch: dict[str, Any]) -> dict[str, Sequence[np.ndarray]]:
        def encode(stacked: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
            values = self.run(stacked["mel"].numpy())
            # each patch is one (1, D) frame, so mean / max / none pool over the patches of a record
            return {n: list(torch.from_numpy(v).unsqueeze(1)) for n, v in values.items()}

        return run_windows(batch["windows"], batch["records"], self.layers, self.spec.batch_size, encode)

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per layer folder, the shape of one record's feature for a 1 s noise clip (one patch)."""
        out = self.forward(self.prepare([dummy_wave(SAMPLE_RATE)]))
        return {folder: tuple(arrays[0].shape) for folder, arrays in out.items()}

    def describe(self) -> dict[str, Any]:
        files = {f: file_sha256(self.directory / f) for f in CHECKPOINT_FILES}
        windows = Windowing(SAMPLE_RATE, PATCH_SECONDS, None if self.spec.hop_seconds is None else self.hop * HOP
                            / SAMPLE_RATE)
        front_end = {
            "mel": f"librosa.feature.melspectrogram(sr={SAMPLE_RATE}, n_fft={N_FFT}, hop_length={HOP}, "
                   f"n_mels={N_MELS}), float16-quantised",
            "scaling": "log10(10000 * mel + 1) in float32",
            "patch_frames": PATCH_FRAMES,
            "patch_hop_frames": self.hop,
            "tail": "frames after the last whole patch are dropped (as musicnn)",
            "padding": "a clip shorter than one patch is repeat-padded to 187 frames",
        }
        return {
            "model": {"requested": self.spec.model_name, "name": self.checkpoint.name,
                      "package": f"musicnn {musicnn_version()}", "checkpoint": str(self.directory),
                      "sha256": files},
            "model_class": "musicnn" if not self.checkpoint.vgg else "vgg",
            "sample_rate": SAMPLE_RATE,
            "layers": {layer.folder: self.checkpoint.tensors[layer.name] for layer in self.layers},
            "tags": list(self.checkpoint.labels),
            "pooling": {layer.folder: f"{layer.pooling} over patches" for layer in self.layers},
            "preprocessing": preprocessing(self.spec, SAMPLE_RATE, windows, mono=True, **front_end),
        }
