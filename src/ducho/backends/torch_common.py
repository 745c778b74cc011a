"""What the PyTorch backends share: a user's own model (`module:callable`), safe state-dict loading, layer
capture (torch.fx feature extractor, forward hooks when FX cannot trace), and spatial/time pooling."""

from __future__ import annotations

import importlib
import logging
import operator
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..errors import ConfigError, ModelNotFoundError
from ..hashing import file_sha256  # noqa: F401  (re-exported)

log = logging.getLogger("ducho")
T = TypeVar("T")

RANDOM_WEIGHTS = ("none", "random")
SEED = 0  # random weights are seeded, so a resumed run computes the same features


def seeded(build: Callable[[], T]) -> T:
    """Run `build` with the RNG seeded to SEED (the caller's RNG state is restored), so random weights are the
    same in every run and a resumed run computes the same features."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build()


def is_user_callable(name: str) -> bool:
    """`package.module:build` names a function (or class) that returns the user's nn.Module."""
    module, _, attribute = name.partition(":")
    return bool(module and attribute) and "/" not in module and "\\" not in module


def build_user_model(name: str) -> torch.nn.Module:
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelNotFoundError(f"model_name {name!r}: cannot import module {module_name!r} ({error}); "
                                 "it must be importable (installed, or on PYTHONPATH)") from error
    builder = module
    for part in attribute.split("."):
        if not hasattr(builder, part):
            raise ModelNotFoundError(f"model_name {name!r}: module {module_name!r} has no {attribute!r}")
        builder = getattr(builder, part)
    model = builder()
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model_name {name!r}: {attribute} returned {type(model).__name__}, not a torch nn.Module")
    return model


def is_weights_file(weights: str | None) -> bool:
    return bool(weights) and weights.lower() not in RANDOM_WEIGHTS and (
        Path(weights).expanduser().suffix.lower() in (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
        or Path(weights).expanduser().is_file())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors only (`weights_only=True`, or safetensors): a file can never run code while loading.
    Wrappers (`{'state_dict': ...}`, `{'model': ...}`) and DataParallel `module.` prefixes are unwrapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"weights file {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ConfigError(f"weights {str(path)!r} cannot be loaded as tensors only ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200]}); save model.state_dict(), not the whole "
                              "pickled model") from error
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ConfigError(f"weights {str(path)!r} hold a {type(state).__name__}, not a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights_file(model: torch.nn.Module, path: str | Path) -> None:
    """Load a state-dict file into `model`, every key matching (a mismatch names the keys)."""
    result = model.load_state_dict(read_state_dict(path), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(f"weights {str(path)!r} do not fit the model: missing {result.missing_keys[:5]}, "
                          f"unexpected {result.unexpected_keys[:5]}")



# Modules whose output is a new tensor (never a view of their input), so a sum may be written into it
_FRESH_OUTPUTS = (torch.nn.modules.conv._ConvNd, torch.nn.modules.batchnorm._BatchNorm, torch.nn.Linear,
                  torch.nn.LayerNorm, torch.nn.GroupNorm)


def add_into_first(a: Any, b: Any) -> Any:
    """`a + b` computed into `a` when that gives the same tensor (same shape and dtype), else `a + b`."""
    if isinstance(a, torch.Tensor) and not a.requires_grad and (
            not isinstance(b, torch.Tensor)
            or (torch.broadcast_shapes(a.shape, b.shape) == a.shape and torch.result_type(a, b) == a.dtype)):
        return a.add_(b)
    return a + b


def adds_in_place(module: torch.fx.GraphModule) -> int:
    """Give an fx graph back the in-place sums of the model's own code: tracing turns `out += identity` (ResNet's
    residual) into `out + identity`, a new tensor per block, which made the fx extractor ~6% slower than the model on
    CPU. A sum goes in place only into a fresh module output (conv, norm, linear) that nothing else reads and that
    is not a requested layer; the bits are the same."""
    submodules = dict(module.named_modules())
    changed = 0
    for graph in {id(g): g for g in (getattr(module, name, None) for name in ("graph", "train_graph", "eval_graph"))
                  if g is not None}.values():
        for node in graph.nodes:
            first = node.args[0] if node.op == "call_function" and node.target is operator.add and node.args else None
            if (isinstance(first, torch.fx.Node) and first.op == "call_module" and len(first.users) == 1
                    and isinstance(submodules.get(str(first.target)), _FRESH_OUTPUTS)):
                node.target = add_into_first
                changed += 1
    if changed:
        module.recompile()
    return changed


class EvalTrace:
    """One torch.fx trace of a model in eval mode (the mode it extracts in), with torchvision's node names
    (`layer4.2.relu_2`); feature extractors are cut from it. torchvision's own `get_graph_node_names` and
    `create_feature_extractor` trace twice each (train and eval): 0.2-0.3 s per model here."""

    def __init__(self, model: torch.nn.Module) -> None:
        from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs

        training = model.training
        tracer = NodePathTracer(**_set_default_tracer_kwargs(None))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.graph = tracer.trace(model.eval())
        finally:
            model.train(training)
        self.root = tracer.root
        self.qualnames: dict[torch.fx.Node, str] = dict(tracer.node_to_qualname)

    @classmethod
    def of(cls, model: torch.nn.Module) -> EvalTrace | None:
        """The trace, or None for a model torch.fx cannot trace (untraceable control flow)."""
        try:
            return cls(model)
        except Exception as error:
            log.info("torch.fx cannot trace %s (%s); using forward hooks", type(model).__name__,
                     str(error).splitlines()[0][:120])
            return None

    def names(self) -> list[str]:
        """Every node name but the input's, in graph order."""
        return list(self.qualnames.values())[1:]

    def extractor(self, names: list[str]) -> torch.fx.GraphModule:
        """A module returning {name: output} for node names, or module names (their last node), as torchvision's
        `create_feature_extractor` in eval mode; the rest of the graph is cut away."""
        graph = torch.fx.Graph()
        copied: dict[torch.fx.Node, torch.fx.Node] = {}
        graph.graph_copy(self.graph, copied)
        qualnames = [(copied[node], name) for node, name in self.qualnames.items() if node in copied]
        outputs = {}
        for query in names:
            matches = [node for node, name in qualnames if name == query or name.startswith(query + ".")]
            if not matches:
                raise ConfigError(f"output_layers: {query!r} is not a node of {type(self.root).__name__}")
            outputs[query] = matches[-1]
        graph.output(outputs)
        module = torch.fx.GraphModule(self.root, graph, type(self.root).__name__)
        module.graph.eliminate_dead_code()
        module.delete_all_unused_submodules()
        module.recompile()
        adds_in_place(module)
        return module


class LayerCapture:
    """Gives the outputs of named layers in one forward: a torch.fx feature extractor cut once from an eval-mode
    trace (node names such as `layer4.2.relu_2`), or forward hooks on named modules when the model cannot be traced."""

    def __init__(self, model: torch.nn.Module, names: list[str], trace: EvalTrace | None = None) -> None:
        self.names = names
        self.model = model
        trace = trace or EvalTrace.of(model)
        self.method = "fx" if trace is not None else "hooks"
        if trace is not None:
            self.module: torch.nn.Module = trace.extractor(names)
        else:
            self.module = model
            self._hooks = self._attach(names)

    def _attach(self, names: list[str]) -> list[Any]:
        modules = dict(self.model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ConfigError(f"output_layers: {missing} are not modules of {type(self.model).__name__}; "
                              f"modules: {', '.join(list(modules)[1:40])}...")
        self._captured: dict[str, Any] = {}
        return [modules[n].register_forward_hook(self._keeper(n)) for n in names]

    def _keeper(self, name: str) -> Any:
        def keep(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            self._captured[name] = output
        return keep

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.method == "fx":
            return self.module(*args, **kwargs)
        self._captured = {}
        self.module(*args, **kwargs)
        return {n: self._captured[n] for n in self.names}


def layer_names(model: torch.nn.Module, trace: EvalTrace | None) -> list[str]:
    """Every extractable layer of `model`: torch.fx node names in eval mode, else its module names."""
    return trace.names() if trace is not None else [name for name, _ in model.named_modules()][1:]


def first_tensor(output: Any) -> torch.Tensor:
    """A layer's tensor: the output itself, or the first tensor of a tuple/list/dict output."""
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    for value in values if isinstance(values, (list, tuple)) or hasattr(values, "__iter__") else ():
        if isinstance(value, torch.Tensor):
            return value
    raise ConfigError(f"layer output of type {type(output).__name__} holds no tensor")


def is_torchscript(path: Path) -> bool:
    """A `torch.jit.save` archive (a zip holding `code/`)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())


def refuse_untrusted_file(spec: Any) -> None:
    """A whole pickled model file (what the reference releases saved) runs code from the file when unpickled:
    refused unless `trust_pickle: true`; a state dict alone does not say which architecture to build."""
    path = Path(spec.model_name).expanduser()
    if spec.trust_pickle or is_torchscript(path):
        return
    try:
        read_state_dict(path)
    except ConfigError:
        raise ConfigError(f"model_name {spec.model_name!r} is a pickled model: loading it runs code from the "
                          "file. Set trust_pickle: true if you trust it, or save model.state_dict() and "
                          "use model_name: <architecture>, weights: <file>") from None
    raise ConfigError(f"model_name {spec.model_name!r} holds only weights (a state dict); name the "
                      "architecture instead: model_name: <a library name or module:callable>, weights: <file>")


def load_model_file(spec: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model file as `model_name`: a TorchScript archive (only its output is reachable: layer `output`), or a
    whole pickled module behind `trust_pickle: true`."""
    refuse_untrusted_file(spec)
    path = Path(spec.model_name).expanduser()
    info: dict[str, Any] = {"weights": str(path), "weights_sha256": file_sha256(path)}
    if is_torchscript(path):
        return torch.jit.load(str(path), map_location="cpu"), {**info, "loaded_with": "torch.jit.load (TorchScript)"}
    model = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model_name {spec.model_name!r} holds a {type(model).__name__}, not an nn.Module")
    return model, {**info, "loaded_with": "torch.load(weights_only=False), trust_pickle: true"}
