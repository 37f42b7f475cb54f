"""Streaming token batches from shards: split by rank and worker, shuffled, cropped, padded.

Every rank yields exactly `batches_per_rank` batches per epoch so DDP ranks stay in step.
When the shards divide evenly over ranks x workers and batches, an epoch visits every
usable sample exactly once; otherwise a worker wraps around (or stops early) to keep
the count.
"""

from __future__ import annotations

import atexit
import itertools
import random
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lightning_sdm.data import storage
from lightning_sdm.data.shard_cache import ShardCache
from lightning_sdm.data.shards import read_shard_resilient
from lightning_sdm.data.workers import note_worker_count
from lightning_sdm.errors import first_line


@dataclass(frozen=True)
class CropConfig:
    segment_frames: int
    min_segment_ratio: float = 0.8
    random_crop: bool = True

    @property
    def min_frames(self) -> int:
        return max(1, int(np.ceil(self.segment_frames * self.min_segment_ratio)))


def crop(codes: np.ndarray, config: CropConfig, rng: random.Random) -> tuple[np.ndarray, int, int]:
    """-> (segment [C, S] zero-padded, crop start, real frames). Crops stay inside the item."""
    frames = codes.shape[-1]
    length = config.segment_frames
    start = rng.randint(0, frames - length) if config.random_crop and frames > length else 0
    piece = codes[:, start : start + length]
    real = piece.shape[-1]
    if real < length:
        piece = np.pad(piece, ((0, 0), (0, length - real)))
    return piece, start, real


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    real = torch.tensor([s["real_frames"] for s in samples])
    length = samples[0]["codes"].shape[-1]
    batch: dict[str, Any] = {
        "codes": torch.from_numpy(np.stack([s["codes"] for s in samples]).astype(np.int64)),
        "padding_mask": torch.arange(length)[None, :] < real[:, None],  # True = real frame
        "captions": [s["caption"] for s in samples],
        "keys": [s["key"] for s in samples],
        "crop_start": torch.tensor([s["crop_start"] for s in samples]),
    }
    if "latents" in samples[0]:
        batch["latents"] = torch.from_numpy(
            np.stack([s["latents"] for s in samples]).astype(np.float32)
        )
    return batch


class ShardStream(IterableDataset):
    def __init__(
        self,
        shards: list[str],
        batch_size: int,
        batches_per_rank: int,
        crop_config: CropConfig,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        shuffle_buffer: int = 256,
        seed: int = 0,
        load_latents: bool = False,
        key_filter: Callable[[str], bool] | None = None,
        skip_bad_shards: bool = True,
        cache: ShardCache | None = None,
        resample: bool = False,
    ) -> None:
        super().__init__()
        if not shards:
            raise ValueError("no shards to stream")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.shards = list(shards)
        self.batch_size = batch_size
        self.batches_per_rank = batches_per_rank
        self.crop_config = crop_config
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.load_latents = load_latents
        self.key_filter = key_filter  # keeps one side of a split by item key
        self.skip_bad_shards = skip_bad_shards
        self.cache = cache  # local copies of remote shards
        # Each reader draws shards with replacement from all of them (very large catalogues):
        # no pass is exact, the epoch is its batch count.
        self.resample = resample
        self.skipped_shards: list[str] = []  # in this worker, with a warning each
        self.epoch = 0

    def __len__(self) -> int:
        return self.batches_per_rank

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = self._worker()
        quota = self.batches_per_rank // workers + (worker < self.batches_per_rank % workers)
        if quota:
            yield from itertools.islice(self._batches(self._cycled(worker, workers)), quota)

    def _cycled(self, worker: int, workers: int) -> Iterator[dict[str, Any]]:
        """This worker's samples, wrapping around (reshuffled) for as long as batches are asked."""
        for cycle in itertools.count():
            produced = 0
            for sample in self._samples(worker, workers, cycle):
                produced += 1
                yield sample
            if not produced:
                raise RuntimeError(
                    f"rank {self.rank} worker {worker} has no usable samples (need at least "
                    f"{self.crop_config.min_frames} frames); use fewer workers or ranks"
                )

    def _rng(self, *parts: int) -> random.Random:
        return random.Random(hash((self.seed, self.epoch, *parts)))

    def _samples(self, worker: int, workers: int, cycle: int) -> Iterator[dict[str, Any]]:
        order = list(self.shards)
        if self.shuffle:
            self._rng(cycle).shuffle(order)
        readers = self.world_size * workers
        reader = self.rank * workers + worker
        # Whole shards per reader read each shard once; but items picked by key from every
        # shard would fall unevenly on readers, so validation of such a split goes sample by
        # sample (each sample exactly once).
        by_sample = self.key_filter is not None and not self.shuffle
        if self.resample:  # drawn with replacement, a sequence of its own for each reader
            draw = self._rng(cycle, self.rank, worker, 2)
            picks = (draw.choice(self.shards) for _ in range(len(self.shards)))
            stream = self._kept(s for shard in picks for s in self._read(shard))
        elif len(order) >= readers and not by_sample:
            mine = order[self.rank :: self.world_size][worker::workers]
            stream = self._kept(s for shard in mine for s in self._read(shard))
        else:  # too few shards: every reader scans all and keeps every readers-th sample
            everything = self._kept(s for shard in order for s in self._read(shard))
            stream = (s for i, s in enumerate(everything) if i % readers == reader)
        usable = (s for s in stream if s["codes"].shape[-1] >= self.crop_config.min_frames)
        if self.shuffle:
            usable = _buffer_shuffle(
                usable, self.shuffle_buffer, self._rng(cycle, self.rank, worker)
            )
        crop_rng = self._rng(cycle, self.rank, worker, 1)
        for sample in usable:
            yield self._item(sample, crop_rng)

    def _item(self, sample: dict[str, Any], crop_rng: random.Random) -> dict[str, Any]:
        """A read sample cropped (and its latents with it) into a training item."""
        codes, start, real = crop(sample["codes"], self.crop_config, crop_rng)
        item = {
            "key": sample["key"],
            "codes": codes,
            "caption": sample["info"]["caption"],
            "crop_start": start,
            "real_frames": real,
        }
        if self.load_latents:
            if "latents" not in sample:
                raise ValueError(f"sample {sample['key']} has no latents; tokenize with latents")
            latents = sample["latents"][:, start : start + self.crop_config.segment_frames]
            item["latents"] = np.pad(latents, ((0, 0), (0, codes.shape[-1] - latents.shape[-1])))
        return item

    def _read(self, shard: str) -> Iterator[dict[str, Any]]:
        """A shard that fails (storage hiccup, damage since the start) is read again from
        where it stopped (once for a local file; with backoff, a few times, for a URL),
        then skipped with a warning, or stops the run."""
        if storage.is_url(shard) and self.cache is not None:
            try:
                local = self.cache.local_copy(shard)
            except Exception as error:  # the download failed after its retries
                self._bad_shard(shard, error)
                return iter(())
            if local is not None:
                return read_shard_resilient(local, retries=1, on_failure=self._bad_shard)
        if storage.is_url(shard):
            return read_shard_resilient(
                shard, storage.RETRIES, on_failure=self._bad_shard, backoff=storage.BACKOFF_SECONDS
            )
        return read_shard_resilient(shard, retries=1, on_failure=self._bad_shard)

    def _bad_shard(self, shard: str, error: Exception) -> None:
        reason = f"{type(error).__name__}: {first_line(error)}"
        if not self.skip_bad_shards:
            raise RuntimeError(
                f"shard {shard} failed {self._tries(shard)} ({reason}); stopped "
                "(data.on_bad_shard=fail)"
            )
        self.skipped_shards.append(shard)
        print(
            f"warning: shard {shard} failed {self._tries(shard)} ({reason}); skipped the rest "
            f"of it ({len(self.skipped_shards)} skipped by this reader)",
            file=sys.stderr,
            flush=True,
        )

    @staticmethod
    def _tries(shard: str) -> str:
        return f"{storage.RETRIES + 1} times" if storage.is_url(shard) else "twice"

    def _kept(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if self.key_filter is None:
            return samples
        return (s for s in samples if self.key_filter(s["key"]))

    def _batches(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        pending: list[dict[str, Any]] = []
        for sample in samples:
            pending.append(sample)
            if len(pending) == self.batch_size:
                yield collate(pending)
                pending = []


def _buffer_shuffle(
    samples: Iterator[dict[str, Any]], size: int, rng: random.Random
) -> Iterator[dict[str, Any]]:
    """Shuffle a stream with a bounded buffer (memory stays at `size` samples)."""
    buffer: list[dict[str, Any]] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        index = rng.randrange(len(buffer))
        buffer[index], sample = sample, buffer[index]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


class _EachPassAtItsEpoch(IterableDataset):
    """A stream that takes, at the start of each pass, the epoch the main process last set
    in shared memory: workers kept alive across epochs hold their own copy of the stream,
    which an attribute set in the main process would no longer reach."""

    def __init__(self, stream: IterableDataset, epoch: torch.Tensor) -> None:
        self.stream = stream
        self.shared_epoch = epoch

    def __len__(self) -> int:
        return len(self.stream)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        self.stream.epoch = int(self.shared_epoch)  # type: ignore[attr-defined]
        return iter(self.stream)


def _end_kept_workers(loader: weakref.ref[DataLoader]) -> None:
    """At exit, end the workers a loader kept alive. They ignore SIGTERM (see
    `workers.parent_led_worker`), which multiprocessing's own exit hook sends them before
    joining them: it would wait forever. Lightning ends them when `fit` ends; a loader used
    on its own has only this. (torch's iterator attributes: no public way to do it.)"""
    iterator = getattr(loader(), "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


class EpochDataLoader(DataLoader):
    """Tells its stream (any iterable dataset with an `epoch`) which epoch starts, and can
    keep its workers from one epoch to the next.

    Lightning only forwards the epoch to samplers, which iterable datasets lack. Workers
    started anew every epoch pay their start (a fork of the training process, shards
    opened, a shuffle buffer filled) each time, which a small catalogue pays every few
    steps: training keeps them (`keep_workers`). Validation's start anew: kept, they would
    hold another copy-on-write image of the training process through all of training.
    """

    def __init__(
        self,
        dataset: IterableDataset,
        epoch_source: Callable[[], int] | None = None,
        keep_workers: bool = False,
        **kwargs,
    ):
        epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        persistent = keep_workers and kwargs.get("num_workers", 0) > 0
        super().__init__(
            _EachPassAtItsEpoch(dataset, epoch),
            batch_size=None,
            persistent_workers=persistent,
            **kwargs,
        )
        note_worker_count(self.num_workers)
        if persistent:
            atexit.register(_end_kept_workers, weakref.ref(self))
        self._epoch = epoch
        self._epoch_source = epoch_source
        self._iterations = 0

    def __iter__(self):
        epoch = self._epoch_source() if self._epoch_source else None
        self._epoch.fill_(self._iterations if epoch is None else epoch)
        self._iterations += 1
        return super().__iter__()
