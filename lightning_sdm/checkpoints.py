"""Reading what `fit` saved: one checkpoint file, or the folder of per-rank shards FSDP
writes with `save_distributed_checkpoint: true`, joined in memory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

SHARD_INDEX = ".metadata"  # torch.distributed.checkpoint's index of the shards
SHARDED_EXTRAS = "meta.pt"  # what Lightning keeps beside the shards (hparams, loops, ...)


def is_sharded_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / SHARD_INDEX).is_file()


def is_checkpoint(path: str | Path) -> bool:
    """A checkpoint file or a folder of shards."""
    return Path(path).is_file() or is_sharded_checkpoint(path)


def checkpoint_extras(path: str | Path) -> dict[str, Any]:
    """A checkpoint's non-tensor entries (hyper_parameters, ...) without its weights where
    it can: a sharded folder's side file, or the memory-mapped file."""
    path = Path(path)
    if is_sharded_checkpoint(path):
        return torch.load(path / SHARDED_EXTRAS, map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The whole checkpoint as `torch.load` gives a single file's."""
    path = Path(path)
    if not is_sharded_checkpoint(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as scratch:
        joined = Path(scratch) / "joined.pt"
        dcp_to_torch_save(path, joined)  # torch's own reader of its sharded format
        checkpoint = torch.load(joined, map_location="cpu", weights_only=True)
    extras = path / SHARDED_EXTRAS
    if extras.is_file():
        checkpoint.update(torch.load(extras, map_location="cpu", weights_only=True))
    return checkpoint
