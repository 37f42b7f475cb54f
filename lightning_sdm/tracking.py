"""Experiment tracking: W&B, offline unless the user opts in; CSV when W&B is disabled."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger


def default_logger(save_dir: str | Path, project: str = "lightning-sdm") -> Logger:
    """WANDB_MODE=online logs to the W&B server; unset or offline writes local run files
    (sync them later with `wandb sync`); disabled switches to a CSV logger."""
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return CSVLogger(save_dir, name="logs")
    try:
        import wandb  # noqa: F401
    except ImportError:
        return CSVLogger(save_dir, name="logs")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        save_dir=str(save_dir),
        project=os.environ.get("WANDB_PROJECT", project),
        offline=mode != "online",
    )
