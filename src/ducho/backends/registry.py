"""Which backends serve which modality. Entries are import paths, so nothing heavy loads until used."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import bad_value

if TYPE_CHECKING:
    from ..config.schema import ModelSpec
    from .base import Extractor

REGISTRY: dict[str, dict[str, str]] = {
    "textual": {
        "transformers": "ducho.backends.hf_text:TransformersText",
        "sentence_transformers": "ducho.backends.sentence_transformers:SentenceTransformersText",
        "handcrafted": "ducho.backends.handcrafted_text:HandcraftedText",
        "onnx": "ducho.backends.onnx_backend:OnnxText",
        "tensorflow": "ducho.backends.keras_text:KerasText",
    },
    "visual": {
        "torch": "ducho.backends.torch_vision:TorchVision",
        "transformers": "ducho.backends.hf_vision:TransformersVision",
        "tensorflow": "ducho.backends.keras_vision:KerasVision",
        "handcrafted": "ducho.backends.handcrafted_image:HandcraftedImage",
        "onnx": "ducho.backends.onnx_backend:OnnxVision",
    },
    "visual_textual": {
        "transformers": "ducho.backends.hf_joint:TransformersJoint",
        "open_clip": "ducho.backends.open_clip_joint:OpenClipJoint",
    },
    "audio": {
        "torch": "ducho.backends.torch_audio:TorchAudio",
        "transformers": "ducho.backends.hf_audio:TransformersAudio",
        "tensorflow": "ducho.backends.keras_audio:KerasAudio",
        "handcrafted": "ducho.backends.handcrafted_audio:HandcraftedAudio",
        "onnx": "ducho.backends.onnx_backend:OnnxAudio",
    },
}


def backends_for(modality: str) -> list[str]:
    return sorted(REGISTRY.get(modality, {}))


def check_backend(modality: str, backend: str, key: str) -> None:
    """Raise ConfigError when `backend` does not serve `modality`."""
    if backend not in REGISTRY.get(modality, {}):
        raise bad_value(key, backend, backends_for(modality), what=f"backend for {modality}")


def extractor_class(modality: str, backend: str) -> Callable[..., Extractor]:
    module, name = REGISTRY[modality][backend].split(":")
    return getattr(importlib.import_module(module), name)


def check_model(modality: str, backend: str, spec: ModelSpec) -> str:
    """Where the model will load from; ModelNotFoundError (with the places tried) when it cannot be loaded."""
    check = getattr(extractor_class(modality, backend), "check", None)
    if check is not None:
        return check(spec)
    from ..model_store import locate

    where = locate(spec.model_name, spec.revision)
    for extra in ("tokenizer_name", "image_processor_name", "feature_extractor_name"):
        if getattr(spec, extra, None):
            locate(getattr(spec, extra))
    return f"{where.origin}: {where.target}"


def early_loader(modality: str, backend: str, spec: ModelSpec) -> Callable[[Any], Any] | None:
    """The loader the extractor will have, where its backend knows it without building the model (decoding can
    then start first); None otherwise, or when it cannot tell (the build then reports the problem)."""
    loader_for = getattr(extractor_class(modality, backend), "loader_for", None)
    try:
        return loader_for(spec) if loader_for is not None else None
    except Exception:
        return None


def build_extractor(modality: str, backend: str, spec: ModelSpec, device: str) -> Extractor:
    """Build the extractor for one model (done once per job), run by the spec's runtime (torch, onnx, auto)."""
    extractor = extractor_class(modality, backend)(spec, device)
    if spec.runtime == "torch":
        return extractor
    from ..onnx_runtime import with_runtime

    return with_runtime(extractor, spec, device)
