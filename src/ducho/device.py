"""Choose the torch device, and the numerics of a forward: inference mode, autocast, IEEE fp32 on request."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
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


@contextlib.contextmanager
def ieee_fp32(device: str, precision: str) -> Iterator[None]:
    """`precision: fp32` on CUDA means IEEE float32: TF32, which torch allows for cuDNN convolutions by default (10
    bits of mantissa; ResNet-50 features 1e-3 apart from the CPU's on an H200), is off for the forward."""
    import torch

    if not (device.startswith("cuda") and precision == "fp32"):
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def forward_context(device: str, precision: str) -> Any:
    """What every torch forward runs under: `inference_mode` and `autocast` (or IEEE fp32).

    Batch sizes are not padded to a fixed shape: BLAS (MKL) picks its kernel by the matrix's row count and the CPU's
    instruction set, so a record's vector may differ in its last bits between batch sizes (at most 1e-5 of its largest
    magnitude in fp32, tested on three kernel levels); the same batch size gives the same bytes (README)."""
    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(autocast(device, precision))
    stack.enter_context(ieee_fp32(device, precision))
    return stack
