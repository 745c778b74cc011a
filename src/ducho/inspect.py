"""`ducho validate` and `ducho run --dry-run`: check and describe a run without loading any model."""

from __future__ import annotations

from pathlib import Path

from .config.load import load_config, translation_notes
from .errors import DuchoError
from .model_store import locate
from .plan import Job, build_plan
from .sources.textual import Scan, TextTable


def _scan_sources(jobs: list[Job]) -> dict[str, tuple[TextTable, Scan]]:
    scans: dict[str, tuple[TextTable, Scan]] = {}
    for job in jobs:
        if job.source_key not in scans:
            table = TextTable(job.input_path, job.settings, job.source, job.source_key)
            scans[job.source_key] = (table, table.scan())
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
        lines.append(f"    input:  {job.input_path} ({scan.rows} rows, {scan.kept} to extract, "
                     f"{len(scan.skipped)} skipped)")
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
            where = locate(job.spec.model_name, job.spec.revision)
            found = f"{where.origin}: {where.target}"
            if job.spec.tokenizer_name:
                locate(job.spec.tokenizer_name)
        except DuchoError as error:
            problems.append(f"{job.key}: {error}")
            found = "NOT FOUND"
        lines.append(f"- {job.key}: {job.spec.model_name} -> {found}; {scan.kept}/{scan.rows} records")
    if problems:
        lines[0] = "config has problems"
        raise DuchoError("\n".join(lines + ["problems:"] + problems))
    return "\n".join(lines)
