"""`ducho validate` and `ducho run --dry-run`: check and describe a run without loading any model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backends.registry import check_model
from .config.load import load_config, translation_notes
from .errors import DuchoError
from .plan import Job, build_plan
from .sources import Source, open_source


def _scan_sources(jobs: list[Job]) -> dict[str, tuple[Source, Any]]:
    scans: dict[str, tuple[Source, Any]] = {}
    for job in jobs:
        if job.source_key not in scans:
            source = open_source(job)
            scans[job.source_key] = (source, source.scan())
    return scans


def dry_run(config_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """The plan: jobs, record counts, output folders and what a run would resume."""
    config = load_config(config_path, overrides)
    jobs = build_plan(config)
    scans = _scan_sources(jobs)
    lines = [f"plan: {len(jobs)} job(s), device {config.device}, format {config.format}"]
    lines += [f"  translated: {note}" for note in translation_notes(config)]
    for job in jobs:
        table, scan = scans[job.source_key]
        layers = ", ".join(job.spec.output_layers) or "(backend default)"
        lines.append(f"- {job.key}: {job.spec.model_name} [{job.backend}] layers: {layers}")
        lines.append(f"    input:  {job.input_path} ({scan.kept + len(scan.skipped)} entries, {scan.kept} to "
                     f"extract, {len(scan.skipped)} skipped)")
        lines.append(f"    output: {job.output_dir}/<layer>/ ({job.format})")
    return "\n".join(lines)


def validate(config_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """Check keys, paths, columns and model availability; raise DuchoError on the first problem."""
    config = load_config(config_path, overrides)
    jobs = build_plan(config)
    scans = _scan_sources(jobs)
    lines = ["config OK"]
    problems = []
    for job in jobs:
        _, scan = scans[job.source_key]
        try:
            found = check_model(job.modality, job.backend, job.spec)
        except DuchoError as error:
            problems.append(f"{job.key}: {error}")
            found = "NOT FOUND"
        lines.append(f"- {job.key}: {job.spec.model_name} -> {found}; {scan.kept}/{scan.kept + len(scan.skipped)} "
                     "records")
    if problems:
        lines[0] = "config has problems"
        raise DuchoError("\n".join(lines + ["problems:"] + problems))
    return "\n".join(lines)


def list_layers(model: str, modality: str = "visual", backend: str | None = None, weights: str | None = "none") -> str:
    """Every extractable layer of a model with its per-record output shape (one forward of a blank input)."""
    from .backends.registry import build_extractor, check_backend
    from .config.schema import AudioModelSpec, TextModelSpec, VisualModelSpec
    from .plan import default_backend

    backend = backend or default_backend(modality, model)
    check_backend(modality, backend, "--backend")
    spec_class = {"visual": VisualModelSpec, "audio": AudioModelSpec, "textual": TextModelSpec}[modality]
    options = {"weights": weights} if backend in ("torch", "tensorflow") and weights and \
        "weights" in spec_class.model_fields else {}
    extractor = build_extractor(modality, backend, spec_class(model_name=model, **options), "cpu")
    if not hasattr(extractor, "layer_shapes"):
        raise DuchoError(f"{backend} ({modality}) does not list layers; see its documentation for layer names")
    shapes = extractor.layer_shapes()
    width = max(len(name) for name in shapes)
    lines = [f"{model} [{backend}]: {len(shapes)} layers (name, output shape per record)"]
    lines += [f"  {name:<{width}}  {tuple(shape) if shape else '(not a tensor)'}" for name, shape in shapes.items()]
    return "\n".join(lines)
