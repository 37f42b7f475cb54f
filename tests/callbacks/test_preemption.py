"""A killed or preempted fit continues where its last whole checkpoint left it, with each
step in metrics.csv once."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

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
