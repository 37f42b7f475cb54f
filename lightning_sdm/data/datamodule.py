"""The streaming DataModule over token shards written by `lightning-sdm tokenize`."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lightning_sdm.codecs import CodecConfig, EncodecCodec
from lightning_sdm.data.demo_audio import write_demo_clips
from lightning_sdm.data.shards import INDEX_FILE, load_index
from lightning_sdm.data.stream import CropConfig, EpochDataLoader, ShardStream
from lightning_sdm.data.tokenize import TokenizeConfig, tokenize


class TokenShardsDataModule(L.LightningDataModule):
    """Random `segment_seconds` crops for training; fixed crops from held-out shards to validate.

    Validation comes from `val_dir` if given, else from the last `holdout_shards` shards of
    `train_dir`. Items shorter than `min_segment_ratio` of a segment are skipped; shorter
    segments are zero-padded and masked.

    With `prepare_from` (an audio folder or manifest), `prepare_data` tokenizes it into
    `train_dir` with `codec` when `train_dir` has no index yet. `demo_clips > 0` first
    synthesises that many captioned clips there, and a small random codec at
    `codec.pretrained` if that directory is missing (the CPU demo).
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        holdout_shards: int = 0,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        segment_seconds: float = 30.0,
        min_segment_ratio: float = 0.8,
        shuffle_buffer: int = 256,
        seed: int = 0,
        load_latents: bool = False,
        prepare_from: str | None = None,
        codec: CodecConfig | None = None,
        demo_clips: int = 0,
        demo_clip_seconds: float = 6.0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < min_segment_ratio <= 1:
            raise ValueError(f"min_segment_ratio must be in (0, 1], got {min_segment_ratio}")
        self.train_dir = Path(train_dir)
        self.val_dir = Path(val_dir) if val_dir else None
        self.holdout_shards = holdout_shards
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.segment_seconds = segment_seconds
        self.min_segment_ratio = min_segment_ratio
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.load_latents = load_latents
        self.prepare_from = prepare_from
        self.codec_config = codec or CodecConfig()
        self.demo_clips = demo_clips
        self.demo_clip_seconds = demo_clip_seconds
        self._splits: dict[str, list[dict[str, Any]]] | None = None
        self.codec: dict[str, Any] = {}

    def prepare_data(self) -> None:
        if self.prepare_from is None or (self.train_dir / INDEX_FILE).exists():
            return
        source = Path(self.prepare_from)
        if self.demo_clips > 0:
            if not any(source.glob("*.wav")):
                write_demo_clips(source, self.demo_clips, self.demo_clip_seconds)
            codec_dir = self.codec_config.pretrained
            if codec_dir is not None and not Path(codec_dir).is_dir():
                random_codec = replace(self.codec_config, pretrained=None)
                EncodecCodec(random_codec).save_pretrained(codec_dir)
        summary = tokenize(
            TokenizeConfig(
                input=str(source), output=str(self.train_dir), codec=self.codec_config,
                max_shard_items=max(1, self.demo_clips // 8) if self.demo_clips else 1000,
                num_workers=0, progress=False,
            ),
            use_trainer=False,  # prepare_data runs inside the fit's own Trainer
        )  # fmt: skip
        rank_zero_info(str(summary))
        if not summary.ok:
            raise RuntimeError(f"nothing could be tokenized from {source}")

    def _load(self) -> dict[str, list[dict[str, Any]]]:
        if self._splits is None:
            index = load_index(self.train_dir)
            self.codec = index["codec"]
            train = [{**s, "path": str(self.train_dir / s["shard"])} for s in index["shards"]]
            val: list[dict[str, Any]] = []
            if self.val_dir is not None:
                val_index = load_index(self.val_dir)
                if val_index["codec"] != self.codec:
                    raise ValueError(
                        f"{self.val_dir} was tokenized with another codec than {self.train_dir}"
                    )
                val = [{**s, "path": str(self.val_dir / s["shard"])} for s in val_index["shards"]]
            elif self.holdout_shards:
                if self.holdout_shards >= len(train):
                    raise ValueError(
                        f"holdout_shards={self.holdout_shards} leaves no training shards "
                        f"of {len(train)}"
                    )
                train, val = train[: -self.holdout_shards], train[-self.holdout_shards :]
            self._splits = {"train": train, "val": val}
        return self._splits

    @property
    def segment_frames(self) -> int:
        self._load()
        return round(self.segment_seconds * self.codec["frame_rate"])

    @property
    def num_levels(self) -> int:
        self._load()
        return int(self.codec["num_codebooks"])

    def _crop(self, random_crop: bool) -> CropConfig:
        return CropConfig(self.segment_frames, self.min_segment_ratio, random_crop)

    def usable_samples(self, split: str) -> int:
        min_frames = self._crop(True).min_frames
        return sum(f >= min_frames for s in self._load()[split] for f in s["sample_frames"])

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def make_loader(self, split: str, rank: int, world_size: int) -> EpochDataLoader:
        """The loader one rank uses; public so ranks can be simulated without a cluster."""
        shards = self._load()[split]
        if not shards:
            raise ValueError(f"no {split} shards: set val_dir or holdout_shards")
        usable = self.usable_samples(split)
        training = split == "train"
        batch_size = self.batch_size if training else self.val_batch_size
        if training:
            batches = usable // (world_size * batch_size)
        else:  # every sample once, the last batch of a rank filled by wrapping around
            batches = math.ceil(math.ceil(usable / world_size) / batch_size)
        if batches == 0:
            raise ValueError(
                f"{usable} usable {split} samples (>= {self._crop(True).min_frames} frames) cannot "
                f"fill one batch of {batch_size} on each of {world_size} ranks"
            )
        stream = ShardStream(
            [s["path"] for s in shards],
            batch_size=batch_size,
            batches_per_rank=batches,
            crop_config=self._crop(random_crop=training),
            rank=rank,
            world_size=world_size,
            shuffle=training,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            load_latents=self.load_latents,
        )
        trainer = self.trainer
        epoch_source = (lambda: trainer.current_epoch) if trainer is not None else None
        workers = min(self.num_workers, batches)
        return EpochDataLoader(stream, epoch_source=epoch_source, num_workers=workers)

    def train_dataloader(self) -> EpochDataLoader:
        return self.make_loader("train", *self._rank_and_world())

    def val_dataloader(self) -> EpochDataLoader:
        return self.make_loader("val", *self._rank_and_world())
