"""Experiment tracking: W&B (offline unless the user opts in) and always a CSV beside it.

The CSV is what can be read without a network (`lightning-sdm plot RUN_DIR` draws it).
"""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from lightning_sdm.runs import WANDB_ID_FILE

METRICS_FILE = "metrics.csv"


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; a resumed run appends to it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="", encoding="utf-8") as handle:
                self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])


class RunCSVLogger(CSVLogger):
    """metrics.csv directly in the run folder, appended to on resume."""

    def __init__(self, run_dir: str | Path) -> None:
        run_dir = Path(run_dir)
        super().__init__(save_dir=run_dir.parent, name="", version=run_dir.name)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir)
        return self._experiment


def _wandb_run_id(run_dir: Path) -> str:
    """One W&B id per run folder, so a resumed run continues the same W&B run."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    run_id = uuid.uuid4().hex[:8]
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id, encoding="utf-8")
    return run_id


def run_loggers(run_dir: str | Path, project: str = "lightning-sdm") -> list[Logger]:
    """W&B first (unless WANDB_MODE=disabled or wandb is missing), then the CSV.

    WANDB_MODE=online logs to the W&B server; unset or offline writes local run files
    (upload later with `wandb sync`).
    """
    run_dir = Path(run_dir)
    loggers: list[Logger] = []
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode != "disabled":
        try:
            import wandb
        except ImportError:
            wandb = None
        if wandb is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            wandb_logger = WandbLogger(
                save_dir=str(run_dir),
                project=os.environ.get("WANDB_PROJECT", project),
                id=_wandb_run_id(run_dir),
                resume="allow",
                offline=mode != "online",
            )
            # Lightning passes anonymous=None, which wandb answers with a deprecation notice.
            if wandb_logger._wandb_init.get("anonymous") is None:
                wandb_logger._wandb_init.pop("anonymous", None)
            loggers.append(wandb_logger)
    loggers.append(RunCSVLogger(run_dir))
    return loggers
