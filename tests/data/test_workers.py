"""Decoding workers do not outlive a tokenize process killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.data.audio_fixtures import make_folder

ROOT = Path(__file__).resolve().parents[2]

# tokenize with 2 decoding workers, each stuck in a slow decode, as with a huge file.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    import lightning_sdm.data.audio_datamodule as decoding_module
    from lightning_sdm.cli import main

    def slow_load(*args, **kwargs):
        time.sleep(120)

    decoding_module.load_mono = slow_load  # what the decoding workers call
    main(["tokenize", sys.argv[1], sys.argv[2], "--random-codec", "0", "--workers", "2",
          "--accelerator", "cpu", "--no-progress"])
    """
)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_exit_within_seconds_after_the_parent_is_killed(tmp_path):
    make_folder(tmp_path / "in")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "tokenize.log"
    parent = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "in"), str(tmp_path / "out")],
        env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(children(parent.pid)) < 2 and time.monotonic() < deadline:
            if parent.poll() is not None:
                break
            time.sleep(0.2)
        workers = children(parent.pid)
        assert len(workers) >= 2, (
            f"the decoding workers never started (tokenize exit code {parent.poll()}): "
            + log.read_text()[-2000:]
        )
        time.sleep(1.0)  # the workers are inside the slow decode now
        assert parent.poll() is None, "tokenize finished: the slow decode was not in effect"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(w) for w in workers)
    finally:
        parent.kill()
        for worker in workers:
            if alive(worker):
                os.kill(worker, signal.SIGKILL)


def test_more_loader_workers_than_cpus_is_said_once_in_one_line(monkeypatch, caplog):
    """torch's two-line warning came at every epoch's start (a small catalogue: every few
    steps); now one line of ours when the loader is made, and torch's is filtered."""
    import logging
    import warnings

    import torch
    from torch.utils.data import IterableDataset

    from lightning_sdm.data import workers
    from lightning_sdm.data.stream import EpochDataLoader
    from lightning_sdm.quiet import quiet_dependencies

    class Numbers(IterableDataset):
        epoch = 0

        def __iter__(self):
            yield torch.tensor([1])

    monkeypatch.setattr(workers, "usable_cpus", lambda: 1)
    monkeypatch.setattr(workers, "_ANNOUNCED", set())
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            EpochDataLoader(Numbers(), num_workers=3)
        EpochDataLoader(Numbers(), num_workers=1)
    said = [r.getMessage() for r in caplog.records if "loader workers" in r.getMessage()]
    assert said == ["data: more loader workers than CPUs (3 on 1): they wait for each other "
                    "and for training; data.num_workers 1 or fewer avoids that"]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_dependencies()
        warnings.warn(
            "This DataLoader will create 4 worker processes in total. Our suggested max number "
            "of worker in current system is 2, which is smaller than what this DataLoader is "
            "going to create.",
            UserWarning,
            stacklevel=1,
        )
    assert caught == []


def test_a_loader_used_outside_fit_lets_its_process_exit(tmp_path):
    """Loader workers live from one epoch to the next and ignore SIGTERM, which
    multiprocessing's exit hook sends them before joining them: a script that read a few
    epochs and ended waited for them forever."""
    from tests.data.shard_fixtures import write_shards

    write_shards(tmp_path, frames_per_item=[40] * 16, items_per_shard=4)
    script = textwrap.dedent(
        f"""
        from lightning_sdm.data.datamodule import TokenShardsDataModule
        module = TokenShardsDataModule({str(tmp_path)!r}, batch_size=4, num_workers=2,
                                       segment_seconds=0.4)
        loader = module.make_loader("train", 0, 1)
        print(sum(1 for _ in range(2) for _ in loader), flush=True)
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8"]
    assert time.monotonic() - started < 30
