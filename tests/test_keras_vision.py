"""Keras (TensorFlow) vision backend: fidelity against a direct `keras.Model(inputs, layer.output)` call,
batch-size independence, ids, one forward for several layers, weights modes and user files, missing ImageNet
weights, torch and Keras models in one run (both orders, fresh processes), and the paper's demo-1 config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import assert_batch_close
from ducho import run
from ducho.backends import keras_common
from ducho.config.schema import VisualModelSpec
from ducho.errors import ConfigError, ModelNotFoundError

MODEL = "MobileNetV3Small"
SPATIAL, VECTOR = "conv_1_bn", "conv_2"  # (7, 7, 576) map; (1, 1, 1024) map written as (1024,)
REPO = Path(__file__).parents[1]


def photos(folder: Path, count: int = 5) -> list[str]:
    """`count` RGB JPEGs of different sizes, one with a dotted id (`a.v2.jpg`); returns the ids."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    ids = [f"p{n}" for n in range(count - 1)] + ["a.v2"]
    for n, item in enumerate(ids):
        size = (60 + 37 * n, 45 + 23 * n)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{item}.jpg")
    return ids


def keras_config(root: Path, images: str, **model: Any) -> dict:
    spec = {"model_name": MODEL, "backend": "tensorflow", "weights": "none", "output_layers": [VECTOR],
            "batch_size": 4, **model}
    return {"dataset_path": str(root), "device": "cpu", "workers": 0,
            "visual": {"items": {"input_path": images, "output_path": "out", "model": [spec]}}}


@pytest.fixture(scope="module")
def keras() -> Any:
    return keras_common.import_keras()  # torch._dynamo first: TensorFlow imported before triton segfaults


@pytest.fixture(scope="module")
def mobilenet() -> Any:
    from ducho.backends.keras_vision import KerasVision

    spec = VisualModelSpec(model_name=MODEL, weights="none", output_layers=[SPATIAL, VECTOR, "predictions"])
    return KerasVision(spec, "cpu")


def direct_mobilenet(keras: Any, names: list[str]) -> dict[str, Any]:
    """The same seeded random MobileNetV3Small built straight from keras.applications, one model per layer."""
    keras.utils.set_random_seed(keras_common.SEED)
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(224, 224, 3))
    return {name: keras.Model(model.input, model.get_layer(name).output) for name in names}


def keras_input(keras: Any, path: Path, size: int, module: Any) -> np.ndarray:
    """Keras's own image path: load_img (PIL bilinear) -> img_to_array -> the model's preprocess_input."""
    image = keras.utils.load_img(path, target_size=(size, size), interpolation="bilinear")
    return module.preprocess_input(keras.utils.img_to_array(image)[None])


@pytest.mark.kernels
def test_fidelity_pooled_and_spatial_layers_against_keras(tmp_path: Path, keras: Any) -> None:
    ids = photos(tmp_path / "images")
    run(keras_config(tmp_path, "images", output_layers=[SPATIAL, VECTOR]), progress=False)
    folder = tmp_path / "out" / "tensorflow" / MODEL
    assert sorted(p.stem for p in (folder / SPATIAL).glob("*.npy")) == sorted(ids)  # `a.v2.jpg` -> `a.v2`
    direct = direct_mobilenet(keras, [SPATIAL, VECTOR])
    for item in ids:
        x = keras_input(keras, tmp_path / "images" / f"{item}.jpg", 224, keras.applications.mobilenet_v3)
        spatial, vector = np.load(folder / SPATIAL / f"{item}.npy"), np.load(folder / VECTOR / f"{item}.npy")
        assert spatial.shape == (7, 7, 576) and vector.shape == (1024,) and spatial.dtype == np.float32
        assert np.abs(spatial - np.asarray(direct[SPATIAL](x, training=False))[0]).max() < 1e-4
        assert np.abs(vector - np.asarray(direct[VECTOR](x, training=False)).reshape(-1)).max() < 1e-4
    manifest = json.loads((folder / SPATIAL / "manifest.json").read_text())
    assert manifest["preprocessing"]["scaling"] == "keras.applications.mobilenet_v3.preprocess_input"
    assert manifest["model"]["weights"] == "random (seeded)" and "(H, W, C)" in manifest["feature_layout"]


@pytest.mark.kernels
def test_batch_sizes_and_workers_give_identical_files(tmp_path: Path) -> None:
    photos(tmp_path / "images", 6)
    results = {}
    for batch_size, workers in ((1, 0), (3, 1), (32, 0)):
        config = keras_config(tmp_path, "images", batch_size=batch_size, output_layers=[SPATIAL, VECTOR],
                              pooling="max")
        config["workers"] = workers
        config["visual"]["items"]["output_path"] = f"out{batch_size}"
        run(config, progress=False)
        folder = tmp_path / f"out{batch_size}" / "tensorflow" / MODEL
        results[batch_size] = {p.relative_to(folder): np.load(p) for p in sorted(folder.glob("*/*.npy"))}
    assert len(results[1]) == 12 and results[1].keys() == results[3].keys() == results[32].keys()
    for name, array in results[1].items():
        assert array.shape == ((576,) if SPATIAL in str(name) else (1024,))
        assert_batch_close(array, results[3][name], name)
        assert_batch_close(array, results[32][name], name)


def test_several_layers_come_from_one_forward(mobilenet: Any, keras: Any, tmp_path: Path) -> None:
    calls = []
    graph = mobilenet.graph
    mobilenet.graph = lambda batch: calls.append(len(batch)) or graph(batch)
    try:
        paths = [tmp_path / "images" / f"{item}.jpg" for item in photos(tmp_path / "images", 3)]
        out = mobilenet.forward(mobilenet.prepare([mobilenet.loader(str(p)) for p in paths]))
    finally:
        mobilenet.graph = graph
    assert calls == [3] and len(mobilenet.extractor.outputs) == 3  # every layer from one forward of the 3 images
    assert [out[n][0].shape for n in (SPATIAL, VECTOR, "predictions")] == [(7, 7, 576), (1024,), (1000,)]
    direct = direct_mobilenet(keras, ["predictions"])["predictions"]
    x = keras_input(keras, paths[2], 224, keras.applications.mobilenet_v3)
    assert np.abs(out["predictions"][2] - np.asarray(direct(x, training=False))[0]).max() < 1e-5
    assert mobilenet.layer_shapes()[SPATIAL] == (7, 7, 576) and mobilenet.layer_shapes()["predictions"] == (1000,)


def test_pooling_avg_is_the_mean_of_the_channels_last_map(mobilenet: Any) -> None:
    from ducho.backends.keras_vision import pool_map

    maps = np.random.default_rng(0).normal(size=(2, 7, 7, 576)).astype(np.float32)
    assert np.allclose(pool_map(maps, "avg"), maps.mean(axis=(1, 2))) and pool_map(maps, "none").shape == maps.shape
    assert pool_map(maps[:, :1, :1], "none").shape == (2, 576) and np.array_equal(pool_map(maps, "max"),
                                                                                 maps.max(axis=(1, 2)))


def test_reshape_and_preprocessing_overrides(tmp_path: Path) -> None:
    from ducho.backends.keras_vision import KerasVision

    image = tmp_path / "images" / "p0.jpg"
    photos(tmp_path / "images", 2)
    small = KerasVision(VisualModelSpec(model_name="mobilenetv3small", weights="none", reshape=(48, 32),
                                        preprocessing="minmax"), "cpu")
    loaded = small.loader(str(image))
    expected = np.asarray(Image.open(image).convert("RGB").resize((48, 32), Image.Resampling.BILINEAR), np.float32)
    assert loaded.shape == (32, 48, 3) and np.array_equal(loaded, expected)
    assert np.allclose(small.prepare([loaded]), expected[None] / 255) and small.model.input_shape == (None, 32, 48, 3)
    zscore = KerasVision(VisualModelSpec(model_name=MODEL, weights="none", preprocessing="zscore",
                                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)), "cpu")
    assert np.allclose(zscore.prepare([loaded]), (expected[None] / 255 - 0.5) / 0.25, atol=1e-6)
    assert zscore.describe()["preprocessing"]["scaling"].startswith("zscore")
    with pytest.raises(ConfigError, match="'conv_2x' is not a layer of MobileNetV3Small \\(did you mean 'conv_2'"):
        KerasVision(VisualModelSpec(model_name=MODEL, weights="none", output_layers=["conv_2x"]), "cpu")


def test_missing_imagenet_weights_fail_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ducho.backends.keras_vision import KerasVision

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    photos(tmp_path / "images", 1)
    config = keras_config(tmp_path, "images")
    del config["visual"]["items"]["model"][0]["weights"]
    expected = r"weights_mobilenet_v3_small_224_1.0_float.h5 there, .*or weights: none for random weights"
    with pytest.raises(ModelNotFoundError, match=expected):
        run(config, progress=False)
    assert not (tmp_path / "out").exists()
    monkeypatch.delitem(keras_common.IMAGENET_FILES, "MobileNet")  # a model the file table does not know:
    with pytest.raises(ModelNotFoundError, match=r"mobilenet_1_0_224_tf.h5 there"):  # Keras's own lookup says so
        KerasVision(VisualModelSpec(model_name="MobileNet", weights="imagenet"), "cpu")
    config["visual"]["items"]["model"][0]["model_name"] = "MobileNetV3Smal"
    with pytest.raises(ModelNotFoundError, match="did you mean 'MobileNetV3Small'"):
        run(config, progress=False)


def test_imagenet_weights_are_read_from_the_keras_cache(tmp_path: Path, keras: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """MobileNet's cached file carries no hash in Keras, so a file saved here stands in for the download."""
    from keras.src.legacy.saving import legacy_h5_format

    from ducho.backends.keras_vision import KerasVision

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    (tmp_path / "keras-home" / "models").mkdir(parents=True)
    keras.utils.set_random_seed(42)
    trained = keras.applications.MobileNet(weights=None)
    trained.save_weights(str(tmp_path / "trained.weights.h5"))
    import h5py

    with h5py.File(tmp_path / "keras-home" / "models" / "mobilenet_1_0_224_tf.h5", "w") as handle:  # Keras's format
        legacy_h5_format.save_weights_to_hdf5_group(handle, trained)
    loaded = KerasVision(VisualModelSpec(model_name="mobilenet", output_layers=["predictions"]), "cpu")
    assert loaded.describe()["model"]["weights_file"].endswith("keras-home/models/mobilenet_1_0_224_tf.h5")
    assert all(np.array_equal(a, b) for a, b in zip(loaded.model.get_weights(), trained.get_weights()))
    from_file = KerasVision(VisualModelSpec(model_name="MobileNet", weights=str(tmp_path / "trained.weights.h5"),
                                            output_layers=["predictions"]), "cpu")
    assert from_file.describe()["model"]["weights_sha256"] and \
        np.array_equal(from_file.model.get_weights()[-1], trained.get_weights()[-1])


def test_user_keras_file_is_loaded_in_safe_mode(tmp_path: Path, keras: Any) -> None:
    from ducho.backends.keras_vision import KerasVision

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x))
    model.save(tmp_path / "mine.keras")
    mine = KerasVision(VisualModelSpec(model_name=str(tmp_path / "mine.keras"), output_layers=["conv", "gap"]), "cpu")
    batch = mine.prepare([np.full((32, 32, 3), 200, np.float32)])
    out = mine.forward(batch)
    assert out["conv"][0].shape == (30, 30, 4) and np.allclose(out["gap"][0], np.asarray(model(batch))[0], atol=1e-5)
    assert mine.describe()["preprocessing"]["scaling"] == "none: 0..255"
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs))
    unsafe.save(tmp_path / "unsafe.keras")
    with pytest.raises(ConfigError, match="trust_remote_code: true"):
        KerasVision(VisualModelSpec(model_name=str(tmp_path / "unsafe.keras"), output_layers=["double"]), "cpu")
    trusted = KerasVision(VisualModelSpec(model_name=str(tmp_path / "unsafe.keras"), output_layers=["double"],
                                          trust_remote_code=True), "cpu")
    assert np.allclose(trusted.forward(batch)["double"][0], 400.0)


TWO_BACKENDS = """\
import json, sys
import numpy as np
import ducho
root = sys.argv[1]
models = [{"model_name": "resnet18", "backend": "torch", "weights": "none", "output_layers": ["avgpool"]},
          {"model_name": "MobileNetV3Small", "backend": "tensorflow", "weights": "none", "output_layers": ["conv_2"]}]
if sys.argv[2] == "keras-first":
    models.reverse()
ducho.run({"dataset_path": root, "device": "cpu", "workers": 1, "visual": {"items": {
    "input_path": "images", "output_path": sys.argv[2], "model": models}}}, progress=False)
"""


@pytest.mark.parametrize("order", ["torch-first", "keras-first"])
def test_torch_and_keras_models_in_one_run_in_a_fresh_process(tmp_path: Path, order: str, mobilenet: Any) -> None:
    ids = photos(tmp_path / "images", 3)
    done = subprocess.run([sys.executable, "-c", TWO_BACKENDS, str(tmp_path), order], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2",
                               "TORCH_HOME": str(tmp_path / "th"), "KERAS_HOME": str(tmp_path / "kh")}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    torch_dir, keras_dir = tmp_path / order / "torch" / "resnet18" / "avgpool", tmp_path / order / "tensorflow" / MODEL
    assert sorted(p.stem for p in torch_dir.glob("*.npy")) == sorted(ids)
    assert sorted(p.stem for p in (keras_dir / VECTOR).glob("*.npy")) == sorted(ids)
    assert np.load(torch_dir / "p0.npy").shape == (512,) and np.load(keras_dir / VECTOR / "p0.npy").shape == (1024,)
    in_process = mobilenet.forward(mobilenet.prepare([mobilenet.loader(str(tmp_path / "images" / "p0.jpg"))]))
    assert np.abs(np.load(keras_dir / VECTOR / "p0.npy") - in_process[VECTOR][0]).max() < 1e-5  # same seeded model


# The paper's demo 1 (fashion), Ducho 1.0 config: VGG19 (torch) and Xception (tensorflow), verbatim
DEMO_1 = """\
dataset_path: ./local/data/demo1
gpu list: 0

visual:
    items:
        input_path: images
        output_path: visual_embeddings
        model: [
            { name: VGG19,  output_layers: classifier.3, reshape: [224, 224], preprocessing: zscore, framework: torch},
            { name: Xception,  output_layers: avg_pool, reshape: [299, 299], framework: tensorflow},
        ]
"""


def test_paper_demo1_torch_vgg19_and_keras_xception_in_one_process(tmp_path: Path, keras: Any) -> None:
    data = tmp_path / "local" / "data" / "demo1"
    ids = photos(data / "images", 3)
    (tmp_path / "config.yml").write_text(DEMO_1)
    done = subprocess.run([sys.executable, "-m", "ducho", "--config=config.yml", "--visual.items.model.0.weights=none",
                           "--visual.items.model.1.weights=none"], cwd=tmp_path, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2",
                               "TORCH_HOME": str(tmp_path / "th"), "KERAS_HOME": str(tmp_path / "kh")}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    vgg = data / "visual_embeddings" / "torch" / "VGG19" / "classifier.3"
    xception = data / "visual_embeddings" / "tensorflow" / "Xception" / "avg_pool"
    assert sorted(p.stem for p in vgg.glob("*.npy")) == sorted(p.stem for p in xception.glob("*.npy")) == sorted(ids)
    assert np.load(vgg / "p1.npy").shape == (4096,)
    keras.utils.set_random_seed(keras_common.SEED)
    model = keras.applications.Xception(weights=None)
    direct = keras.Model(model.input, model.get_layer("avg_pool").output)
    x = keras_input(keras, data / "images" / "a.v2.jpg", 299, keras.applications.xception)
    written = np.load(xception / "a.v2.npy")
    assert written.shape == (2048,) and np.abs(written - np.asarray(direct(x, training=False))[0]).max() < 1e-4
    manifest = json.loads((xception / "manifest.json").read_text())
    assert manifest["preprocessing"]["scaling"] == "keras.applications.xception.preprocess_input"
