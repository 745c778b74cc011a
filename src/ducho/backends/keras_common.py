"""What the Keras backends share, none of it importing TensorFlow at module level: the safe TensorFlow import
(after `torch._dynamo`, GPU memory growth on), the Keras weights cache, seeded builds, and the picklable
image loader that runs in worker processes."""

from __future__ import annotations

import collections
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..hashing import file_sha256  # noqa: F401  (re-exported)

SEED = 0  # random weights are seeded, so a resumed run computes the same features
RANDOM_WEIGHTS = ("none", "random")
WEIGHTS_SUFFIXES = (".weights.h5", ".h5", ".hdf5")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

# The file `keras.applications.<Class>(weights="imagenet", include_top=True)` reads from `<KERAS_HOME>/models/`
# (Keras 3.15.1; found by intercepting `keras.utils.get_file`), so a missing file is reported without a build.
IMAGENET_FILES: dict[str, str] = {
    "ConvNeXtBase": "convnext_base.h5",
    "ConvNeXtLarge": "convnext_large.h5",
    "ConvNeXtSmall": "convnext_small.h5",
    "ConvNeXtTiny": "convnext_tiny.h5",
    "ConvNeXtXLarge": "convnext_xlarge.h5",
    "DenseNet121": "densenet121_weights_tf_dim_ordering_tf_kernels.h5",
    "DenseNet169": "densenet169_weights_tf_dim_ordering_tf_kernels.h5",
    "DenseNet201": "densenet201_weights_tf_dim_ordering_tf_kernels.h5",
    "EfficientNetB0": "efficientnetb0.h5",
    "EfficientNetB1": "efficientnetb1.h5",
    "EfficientNetB2": "efficientnetb2.h5",
    "EfficientNetB3": "efficientnetb3.h5",
    "EfficientNetB4": "efficientnetb4.h5",
    "EfficientNetB5": "efficientnetb5.h5",
    "EfficientNetB6": "efficientnetb6.h5",
    "EfficientNetB7": "efficientnetb7.h5",
    "EfficientNetV2B0": "efficientnetv2-b0.h5",
    "EfficientNetV2B1": "efficientnetv2-b1.h5",
    "EfficientNetV2B2": "efficientnetv2-b2.h5",
    "EfficientNetV2B3": "efficientnetv2-b3.h5",
    "EfficientNetV2L": "efficientnetv2-l.h5",
    "EfficientNetV2M": "efficientnetv2-m.h5",
    "EfficientNetV2S": "efficientnetv2-s.h5",
    "InceptionResNetV2": "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
    "InceptionV3": "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
    "MobileNet": "mobilenet_1_0_224_tf.h5",
    "MobileNetV2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
    "MobileNetV3Large": "weights_mobilenet_v3_large_224_1.0_float.h5",
    "MobileNetV3Small": "weights_mobilenet_v3_small_224_1.0_float.h5",
    "NASNetLarge": "nasnet_large.h5",
    "NASNetMobile": "nasnet_mobile.h5",
    "ResNet101": "resnet101_weights_tf_dim_ordering_tf_kernels.h5",
    "ResNet101V2": "resnet101v2_weights_tf_dim_ordering_tf_kernels.h5",
    "ResNet152": "resnet152_weights_tf_dim_ordering_tf_kernels.h5",
    "ResNet152V2": "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5",
    "ResNet50": "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    "ResNet50V2": "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
    "VGG16": "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    "VGG19": "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
    "Xception": "xception_weights_tf_dim_ordering_tf_kernels.h5",
}

# Native (square) input sizes of `keras.applications` models that do not take 224x224.
NATIVE_SIZES: dict[str, int] = {
    "Xception": 299, "InceptionV3": 299, "InceptionResNetV2": 299, "NASNetLarge": 331,
    "EfficientNetB1": 240, "EfficientNetB2": 260, "EfficientNetB3": 300, "EfficientNetB4": 380,
    "EfficientNetB5": 456, "EfficientNetB6": 528, "EfficientNetB7": 600, "EfficientNetV2B1": 240,
    "EfficientNetV2B2": 260, "EfficientNetV2B3": 300, "EfficientNetV2S": 384, "EfficientNetV2M": 480,
    "EfficientNetV2L": 480,
}


def native_size(cls: str) -> int:
    return NATIVE_SIZES.get(cls, 224)


def import_keras() -> Any:
    """Import Keras on TensorFlow safely: `torch._dynamo` first (TensorFlow imported before triton segfaults the
    process), quiet C++ logs, and GPU memory growth set before any TensorFlow op."""
    try:
        import torch._dynamo  # noqa: F401
    except ImportError:  # a TensorFlow-only install
        pass
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by an earlier model: growth was set then
            pass
    import keras

    return keras


def tf_device(device: str) -> str:
    """The TensorFlow device for a Ducho device string: `cuda:N` -> `/GPU:N` when TensorFlow sees it, else CPU."""
    import tensorflow as tf

    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if index < len(tf.config.list_logical_devices("GPU")):
            return f"/GPU:{index}"
    return "/CPU:0"


def keras_cache() -> Path:
    """Where Keras keeps downloaded weights: `$KERAS_HOME/models`, else `~/.keras/models`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def offline() -> bool:
    from ..model_store import hub_offline

    return hub_offline() or bool(os.environ.get("DUCHO_OFFLINE"))


def is_random(weights: str | None) -> bool:
    return weights is not None and weights.lower() in RANDOM_WEIGHTS


def is_weights_file(weights: str | None) -> bool:
    return bool(weights) and not is_random(weights) and weights.lower() != "imagenet" and (
        weights.lower().endswith(WEIGHTS_SUFFIXES) or Path(weights).expanduser().is_file())



@contextmanager
def seeded(keras: Any, seed: int = SEED) -> Iterator[None]:
    """Build under `keras.utils.set_random_seed(seed)` so random weights are the same in every run, and with fresh
    layer-name counters so auto-named layers (`re_lu_3`) do not depend on what was built before in the process.
    Python's and NumPy's RNG states, Keras's global seed and its name counters are restored afterwards; torch's
    RNG is never touched (TensorFlow backend)."""
    from keras.src.backend.common import global_state
    from keras.src.utils import rng_utils

    python_state, numpy_state = random.getstate(), np.random.get_state()
    names = global_state.get_global_attribute("object_name_uids")
    global_seed = global_state.get_global_attribute(rng_utils.GLOBAL_RANDOM_SEED)
    keras.utils.set_random_seed(seed)
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        global_state.set_global_attribute("object_name_uids", names)
        global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, global_seed)


@dataclass(frozen=True)
class KerasImageLoader:
    """Per record, in worker processes (picklable, no TensorFlow): decode -> RGB -> PIL bilinear resize to
    (height, width), as `keras.utils.load_img(target_size=...)` does -> float32 (H, W, 3) in 0..255."""

    size: tuple[int, int]

    def __call__(self, path: str) -> np.ndarray:
        from PIL import Image

        from ..media.image import decode_image

        image = decode_image(path)
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float32)


@dataclass(frozen=True)
class Scaling:
    """Batch scaling applied in `prepare` on the stacked (N, H, W, 3) 0..255 batch: the model's own
    `preprocess_input` (`function` names it), or an override: `minmax` (x / 255) or `zscore` ((x/255 - mean)/std)."""

    kind: str  # "model", "minmax", "zscore" or "raw"
    function: Any = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.kind == "model":
            return np.asarray(self.function(batch), dtype=np.float32)
        if self.kind == "minmax":
            return batch / np.float32(255)
        if self.kind == "zscore":
            mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
            return (batch / np.float32(255) - mean) / std
        return batch

    def describe(self) -> dict[str, Any]:
        if self.kind == "model":
            return {"scaling": f"{self.function.__module__.replace('keras.src.', 'keras.')}.preprocess_input"}
        if self.kind == "zscore":
            return {"scaling": "zscore: (x / 255 - mean) / std", "mean": list(self.mean), "std": list(self.std)}
        return {"scaling": {"minmax": "minmax: x / 255", "raw": "none: 0..255"}[self.kind]}


def traced_call(model: Any, signature: Any) -> Any:
    """`model(inputs, training=False)` as one tf.function, traced now for inputs matching `signature` (TensorSpecs with
    a None batch axis): the trace is part of the build, and no later batch shape traces it again (`predict_on_batch`
    traced on the first batch, and again on the next new shape: ~2 s each for ResNet50)."""
    import tensorflow as tf

    function = tf.function(lambda inputs: model(inputs, training=False), input_signature=[signature])
    function.get_concrete_function()
    return function
