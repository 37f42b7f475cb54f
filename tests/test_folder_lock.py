"""folder_lock: one writer per folder, released however its holder ends."""

import errno
import fcntl
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_sdm.folder_lock import LOCK_FILE, FolderBusy, folder_lock

HOLDER = """
import sys, time
from pathlib import Path
from lightning_sdm.folder_lock import folder_lock
with folder_lock(Path(sys.argv[1]), "tokenize"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_in_another_process(folder: Path, seconds: float) -> subprocess.Popen:
    """A process that holds `folder`'s lock for `seconds` (returned once it holds it)."""
    root = Path(__file__).resolve().parents[1]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(seconds)],
        stdout=subprocess.PIPE, text=True, cwd=root,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = hold_in_another_process(tmp_path / "out", 60)
    try:
        busy = rf"another tokenize \(pid {holder.pid} on .*since"
        with pytest.raises(FolderBusy, match=busy), folder_lock(tmp_path / "out", "tokenize"):
            pytest.fail("entered a folder another process holds")
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    holder = hold_in_another_process(tmp_path / "out", 60)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "out" / LOCK_FILE).exists()  # the file stays; the kernel's lock went
    with folder_lock(tmp_path / "out", "tokenize"):
        pass


def test_waiting_says_so_once_and_enters_when_the_holder_ends(tmp_path):
    holder = hold_in_another_process(tmp_path / "out", 1.5)
    said: list[str] = []
    started = time.monotonic()
    with folder_lock(tmp_path / "out", "tokenize", wait=True, on_wait=said.append):
        waited = time.monotonic() - started  # entered only once the holder let go
    holder.wait()
    assert waited > 1.0
    assert len(said) == 1 and f"pid {holder.pid}" in said[0] and "waiting" in said[0]


def test_one_process_holds_a_folder_once_at_a_time(tmp_path):
    with folder_lock(tmp_path, "tokenize"):  # noqa: SIM117 (the inner pair is the point)
        # A second open file of this very process is refused too.
        with pytest.raises(FolderBusy), folder_lock(tmp_path, "tokenize"):
            pass
    with folder_lock(tmp_path, "tokenize"):
        pass


def test_a_file_system_without_locks_goes_unguarded(tmp_path, monkeypatch):
    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with folder_lock(tmp_path, "tokenize"):
        pass
