"""Logging: a concise console handler (set up by the CLI) and one log file per run."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from .config.schema import Config

log = logging.getLogger("ducho")


def console(level: int = logging.INFO) -> None:
    """Print Ducho's messages on stderr (the CLI calls this; library users keep their own logging)."""
    if not any(getattr(h, "_ducho_console", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler._ducho_console = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(level)


@contextlib.contextmanager
def run_log(folder: Path, config: Config) -> Iterator[Path]:
    """Log the run to `<folder>/ducho-<time>.log` and save the resolved config beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"ducho-{stamp}.log"
    (folder / f"ducho-{stamp}.config.yaml").write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()
