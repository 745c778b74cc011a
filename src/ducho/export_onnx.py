"""`ducho export-onnx`: export the layer a ducho torch/transformers extractor computes to an ONNX file, then check
with onnxruntime that the file gives the same numbers as torch on a sample input it was not traced with.

Every way to export is tried in turn (the dynamo exporter, then the TorchScript one; for text, explicit position
ids, then the model's own) and the first whose check passes is kept, so a silently wrong trace is never written."""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, DuchoError

log = logging.getLogger("ducho")

TOLERANCE = 1e-3
OPSET = 17
SUPPORTED = {("torch", "visual"), ("transformers", "textual")}
SAMPLE_TEXTS = ["a short text", "a somewhat longer sample text, with punctuation, to check padding and lengths", "x"]
TRACE_TEXTS = ["one text to trace the model with", "and another"]


@dataclass
class Exported:
    """What was written and how close onnxruntime came to torch."""

    output: Path
    inputs: list[str]
    outputs: list[str]
    max_abs_diff: float
    exporter: str

    def summary(self) -> str:
        return (f"exported {self.output} (inputs {', '.join(self.inputs)}; outputs {', '.join(self.outputs)}; "
                f"{self.exporter}); onnxruntime vs torch max abs diff {self.max_abs_diff:.3g}")


@dataclass
class Variant:
    """One way to export: the module, its traced inputs, the axes that stay dynamic."""

    name: str
    module: torch.nn.Module
    args: tuple[torch.Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    axes: dict[str, dict[int, str]]


class VisionLayer(torch.nn.Module):
    """The fx feature extractor of a TorchVision extractor, returning one layer pooled as ducho pools it."""

    def __init__(self, extractor: Any) -> None:
        super().__init__()
        self.features = extractor.capture.module.to(memory_format=torch.contiguous_format)
        self.layer = extractor.layers[0]
        self.feature = extractor._feature

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        from .backends.torch_common import first_tensor

        return self.feature(first_tensor(self.features(pixels)[self.layer.name]), self.layer)


class TextLayer(torch.nn.Module):
    """A transformers base model returning one token (or vector) output; positions passed explicitly or not."""

    def __init__(self, model: torch.nn.Module, names: list[str], layer: str, positions: bool) -> None:
        super().__init__()
        self.model = model
        self.names = names
        self.layer = layer
        self.positions = positions

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.names, tensors, strict=True))
        if self.positions:
            ids = inputs["input_ids"]
            inputs["position_ids"] = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand_as(ids)
        return getattr(self.model(**inputs, return_dict=True), self.layer)


def export(model: str, backend: str, modality: str, layer: str | None, output: str | Path,
           weights: str | None = None, pooling: str | None = None, opset: int = OPSET) -> Exported:
    """Export `layer` of `model` as ducho's `backend` computes it, to `output`; checked against torch."""
    if (backend, modality) not in SUPPORTED:
        raise ConfigError(f"export-onnx: --backend {backend} --modality {modality} is not supported; supported: "
                          + ", ".join(f"--backend {b} --modality {m}" for b, m in sorted(SUPPORTED)))
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    if modality == "visual":
        variants, check = _vision(model, layer, weights, pooling)
        return _first_passing(variants, check, output, opset)
    variants, check, tokenizer = _text(model, layer)
    exported = _first_passing(variants, check, output, opset)
    tokenizer.save_pretrained(str(output.parent))  # the onnx backend finds it beside the .onnx
    log.info("tokenizer saved beside the model in %s", output.parent)
    return exported


def _vision(model: str, layer: str | None, weights: str | None, pooling: str | None,
            ) -> tuple[Iterator[Variant], Callable[[Path], float]]:
    from .backends.registry import build_extractor
    from .config.schema import VisualModelSpec

    spec = VisualModelSpec(model_name=model, weights=weights, output_layers=[layer] if layer else [], pooling=pooling)
    extractor = build_extractor("visual", "torch", spec, "cpu")
    if getattr(extractor.capture, "method", "") != "fx":
        raise ConfigError(f"export-onnx: {model} cannot be traced by torch.fx ({extractor.capture.method}); "
                          "only fx-traceable models are exported")
    module = VisionLayer(extractor).eval()
    name = extractor.layers[0].name
    crop = _image_size(extractor.loader)
    generator = torch.Generator().manual_seed(0)
    trace = torch.randn(2, 3, *crop, generator=generator)
    sample = torch.randn(3, 3, *crop, generator=generator)

    def check(path: Path) -> float:
        with torch.inference_mode():
            expected = module(sample).numpy()
        got = _session(path).run([name], {"pixel_values": sample.numpy()})[0]
        return _max_diff(got, expected)

    variant = Variant("fx feature extractor", module, (trace,), ["pixel_values"], [name],
                      {"pixel_values": {0: "batch"}, name: {0: "batch"}})
    return iter([variant]), check


def _image_size(loader: Any) -> tuple[int, int]:
    if loader.crop:
        return tuple(loader.crop)
    return tuple(loader.resize) if isinstance(loader.resize, tuple) else (224, 224)


def _text(model: str, layer: str | None) -> tuple[Iterator[Variant], Callable[[Path], float], Any]:
    from .backends.registry import build_extractor
    from .config.schema import TextModelSpec

    layer = layer or "last_hidden_state"
    if layer not in ("last_hidden_state", "pooler_output"):
        raise ConfigError(f"export-onnx: --layer {layer!r} is not exported for text; use last_hidden_state (pooled "
                          "by the onnx backend at run time) or pooler_output")
    extractor = build_extractor("textual", "transformers", TextModelSpec(model_name=model, output_layers=[layer]),
                                "cpu")
    base, tokenizer = extractor.base.eval(), extractor.tokenizer
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    trace = tokenizer(TRACE_TEXTS, padding=True, return_tensors="pt")
    sample = tokenizer(SAMPLE_TEXTS, padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[layer] = {0: "batch", 1: "sequence"} if layer == "last_hidden_state" else {0: "batch"}

    def check(path: Path) -> float:
        with torch.inference_mode():  # the model as ducho runs it: its own position ids
            expected = getattr(base(**{n: sample[n] for n in names}, return_dict=True), layer).numpy()
        got = _session(path).run([layer], {n: sample[n].numpy().astype(np.int64) for n in names})[0]
        if layer == "last_hidden_state":  # padding steps are never pooled
            keep = sample["attention_mask"].numpy().astype(bool)
            return _max_diff(got[keep], expected[keep])
        return _max_diff(got, expected)

    def variants() -> Iterator[Variant]:
        accepts_positions = "position_ids" in inspect.signature(base.forward).parameters
        for positions in ([True, False] if accepts_positions else [False]):
            module = TextLayer(base, names, layer, positions).eval()
            label = "explicit position ids" if positions else "the model's own position ids"
            yield Variant(label, module, tuple(trace[n] for n in names), names, [layer], axes)

    return variants(), check, tokenizer


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _max_diff(got: np.ndarray, expected: np.ndarray) -> float:
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())


def _exporters(variant: Variant, output: Path, opset: int) -> Iterator[tuple[str, Callable[[], None]]]:
    common = dict(input_names=variant.inputs, output_names=variant.outputs, dynamic_axes=variant.axes)

    def dynamo() -> None:
        torch.onnx.export(variant.module, variant.args, str(output), dynamo=True, external_data=False, **common)

    def torchscript() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(variant.module, variant.args, str(output), dynamo=False, opset_version=opset,
                              do_constant_folding=True, **common)

    yield "dynamo exporter", dynamo
    yield f"TorchScript exporter, opset {opset}", torchscript


def _first_passing(variants: Iterator[Variant], check: Callable[[Path], float], output: Path,
                   opset: int) -> Exported:
    """Export each variant with each exporter until one passes the onnxruntime check."""
    tried = []
    for variant in variants:
        for label, run in _exporters(variant, output, opset):
            try:
                with torch.inference_mode(False), torch.no_grad():
                    run()
                diff = check(output)
            except Exception as error:  # an exporter that cannot run here (e.g. dynamo without onnxscript)
                tried.append(f"{variant.name}, {label}: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
                log.info("export-onnx: %s", tried[-1])
                continue
            if diff <= TOLERANCE:
                return Exported(output, variant.inputs, variant.outputs, diff, f"{label}, {variant.name}")
            tried.append(f"{variant.name}, {label}: max abs diff {diff:.3g} > {TOLERANCE}")
            log.info("export-onnx: %s", tried[-1])
    output.unlink(missing_ok=True)
    raise DuchoError("export-onnx: no export matched torch within "
                     f"{TOLERANCE}; nothing was written. Tried:\n  - " + "\n  - ".join(tried))
