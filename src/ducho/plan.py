"""Turn a Config into a plan: one job per (modality, source, model), with resolved paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends.registry import check_backend
from .config.schema import MODALITIES, SOURCES, Config, JointSource, MediaSource, ModelSpec, TextualSource
from .errors import ConfigError
from .ids import safe_stem
from .model_store import PACKAGED, PACKAGED_ONNX
from .remote import STAGING, is_uri


@dataclass(frozen=True)
class Job:
    """One model applied to one source; `output_dir` holds a folder per layer."""

    modality: str
    source: str
    index: int
    spec: ModelSpec
    backend: str
    settings: TextualSource | MediaSource | JointSource
    input_path: Path
    output_dir: Path
    format: str
    dtype: str = "float32"  # the written vectors' precision: float32 or float16
    mapping_path: Path | None = None
    text_path: Path | None = None  # visual_textual: the TSV beside the image folder
    text_output_dir: Path | None = None  # visual_textual: where the text tower's layers go
    output_uri: str | None = None  # output_path a URI (format parquet): output_dir is its staging folder (`remote`)

    @property
    def key(self) -> str:
        return f"{self.modality}.{self.source}.model.{self.index}"

    @property
    def source_key(self) -> str:
        return f"{self.modality}.{self.source}"

    def layer_dir(self, folder: str) -> Path:
        """The folder of one layer's files (a joint model's text layers may go to their own output path)."""
        if self.text_output_dir is not None and folder.startswith("text"):
            return self.text_output_dir / folder
        return self.output_dir / folder


def model_folder(name: str) -> Path:
    """The output sub-folder of a model: the hub id (`org/name`, as the reference did) or a local path's name."""
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        parts = [path.stem if path.is_file() else path.name]
    else:
        parts = [p for p in name.split("/") if p]
    return Path(*[safe_stem(p) for p in parts])


def default_backend(modality: str, name: str) -> str:
    """`.onnx` files: onnx. Textual models: sentence-transformers for its own models and folders, transformers
    otherwise. Others: transformers for hub ids and Hugging Face folders, torch for names, packaged models, files."""
    if name.lower().endswith(".onnx") or name.lower() in PACKAGED_ONNX:
        return "onnx"
    if modality == "textual":
        folder = Path(name).expanduser()
        if (folder / "modules.json").is_file() or name.lower().startswith("sentence-transformers/") \
                or f"sentence-transformers/{name}".lower() in PACKAGED:
            return "sentence_transformers"
        return "transformers"
    if name.startswith("open_clip:"):
        return "open_clip"
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file() or ("/" in name and not folder.exists() and ":" not in name):
        return "transformers"  # a Hugging Face folder or hub id
    return "torch"  # a torchvision / torchaudio name, a packaged model, a user's module:callable


def build_plan(config: Config) -> list[Job]:
    """All jobs of the run in order (modality -> source -> model); raises ConfigError before any work."""
    base = Path(config.dataset_path).expanduser()
    jobs: list[Job] = []
    for modality in MODALITIES:
        section = getattr(config, modality)
        if section is None:
            continue
        for source in SOURCES:
            settings = getattr(section, source)
            if settings is None:
                continue
            for index, spec in enumerate(settings.model):
                backend = spec.backend or default_backend(modality, spec.model_name)
                check_backend(modality, backend, f"{modality}.{source}.model.{index}.backend")
                model = Path(backend) / model_folder(spec.model_name)
                fmt, dtype = settings.format or config.format, settings.dtype or config.dtype
                paths = _joint_paths(base, settings, model) if modality == "visual_textual" else \
                    {"input_path": base / settings.input_path, **_output(base, settings.output_path, model, fmt,
                                                                           f"{modality}.{source}.output_path")}
                if fmt == "sparse" and dtype == "float16":
                    raise ConfigError(f"{modality}.{source}: format sparse stores float32 (scipy.sparse has no "
                                      "float16); use dtype float32, or format npy, matrix or parquet")
                jobs.append(Job(
                    modality=modality, source=source, index=index, spec=spec, backend=backend, settings=settings,
                    format=fmt, dtype=dtype,
                    mapping_path=base / settings.mapping_path if getattr(settings, "mapping_path", None) else None,
                    **paths,
                ))
    if not jobs:
        raise ConfigError("the configuration names no source to extract (e.g. textual.items with a model list)")
    _check_distinct_outputs(jobs)
    return jobs


def _output(base: Path, output_path: str, model: Path, fmt: str, key: str) -> dict[str, Any]:
    """The job's output folder; for a URI (format parquet) a staging folder under dataset_path and the URI."""
    if not is_uri(output_path):
        return {"output_dir": base / output_path / model}
    if fmt != "parquet":
        raise ConfigError(f"{key}: {output_path!r} is a URI; a URI takes format: parquet (format is {fmt!r}; npy, "
                          "matrix and sparse write to a folder)")
    return {"output_dir": base / STAGING / safe_stem(output_path.rstrip("/")) / model,
            "output_uri": f"{output_path.rstrip('/')}/{model.as_posix()}"}


def _joint_paths(base: Path, settings: JointSource, model: Path) -> dict[str, Path]:
    """Image folder and TSV; image and fused layers under the visual (or single) output path, text layers under
    the textual one."""
    out = settings.output_path
    visual, textual = (out, out) if isinstance(out, str) else (out.visual, out.textual)
    if is_uri(visual) or is_uri(textual):
        raise ConfigError(f"visual_textual output_path {out!r}: a URI output is for the other modalities (one "
                          "output folder per job); give visual_textual a folder")
    return {"input_path": base / settings.input_path.visual, "text_path": base / settings.input_path.textual,
            "output_dir": base / visual / model, "text_output_dir": base / textual / model}


def _check_distinct_outputs(jobs: list[Job]) -> None:
    seen: dict[tuple[Path, str], str] = {}
    for job in jobs:
        for layer in job.spec.output_layers or ["(default)"]:
            where = (job.output_dir, layer)
            if where in seen:
                raise ConfigError(f"{job.key} and {seen[where]} would write the same folder "
                                  f"{job.output_dir / layer}; give them different output_path or layers")
            seen[where] = job.key
