"""A callback that kills its own process right after a checkpoint is written, at the
moment a real preemption could land: before Lightning has logged that batch's row."""

import os
import signal
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint


class KillAfterCheckpoint(Checkpoint):
    """Ordered among the checkpoint callbacks, so it runs after ModelCheckpoint's save."""

    def __init__(self, at_step: int, marker: str) -> None:
        self.at_step = at_step
        self.marker = Path(marker)  # once killed, later runs go on

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.at_step and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


class SlowValidationEndOnRankZero(L.Callback):
    """Rank 0 lingers at the end of a validation (as drawing long samples does) while the
    other ranks wait at the sample callback's barrier; `marker` says it is lingering."""

    def __init__(self, seconds: float, marker: str, in_sanity_check: bool = False) -> None:
        self.seconds = seconds
        self.marker = Path(marker)
        self.in_sanity_check = in_sanity_check  # else a validation after step 2

    def on_validation_end(self, trainer: L.Trainer, *args: object) -> None:
        when = trainer.sanity_checking if self.in_sanity_check else trainer.global_step >= 2
        if trainer.global_rank == 0 and when and not self.marker.exists():
            self.marker.touch()
            time.sleep(self.seconds)
