"""What a step's own matmul and attention kernels take of it, timed inside the step.

A step doing these products cannot be faster than their sum, whatever else it saves; so
the most any change around them can buy is measured on the CPU that runs the benchmark,
not assumed from another.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def step_kernels(step: Callable[[], None], steps: int, dtype: torch.dtype) -> dict[str, float]:
    """Seconds per step that `step`'s matmul and attention kernels take (profiled over
    `steps` steps), and the matmuls' FLOP rate beside a 2048-square matmul's in `dtype`."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        for _ in range(steps):
            step()
    self_seconds = {e.key: e.self_cpu_time_total / 1e6 / steps for e in profiled.key_averages()}
    matmul_s = sum(self_seconds.get(name, 0.0) for name in MATMULS)
    attention_s = sum(t for name, t in self_seconds.items() if "scaled_dot_product" in name)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    counts = counter.get_flop_counts()["Global"]
    matmul_flops = sum(n for op, n in counts.items() if f"aten::{op.__name__}" in MATMULS)
    square = torch.randn(2048, 2048).to(dtype)
    torch.mm(square, square)
    start = time.perf_counter()
    for _ in range(3):
        torch.mm(square, square)
    reference = 3 * 2 * 2048**3 / (time.perf_counter() - start)
    return {
        "matmul_s": matmul_s, "attention_s": attention_s,
        "matmul_gflops": matmul_flops / max(matmul_s, 1e-9) / 1e9,
        "reference_gflops": reference / 1e9,
    }  # fmt: skip
