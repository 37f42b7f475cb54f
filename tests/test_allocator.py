"""Training processes keep freed memory for the next step instead of faulting it in again."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from lightning_sdm.allocator import KEEP_FREED_MEMORY_ENV

# Allocates and frees a 64 MB tensor, then reports how many bytes glibc has mmapped now
# (hblkhd): a block served from mmap is returned to the system when freed.
PROBE = """
import ctypes, sys, torch
from lightning_sdm.allocator import keep_freed_memory
applied = keep_freed_memory()
libc = ctypes.CDLL(None)
class Info(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc.mallinfo2.restype = Info
block = torch.empty(16 << 20)  # 64 MB, over glibc's largest adaptive mmap threshold
mapped = libc.mallinfo2().hblkhd
print(applied, mapped >= 64 << 20)
"""


def probe(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


needs_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="glibc's malloc (mallinfo2) is what this tunes",
)


@needs_glibc
def test_large_blocks_come_from_the_heap_once_set():
    assert probe({}) == "True False"  # kept in the heap, not mmapped


@needs_glibc
@pytest.mark.parametrize("off", ["0", "false", " OFF "])
def test_the_environment_turns_it_off(off):
    assert probe({KEEP_FREED_MEMORY_ENV: off}) == "False True"  # glibc's own default


def test_every_command_sets_it_first(monkeypatch, capsys):
    import lightning_sdm.allocator as allocator
    from lightning_sdm.cli.main import main

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1))
    assert main([]) == 2  # no command: an error, after the setting
    assert calls == [1]
