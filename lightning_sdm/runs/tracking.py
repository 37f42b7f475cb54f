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
from lightning.pytorch.utilities import rank_zero_only

from lightning_sdm.atomic import atomic_file
from lightning_sdm.ranks import is_first_process
from lightning_sdm.runs.plan import WANDB_ID_FILE

METRICS_FILE = "metrics.csv"
_INDEX = ("step", "epoch")  # columns every row has: not metrics


def _drop_torn_tail(path: str) -> None:
    """A kill during an append leaves half a row; the next append would glue onto it."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; a resumed run appends to it.

    Rewrites (a new column, forgetting steps) go through a file beside it and a rename, so
    a kill never loses the rows already written.
    """

    def __init__(self, log_dir: str) -> None:
        self._stale: set[tuple[int, str]] = set()  # (step, metric) a resumed run may repeat
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            _drop_torn_tail(self.metrics_file_path)
            with open(self.metrics_file_path, newline="", encoding="utf-8") as handle:
                self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])

    def _rewrite(self, fieldnames: list[str], keep_row=lambda row: True) -> None:
        rows = [row for row in _read_rows(self.metrics_file_path) if keep_row(row)]
        with atomic_file(self.metrics_file_path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        self._rewrite(fieldnames)

    def forget_from_step(self, step: int) -> None:
        """A killed run logged rows past its checkpoint at `step`; the resumed run logs those
        steps again. Each old row at `step` or later that a new row repeats (same step, a
        metric in common) is dropped when the new one is written, so each step stays once;
        rows nothing repeats (a sample logged just before the checkpoint) stay."""
        self._stale = set()
        if os.path.isfile(self.metrics_file_path):
            for row in _read_rows(self.metrics_file_path):
                row_step = int(float(row["step"]))
                if row_step >= step:
                    self._stale.update((row_step, key) for key in _logged_keys(row))

    def save(self) -> None:
        stale = self._stale
        new = {(int(row["step"]), key) for row in self.metrics for key in row if key not in _INDEX}
        repeated = new & stale
        if repeated and os.path.isfile(self.metrics_file_path):
            dropped: set[tuple[int, str]] = set()

            def keep(row: dict[str, str]) -> bool:
                pairs = {(int(float(row["step"])), key) for key in _logged_keys(row)}
                if pairs & repeated:
                    dropped.update(pairs)
                    return False
                return True

            self._rewrite(self.metrics_keys, keep)
            stale -= dropped
        super().save()


def _read_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _logged_keys(row: dict[str, str]) -> set[str]:
    return {key for key, value in row.items() if value not in ("", None) and key not in _INDEX}


class RunCSVLogger(CSVLogger):
    """metrics.csv directly in the run folder, appended to on resume."""

    def __init__(self, run_dir: str | Path) -> None:
        run_dir = Path(run_dir)
        super().__init__(save_dir=run_dir.parent, name="", version=run_dir.name)
        self._written_ahead: tuple[int | None, set[str]] = (None, set())

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir)
        return self._experiment

    @rank_zero_only
    def forget_from_step(self, step: int) -> None:
        """A resumed run logs the steps after its checkpoint again: keep one row each."""
        self.experiment.forget_from_step(step)

    @rank_zero_only
    def write_ahead(self, metrics: dict[str, float], step: int) -> None:
        """Write a row now, before Lightning logs it; its later logging of the same keys at
        that step is then skipped (a checkpoint saved first must not outlive its row)."""
        super().log_metrics(metrics, step)
        self.save()
        self._written_ahead = (step, set(metrics))

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        written_step, written_keys = self._written_ahead
        if step is not None and step == written_step:
            metrics = {key: value for key, value in metrics.items() if key not in written_keys}
            if not metrics:
                return
        elif step is not None:
            self._written_ahead = (None, set())
        super().log_metrics(metrics, step)


def _wandb_run_id(run_dir: Path) -> str | None:
    """One W&B id per run folder, so a resumed run continues the same W&B run. A launch's
    other processes (which log nothing) read it but write nothing: their guess of the run
    folder may not be rank 0's."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    if not is_first_process():
        return None
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
            if is_first_process():
                run_dir.mkdir(parents=True, exist_ok=True)
            wandb_logger = WandbLogger(
                # absolute: W&B's service process resolves a relative one from its own
                # working folder, which a process that changed folders does not share
                save_dir=os.path.abspath(run_dir),
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
