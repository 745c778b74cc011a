"""What the model caches on this machine hold: the Hugging Face hub cache, torch hub checkpoints, Keras weights and
kagglehub's keras-hub presets. Reading them imports no model library (torch, TensorFlow)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

AUDIO_KEYS = ("sampling_rate", "feature_size")  # a feature extractor of audio models
IMAGE_KEYS = ("image_mean", "crop_size", "size")  # an image processor


@dataclass(frozen=True)
class CachedRepo:
    """A model of the Hugging Face cache: its hub id, the modalities it serves, size and folder."""

    repo_id: str
    kinds: tuple[str, ...]  # (modality, backend) pairs as "modality/backend"
    size: int
    path: Path


@dataclass(frozen=True)
class CachedFile:
    name: str
    size: int
    path: Path


def hf_repos() -> Iterator[CachedRepo]:
    """Every model repo of the Hugging Face hub cache with a snapshot, classified by its files."""
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound
    except ImportError:
        return
    try:
        info = scan_cache_dir(hf_cache_dir())
    except CacheNotFound:
        return
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        snapshot = max(repo.revisions, key=lambda r: r.last_modified).snapshot_path
        kinds = classify(snapshot)
        if kinds:
            yield CachedRepo(repo.repo_id, kinds, repo.size_on_disk, Path(repo.repo_path))


def _cache_home() -> str:
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at import)."""
    folder = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if folder:
        return Path(folder)
    return Path(os.environ.get("HF_HOME") or os.path.join(_cache_home(), "huggingface")) / "hub"


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def classify(snapshot: Path) -> tuple[str, ...]:
    """The modality/backend pairs a model folder serves, from its files (no library imported)."""
    names = {p.name for p in snapshot.iterdir()}
    if "open_clip_config.json" in names:
        return ("visual_textual/open_clip",)
    kinds: list[str] = []
    config = _json(snapshot / "config.json")
    processor = _json(snapshot / "preprocessor_config.json")
    if "modules.json" in names:
        kinds.append("textual/sentence_transformers")
    if "vision_config" in config and "text_config" in config:
        kinds += ["visual_textual/transformers", "visual/transformers"]
    elif "audio_config" in config or any(key in processor for key in AUDIO_KEYS):
        kinds.append("audio/transformers")
    elif any(key in processor for key in IMAGE_KEYS):
        kinds.append("visual/transformers")
    elif config and names & {"tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model"}:
        kinds.append("textual/transformers")
    if "textual/sentence_transformers" in kinds and "textual/transformers" not in kinds:
        kinds.append("textual/transformers")
    return tuple(kinds)


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub."""
    home = os.environ.get("TORCH_HOME") or os.path.join(_cache_home(), "torch")
    return Path(home) / "hub"


def files_in(folder: Path, pattern: str = "*") -> list[CachedFile]:
    """The regular files under `folder` matching `pattern` (recursively), with their sizes."""
    if not folder.is_dir():
        return []
    return [CachedFile(p.name, p.stat().st_size, p) for p in sorted(folder.rglob(pattern)) if p.is_file()]


def kagglehub_presets() -> Iterator[tuple[str, int, Path]]:
    """keras-hub presets in the kagglehub cache: (preset name, size, folder)."""
    root = Path(os.environ.get("KAGGLEHUB_CACHE") or os.path.join(_cache_home(), "kagglehub")) / "models" / "keras"
    if not root.is_dir():
        return
    for config in sorted(root.glob("*/keras/*/*/config.json")):
        folder = config.parent
        yield folder.parent.name, sum(f.size for f in files_in(folder)), folder
