"""Step progress: lines a log file can follow when stdout is not a terminal."""

import io
import re

import lightning as L

from lightning_sdm.callbacks.progress import StepProgress
from tests.tasks.test_lm_task import tiny_data, tiny_task


def fit_with_progress(tmp_path, progress: StepProgress, max_steps: int) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        default_root_dir=str(tmp_path),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        val_check_interval=4,
        callbacks=[progress],
    )
    trainer.fit(tiny_task(), datamodule=tiny_data(tmp_path))


def test_redirected_output_gets_step_lines_with_rate_and_eta(tmp_path):
    stream = io.StringIO()
    fit_with_progress(tmp_path, StepProgress(every_n_steps=2, stream=stream, terminal=False), 8)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "training from step 0 to 8"
    steps = [int(m.group(1)) for line in lines if (m := re.match(r"step (\d+)/8 ", line))]
    assert steps == [2, 4, 6, 8]  # no repeated final line
    last = next(line for line in lines if line.startswith("step 8/8"))
    assert "(100%)" in last and "step/s" in last and "ETA" in last and "train/ce" in last
    validations = [line for line in lines if line.startswith("validation at step")]
    assert len(validations) == 1 and validations[0].startswith("validation at step 4: ")
    assert "val/ce" in validations[0]
    assert "Epoch" not in stream.getvalue()


def test_a_time_bound_prints_between_sparse_step_lines(tmp_path):
    stream = io.StringIO()
    progress = StepProgress(every_n_steps=1000, every_seconds=0.0, stream=stream, terminal=False)
    fit_with_progress(tmp_path, progress, 3)
    steps = re.findall(r"^step (\d+)/3", stream.getvalue(), flags=re.M)
    assert steps == ["1", "2", "3"]


def test_a_terminal_gets_a_bar_counting_global_steps(tmp_path):
    stream = io.StringIO()
    fit_with_progress(tmp_path, StepProgress(stream=stream, terminal=True), 4)
    frames = stream.getvalue().replace("\r", "\n")
    assert "4/4" in frames and "step" in frames
    assert "Epoch" not in frames


def test_the_line_shows_what_any_family_puts_on_the_progress_bar():
    """The diffusion task's train/mse printed no loss at all when the line knew only the
    LM's metric names."""
    from types import SimpleNamespace

    trainer = SimpleNamespace(
        progress_bar_metrics={"val/mse": 0.7, "train/mse": 0.5, "v_num": 1},
        callback_metrics={},
    )
    shown = StepProgress(stream=io.StringIO(), terminal=False)._metrics(trainer)
    assert shown == {"train/mse": 0.5, "val/mse": 0.7}
