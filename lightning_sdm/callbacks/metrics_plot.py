"""Redraw the run's loss curves (metrics.png beside metrics.csv) at each validation and end."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_sdm.runs.plots import plot_metrics
from lightning_sdm.runs.tracking import METRICS_FILE


class MetricsPlot(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[Path] = []

    @rank_zero_only
    def _draw(self, trainer: L.Trainer) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()  # the CSV is buffered; flush what this plot should show
                csv_path = Path(logger.log_dir) / METRICS_FILE
                if csv_path.is_file():
                    self.written.append(plot_metrics(csv_path))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._draw(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer)
