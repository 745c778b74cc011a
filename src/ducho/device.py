"""Choose the torch device, and the numerics of a forward: inference mode, autocast, batch-invariant linears."""

from __future__ import annotations

import contextlib
import functools
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


MIN_LINEAR_ROWS = 16


def forward_context(device: str, precision: str) -> Any:
    """What every torch forward runs under: `inference_mode`, `autocast` (or IEEE fp32), and `RowPaddedLinear`."""
    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(autocast(device, precision))
    stack.enter_context(ieee_fp32(device, precision))
    stack.enter_context(row_padded_linear())
    return stack


def row_padded_linear() -> Any:
    """A torch function mode in which `F.linear` on fewer than MIN_LINEAR_ROWS rows runs on MIN_LINEAR_ROWS rows
    (zero rows appended, then dropped). BLAS picks another kernel, with another summation order, for matrices of a few
    rows, so without it a record's vector would depend on how many records share its batch (7e-7 to 3e-6 apart on
    this CPU). Convolutions and attention on whole sequences are batch-invariant already; with this, batch sizes 1, 3
    and 32 give byte-identical features on CPU (tested). Only products of under 16 rows grow, to 16."""
    return _row_padded_linear_mode()()


@functools.cache
def _row_padded_linear_mode() -> Any:
    """The mode's class, made once (it needs torch, which this module does not import at start-up)."""
    import torch
    from torch.overrides import TorchFunctionMode

    linear = torch.nn.functional.linear

    class RowPaddedLinear(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is linear and args and args[0].dim() >= 1 and args[0].shape[-1] > 0:
                x = args[0]
                rows = x.numel() // x.shape[-1]
                if 0 < rows < MIN_LINEAR_ROWS:
                    flat = x.reshape(rows, x.shape[-1])
                    padded = torch.cat([flat, flat.new_zeros(MIN_LINEAR_ROWS - rows, x.shape[-1])])
                    out = func(padded, *args[1:], **kwargs)[:rows]
                    return out.reshape(*x.shape[:-1], out.shape[-1])
            return func(*args, **kwargs)

    return RowPaddedLinear
