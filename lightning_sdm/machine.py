"""What a speed measurement depends on: the CPU model, its cores, the threads torch uses
and torch's version. Benchmarks record it with every number; measured choices are keyed
by it."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return model


def machine() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def machine_line() -> str:
    """The machine in a benchmark table's heading: CPU, cores, threads, torch."""
    info = machine()
    return f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads, torch {info['torch']}"
