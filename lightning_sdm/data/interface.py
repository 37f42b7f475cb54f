"""What tasks and callbacks may ask of a DataModule that trains a text-to-audio model.
Both shard DataModules implement it; a task or callback checks it once (`training_data`)
instead of probing attributes."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from lightning_sdm.codecs.identity import CodecIdentity


@runtime_checkable
class TrainingData(Protocol):
    """Shards of one codec, cropped to `segment_frames` frames for training."""

    codec: CodecIdentity | None  # known once the shards are read (setup)

    @property
    def segment_frames(self) -> int: ...

    def check_codec(self, identity: CodecIdentity, role: str) -> None:
        """Raise UserInputError when `identity` is not the shards' codec."""
        ...


@runtime_checkable
class LatentMoments(Protocol):
    """Data that can measure its latents' statistics over many batches (the diffusion task
    standardises with them)."""

    def latent_moments(self, max_batches: int = 64) -> Any:
        """[sum, sum of squares, count] over this rank's share of the training split."""
        ...


def training_data(trainer: Any) -> TrainingData | None:
    """The trainer's DataModule when it is one of ours (None: dataloaders given directly)."""
    datamodule = getattr(trainer, "datamodule", None)
    return datamodule if isinstance(datamodule, TrainingData) else None
