"""folder_lock: one writer per folder, released however its holder ends."""

import errno
import fcntl
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_sdm.errors import UserInputError
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


OUTPUT_WRITER = """
import sys, time
from pathlib import Path
from lightning_sdm.atomic import write_directory

def build(folder):
    (folder / "first.txt").write_text("the first writer's work")
    print("building", flush=True)
    time.sleep(float(sys.argv[2]))

write_directory(Path(sys.argv[1]), build, overwrite=False, purpose="generate")
"""


def test_a_second_writer_of_an_output_folder_is_refused_and_the_first_lands_whole(tmp_path, capsys):
    """Two generate runs into one output folder: the second cleared the first's half-built
    folder (an hour of decoding gone: "no such file"), or swapped its own in over it."""
    from lightning_sdm.atomic import write_directory
    from lightning_sdm.cli import main

    root = Path(__file__).resolve().parents[1]
    first = subprocess.Popen(
        [sys.executable, "-c", OUTPUT_WRITER, str(tmp_path / "out"), "3"],
        stdout=subprocess.PIPE, text=True, cwd=root,
    )  # fmt: skip
    assert first.stdout is not None and first.stdout.readline().strip() == "building"
    busy = rf"out is being written by another generate \(pid {first.pid} on "
    with pytest.raises(FolderBusy, match=busy):
        write_directory(tmp_path / "out", lambda folder: None, overwrite=True)
    # the command, refused before it loads anything (no model at that path)
    argv = ["generate", "--model", str(tmp_path / "none"), "--prompt", "a", "--output_dir"]
    assert main([*argv, str(tmp_path / "out")]) == 2
    assert "is being written by another generate" in capsys.readouterr().err
    assert first.wait() == 0
    assert (tmp_path / "out" / "first.txt").read_text() == "the first writer's work"
    # free again: the next writer is refused only for what the folder holds
    with pytest.raises(UserInputError, match="already holds files"):
        write_directory(tmp_path / "out", lambda folder: None, overwrite=False)


def test_one_process_may_lock_an_output_folder_it_holds(tmp_path):
    """generate locks its output before loading and writes it through write_directory."""
    from lightning_sdm.atomic import write_directory
    from lightning_sdm.folder_lock import output_lock

    with output_lock(tmp_path / "out", "generate"):
        write_directory(tmp_path / "out", lambda f: (f / "a").write_text("x"), overwrite=False)
    assert (tmp_path / "out" / "a").read_text() == "x"
