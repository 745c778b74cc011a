"""`make test` runs the `kernels` tests again under forced CPU kernel levels (Makefile); this checks that the level
asked for is the one torch runs, so those runs test what they claim to."""

from __future__ import annotations

import os

import pytest


@pytest.mark.kernels
def test_the_forced_kernel_level_is_in_effect() -> None:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    if forced:
        assert capability.lower() == forced.lower(), (capability, forced)
    else:
        assert capability in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "SVE256", "VSX"), capability
