"""Silence the known-harmless chatter of our dependencies, so our own lines stand out.

Each entry names a message that is either advertising, or a warning about a situation this
project handles on purpose (the reason is beside it). Nothing of ours is filtered.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

HARMLESS_WARNINGS = (
    # Lightning's own use of a deprecated torch API; nothing a user can act on.
    r".*isinstance\(treespec, LeafSpec\)",
    # Our IterableDataset's __len__ is exact per rank and worker (equal batch counts).
    r".*Your `IterableDataset` has `__len__` defined",
    # The frozen T5 encoder and the codec stay in eval mode while the LM trains.
    r".*module\(s\) in eval mode",
    # Short demo epochs log less often than log_every_n_steps; metrics are still logged.
    r".*smaller than the logging interval",
    # Our shard stream restarts its epoch on resume; step, optimizer and EMA resume exactly.
    r".*your dataloader is not resumable",
    # Each fit has its own run folder: a non-empty checkpoint folder means a resumed run.
    r".*Checkpoint directory .* exists and is not empty",
    # Worker count is chosen per split (validation needs few).
    r".*does not have many workers which may be a bottleneck",
    # More loader workers than CPUs: said once in one line (`data.workers`), where torch
    # repeated it at every epoch's start.
    r".*This DataLoader will create \d+ worker processes in total",
    # bf16-mixed keeps fp32 weights, so the summary's fp32 size is the right one.
    r".*Precision bf16-mixed is not supported by the model summary",
)
ADVERTS = ("💡 Tip:",)


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(ADVERTS)


def quiet_dependencies() -> None:
    """Call once at the command-line entry point (not on import: libraries stay as they are)."""
    for pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())
    # W&B's banner repeats what our run summary says; online runs keep it (it has the URL).
    if os.environ.get("WANDB_MODE", "offline") != "online":
        os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Per-file load bars of tiny local models. Said through the environment where
    # transformers is not loaded yet, so a command that never needs it does not load it.
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:
        transformers_logging.disable_progress_bar()
    else:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
