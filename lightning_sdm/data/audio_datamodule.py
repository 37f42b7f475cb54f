"""The pre-tokenization DataModule: audio sources in, decoded and resampled audio out.

Beside `TokenShardsDataModule` (which streams the shards this produces): it finds the
items, rejects bad ones with reasons, skips what the output folder already holds, gives
each rank its share and decodes in DataLoader workers. `lightning-sdm tokenize` pairs it
with the encode module and the shard writer in `trainer.predict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from lightning_sdm.data.audio import AudioRejected, load_mono
from lightning_sdm.data.shards import published_shards
from lightning_sdm.data.sources import (
    AUDIO_SUFFIXES,
    Rejection,
    SourceItem,
    discover,
    legacy_key,
)
from lightning_sdm.data.storage import ShardLocation, is_url
from lightning_sdm.data.workers import parent_led_worker


class AudioItems(Dataset):
    """Decodes, downmixes and resamples in the worker; a bad file becomes a rejection."""

    def __init__(self, items: list[SourceItem], sample_rate: int, min_seconds: float) -> None:
        self.items = items
        self.sample_rate = sample_rate
        self.min_seconds = min_seconds

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        record: dict[str, Any] = {"item": item, "audio": None, "problem": None}
        record["fingerprint"] = item.fingerprint()  # before reading: a later edit is new
        try:
            record["audio"] = load_mono(item.path, self.sample_rate, self.min_seconds)
        except AudioRejected as error:
            record["problem"] = str(error)
        return record


def _as_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


class AudioTokenizeDataModule(L.LightningDataModule):
    """Audio items still to tokenize into `output`, decoded at the codec's rate.

    Args:
        input: A folder of audio with .txt/.json captions, an audiocraft .jsonl manifest or
            a .csv with path,caption columns.
        output: The shard folder; items it already holds are skipped.
        sample_rate: The codec's sample rate (audio is resampled to it).
        min_seconds: Reject audio shorter than this.
        allow_missing_captions: Keep audio without a caption (empty caption).
        num_workers: Decoding workers per device.
    """

    def __init__(
        self,
        input: str,
        output: str,
        sample_rate: int = 32000,
        min_seconds: float = 1.0,
        allow_missing_captions: bool = False,
        num_workers: int = 1,
    ) -> None:
        super().__init__()
        self.input = input
        self.output = output if is_url(output) else Path(output)
        self.sample_rate = sample_rate
        self.min_seconds = min_seconds
        self.allow_missing_captions = allow_missing_captions
        self.num_workers = num_workers
        self._items: list[SourceItem] | None = None
        self.todo: list[SourceItem] = []
        self.already_present = 0
        self.existing_shards: list[dict[str, Any]] = []

    def discover(self) -> list[SourceItem]:
        """Every source item, good or rejected; no audio at all is an error (nothing written)."""
        if self._items is None:
            items = discover(self.input, self.allow_missing_captions)
            if not items:
                raise ValueError(
                    f"no audio found in {self.input} (looked for {', '.join(AUDIO_SUFFIXES)}); "
                    "nothing written"
                )
            self._items = items
        return self._items

    @property
    def rejections(self) -> list[Rejection]:
        return [Rejection(str(i.path), i.problem) for i in self.discover() if i.problem]

    @property
    def done_keys(self) -> set[str]:
        return {key for shard in self.existing_shards for key in shard["keys"]}

    def setup(self, stage: str = "predict") -> None:
        """What is left to do: good items whose source the output's shards do not hold.

        "Held" means the same source: the same relative path with the same size and
        modification time. A source changed since it was tokenized is rejected with its
        reason (its old tokens stay in the shards). Folders written before shards recorded
        their sources are matched by their keys. A new source whose key a stored item
        already has gets a hash of its path added.
        """
        self.existing_shards = published_shards(ShardLocation(self.output))
        stored: dict[str, tuple[dict[str, Any], str, str]] = {}
        legacy: set[str] = set()
        for shard in self.existing_shards:
            sources = shard.get("sources") or [None] * len(shard["keys"])
            for key, fingerprint in zip(shard["keys"], sources, strict=True):
                if fingerprint is None:
                    legacy.add(key)
                else:
                    stored[fingerprint["path"]] = (fingerprint, key, shard["shard"])
        taken = self.done_keys
        self.todo, self.already_present = [], 0
        for item in self.discover():
            if item.problem is not None:
                continue
            if item.relative in stored:
                fingerprint, key, shard = stored[item.relative]
                if fingerprint == item.fingerprint():
                    self.already_present += 1
                else:
                    item.problem = (
                        f"changed since it was tokenized into {shard} as {key!r} (size or "
                        "modification time differ); tokenize into a new folder to use this version"
                    )
            elif legacy_key(item.relative) in legacy:
                self.already_present += 1
            else:
                if item.key in taken:
                    item.with_distinct_key()
                self.todo.append(item)

    def loader_for(self, rank: int, world_size: int) -> DataLoader:
        """This rank's share (every world_size-th item), decoded in workers."""
        return DataLoader(
            AudioItems(self.todo[rank::world_size], self.sample_rate, self.min_seconds),
            batch_size=1,
            num_workers=self.num_workers,
            collate_fn=_as_list,
            worker_init_fn=parent_led_worker,
        )

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        return batch  # numpy audio records; the codec moves each track itself

    def predict_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        return self.loader_for(rank, world)
