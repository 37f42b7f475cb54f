"""Checkpoints: written so that a kill never leaves a torn file, and read back as one file
or the folder of per-rank shards FSDP writes with `save_distributed_checkpoint: true`
(joined in memory)."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lightning_sdm.atomic import atomic_file
from lightning_sdm.errors import UserInputError, first_line

SHARD_INDEX = ".metadata"  # torch.distributed.checkpoint's index of the shards
SHARDED_EXTRAS = "meta.pt"  # what Lightning keeps beside the shards (hparams, loops, ...)


def is_sharded_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / SHARD_INDEX).is_file()


def is_checkpoint(path: str | Path) -> bool:
    """A checkpoint file or a folder of shards."""
    return Path(path).is_file() or is_sharded_checkpoint(path)


def require_checkpoint(path: Path) -> None:
    """A checkpoint file or folder of shards, else one line: a folder given instead (a
    run's, say) is named as one, with the newest checkpoint under it."""
    if is_checkpoint(path):
        return
    if path.is_dir():
        files = [file for file in path.rglob("*.ckpt") if file.is_file()]
        newest = max(files, key=lambda file: file.stat().st_mtime, default=None)
        hint = f"; its newest is {newest}" if newest else " and holds none"
        raise UserInputError(f"{path} is a folder, not a checkpoint{hint}")
    raise UserInputError(f"checkpoint {path} not found")


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its destination, syncs it and renames it into place.

    Lightning's own writer moves a file from `$TMPDIR` into place; across filesystems that
    move is a copy over the old file, and a kill during it left `last.ckpt` empty.
    Remote paths (`s3://...`) keep Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_file(path) as handle:
                torch.save(checkpoint, handle)
        except Exception as error:  # torch reports a full disk as "unexpected pos ..."
            needed, free = tensor_bytes(checkpoint), shutil.disk_usage(path.parent).free
            if free >= needed:
                raise
            raise UserInputError(
                f"checkpoint {path} could not be written: its disk has {free / 2**20:.0f} MB "
                f"free and the checkpoint needs about {needed / 2**20:.0f} MB (earlier "
                "checkpoints are untouched). Free space there, or point the run elsewhere "
                "(trainer.default_root_dir)"
            ) from error


def tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in a (nested) checkpoint: what writing it needs at least."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(item) for item in value)
    return 0


def load_failure(path: str | Path, error: Exception) -> str:
    """Why `torch.load` could not read a checkpoint, in one line: torch's own messages run
    to paragraphs and, for a torn file, advise loading it unsafely."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        return "is empty (0 bytes)"
    if path.is_file() and not zipfile.is_zipfile(path):
        return (
            "is not a whole PyTorch checkpoint (no zip archive: truncated, or another kind of file)"
        )
    message = str(error).strip()
    if message.startswith("Weights only load failed"):
        return "holds objects other than tensors and plain data (refused: loading them runs code)"
    return f"cannot be read ({type(error).__name__}: {first_line(error)[:120]})"


def unreadable_reason(path: str | Path) -> str | None:
    """Why a checkpoint cannot be resumed from (empty, torn, not ours), or None if it can."""
    path = Path(path)
    if not is_checkpoint(path):
        return "does not exist"
    try:
        extras = checkpoint_extras(path)
    except Exception as error:  # torn zip, pickle errors, foreign objects: all unusable
        return load_failure(path, error)
    if not isinstance(extras, dict) or "global_step" not in extras:
        return "is not a Lightning checkpoint (no global_step)"
    return None


def require_readable(path: str | Path) -> None:
    """One line instead of a traceback from deep inside loading."""
    reason = unreadable_reason(path)
    if reason is not None:
        raise UserInputError(f"checkpoint {path} {reason}")
