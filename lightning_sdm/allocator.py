"""Keep freed CPU memory in the process between training (and sampling) steps.

glibc hands a freed block larger than its mmap threshold (adaptive, at most 32 MB) back to
the operating system, so the next step's allocation of that size faults every page in
again, zero-filled by the kernel. A training step frees and re-allocates the same
activations every step: on a 2-core Intel Xeon, keeping them made the LM's fp32 training
step 1.07×-1.10× faster (`benchmarks/training_speed.py --variants allocator`). Raising glibc's mmap
and trim thresholds keeps the freed blocks in the heap for the next step. The process
holds its peak memory between steps instead of returning it; a training step reaches that
peak every step anyway. Every `lightning-sdm` command sets it first. Done by glibc's own
`mallopt` (PyTorch's CPU tensors come from malloc), so there is no allocator to install.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["KEEP_FREED_MEMORY_ENV", "keep_freed_memory"]

# "0" (or false/no/off) turns it off (e.g. a process sharing its node with others that
# need the memory back).
KEEP_FREED_MEMORY_ENV = "LIGHTNING_SDM_KEEP_FREED_MEMORY"
_OFF = ("0", "false", "no", "off")
# Blocks up to this size are served from (and freed into) the heap. Larger ones, rarer than
# one per step, still go back to the system.
_THRESHOLD_BYTES = 1 << 30
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process; whether they were set (False off glibc, on
    a refusal, or when the environment variable says 0, false, no or off)."""
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1").strip().lower() in _OFF:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt; macOS's differs)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    kept_mapped = mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES)
    return bool(kept_mapped and mallopt(_M_TRIM_THRESHOLD, _THRESHOLD_BYTES))
