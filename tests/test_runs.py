"""Run folders: one per fit, `--ckpt_path last` finds the newest run's last checkpoint."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_sdm.errors import UserInputError
from lightning_sdm.ranks import RANK_VARIABLES
from lightning_sdm.runs.checkpoints import require_checkpoint
from lightning_sdm.runs.plan import RUN_DIR_ENV, WANDB_ID_FILE, find_last_checkpoint, plan_run
from lightning_sdm.runs.tracking import run_loggers


def touch(path, mtime=None, step=0):
    """A minimal readable checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {}}, path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_fresh_fits_count_up_versions(tmp_path):
    assert plan_run(tmp_path, None).run_dir == tmp_path / "version_0"
    assert (tmp_path / "version_0").is_dir()  # claimed as it was chosen
    (tmp_path / "version_3").mkdir()
    (tmp_path / "notes").mkdir()
    plan = plan_run(tmp_path, None)
    assert plan.run_dir == tmp_path / "version_4" and not plan.resumed


def test_last_picks_the_newest_last_checkpoint_and_its_folder(tmp_path):
    now = time.time()
    touch(tmp_path / "version_0" / "checkpoints" / "last.ckpt", now - 100)
    newest = touch(tmp_path / "version_1" / "checkpoints" / "last.ckpt", now)
    touch(tmp_path / "version_2" / "checkpoints" / "epoch=0-step=2.ckpt", now + 5)
    assert find_last_checkpoint(tmp_path) == newest
    plan = plan_run(tmp_path, "last")
    assert plan.resumed and plan.run_dir == tmp_path / "version_1"
    assert plan.ckpt_path == str(newest)


def test_last_without_checkpoints_starts_a_new_run(tmp_path):
    plan = plan_run(tmp_path, "last")
    assert plan.ckpt_path is None and not plan.resumed
    assert plan.run_dir == tmp_path / "version_0"


def test_an_explicit_checkpoint_of_a_run_resumes_in_that_run(tmp_path):
    checkpoint = touch(tmp_path / "version_0" / "checkpoints" / "epoch=0-step=4.ckpt")
    (tmp_path / "version_1").mkdir()
    plan = plan_run(tmp_path, str(checkpoint))
    assert plan.resumed and plan.run_dir == tmp_path / "version_0"


def test_a_checkpoint_from_elsewhere_starts_a_new_run(tmp_path):
    elsewhere = touch(tmp_path / "other" / "model.ckpt")
    plan = plan_run(tmp_path / "runs", str(elsewhere))
    assert plan.ckpt_path == str(elsewhere) and plan.run_dir == tmp_path / "runs" / "version_0"


CLAIM = """
import sys, time
from pathlib import Path
from lightning_sdm.runs.plan import plan_run
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(plan_run(Path(sys.argv[1]), None).run_dir.name)
"""


def test_fits_started_together_get_a_run_folder_each(tmp_path):
    """Two fits from two terminals at once chose the same version_N (and wrote each
    other's checkpoints and W&B run): each claims its own now."""
    root = Path(__file__).resolve().parents[1]
    environment = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
    start = time.time() + 3  # after the imports of all four
    fits = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM, str(tmp_path / "runs"), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
            env=environment,
        )
        for _ in range(4)
    ]
    chosen = sorted(fit.communicate(timeout=120)[0].strip() for fit in fits)
    assert chosen == ["version_0", "version_1", "version_2", "version_3"]


def test_a_launchs_other_processes_make_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")
    plan = plan_run(tmp_path / "runs", None)
    assert plan.run_dir == tmp_path / "runs" / "version_0"
    assert not (tmp_path / "runs").exists()


def test_spawned_ranks_take_the_run_folder_rank_zero_chose(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "version_7"))
    assert plan_run(tmp_path, None).run_dir == tmp_path / "version_7"


def test_a_missing_checkpoint_file_is_an_error(tmp_path):
    with pytest.raises(UserInputError, match=r"nope\.ckpt does not exist"):
        plan_run(tmp_path, str(tmp_path / "nope.ckpt"))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is empty"),
        (b"PK\x03\x04 torn", "is not a whole PyTorch checkpoint"),
        (None, "not a Lightning"),
    ],
)
def test_resuming_from_an_unusable_checkpoint_is_one_line(tmp_path, content, reason):
    path = tmp_path / "model.ckpt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserInputError, match=reason):
        plan_run(tmp_path / "runs", str(path))


def test_last_passes_over_a_torn_last_checkpoint_to_the_newest_readable(tmp_path):
    """A preempted job relaunched with --ckpt_path last must not crash-loop on a torn file."""
    now = time.time()
    older_run = touch(tmp_path / "version_0" / "checkpoints" / "last.ckpt", now - 100)
    periodic = touch(tmp_path / "version_1" / "checkpoints" / "epoch=0-step=8.ckpt", now - 10)
    touch(tmp_path / "version_1" / "checkpoints" / "epoch=0-step=4.ckpt", now - 20)
    torn = tmp_path / "version_1" / "checkpoints" / "last.ckpt"
    torn.write_bytes(b"")
    os.utime(torn, (now, now))
    said = []
    assert find_last_checkpoint(tmp_path, report=said.append) == periodic
    assert said == [f"warning: checkpoint {torn} is empty (0 bytes); trying the next newest"]
    periodic.write_bytes(b"PK\x03\x04")
    (tmp_path / "version_1" / "checkpoints" / "epoch=0-step=4.ckpt").unlink()
    assert find_last_checkpoint(tmp_path, report=said.append) == older_run
    plan = plan_run(tmp_path, "last")
    assert plan.run_dir == tmp_path / "version_0" and plan.ckpt_path == str(older_run)


def test_last_continues_a_run_that_kept_no_last_checkpoint(tmp_path):
    """Lightning's default checkpoint callback keeps `epoch=E-step=S.ckpt` and no last.ckpt:
    "last" said there was none and started the run over."""
    now = time.time()
    touch(tmp_path / "version_0" / "checkpoints" / "epoch=0-step=2.ckpt", now - 100)
    newest = touch(tmp_path / "version_1" / "checkpoints" / "epoch=3-step=8.ckpt", now)
    touch(tmp_path / "version_1" / "checkpoints" / "epoch=1-step=4.ckpt", now - 50)
    plan = plan_run(tmp_path, "last")
    assert plan.resumed and plan.ckpt_path == str(newest)
    assert plan.run_dir == tmp_path / "version_1"


def test_a_run_folder_given_as_a_checkpoint_points_at_its_newest(tmp_path):
    """export and generate said 'checkpoint runs/x not found' of a folder that exists."""
    now = time.time()
    touch(tmp_path / "version_0" / "checkpoints" / "epoch=0-step=2.ckpt", now - 10)
    newest = touch(tmp_path / "version_0" / "checkpoints" / "last.ckpt", now)
    with pytest.raises(UserInputError) as raised:
        require_checkpoint(tmp_path)
    assert str(raised.value) == f"{tmp_path} is a folder, not a checkpoint; its newest is {newest}"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="is a folder, not a checkpoint and holds none"):
        require_checkpoint(tmp_path / "empty")
    require_checkpoint(newest)


def test_a_launchs_other_processes_write_no_tracking_files(tmp_path, monkeypatch):
    """An srun task other than the first guesses a run folder that may not be rank 0's:
    it must not make it, nor a W&B id in it."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("SLURM_PROCID", "1")
    run_loggers(tmp_path / "runs" / "version_1")
    assert not (tmp_path / "runs").exists()
    monkeypatch.setenv("SLURM_PROCID", "0")
    run_loggers(tmp_path / "runs" / "version_1")
    assert (tmp_path / "runs" / "version_1" / WANDB_ID_FILE).is_file()


def test_w_and_b_files_go_to_the_run_folder_however_it_is_named(tmp_path, monkeypatch):
    """A relative run folder reached W&B as given, and its service process (started from
    the folder the first fit ran in) wrote a later fit's files there, not in its run."""
    from lightning.pytorch.loggers import WandbLogger

    from lightning_sdm.runs.tracking import run_loggers

    pytest.importorskip("wandb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    (wandb_logger,) = [x for x in run_loggers("runs/demo/version_0") if isinstance(x, WandbLogger)]
    assert wandb_logger.save_dir == str(tmp_path / "runs" / "demo" / "version_0")
