"""What a speed measurement depends on: the CPU model, the vector instructions it offers
(one model name covers CPUs with and without AVX-512), its cores, the threads torch uses
and torch's version. Benchmarks record it with every number; measured choices are keyed
by it, so nodes of a cluster sharing one home folder do not share a choice measured on
another kind of CPU."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

# /proc/cpuinfo flags of bf16 instructions and matrix units. What bf16 gains depends on
# them, and is measured where it matters (`callbacks.precision_check`, `nn.packed_linear`):
# avx512_bf16 alone has multiplied bf16 slower than fp32.
BF16_UNITS = ("avx512_bf16", "amx_bf16")


def _cpuinfo(field: str) -> str | None:
    """The first value of a /proc/cpuinfo field, or None where there is none."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_features() -> str:
    """The vector instructions torch dispatches to (AVX2, AVX512, ...), and the CPU's bf16
    matrix units where it has them (e.g. AVX512+amx_bf16)."""
    isa = torch.backends.cpu.get_cpu_capability()
    flags = set((_cpuinfo("flags") or "").split())
    return "+".join([isa, *(unit for unit in BF16_UNITS if unit in flags)])


def machine() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "features": cpu_features(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def machine_line() -> str:
    """The machine in a benchmark table's heading: CPU, features, cores, threads, torch."""
    info = machine()
    return (
        f"{info['cpu']} ({info['features']}), {info['cores']} cores, {info['threads']} "
        f"threads, torch {info['torch']}"
    )
