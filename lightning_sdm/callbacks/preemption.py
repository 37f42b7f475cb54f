"""What a preempted or killed run needs to continue cleanly.

On SIGTERM (a scheduler's preemption, `kill`), Lightning stops at the next step boundary on
every rank; this callback then saves `last.ckpt` so that `--ckpt_path last` continues from
that step. On resume it drops the metrics a killed run logged after its last checkpoint,
since the resumed run logs those steps again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_sdm.tracking import RunCSVLogger


class ResumableRun(Callback):
    """Saves on SIGTERM and keeps metrics.csv to one row per step across resumes."""

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.saved_on_signal: Path | None = None

    def last_checkpoint_path(self, trainer: L.Trainer) -> Path:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                name = f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
                return Path(callback.dirpath) / name
        return self.checkpoint_dir / "last.ckpt"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resumed_at = trainer.fit_loop.epoch_loop._batches_that_stepped  # the loggers' step
        if trainer.ckpt_path is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger):
                logger.forget_from_step(resumed_at)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Lightning raises this at a step boundary on all ranks together (it broadcasts the
        # signal first), so the state is whole and saving's collectives line up.
        if not isinstance(exception, SIGTERMException) or trainer.global_step == 0:
            return
        path = self.last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.saved_on_signal = path
        _say(f"stopped by SIGTERM at step {trainer.global_step}; saved {path} "
             "(continue with --ckpt_path last)")  # fmt: skip


@rank_zero_only
def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
