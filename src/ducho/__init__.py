"""Ducho: multimodal feature extraction for recommendation.

`ducho.run(config)` runs a configuration (a YAML path, a mapping or a Config); `ducho.load_config(...)`
validates one. Importing `ducho` loads neither torch nor TensorFlow.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_config", "run"]


def load_config(*args: Any, **kwargs: Any) -> Any:
    """See `ducho.config.load.load_config`."""
    from .config.load import load_config as _load

    return _load(*args, **kwargs)


def run(*args: Any, **kwargs: Any) -> Any:
    """See `ducho.runner.run`."""
    from .runner import run as _run

    return _run(*args, **kwargs)
