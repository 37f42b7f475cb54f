"""Warn before training in bf16 on a CPU where bf16 matmuls are slower than fp32.

Whether bf16 pays on a CPU depends on matrix units torch can use (AMX pays; some CPUs with
AVX-512 bf16 instructions multiply bf16 at half fp32's speed, AVX2 alone emulates it), so
it is measured here at the start of a run rather than read off a flag list. A user who
asked for bf16 to go faster learns in one line that the run goes slower.
"""

from __future__ import annotations

import time
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lightning_sdm.machine import machine_line
from lightning_sdm.nn.cached_decoding import SlowPrecisionWarning

__all__ = ["SlowPrecisionCheck", "bf16_matmul_speedup"]

BF16_PRECISIONS = ("bf16-mixed", "bf16-true", "bf16")
_SIZE = 1024  # a matmul of a decoder's width, large enough to run at the CPU's full speed
_REPEATS = 3


def bf16_matmul_speedup() -> float:
    """fp32 time over bf16 time of one square matmul on this CPU (> 1: bf16 faster)."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(_SIZE, _SIZE, generator=generator) for _ in range(2))
    return _seconds(a, b) / _seconds(a.bfloat16(), b.bfloat16())


def _seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    torch.mm(a, b)  # warm-up: the kernel's first call sets it up
    best = float("inf")
    for _ in range(_REPEATS):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


class SlowPrecisionCheck(Callback):
    """At the start of fit on a CPU with a bf16 precision: measure, and warn if bf16 is
    the slower choice here."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        precision = str(trainer.precision)
        if stage != "fit" or precision not in BF16_PRECISIONS:
            return
        if trainer.strategy.root_device.type != "cpu":
            return
        self._warn_if_slower(precision)

    @rank_zero_only
    def _warn_if_slower(self, precision: str) -> None:
        speedup = bf16_matmul_speedup()
        if speedup >= 1.0:
            return
        warnings.warn(
            f"trainer.precision {precision}: a bf16 matmul measured {1 / speedup:.1f}x slower "
            f"than fp32 on this CPU ({machine_line()}), so training runs slower than with "
            "precision 32-true here",
            SlowPrecisionWarning,
            stacklevel=2,
        )
