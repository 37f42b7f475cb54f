"""DataLoader workers that die with their parent, and a word when they outnumber the CPUs.

A worker busy decoding a long file does not notice that its parent was killed (SIGKILL
leaves no time to clean up) and lives on holding its memory. On Linux the kernel can
deliver a signal to a process when its parent dies; other systems keep torch's own checks.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from lightning.pytorch.utilities import rank_zero_info

from lightning_sdm.data.stopping import ignore_stop_signals_in_worker

_PR_SET_PDEATHSIG = 1
_ANNOUNCED: set[tuple[int, int]] = set()  # (workers, CPUs) said already in this process


def die_with_parent(worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: SIGKILL this worker when its parent process dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl: torch's watchdog still ends idle workers


def parent_led_worker(worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: the worker dies with its parent and leaves SIGTERM and
    Ctrl+C to it. A scheduler's SIGTERM and a terminal's Ctrl+C reach every process of the
    group; workers they killed failed the run ("DataLoader worker is killed by signal")
    while its main process was stopping at a step boundary to save."""
    die_with_parent(worker_id)
    ignore_stop_signals_in_worker(worker_id)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as torch's own check counts them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def note_worker_count(workers: int) -> None:
    """One line, once per process, when loader workers outnumber the CPUs (torch's own
    warning, filtered by `quiet`, repeated itself at every epoch's start)."""
    cpus = usable_cpus()
    if workers <= cpus or (workers, cpus) in _ANNOUNCED:
        return
    _ANNOUNCED.add((workers, cpus))
    rank_zero_info(
        f"data: more loader workers than CPUs ({workers} on {cpus}): they wait for each other "
        f"and for training; data.num_workers {cpus} or fewer avoids that"
    )
