"""GELU of a decoding step's few rows, through the kernel measured faster on this machine.

With oneDNN enabled, `F.gelu` of a contiguous fp32 or bf16 CPU tensor runs oneDNN's
eltwise primitive, which costs a primitive lookup and setup per call: for the 2 × 2048
values of a decoding step's FFN, ~15 µs against ~5 µs for ATen's own vectorised kernel on
a 2-core Intel Xeon, and in a step (after a streamed weight) 47 against 15 µs, with the
next matmuls slower after it too. Which kernel wins depends on the CPU and the oneDNN
build, so it is measured once per process for each (rows, width, dtype, approximation).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

Gelu = Callable[[torch.Tensor], torch.Tensor]
_ROUNDS = 7  # interleaved rounds; the median counts
_CALLS = 40  # calls per round and kernel


def aten_gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """`F.gelu` through ATen's own kernel: oneDNN is switched off for this call only (the
    switch is process-wide; another thread calling a oneDNN-backed op meanwhile gets
    ATen's kernel for it, the same values within rounding)."""
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        return F.gelu(x, approximate=approximate)
    finally:
        torch._C._set_mkldnn_enabled(enabled)


def _seconds(gelu: Gelu, x: torch.Tensor) -> float:
    started = time.perf_counter()
    for _ in range(_CALLS):
        gelu(x)
    return time.perf_counter() - started


@functools.cache
def step_gelu(rows: int, width: int, dtype: torch.dtype, approximate: str = "none") -> Gelu:
    """The faster of `F.gelu` and `aten_gelu` for [rows, width] CPU inputs of `dtype`
    (`F.gelu` itself wherever oneDNN is not in play: other devices, builds without it)."""
    default: Gelu = functools.partial(F.gelu, approximate=approximate)
    if not torch.backends.mkldnn.is_available():
        return default
    candidates: list[Gelu] = [default, functools.partial(aten_gelu, approximate=approximate)]
    x = torch.randn(rows, width).to(dtype)
    times: list[list[float]] = [[] for _ in candidates]
    with torch.inference_mode():
        for gelu in candidates:
            _seconds(gelu, x)  # warm-up
        for _ in range(_ROUNDS):
            for index, gelu in enumerate(candidates):
                times[index].append(_seconds(gelu, x))
    medians = [statistics.median(each) for each in times]
    return candidates[medians.index(min(medians))]
