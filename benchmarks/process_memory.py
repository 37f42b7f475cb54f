"""Benchmarks that run each case in its own process: the child run, its resident memory."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def rss_mb() -> float:
    """Resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_training_steps(step: Callable[[], None], steps: int) -> tuple[float, float]:
    """(median seconds per step, peak MB above the memory held before): one warm-up step,
    then `steps` timed ones. The warm-up allocates gradients and optimizer state, which the
    peak counts."""
    before = rss_mb()
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_rss_mb() - before


def run_child(script: str, child: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run `script --child CHILD --option value ...` in a fresh process (its own peak
    memory) and return the JSON it prints last."""
    argv = [sys.executable, script, "--child", child]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])
