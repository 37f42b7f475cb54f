"""DataLoader workers that die with their parent.

A worker busy decoding a long file does not notice that its parent was killed (SIGKILL
leaves no time to clean up) and lives on holding its memory. On Linux the kernel can
deliver a signal to a process when its parent dies; other systems keep torch's own checks.
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: SIGKILL this worker when its parent process dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl: torch's watchdog still ends idle workers
