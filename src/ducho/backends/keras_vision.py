"""Keras (TensorFlow) vision backend: any `keras.applications` model by class name (case-insensitive) or a user's
own `.keras` file; layers by Keras layer name, every requested layer from one forward of a multi-output model.

Preprocessing, exactly:
- loader (worker processes): decode -> RGB -> PIL bilinear resize to the model's input size (its native size, e.g.
  VGG19 224x224, Xception 299x299; `reshape: [w, h]` overrides it) -> float32 (H, W, 3) in 0..255, as
  `keras.utils.load_img(target_size=...)` + `img_to_array` give;
- prepare (on the stacked batch): the model's own `keras.applications.<module>.preprocess_input`, unless
  `preprocessing: minmax` (x / 255, in [0, 1]) or `preprocessing: zscore` / `mean` / `std`
  ((x / 255 - mean) / std, ImageNet mean/std when unset) replace it. A user's `.keras` model gets 0..255 unless
  overridden. The overrides replace `preprocess_input` only: models that normalise inside the network
  (EfficientNet, ConvNeXt, MobileNetV3) still do so.

Outputs keep Keras's channels-last layout: a spatial layer is written as (H, W, C), not transposed to (C, H, W);
`pooling: avg|mean|max` reduces it over H and W to (C,); a 1x1 map (e.g. MobileNetV3's keepdims pooling) is
written as (C,). TensorFlow is imported only when a Keras model is built (see `keras_common.import_keras`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config.schema import VisualModelSpec
from ..errors import ConfigError, ModelNotFoundError, bad_value, did_you_mean
from ..preprocess.image import IMAGENET_MEAN, IMAGENET_STD
from . import keras_common as common
from .base import Layer
from .pooling import feature_map_layers

log = logging.getLogger("ducho")

DEFAULT_LAYER = "avg_pool"  # the pooled features before the classifier, where the model has one
GLOBAL_POOLINGS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D")


@dataclass(frozen=True)
class Built:
    """A Keras model, the batch scaling its weights expect, and where its weights came from."""

    model: Any
    scaling: common.Scaling
    weights: dict[str, Any]


def application_name(name: str) -> str:
    """The `keras.applications` class a name means (case-insensitive); ModelNotFoundError with a did-you-mean."""
    known = {n.lower(): n for n in common.IMAGENET_FILES}
    if name.lower() in known:
        return known[name.lower()]
    keras = common.import_keras()
    classes = {n.lower(): n for n in dir(keras.applications) if n[:1].isupper()}
    if name.lower() in classes:
        return classes[name.lower()]
    raise ModelNotFoundError(f"model_name {name!r} is not a keras.applications model or a .keras file"
                             f"{did_you_mean(name, classes.values())}; Keras models: "
                             f"{', '.join(sorted(classes.values())[:12])}... (dir(keras.applications))")


def _missing_imagenet(cls: str, path: Path, why: str = "no download while offline") -> ModelNotFoundError:
    return ModelNotFoundError(f"{cls}: ImageNet weights are not on this machine (looked for {path}; {why}). Put "
                              f"{path.name} there, give weights: <.weights.h5 file>, or weights: none for random "
                              "weights")


def _is_imagenet(weights: str | None) -> bool:
    if weights is None or weights.lower() == "imagenet":
        return True
    if common.is_random(weights) or common.is_weights_file(weights):
        return False
    raise bad_value("weights", weights, ["imagenet", "none", "a .weights.h5 / .h5 file"])


def check(spec: VisualModelSpec) -> str:
    """Where the model comes from, without building it; ModelNotFoundError when it cannot be built."""
    name = spec.model_name
    if Path(name).expanduser().is_file():
        return f"user Keras model file: {name}" + (" (safe_mode off)" if spec.trust_remote_code else "")
    if name.lower().endswith(common.MODEL_SUFFIXES):
        raise ModelNotFoundError(f"model file {name!r} not found")
    cls = application_name(name)
    if not _is_imagenet(spec.weights):
        if common.is_random(spec.weights):
            return f"keras.applications.{cls} (random weights)"
        if not Path(spec.weights).expanduser().is_file():
            raise ModelNotFoundError(f"weights file {spec.weights!r} not found")
        return f"keras.applications.{cls} + {spec.weights}"
    file = common.IMAGENET_FILES.get(cls)
    if file is None:
        return f"keras.applications.{cls} (imagenet; Keras locates the file at build)"
    path = common.keras_cache() / file
    if not path.is_file():
        if common.offline():
            raise _missing_imagenet(cls, path)
        return f"keras.applications.{cls} (imagenet: {path} not cached, Keras downloads it)"
    return f"keras.applications.{cls} (imagenet: {path})"


def _input_shape(spec: VisualModelSpec) -> tuple[int, int, int] | None:
    if spec.reshape is None:
        return None
    width, height = spec.reshape
    return (height, width, 3)


def _imagenet(factory: Callable[..., Any], cls: str, shape: tuple[int, int, int] | None, keras: Any) -> Built:
    """Build with `weights="imagenet"`, Keras's own loading, with its `get_file` made to read the cache only
    (a missing file raises ModelNotFoundError naming it while offline)."""
    from keras.src.utils import file_utils

    real = file_utils.get_file
    used: dict[str, Path] = {}

    def cached_get_file(fname: str, origin: str | None = None, **kwargs: Any) -> str:
        path = common.keras_cache().parent / kwargs.get("cache_subdir", "datasets") / fname
        used["path"] = path
        if not path.is_file() and common.offline():
            raise _missing_imagenet(cls, path)
        try:
            return real(fname, origin, **{**kwargs, "cache_dir": str(common.keras_cache().parent)})
        except Exception as error:
            raise _missing_imagenet(cls, path, f"download failed: {str(error).splitlines()[0][:200]}") from error

    file_utils.get_file = cached_get_file
    try:
        with common.seeded(keras):
            model = factory(weights="imagenet", include_top=True, input_shape=shape)
    finally:
        file_utils.get_file = real
    module = sys.modules[factory.__module__]
    return Built(model, common.Scaling("model", module.preprocess_input),
                 {"weights": "imagenet", "weights_file": str(used.get("path", ""))})


def _load_weights(model: Any, path: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelNotFoundError(f"weights file {path!r} not found")
    try:
        model.load_weights(str(file))
    except Exception as error:
        raise ConfigError(f"weights {path!r} do not fit {model.name}: {str(error).splitlines()[0][:300]}") from error
    return {"weights": str(file), "weights_sha256": common.file_sha256(file)}


def _application(cls: str, spec: VisualModelSpec, keras: Any) -> Built:
    factory = getattr(keras.applications, cls)
    native = common.native_size(cls)
    shape = _input_shape(spec) or (native, native, 3)
    if _is_imagenet(spec.weights):
        if shape[:2] != (native, native):
            raise ConfigError(f"reshape {list(spec.reshape or ())}: Keras builds {cls} with ImageNet weights and its "
                              f"classifier only at its native size [{native}, {native}]; give that size, or "
                              "weights: none / a weights file")
        return _imagenet(factory, cls, shape, keras)
    with common.seeded(keras):
        model = factory(weights=None, include_top=True, input_shape=shape)
    scaling = common.Scaling("model", sys.modules[factory.__module__].preprocess_input)
    if common.is_random(spec.weights):
        log.warning("%s: random weights (weights: none), seeded; the features are not pre-trained", cls)
        return Built(model, scaling, {"weights": "random (seeded)"})
    return Built(model, scaling, _load_weights(model, spec.weights))


def _user_file(spec: VisualModelSpec, keras: Any) -> Built:
    """A whole saved model; `safe_mode=True` (no Lambda code from the file) unless `trust_remote_code: true`."""
    path = Path(spec.model_name).expanduser()
    try:
        model = keras.models.load_model(str(path), compile=False, safe_mode=not spec.trust_remote_code)
    except ValueError as error:
        if "safe_mode" in str(error) or "unsafe" in str(error).lower():
            raise ConfigError(f"model_name {spec.model_name!r} holds code (a Lambda layer) that runs when loaded; "
                              "Keras refused it in safe mode. Set trust_remote_code: true if you trust the "
                              "file") from error
        raise ConfigError(f"model_name {spec.model_name!r} cannot be loaded by Keras: "
                          f"{str(error).splitlines()[0][:300]}") from error
    info = {"weights": str(path), "weights_sha256": common.file_sha256(path),
            "loaded_with": f"keras.models.load_model(safe_mode={not spec.trust_remote_code})"}
    if common.is_weights_file(spec.weights):
        info.update(_load_weights(model, spec.weights))
    return Built(model, common.Scaling("raw"), info)


def build(spec: VisualModelSpec, keras: Any) -> Built:
    """Build the model the spec names; no weights are downloaded while offline."""
    if Path(spec.model_name).expanduser().is_file():
        return _user_file(spec, keras)
    check(spec)  # a missing file or weights fail with the same message as `ducho validate`
    return _application(application_name(spec.model_name), spec, keras)


def with_overrides(scaling: common.Scaling, spec: VisualModelSpec) -> common.Scaling:
    """`preprocessing: minmax` -> x / 255; `zscore` (or mean/std given) -> (x / 255 - mean) / std."""
    if spec.preprocessing == "minmax":
        return common.Scaling("minmax")
    if spec.preprocessing == "zscore" or spec.mean is not None or spec.std is not None:
        return common.Scaling("zscore", mean=tuple(spec.mean or IMAGENET_MEAN), std=tuple(spec.std or IMAGENET_STD))
    return scaling


def pool_map(batch: np.ndarray, how: str) -> np.ndarray:
    """Reduce (N, H, W, C) maps over H and W (avg/mean, max); `none` keeps them, a 1x1 map becomes (N, C)."""
    if batch.ndim == 4:
        if how in ("avg", "mean"):
            return batch.mean(axis=(1, 2))
        if how == "max":
            return batch.max(axis=(1, 2))
        return batch.reshape(batch.shape[0], -1) if batch.shape[1:3] == (1, 1) else batch
    if batch.ndim == 3 and how in ("avg", "mean", "max"):  # (N, steps, C)
        return batch.mean(axis=1) if how != "max" else batch.max(axis=1)
    return batch


class KerasVision:
    """A Keras image model; one multi-output `keras.Model` (built once) gives every requested layer per forward."""

    check = staticmethod(check)

    def __init__(self, spec: VisualModelSpec, device: str) -> None:
        self.keras = common.import_keras()
        import tensorflow as tf

        self.spec = spec
        self.device = common.tf_device(device)
        with tf.device(self.device):
            built = build(spec, self.keras)
        self.model = built.model
        self.weights = built.weights
        self.scaling = with_overrides(built.scaling, spec)
        self.loader = common.KerasImageLoader(self._input_size())
        self.batch_rows = spec.batch_size  # every forward the same rows (base.Extractor.batch_rows)
        self.available = [layer.name for layer in self.model.layers if type(layer).__name__ != "InputLayer"]
        self.layers = self._parse_layers()
        self.names = list(dict.fromkeys(layer.name for layer in self.layers))
        self.extractor = self.keras.Model(self.model.input, [self.model.get_layer(n).output for n in self.names])
        with tf.device(self.device):
            self.graph = common.traced_call(self.extractor, tf.TensorSpec((None, *self.model.input_shape[1:]),
                                                                          tf.float32))

    def _input_size(self) -> tuple[int, int]:
        shape = tuple(self.model.input_shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise ConfigError(f"{self.spec.model_name}: input shape {shape} is not (batch, height, width, 3) images")
        if shape[1] is None or shape[2] is None:
            if self.spec.reshape is None:
                raise ConfigError(f"{self.spec.model_name} accepts any image size; give reshape: [width, height]")
            return (self.spec.reshape[1], self.spec.reshape[0])
        return (int(shape[1]), int(shape[2]))

    def _default_layer(self) -> str:
        if DEFAULT_LAYER in self.available:
            return DEFAULT_LAYER
        pooled = [layer.name for layer in self.model.layers if type(layer).__name__ in GLOBAL_POOLINGS]
        return pooled[-1] if pooled else self.available[-2 if len(self.available) > 1 else -1]

    def _parse_layers(self) -> tuple[Layer, ...]:
        return feature_map_layers(self.spec, self.available, set(), self._default_layer(),
                                  f"ducho layers {self.spec.model_name} --backend tensorflow")

    def sort_key(self, payload: Any) -> int:
        return 0

    def prepare(self, items: Sequence[np.ndarray]) -> np.ndarray:
        return self.scaling(np.stack(items).astype(np.float32, copy=False))

    def forward(self, batch: np.ndarray) -> dict[str, Sequence[np.ndarray]]:
        import tensorflow as tf

        with tf.device(self.device):
            outputs = self.graph(tf.constant(batch))
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        by_name = {name: np.asarray(value.numpy(), dtype=np.float32) for name, value in zip(self.names, outputs)}
        return {layer.folder: list(np.ascontiguousarray(pool_map(by_name[layer.name], layer.pooling)))
                for layer in self.layers}

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every layer's per-image output shape as written with pooling none (from Keras's symbolic shapes)."""
        shapes = {}
        for name in self.available:
            output = self.model.get_layer(name).output
            if isinstance(output, (list, tuple)) or None in tuple(output.shape[1:]):
                shapes[name] = ()
                continue
            shape = tuple(int(d) for d in output.shape[1:])
            shapes[name] = (shape[-1],) if len(shape) == 3 and shape[:2] == (1, 1) else shape
        return shapes

    def describe(self) -> dict[str, Any]:
        import tensorflow as tf

        height, width = self.loader.size
        return {
            "model": {"requested": self.spec.model_name, **self.weights},
            "model_class": self.model.name,
            "capture": "keras.Model(inputs, [layer.output ...]) in one tf.function (any batch size)",
            "preprocessing": {"resize": [width, height], "size_order": "[width, height]",
                              "interpolation": "PIL bilinear (keras.utils.load_img)", "input_range": "0..255",
                              **self.scaling.describe()},
            "feature_layout": "channels_last: spatial layers are written (H, W, C)",
            "keras_version": self.keras.__version__,
            "tensorflow_version": tf.__version__,
        }
