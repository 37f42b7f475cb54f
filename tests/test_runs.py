"""Run folders: one per fit, `--ckpt_path last` finds the newest run's last checkpoint."""

import os
import time

import pytest

from lightning_sdm.runs import RUN_DIR_ENV, find_last_checkpoint, plan_run


def touch(path, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_fresh_fits_count_up_versions(tmp_path):
    assert plan_run(tmp_path, None).run_dir == tmp_path / "version_0"
    (tmp_path / "version_0").mkdir()
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


def test_spawned_ranks_take_the_run_folder_rank_zero_chose(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "version_7"))
    assert plan_run(tmp_path, None).run_dir == tmp_path / "version_7"


def test_a_missing_checkpoint_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt"):
        plan_run(tmp_path, str(tmp_path / "nope.ckpt"))
