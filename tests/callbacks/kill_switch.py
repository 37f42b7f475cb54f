"""A callback that kills its own process right after a checkpoint is written, at the
moment a real preemption could land: before Lightning has logged that batch's row."""

import os
import signal
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
