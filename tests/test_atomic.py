"""Files and folders written whole or not at all, also when the writer is killed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_sdm.atomic import (
    PARTIAL_MARK,
    RETIRED_MARK,
    atomic_file,
    destination_of,
    partial_name,
    remove_partials,
    replace_directory,
    write_text_atomically,
)


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_a_whole_write_replaces_the_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    write_text_atomically(target, "new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_replace_directory_swaps_whole_folders(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("stale")

    def build(folder: Path) -> None:
        (folder / "weights").write_text("new")

    replace_directory(target, build)
    assert sorted(p.name for p in target.iterdir()) == ["weights"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_replace_directory_keeps_the_old_folder_when_building_fails(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")

    def build(folder: Path) -> None:
        (folder / "weights").write_text("half")
        raise OSError("no space left on device")

    with pytest.raises(OSError):
        replace_directory(target, build)
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_folder_set_aside_with_nothing_in_its_place_comes_back(tmp_path):
    retired = tmp_path / f".model{RETIRED_MARK}1234abcd"
    retired.mkdir()
    (retired / "weights").write_text("old")
    partial = tmp_path / f".model{PARTIAL_MARK}5678abcd"
    partial.mkdir()
    remove_partials(tmp_path)
    assert (tmp_path / "model" / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


WRITER = """
import sys, torch
from lightning_sdm.runs.checkpoints import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
torch.manual_seed(0)
weights = torch.randn(4_000_000)  # 16 MB: a save takes long enough to be killed inside
for count in range(10_000):
    io.save_checkpoint({"global_step": count, "state_dict": {"w": weights + count}}, path)
    print(count, flush=True)
"""


def test_checkpoints_killed_mid_save_are_always_whole(tmp_path):
    """kill -9 at random moments of a save loop: the file is always the old or the new one,
    with $TMPDIR on another filesystem (tmpfs) than the checkpoint."""
    import random

    import torch

    from lightning_sdm.runs.checkpoints import unreadable_reason

    target = tmp_path / "checkpoints" / "last.ckpt"
    env = {**os.environ, "TMPDIR": "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)}
    torch.manual_seed(0)
    weights = torch.randn(4_000_000)
    rng = random.Random(0)
    for _ in range(4):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        process.stdout.readline()  # one save done
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert unreadable_reason(target) is None
        checkpoint = torch.load(target, weights_only=True)
        assert torch.equal(checkpoint["state_dict"]["w"], weights + checkpoint["global_step"])
        remove_partials(target.parent)
        assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_replacing_one_folder_leaves_a_siblings_work_in_progress_alone(tmp_path):
    sibling_partial = tmp_path / f".other{PARTIAL_MARK}1234abcd"
    sibling_partial.mkdir()  # another generate run building "other" right now
    own_leftover = tmp_path / f".model{PARTIAL_MARK}5678abcd"
    own_leftover.mkdir()  # a killed earlier export to "model"
    replace_directory(tmp_path / "model", lambda folder: (folder / "w").write_text("x"))
    assert sibling_partial.is_dir() and not own_leftover.exists()


def test_a_checkpoint_that_does_not_fit_on_its_disk_is_one_line_and_the_old_one_stays(
    tmp_path, monkeypatch
):
    """torch reports a full disk as "unexpected pos 32448 vs 32342"."""
    import shutil
    from collections import namedtuple

    import torch

    from lightning_sdm.errors import UserInputError
    from lightning_sdm.runs import checkpoints
    from lightning_sdm.runs.checkpoints import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    checkpoint = {"state_dict": {"w": torch.zeros(2**20)}, "global_step": 1}  # 4 MB
    io.save_checkpoint(checkpoint, path)

    def disk_full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(torch, "save", disk_full)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10 * 2**20, 9 * 2**20, 2**20))
    with pytest.raises(UserInputError, match=r"has 1 MB free and the checkpoint needs about 4 MB"):
        io.save_checkpoint({**checkpoint, "global_step": 2}, path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**12, 0, 10**12))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # not the disk: as it was
        io.save_checkpoint({**checkpoint, "global_step": 2}, path)
    monkeypatch.undo()
    assert checkpoints.load_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_temporary_name_maps_back_to_what_it_stands_for(tmp_path):
    destination = tmp_path / "out.sdm" / "model.safetensors"
    assert destination_of(partial_name(destination)) == destination
    assert destination_of(partial_name(destination, RETIRED_MARK)) == destination
    assert destination_of(destination) == destination  # not a temporary name: as it is
    # a file inside a folder being built: named in the folder it will be in
    inside = partial_name(destination) / "01-an-organ.wav"
    assert destination_of(inside) == destination / "01-an-organ.wav"
