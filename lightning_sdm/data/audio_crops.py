"""Random crops of raw audio for training a codec, from the same sources as tokenize.

A codec learns from waveforms, not tokens, so this DataModule reads audio directly: only
the crop's span of each file is decoded (then downmixed and resampled), so catalogues of
any size stream without being loaded whole. Items are held out for validation by a hash
of their keys, as the token DataModule does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import soundfile
import soxr
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import IterableDataset, get_worker_info

from lightning_sdm.data.audio import duration_text
from lightning_sdm.data.sources import AUDIO_SUFFIXES, discover
from lightning_sdm.data.split import KeySplit
from lightning_sdm.data.stream import EpochDataLoader
from lightning_sdm.data.workers import parent_led_worker
from lightning_sdm.errors import UserInputError


@dataclass(frozen=True)
class AudioFile:
    key: str
    path: str
    frames: int  # at the file's own rate
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def read_span(
    file: AudioFile, start_seconds: float, seconds: float, sample_rate: int
) -> np.ndarray:
    """`seconds` of mono audio at `sample_rate` from `start_seconds`, zero-padded at the end."""
    wanted = round(seconds * sample_rate)
    start = max(0, int(start_seconds * file.sample_rate))
    frames = math.ceil(seconds * file.sample_rate) + 16  # a little extra for the resampler
    data, rate = soundfile.read(
        file.path, start=start, frames=frames, dtype="float32", always_2d=True
    )
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    out = np.zeros(wanted, dtype=np.float32)
    kept = mono[:wanted]
    out[: kept.shape[0]] = np.nan_to_num(kept)
    return out


class AudioCrops(IterableDataset):
    """Batches of crops [B, N]: random ones for training (a new draw every epoch), or one
    fixed crop from the middle of each item for validation.

    Every rank yields `batches_per_rank` batches per epoch so DDP ranks stay in step.
    """

    def __init__(
        self,
        files: list[AudioFile],
        sample_rate: int,
        crop_seconds: float,
        batch_size: int,
        batches_per_rank: int,
        rank: int = 0,
        world_size: int = 1,
        random_crops: bool = True,
        seed: int = 0,
    ) -> None:
        self.files = files
        self.sample_rate = sample_rate
        self.crop_seconds = crop_seconds
        self.batch_size = batch_size
        self.batches_per_rank = batches_per_rank
        self.rank = rank
        self.world_size = world_size
        self.random_crops = random_crops
        self.seed = seed
        self.epoch = 0
        seconds = np.array([f.seconds for f in files], dtype=np.float64)
        self._weights = seconds / seconds.sum()  # every second of audio equally likely

    def __len__(self) -> int:
        return self.batches_per_rank

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for batch_index in range(worker, self.batches_per_rank, workers):
            yield self._batch(batch_index)

    def _batch(self, batch_index: int) -> dict[str, Any]:
        if self.random_crops:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, batch_index])
            picks = rng.choice(len(self.files), size=self.batch_size, p=self._weights)
            starts = [
                rng.uniform(0, max(0.0, self.files[p].seconds - self.crop_seconds)) for p in picks
            ]
        else:  # item i of this rank's share, wrapping around to fill the last batch
            first = batch_index * self.batch_size
            share = list(range(len(self.files)))[self.rank :: self.world_size] or [0]
            picks = [share[(first + i) % len(share)] for i in range(self.batch_size)]
            starts = [max(0.0, (self.files[p].seconds - self.crop_seconds) / 2) for p in picks]
        audio = [
            read_span(self.files[p], s, self.crop_seconds, self.sample_rate)
            for p, s in zip(picks, starts, strict=True)
        ]
        lengths = [
            min(round(self.crop_seconds * self.sample_rate),
                round((self.files[p].seconds - s) * self.sample_rate))
            for p, s in zip(picks, starts, strict=True)
        ]  # fmt: skip
        return {
            "audio": torch.from_numpy(np.stack(audio)),
            "lengths": torch.tensor(lengths),
            "keys": [self.files[p].key for p in picks],
        }


def _probe(items: list[Any]) -> tuple[list[AudioFile], list[str]]:
    """Header reads only: (usable files, one reason per unusable one)."""
    files, problems = [], []
    for item in items:
        if item.problem and not item.problem.startswith("missing caption"):
            problems.append(f"{item.path}: {item.problem}")
            continue
        try:
            info = soundfile.info(str(item.path))
        except Exception as error:  # soundfile raises several types for corrupt files
            problems.append(f"{item.path}: unreadable audio: {error}")
            continue
        if info.frames <= 0:
            problems.append(f"{item.path}: zero-length audio")
            continue
        files.append(AudioFile(item.key, str(item.path), int(info.frames), int(info.samplerate)))
    return files, problems


class AudioCropsDataModule(L.LightningDataModule):
    """Random crops of audio for the codec task, with held-out items for validation.

    Args:
        input: A folder of audio, an audiocraft .jsonl manifest or a .csv with a path
            column (captions are not needed).
        val_input: Separate audio to validate on; default: hold out val_fraction of input.
        val_fraction: Hold out this fraction of input's items, chosen by a hash of each
            item's key (the same items on every run; at least one).
        sample_rate: The codec's sample rate; audio is resampled to it.
        crop_seconds: Length of the training crops.
        val_seconds: Length of the validation crop taken from the middle of each item.
        batch_size: Crops per batch per device.
        val_batch_size: Validation batch per device (default: batch_size).
        batches_per_epoch: Training batches per epoch per device; default: as many as
            cover the training audio once on average.
        num_workers: DataLoader workers per device (they decode and resample).
        seed: Seed of the crops.
    """

    def __init__(
        self,
        input: str,
        val_input: str | None = None,
        val_fraction: float = 0.05,
        sample_rate: int = 32000,
        crop_seconds: float = 1.0,
        val_seconds: float = 4.0,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        batches_per_epoch: int | None = None,
        num_workers: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if crop_seconds <= 0 or val_seconds <= 0:
            raise ValueError("crop_seconds and val_seconds must be positive")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.input = input
        self.val_input = val_input
        self.val_fraction = val_fraction
        self.sample_rate = sample_rate
        self.crop_seconds = crop_seconds
        self.val_seconds = val_seconds
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.batches_per_epoch = batches_per_epoch
        self.num_workers = num_workers
        self.seed = seed
        self._splits: dict[str, list[AudioFile]] | None = None

    def _files_of(self, source: str, role: str) -> list[AudioFile]:
        path = Path(source)
        if not path.exists():
            raise UserInputError(f"{role} {path} does not exist")
        items = discover(path, allow_missing_captions=True)
        files, problems = _probe(items)
        for problem in problems[:20]:
            rank_zero_info(f"  skipped {problem}")
        if len(problems) > 20:
            rank_zero_info(f"  ... and {len(problems) - 20} more skipped")
        if not files:
            raise UserInputError(
                f"{role} {path} has no usable audio (looked for {', '.join(AUDIO_SUFFIXES)})"
            )
        return files

    def splits(self) -> dict[str, list[AudioFile]]:
        if self._splits is None:
            files = self._files_of(self.input, "data.input")
            if self.val_input is not None:
                val = self._files_of(self.val_input, "data.val_input")
            else:
                try:
                    split = KeySplit.over([f.key for f in files], self.val_fraction)
                except ValueError as error:
                    raise UserInputError(f"data.val_fraction: {error}") from error
                val = [f for f in files if split.is_val(f.key)]
                files = [f for f in files if not split.is_val(f.key)]
            self._splits = {"train": files, "val": val}
        return self._splits

    def setup(self, stage: str) -> None:
        self.splits()  # bad input stops here, before the model is built
        if stage == "fit":
            rank_zero_info(self.summary())

    def summary(self) -> str:
        lines = [f"data: audio crops at {self.sample_rate} Hz from {self.input}"]
        for name, files in self.splits().items():
            crop = self.crop_seconds if name == "train" else self.val_seconds
            seconds = sum(f.seconds for f in files)
            line = f"  {name}: {len(files)} items ({duration_text(seconds)})"
            short = sum(f.seconds < crop for f in files)
            if short:  # their crops end in silence: a codec learns to make it
                every = "all" if short == len(files) else f"{short} of them"
                line += f"; {every} shorter than the {crop:g} s crops (padded with silence)"
            lines.append(line)
        lines.append(
            f"  {self.train_batches(1)} batches of {self.batch_size} x {self.crop_seconds:g} s "
            "crops per epoch"
        )
        return "\n".join(lines)

    def train_batches(self, world_size: int) -> int:
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        seconds = sum(f.seconds for f in self.splits()["train"])
        return max(1, math.floor(seconds / self.crop_seconds / (self.batch_size * world_size)))

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def make_loader(self, split: str, rank: int, world_size: int) -> EpochDataLoader:
        """The loader one rank uses; public so ranks can be simulated without a cluster."""
        files = self.splits()[split]
        training = split == "train"
        if training:
            batch, batches = self.batch_size, self.train_batches(world_size)
        else:
            batch = self.val_batch_size
            batches = math.ceil(math.ceil(len(files) / world_size) / batch)
        crops = AudioCrops(
            files,
            self.sample_rate,
            self.crop_seconds if training else self.val_seconds,
            batch,
            batches,
            rank,
            world_size,
            random_crops=training,
            seed=self.seed,
        )
        trainer = self.trainer
        epoch_source = (lambda: trainer.current_epoch) if trainer is not None else None
        return EpochDataLoader(
            crops,
            epoch_source=epoch_source,
            keep_workers=training,
            num_workers=min(self.num_workers, batches),
            worker_init_fn=parent_led_worker,
        )

    def train_dataloader(self) -> EpochDataLoader:
        return self.make_loader("train", *self._rank_and_world())

    def val_dataloader(self) -> EpochDataLoader:
        return self.make_loader("val", *self._rank_and_world())
