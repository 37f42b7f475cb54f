"""One writer per output folder: a second run meets a one-line refusal (or waits its turn).

Two runs writing into one folder number their files alike and clear each other's
half-written files, so one run's work replaces the other's. The lock is the kernel's
(`fcntl.flock` on a hidden file): it is released when its holder exits, killed or not, so a
crashed run never leaves the folder locked. File systems without locks (some network
mounts) go unguarded rather than refuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from lightning_sdm.errors import UserInputError

LOCK_FILE = ".lightning-sdm.lock"


class FolderBusy(UserInputError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(
    folder: Path,
    purpose: str,
    wait: bool = False,
    on_wait: Callable[[str], None] = print,
) -> Iterator[None]:
    """Hold `folder`'s lock for the block. Held elsewhere: raise `FolderBusy` naming the
    holder, or with `wait` say so through `on_wait` once and block until it is free."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+", encoding="utf-8") as handle:
        if _acquire(handle, folder, purpose, wait, on_wait):
            _describe_holder(handle, purpose)
        yield


_HELD: set[Path] = set()  # output locks this process holds (flock refuses a second open)


@contextlib.contextmanager
def output_lock(destination: str | Path, purpose: str) -> Iterator[None]:
    """Hold the lock of an output folder that is built beside its place and swapped in
    (`atomic.replace_directory`): a hidden file next to it, since the folder itself is
    replaced, removed again when done. Held by this process already (a command that locks
    early and then writes through a helper that locks too): a no-op."""
    destination = Path(os.path.abspath(destination))  # ".", "out/": the folder's own name
    lock = destination.parent / f".{destination.name}{LOCK_FILE}"  # .NAME.lightning-sdm.lock
    if lock in _HELD:
        yield
        return
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle = _open_and_lock(lock, destination, purpose)
    except OSError as error:
        if error.filename != str(lock):
            raise
        # named as asked: the output, not its lock file
        raise OSError(error.errno, error.strerror, str(destination)) from error
    _HELD.add(lock)
    try:
        yield
    finally:
        _HELD.discard(lock)
        with contextlib.suppress(OSError):
            lock.unlink()  # still held: a writer that opened it re-locks the next one
        handle.close()


def _open_and_lock(lock: Path, folder: Path, purpose: str) -> IO[str]:
    """The lock file, opened and locked, once it is still the file at `lock`'s path (a
    holder removes it on leaving, maybe after we opened it)."""
    while True:
        handle = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 - held past this call
        try:
            if not _acquire(handle, folder, purpose, wait=False, on_wait=print):
                return handle  # a file system without locks: unguarded
            with contextlib.suppress(FileNotFoundError):
                if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                    _describe_holder(handle, purpose)
                    return handle
        except BaseException:
            handle.close()
            raise
        handle.close()


def _acquire(
    handle: IO[str], folder: Path, purpose: str, wait: bool, on_wait: Callable[[str], None]
) -> bool:
    """True once held; False where the file system has no locks."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        holder, purpose = _holder(handle, purpose)
    except OSError:  # ENOLCK, EINVAL, ENOSYS: a mount without locks
        return False
    if not wait:
        raise FolderBusy(
            f"{folder} is being written by another {purpose} ({holder}); wait for it to "
            "finish, or write into another folder"
        )
    on_wait(f"waiting for another {purpose} writing into {folder} ({holder}) to finish")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return True


def _describe_holder(handle: IO[str], purpose: str) -> None:
    """Who holds the lock, for the message a second run prints."""
    handle.seek(0)
    handle.truncate()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    record = {"purpose": purpose, "pid": os.getpid(), "host": socket.gethostname()}
    handle.write(json.dumps({**record, "since": started}))
    handle.flush()


def _holder(handle: IO[str], purpose: str) -> tuple[str, str]:
    """Who holds the lock and what it runs (`purpose` when it does not say)."""
    handle.seek(0)
    try:
        record = json.loads(handle.read())
        held = f"pid {record['pid']} on {record['host']}, since {record['since']}"
        return held, str(record.get("purpose") or purpose)
    except (ValueError, KeyError, TypeError):  # written by nothing we know, or mid-write
        return "a process holding its lock", purpose
