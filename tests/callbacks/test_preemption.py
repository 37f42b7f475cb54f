"""A killed or preempted fit continues where its last whole checkpoint left it, with each
step in metrics.csv once."""

import contextlib
import csv
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from tests.test_training_cli import tiny_config

MAX_STEPS = 294  # a multiple of the checkpoint interval


def preemptible_config(tmp_path: Path) -> Path:
    path = tiny_config(tmp_path, max_steps=MAX_STEPS, val_check_interval=5)
    config = yaml.safe_load(path.read_text())
    config["trainer"]["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True, "every_n_train_steps": 7},
        }
    ]
    config["data"]["holdout_shards"] = 1
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "TMPDIR": "/dev/shm"}
    command = [sys.executable, "-m", "lightning_sdm", "fit", "--config", str(config), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    start = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() - start < timeout
        time.sleep(0.05)


def steps_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def train_rows(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/ce")]


def test_fit_killed_repeatedly_resumes_at_its_checkpoint_and_logs_each_step_once(tmp_path):
    config = preemptible_config(tmp_path)
    run = tmp_path / "run" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    rng = random.Random(0)
    for attempt in range(3):
        before = steps_of(last) if last.exists() else 0
        process = launch(config, "--ckpt_path", "last")
        if attempt == 0:
            wait_for(last, process)
        else:
            start = last.stat().st_mtime
            while last.stat().st_mtime == start:  # at least one save in this attempt
                assert process.poll() is None, process.communicate()[1][-3000:]
                time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert steps_of(last) > before  # whole, and further than before
    process = launch(config, "--ckpt_path", "last")
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["version_0"]
    assert steps_of(last) == MAX_STEPS
    assert not [p for p in last.parent.iterdir() if ".sdm-partial-" in p.name]
    assert sorted(train_rows(run)) == list(range(MAX_STEPS))  # each step once, none lost


def test_a_kill_right_after_a_checkpoint_loses_no_row(tmp_path):
    # The checkpoint at global step 14 is written before step 13's row is logged.
    config = preemptible_config(tmp_path)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["max_steps"] = 21
    settings["trainer"]["callbacks"].append(
        {
            "class_path": "tests.callbacks.kill_switch.KillAfterCheckpoint",
            "init_args": {"at_step": 14, "marker": str(tmp_path / "killed")},
        }
    )
    config.write_text(yaml.safe_dump(settings))
    run = tmp_path / "run" / "version_0"
    killed = launch(config, "--ckpt_path", "last")
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert steps_of(run / "checkpoints" / "last.ckpt") == 14
    resumed = launch(config, "--ckpt_path", "last")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    assert sorted(train_rows(run)) == list(range(21))


def test_sigterm_saves_a_checkpoint_and_exits_promptly(tmp_path):
    config = preemptible_config(tmp_path)
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    process = launch(config)
    wait_for(last, process)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - signalled < 30
    assert process.returncode == 143, stderr[-3000:]
    step = steps_of(last)
    assert 0 < step < MAX_STEPS
    assert f"stopped by SIGTERM at step {step}; saved {last}" in stderr
    assert "Traceback" not in stderr


@contextlib.contextmanager
def killed_at_the_end(process: subprocess.Popen) -> Iterator[None]:
    """Every process of the session `process` leads (other ranks, loader workers) is gone
    afterwards, whatever the test found: a hung run does not outlive it."""
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def launch_in_its_own_group(config: Path) -> subprocess.Popen:
    """As a terminal or a scheduler runs it: its loader workers share its process group,
    and a Ctrl+C or a job's SIGTERM reaches every process of the group."""
    env = {**os.environ, "WANDB_MODE": "disabled", "TMPDIR": "/dev/shm"}
    command = [sys.executable, "-m", "lightning_sdm", "fit", "--config", str(config),
               "--data.num_workers", "2"]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip


@pytest.mark.parametrize(
    ("signals", "status", "cause"),
    [([signal.SIGTERM], 143, "SIGTERM"), ([signal.SIGINT], 130, "Ctrl+C")],
)
def test_a_signal_to_the_whole_group_stops_at_a_step_and_saves(tmp_path, signals, status, cause):
    """A scheduler's SIGTERM to every process of a job killed the loader workers too, and the
    run failed ("DataLoader worker is killed by signal") without saving; a Ctrl+C stopped
    mid-step and saved nothing, losing the steps since the last checkpoint."""
    config = preemptible_config(tmp_path)
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    process = launch_in_its_own_group(config)
    with killed_at_the_end(process):
        wait_for(last, process)
        for signum in signals:
            os.killpg(process.pid, signum)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr[-3000:]
    step = steps_of(last)
    assert 0 < step < MAX_STEPS and step % 7  # saved at the stop, not a periodic save
    assert f"stopped by {cause} at step {step}; saved {last}" in stderr
    assert "Traceback" not in stderr and "DataLoader worker" not in stderr


def test_a_second_ctrl_c_stops_at_once_without_waiting_for_the_workers(tmp_path):
    """Workers leave Ctrl+C to the main process; the exit that a second Ctrl+C starts then
    waited for them forever."""
    config = preemptible_config(tmp_path)
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    process = launch_in_its_own_group(config)
    with killed_at_the_end(process):
        wait_for(last, process)
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "Ctrl+C again: stopped at once" in stderr and "DataLoader worker" not in stderr


@pytest.mark.parametrize("in_sanity_check", [False, True])
def test_sigterm_while_rank_zero_draws_samples_saves_on_both_ranks(tmp_path, in_sanity_check):
    """Lightning's SIGTERM handler broadcast to the other ranks from inside the handler: with
    rank 0 signalled while drawing samples and rank 1 waiting at the samples' barrier, the
    two waited on each other for good and nothing was saved (after a step, or in the sanity
    check before the first)."""
    from tests.test_training_cli import ROOT

    config = preemptible_config(tmp_path)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"].update({"devices": 2, "strategy": "ddp", "val_check_interval": 2})
    settings["trainer"]["num_sanity_val_steps"] = 1 if in_sanity_check else 0
    marker = tmp_path / "lingering"
    settings["trainer"]["callbacks"] += [
        {"class_path": "lightning_sdm.callbacks.samples.SampleGeneration",
         "init_args": {"prompts": ["caption of item0001"], "every_n_steps": 2, "seconds": 0.2}},
        {"class_path": "tests.callbacks.kill_switch.SlowValidationEndOnRankZero",
         "init_args": {"seconds": 3.0, "marker": str(marker),
                       "in_sanity_check": in_sanity_check}},
    ]  # fmt: skip
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "lightning_sdm", "fit", "--config", str(config)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path, start_new_session=True)  # fmt: skip
    with killed_at_the_end(process):
        wait_for(marker, process)
        process.send_signal(signal.SIGTERM)  # rank 0; it passes the signal to rank 1
        _, stderr = process.communicate(timeout=90)
    assert process.returncode == 143, stderr[-3000:]
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"stopped by SIGTERM at step {steps_of(last)}; saved" in stderr
