"""Choose the torch device and the autocast settings for a run."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from .errors import ConfigError

log = logging.getLogger("ducho")


def resolve_device(requested: str, fallback_to_cpu: bool = False) -> str:
    """Turn `auto|cpu|cuda|cuda:N|mps` into a concrete device string, checking that it exists."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda"):
        index = int(requested.split(":")[1]) if ":" in requested else 0
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index < count:
            return f"cuda:{index}"
        problem = f"device {requested!r} is not available ({count} CUDA device(s) visible)"
        if fallback_to_cpu:
            log.warning("%s; running on the CPU", problem)
            return "cpu"
        raise ConfigError(f"device: {problem}; use device: cpu or auto")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        if fallback_to_cpu:
            log.warning("device 'mps' is not available; running on the CPU")
            return "cpu"
        raise ConfigError("device: 'mps' is not available on this machine; use device: cpu or auto")
    return requested


def autocast(device: str, precision: str) -> Any:
    """Mixed precision on CUDA (fp16 by default, bf16 on request); fp32 elsewhere or when asked."""
    import torch

    if not device.startswith("cuda") or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)
