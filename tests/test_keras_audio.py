"""The tensorflow audio backend: musicnn's packaged checkpoints against a reference built here from the same files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ducho.backends import keras_audio
from ducho.backends.keras_audio import KerasAudio
from ducho.config.schema import AudioModelSpec
from ducho.errors import ConfigError, ModelNotFoundError

CLIPS = Path(__file__).resolve().parents[1] / "src" / "ducho" / "demo" / "data" / "audio" / "clips"
PIANO = CLIPS / "piano_ballad.ogg"
QUARTET = CLIPS / "string_quartet.ogg"


def extractor(**settings: object) -> KerasAudio:
    return KerasAudio(AudioModelSpec(**{"model_name": "musicnn_mtt", **settings}), "cpu")


@pytest.fixture(scope="module")
def per_patch() -> KerasAudio:
    return extractor(output_layers=["taggram", "penultimate"], pooling="none", batch_size=8)


def musicnn_reference(path: Path, fetch: list[str]) -> list[np.ndarray]:
    """musicnn's computation, following the environment note: librosa.load at 16 kHz, librosa mel, logC, 187-frame
    patches without overlap; the meta graph imported without training nodes, variables loaded from the checkpoint."""
    import librosa

    from ducho.backends.keras_common import import_keras

    import_keras()
    import tensorflow as tf
    from tensorflow.core.framework import variable_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    audio, sr = librosa.load(path, sr=16000)
    mel = librosa.feature.melspectrogram(y=audio, sr=sr, hop_length=256, n_fft=512, n_mels=96).T
    with np.errstate(over="ignore"):  # musicnn's literal float16 arithmetic overflows on current numpy
        assert np.isinf(np.log10(10000 * mel.astype(np.float16) + 1)).any()
    rep = np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)
    batch = np.stack([rep[t:t + 187] for t in range(0, rep.shape[0] - 187 + 1, 187)])

    folder = keras_audio.package_dir() / "MTT_musicnn"
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString((folder / ".meta").read_bytes())
    training = ("gradients", "Adam", "save", "init", "beta1_power", "beta2_power")
    nodes = [n for n in meta.graph_def.node if not any(n.name.startswith(t) or "Adam" in n.name for t in training)]
    del meta.graph_def.node[:]
    meta.graph_def.node.extend(nodes)
    for node in meta.graph_def.node:
        node.attr.pop("_output_shapes", None)
    variables = []
    for raw in meta.collection_def["variables"].bytes_list.value:
        definition = variable_pb2.VariableDef.FromString(raw)
        if "Adam" not in definition.variable_name and "power" not in definition.variable_name:
            variables.append(raw)
    for key in list(meta.collection_def):
        del meta.collection_def[key]
    meta.collection_def["variables"].bytes_list.value.extend(variables)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
        with tf.compat.v1.Session() as session:
            reader = tf.compat.v1.train.NewCheckpointReader(str(folder) + "/")
            for variable in tf.compat.v1.global_variables():
                variable.load(reader.get_tensor(variable.op.name), session)
            return session.run(fetch, {"model/Placeholder:0": batch, "model/Placeholder_2:0": False})


def test_taggram_and_penultimate_equal_musicnn_computed_directly(per_patch: KerasAudio) -> None:
    import tensorflow as tf

    (taggram,) = musicnn_reference(PIANO, ["model/Sigmoid:0"])
    out = per_patch.forward(per_patch.prepare([per_patch.loader(str(PIANO))]))
    assert out["taggram"][0].shape == (3, 50) == taggram.shape  # 10 s: 626 frames -> 3 patches, tail dropped
    assert np.abs(out["taggram"][0] - taggram).max() < 1e-5
    # penultimate is the input of the output layer: sigmoid(penultimate @ W + b) with the checkpoint's W, b
    reader = tf.compat.v1.train.NewCheckpointReader(str(keras_audio.package_dir() / "MTT_musicnn") + "/")
    penultimate = out["penultimate"][0]
    assert penultimate.shape == (3, 200)
    logits = penultimate @ reader.get_tensor("dense_1/kernel") + reader.get_tensor("dense_1/bias")
    assert np.abs(1 / (1 + np.exp(-logits)) - taggram).max() < 1e-5


@pytest.mark.kernels
def test_batch_size_does_not_change_features(per_patch: KerasAudio) -> None:
    one = extractor(output_layers=["taggram", "penultimate"], pooling="none", batch_size=1)
    waves = [per_patch.loader(str(QUARTET)), per_patch.loader(str(PIANO))]
    a, b = one.forward(one.prepare(waves)), per_patch.forward(per_patch.prepare(waves))
    for layer in ("taggram", "penultimate"):
        for x, y in zip(a[layer], b[layer]):
            assert x.shape == y.shape and x.shape[0] == 3
            # fp32 rounding of another batch's kernels: under oneDNN's SSE4.1 level, once 1.1e-5 on a value of 0.064
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_long_clip_pooling_is_over_patches(per_patch: KerasAudio) -> None:
    long = np.concatenate([per_patch.loader(str(PIANO)), per_patch.loader(str(QUARTET))])  # 19.5 s -> 6 patches
    frames = per_patch.forward(per_patch.prepare([long]))
    mean = extractor(output_layers=["taggram", "penultimate"], batch_size=4)
    peak = extractor(output_layers=["taggram"], pooling="max", batch_size=4)
    pooled, maxed = mean.forward(mean.prepare([long])), peak.forward(peak.prepare([long]))
    assert frames["taggram"][0].shape == (6, 50)
    np.testing.assert_allclose(pooled["taggram"][0], frames["taggram"][0].mean(0), atol=1e-6)
    np.testing.assert_allclose(pooled["penultimate"][0], frames["penultimate"][0].mean(0), atol=1e-5)
    np.testing.assert_allclose(maxed["taggram"][0], frames["taggram"][0].max(0), atol=1e-6)


def test_piano_clip_is_tagged_piano(per_patch: KerasAudio) -> None:
    mean = extractor(output_layers=["taggram"])
    taggram = mean.forward(mean.prepare([mean.loader(str(PIANO))]))["taggram"][0]
    top = [mean.checkpoint.labels[i] for i in np.argsort(-taggram)[:5]]
    assert top[0] == "piano" and "classical" in top and taggram.max() > 0.9


def test_short_clip_layer_shapes_describe_and_names() -> None:
    vgg = KerasAudio(AudioModelSpec(model_name="VGG_MTT", output_layers=["taggram", "penultimate"]), "cpu")
    assert vgg.layer_shapes() == {"taggram": (50,), "penultimate": (256,)}  # 1 s: one repeat-padded patch
    msd = KerasAudio(AudioModelSpec(model_name="MSD_musicnn", output_layers=["max_pool", "mean_pool"]), "cpu")
    assert msd.layer_shapes() == {"max_pool": (753,), "mean_pool": (753,)}
    facts = msd.describe()
    assert facts["tags"][0] == "rock" and len(facts["tags"]) == 50
    assert set(facts["model"]["sha256"]) == {".meta", ".index", ".data-00000-of-00001"}
    assert all(len(digest) == 64 for digest in facts["model"]["sha256"].values())
    assert facts["preprocessing"]["patch_frames"] == 187 and facts["layers"]["max_pool"] == "model/Max:0"
    with pytest.raises(ConfigError, match="not a layer"):
        extractor(output_layers=["pool5"])
    with pytest.raises(ConfigError, match="187-frame"):
        extractor(window_seconds=5.0)


def test_check_reports_checkpoint_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    where = KerasAudio.check(AudioModelSpec(model_name="musicnn_msd"))
    assert "MSD_musicnn" in where and "0.1.0" in where
    with pytest.raises(ModelNotFoundError, match="musicnn_mtt"):
        KerasAudio.check(AudioModelSpec(model_name="musicnn_big"))
    monkeypatch.setattr(keras_audio.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install musicnn --no-deps"):
        KerasAudio.check(AudioModelSpec(model_name="musicnn_mtt"))


def test_run_end_to_end(tmp_path: Path, per_patch: KerasAudio) -> None:
    from ducho import run

    clips = tmp_path / "clips"
    clips.mkdir()
    for clip in (PIANO, QUARTET):
        shutil.copy(clip, clips / clip.name)
    config = {"dataset_path": str(tmp_path), "device": "cpu", "workers": 1, "audio": {"items": {
        "input_path": "clips", "output_path": "out",
        "model": [{"model_name": "musicnn_mtt", "backend": "tensorflow", "output_layers": ["taggram", "penultimate"],
                   "batch_size": 4}]}}}
    result = run(config, progress=False)
    assert result.jobs[0].extracted == 2
    root = tmp_path / "out" / "tensorflow" / "musicnn_mtt"
    taggram = {p.stem: np.load(p) for p in (root / "taggram").glob("*.npy")}
    penultimate = {p.stem: np.load(p) for p in (root / "penultimate").glob("*.npy")}
    assert sorted(taggram) == sorted(penultimate) == ["piano_ballad", "string_quartet"]
    assert all(v.shape == (50,) for v in taggram.values()) and all(v.shape == (200,) for v in penultimate.values())
    direct = per_patch.forward(per_patch.prepare([per_patch.loader(str(PIANO))]))["taggram"][0].mean(0)
    np.testing.assert_allclose(taggram["piano_ballad"], direct, atol=1e-5)
    assert "model/Sigmoid:0" in (root / "taggram" / "manifest.json").read_text()
