"""What a preempted or killed run needs to continue cleanly.

On SIGTERM (a scheduler's preemption, `kill`) or a first Ctrl+C in a terminal, the run
stops at the end of the training step under way, on every rank at the same step (one
one-element all-reduce per step decides it), and this callback saves `last.ckpt` so that
`--ckpt_path last` continues from that step. Lightning's own handling stopped mid-step on
Ctrl+C, saving nothing, and broadcast from inside its SIGTERM handler, which could deadlock
ranks at different collectives; a second Ctrl+C stops at once. A run that ends between
two periodic checkpoints saves `last.ckpt` at its final step too. Logged rows are written
out before each checkpoint (a resume does not log those steps again), and on resume the
rows a killed run logged after its last checkpoint give way to the resumed run's.

A checkpoint saved at the end of a training batch (`every_n_train_steps`) is written before
Lightning logs that batch's row; a kill between the two would lose the row for good, since
the resumed run starts after it. That row is therefore written to metrics.csv ahead, as
part of saving the checkpoint.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_sdm.runs.tracking import RunCSVLogger

CTRL_C = "Ctrl+C"
SIGTERM = "SIGTERM"
# What asked the fit of this process to stop early (CTRL_C, SIGTERM), or None; the command
# line's exit status follows it (130 or 143, as shells count).
stop_cause: str | None = None


class ResumableRun(Callback):
    """Saves on SIGTERM or Ctrl+C and keeps metrics.csv to one row per step across
    resumes."""

    def __init__(self, checkpoint_dir: str | Path | None = None) -> None:
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self._unlogged_step: int | None = None  # a batch ended whose row is not logged yet
        self._previous_sigint: signal.Handlers | object | None = None  # while training
        self._previous_sigterm: signal.Handlers | object | None = None
        self._trainer: L.Trainer | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        global stop_cause
        stop_cause = None
        if threading.current_thread() is threading.main_thread():  # signals: main thread only
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_ctrl_c)

    def _on_ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        global stop_cause
        if stop_cause == CTRL_C:  # the second press: stop now, saving nothing more
            _stop_at_once()
        stop_cause = CTRL_C  # acted on at the end of this training step (`_stop_asked`)
        _say("Ctrl+C: finishing this step, then saving last.ckpt (Ctrl+C again stops at "
             "once, losing the steps since the last checkpoint)")  # fmt: skip

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """In place of Lightning's SIGTERM handler while training, which broadcasts to the
        other ranks from inside the handler: a rank signalled while drawing samples
        deadlocked there against one waiting at a barrier, and nothing was saved."""
        global stop_cause
        if stop_cause is None:
            stop_cause = SIGTERM  # acted on at the end of this training step (`_stop_asked`)
            launcher = self._trainer.strategy.launcher if self._trainer is not None else None
            if launcher is not None:  # the ranks this process started, as Lightning does
                launcher.kill(signum)

    def _restore_signals(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)  # type: ignore[arg-type]
            self._previous_sigterm = None
        if stop_cause == CTRL_C:  # a second press while the command exits ends it quietly
            return
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)  # type: ignore[arg-type]
            self._previous_sigint = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_signals()
        self._trainer = None

    def last_checkpoint_path(self, trainer: L.Trainer) -> Path:
        """Where the checkpoint callback keeps last.ckpt; else this run's checkpoints/."""
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                name = f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
                return Path(callback.dirpath) / name
        folder = self.checkpoint_dir or Path(trainer.default_root_dir) / "checkpoints"
        return folder / "last.ckpt"

    def _take_sigterm(self, trainer: L.Trainer) -> None:
        """Put `_on_sigterm` in, once, after Lightning has put its own handler in (which it
        does after on_fit_start, before the sanity check)."""
        if self._previous_sigterm is None and threading.current_thread() is threading.main_thread():
            self._trainer = trainer
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm(trainer)  # when there is no sanity check
        if trainer.ckpt_path is None:
            return
        resumed_at = trainer.fit_loop.epoch_loop._batches_that_stepped  # the loggers' step
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger):
                logger.forget_from_step(resumed_at)

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self._unlogged_step = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        # Checkpoint callbacks run after this one (Lightning orders them last), and the
        # loop logs this batch's row only after all of them.
        self._unlogged_step = trainer.fit_loop.epoch_loop._batches_that_stepped
        if _stop_asked(trainer):
            raise SIGTERMException  # saved and said by `on_exception`, as for SIGTERM

    def on_validation_start(self, trainer: L.Trainer, *args: object) -> None:
        self._unlogged_step = None  # validation runs after the batch's row is logged

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        # Rows still buffered in memory would be lost to a kill after this checkpoint, and
        # a resume from it does not log their steps again: write them first.
        row = self._unlogged_row(trainer)
        self._unlogged_step = None  # written now: a second save of this step finds it there
        for logger in trainer.loggers:
            if row is not None and isinstance(logger, RunCSVLogger):
                logger.write_ahead(*row)
            logger.save()

    def _unlogged_row(self, trainer: L.Trainer) -> tuple[dict[str, float], int] | None:
        """The row Lightning will log for the batch just ended, if it has not yet."""
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        connector = trainer._logger_connector
        automatic = trainer.lightning_module.automatic_optimization
        accumulating = trainer.fit_loop._should_accumulate() and automatic
        if self._unlogged_step != step or accumulating or not connector.should_update_logs:
            return None
        metrics = convert_tensors_to_scalars(connector.metrics["log"])
        if not metrics or "step" in metrics:  # a user-set step: Lightning logs it elsewhere
            return None
        return {**metrics, "epoch": metrics.get("epoch", trainer.current_epoch)}, step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning saves `last.ckpt` at the end only if it never saved one: a run whose
        # max_steps is not a multiple of every_n_train_steps ended with last.ckpt steps
        # behind its final weights (a demo of 1100 steps kept step 1050). And it saves
        # after weight averaging has copied the average over the trained weights, so a
        # resume would train on the average. This runs first (`fit` puts it first) and
        # saves the final step for the checkpoint callbacks, which then skip it.
        if trainer.global_step == 0 or trainer.fast_dev_run:
            return
        keeping_last = [
            callback
            for callback in trainer.checkpoint_callbacks
            if isinstance(callback, ModelCheckpoint) and callback.save_last
        ]
        if not keeping_last or all(
            getattr(c, "_last_global_step_saved", None) == trainer.global_step for c in keeping_last
        ):
            return
        path = self.last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # the whole state, to resume from
        for callback in keeping_last:  # Lightning's own end-of-training save skips then
            callback._last_global_step_saved = trainer.global_step
            callback._last_checkpoint_saved = str(path)
            callback.last_model_path = str(path)
        _say(f"saved {path} at the final step {trainer.global_step}")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Raised at a step boundary on all ranks together (`_stop_asked`; Lightning's own
        # checks before training starts), so the state is whole and saves line up.
        self._restore_signals()
        if not isinstance(exception, SIGTERMException):
            return
        if trainer.global_step == 0:
            _say(f"stopped by {stop_cause or SIGTERM} before the first step: nothing to save")
            return
        path = self.last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # the whole state, to resume from
        _say(f"stopped by {stop_cause or SIGTERM} at step {trainer.global_step}; saved "
             f"{path} (continue with --ckpt_path last)")  # fmt: skip


def _stop_asked(trainer: L.Trainer) -> bool:
    """Whether SIGTERM or Ctrl+C reached any rank, agreed by all ranks at the same step
    (so their saves' collectives line up)."""
    asked = stop_cause is not None
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        flag = torch.tensor([int(asked)], device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        asked = bool(flag.item())
    return asked


def _stop_at_once() -> None:
    """Exit now, wherever the run is (a save under way stays a partial file, removed by
    the next run). Not by KeyboardInterrupt: raised inside whatever this process was doing
    (saving, starting loader workers), its exit could wait forever for workers, which leave
    SIGINT and SIGTERM to this process (`data.workers`)."""
    _say("Ctrl+C again: stopped at once")
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's lost-worker check: not now
    for child in multiprocessing.active_children():
        child.kill()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signal.SIGINT)


@rank_zero_only
def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
