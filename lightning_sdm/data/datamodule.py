"""The streaming DataModule over token shards written by `lightning-sdm tokenize`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lightning_sdm.codecs import (
    CodecConfig,
    CodecIdentity,
    load_codec,
)
from lightning_sdm.codecs.encodec import RANDOM_CODEC_FILE
from lightning_sdm.data.audio import duration_text
from lightning_sdm.data.shard_cache import ShardCache
from lightning_sdm.data.shards import INDEX_FILE, shard_problem, sidecar_name
from lightning_sdm.data.sources import AUDIO_SUFFIXES
from lightning_sdm.data.split import KeyFilter, KeySplit
from lightning_sdm.data.storage import ShardLocation, why
from lightning_sdm.data.stream import CropConfig, EpochDataLoader, ShardStream
from lightning_sdm.data.tokenize import TokenizeConfig, tokenize
from lightning_sdm.data.workers import parent_led_worker
from lightning_sdm.errors import UserInputError
from lightning_sdm.presets import RANDOM_WEIGHTS, is_random


@dataclass
class SplitShards:
    """One side of the train/validation split: its shards and the frames of its items."""

    shards: list[str]
    item_frames: list[int]
    key_filter: KeyFilter | None = None
    held_out: str = ""  # what was held out, for the data summary

    @property
    def items(self) -> int:
        return len(self.item_frames)


def _shown(location: ShardLocation) -> Path | str:
    return location.location if location.remote else Path(location.location)


def _tokenize_hint(folder: Path) -> str:
    return f"lightning-sdm tokenize {folder} SHARDS_DIR --codec-dir ENCODEC_DIR"


def check_shard_folder(folder: Path | ShardLocation, role: str) -> None:
    """One line saying what is wrong with a shard folder (or URL) and what to run, before
    training."""
    if isinstance(folder, ShardLocation):
        if folder.remote:
            problem = folder.problem(INDEX_FILE)
            if problem:
                raise UserInputError(f"{role} {folder} {problem}")
            return
        folder = Path(folder.location)
    if not folder.exists():
        raise UserInputError(f"{role} {folder} does not exist")
    if not folder.is_dir():
        raise UserInputError(f"{role} {folder} is a file, not a folder of shards")
    if (folder / INDEX_FILE).is_file():
        return
    audio = [p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES]
    if audio:
        raise UserInputError(
            f"{role} {folder} holds {len(audio)} audio files but no token shards; tokenize "
            f"them first: {_tokenize_hint(folder)} (then set {role} to SHARDS_DIR)"
        )
    if list(folder.glob("shard-*.tar")):
        raise UserInputError(
            f"{role} {folder} has shards but no {INDEX_FILE} (an interrupted tokenize?): "
            "rerun the same tokenize command to finish it"
        )
    found = "is empty" if not any(folder.iterdir()) else "holds no shards and no audio"
    raise UserInputError(f"{role} {folder} {found}; make shards with: lightning-sdm tokenize")


class TokenShardsDataModule(L.LightningDataModule):
    """Random `segment_seconds` crops for training; fixed crops of held-out items to validate.

    Items shorter than `min_segment_ratio` of a segment are skipped; shorter ones are
    zero-padded and masked. A summary of both splits is printed when fitting starts.

    Args:
        train_dir: Folder of shards and index.json written by `lightning-sdm tokenize`, or
            its URL (s3://bucket/prefix, gs://..., https://host/path; read through fsspec
            with retries, credentials from the environment).
        val_dir: Shards to validate on (a separately tokenized folder or URL); the
            cheapest split for large catalogues.
        val_fraction: Hold out this fraction of train_dir's items, chosen by a hash of
            each item's key (the same items on every run; at least one). Works for any
            number of shards; validation reads every shard.
        holdout_shards: Hold out the last N shards of train_dir (needs N + 1 shards).
        batch_size: Training batch per device.
        val_batch_size: Validation batch per device (default: batch_size).
        num_workers: DataLoader workers per device.
        segment_seconds: Length of the training crops (and of validation segments).
        min_segment_ratio: Skip items shorter than this fraction of a segment.
        shuffle_buffer: Samples held for shuffling the stream.
        seed: Seed of shuffling and crops.
        load_latents: Also load the continuous latents (tokenize --latents); always on in
            LatentShardsDataModule.
        prepare_from: An audio folder or manifest tokenized into train_dir (with `codec`)
            when train_dir has no index yet.
        max_shard_items: Items per shard that prepare_from writes.
        codec: The codec of prepare_from; when set, fit checks the shards were made with
            it. Shards of a random codec (tokenize --random-codec, or synthetic ones) train
            only with `codec.pretrained: random`, the explicit choice: their tokens are not
            music.
        on_bad_shard: A shard whose tar is truncated or corrupt: `skip` leaves it out with
            a warning (checked from the member headers when fitting starts, and again when
            a read fails twice during training; a remote one after its retries), `fail`
            stops in one line.
        cache_dir: For shards at a URL: keep whole copies in this local folder, so epochs
            after the first read them from disk (off by default).
        cache_gb: The cache folder's bound; the least recently read copies go first.
        resample_shards: Training readers draw shards with replacement instead of each
            reading its share once (very large catalogues, where a pass is never
            finished): an epoch is its batch count, no longer one pass.
    """

    always_loads_latents = False

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        val_fraction: float = 0.0,
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
        max_shard_items: int = 1000,
        codec: CodecConfig | None = None,
        on_bad_shard: Literal["skip", "fail"] = "skip",
        cache_dir: str | None = None,
        cache_gb: float = 50.0,
        resample_shards: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
            if value is not None and value < 1:
                raise UserInputError(f"data.{name} must be at least 1, got {value}")
        if not segment_seconds > 0:
            raise UserInputError(f"data.segment_seconds must be positive, got {segment_seconds}")
        if num_workers < 0 or holdout_shards < 0:
            raise UserInputError("data.num_workers and data.holdout_shards cannot be negative")
        if not 0 < min_segment_ratio <= 1:
            raise UserInputError(
                f"data.min_segment_ratio must be in (0, 1], got {min_segment_ratio}"
            )
        if not 0 <= val_fraction < 1:
            raise UserInputError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if not cache_gb > 0:
            raise UserInputError(f"data.cache_gb must be positive, got {cache_gb}")
        if on_bad_shard not in ("skip", "fail"):
            raise UserInputError(f"data.on_bad_shard is skip or fail, got {on_bad_shard!r}")
        chosen = [
            name
            for name, value in (
                ("val_dir", val_dir),
                ("val_fraction", val_fraction),
                ("holdout_shards", holdout_shards),
            )
            if value
        ]
        if len(chosen) > 1:
            raise UserInputError(f"choose one validation split, not {' and '.join(chosen)}")
        self.train_location = ShardLocation(train_dir)
        self.val_location = ShardLocation(val_dir) if val_dir else None
        # Paths for local folders, the URL as given for remote ones (messages show them).
        self.train_dir = _shown(self.train_location)
        self.val_dir = _shown(self.val_location) if self.val_location else None
        self.val_fraction = val_fraction
        self.holdout_shards = holdout_shards
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.segment_seconds = segment_seconds
        self.min_segment_ratio = min_segment_ratio
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.load_latents = load_latents or self.always_loads_latents
        self.prepare_from = prepare_from
        self.codec_config = codec or CodecConfig()
        self.max_shard_items = max_shard_items
        self.on_bad_shard = on_bad_shard
        self.cache = ShardCache(Path(cache_dir), int(cache_gb * 1e9)) if cache_dir else None
        self.resample_shards = resample_shards
        self.bad_shards: dict[str, str] = {}  # path -> why, found when fitting starts
        self._splits: dict[str, SplitShards] | None = None
        self.codec: CodecIdentity | None = None  # the shards' codec, from index.json
        self._summarised = False

    def prepare_data(self) -> None:
        if self.prepare_from is None:
            return
        try:
            if self.train_location.exists(INDEX_FILE):
                return
        except Exception:  # unreadable (credentials, network): setup says so in one line
            return
        if self.train_location.remote:
            raise UserInputError(
                f"data.prepare_from tokenizes into a local folder, but data.train_dir is "
                f"{self.train_dir}: tokenize into it first (lightning-sdm tokenize AUDIO URL)"
            )
        source = Path(self.prepare_from)
        codec_dir = self.codec_config.pretrained
        if is_random(codec_dir):
            raise UserInputError(
                "data.prepare_from needs a codec directory (data.codec.pretrained); to try "
                "the pipeline with a random codec, tokenize with --random-codec SEED first"
            )
        if not Path(str(codec_dir)).is_dir():
            raise UserInputError(
                f"data.codec.pretrained {codec_dir} does not exist; for the demo, train it "
                "first with `lightning-sdm fit --config configs/codec_demo.yaml` (or run "
                "`lightning-sdm demo`, which does both)"
            )
        if not source.exists():
            raise UserInputError(
                f"data.prepare_from {source} does not exist (the demo's clips: "
                "`lightning-sdm demo --audio_only` writes them)"
            )
        summary = tokenize(
            TokenizeConfig(
                input=str(source), output=str(self.train_dir), codec=self.codec_config,
                max_shard_items=self.max_shard_items,
                num_workers=0, progress=False, keep_latents=self.load_latents,
            ),
            use_trainer=False,  # prepare_data runs inside the fit's own Trainer
        )  # fmt: skip
        rank_zero_info(str(summary))
        if not summary.ok:
            raise RuntimeError(f"nothing could be tokenized from {source}")

    def setup(self, stage: str) -> None:
        """Check the data before the model is built: one line on what is wrong."""
        self._load()
        pretrained = self.codec_config.pretrained
        if not is_random(pretrained) and Path(str(pretrained)).is_dir():
            self.check_codec(load_codec(self.codec_config).identity(), "data.codec")
        if stage == "fit" and not self._summarised:
            self._summarised = True
            rank_zero_info(self.summary())
        if stage == "fit":
            self._check_batches(validating=self._validates())

    def _validates(self) -> bool:
        """Whether a fit will ask for validation batches (`limit_val_batches: 0` does not;
        without a trainer, loaders are asked for one by one)."""
        trainer = self.trainer
        return trainer is not None and bool(getattr(trainer, "limit_val_batches", 1))

    def _check_batches(self, validating: bool) -> None:
        """Each split the fit reads fills a batch on every rank: said before the model is
        built and before Lightning asks for validation (which it asks for first)."""
        _, world = self._rank_and_world()
        for split in ("train", "val") if validating else ("train",):
            problem = self._no_batches(split, world)
            if problem:
                raise UserInputError(problem)

    def _no_batches(self, split: str, world_size: int) -> str | None:
        """Why `split` fills no batch on each of `world_size` ranks (None: it does)."""
        side = self._load()[split]
        if not side.shards:
            return (
                f"no {split} data: set data.val_fraction (e.g. 0.05), data.val_dir or "
                "data.holdout_shards"
            )
        usable = self.usable_samples(split)
        if self._batches_per_rank(split, usable, world_size) > 0:
            return None
        assert self.codec is not None
        rate = float(self.codec.frame_rate)
        shortest_crop = self._crop(True).min_frames / rate
        longest = max(side.item_frames, default=0) / rate
        batch, option = (
            (self.batch_size, "batch_size") if split == "train" else
            (self.val_batch_size, "val_batch_size")
        )  # fmt: skip
        ranks = f" on each of {world_size} ranks" if world_size > 1 else ""
        if usable == side.items:  # all long enough: too few for the batch
            return (
                f"the {usable} {split} items fill not one batch of {batch}{ranks}: "
                f"lower data.{option}"
            )
        return (
            f"{usable} of the {side.items} {split} items are long enough for "
            f"{self.segment_seconds:g} s crops (at least {shortest_crop:g} s; the longest is "
            f"{longest:.1f} s): not one batch of {batch}{ranks}; lower data.segment_seconds "
            f"or data.{option}"
        )

    def random_codec_unasked(self) -> str | None:
        """Why these shards would train on noise without anyone asking for it: their codec
        is random and `codec.pretrained` does not say `random` (None: all is well)."""
        self._load()
        codec = self.codec
        assert codec is not None
        saved_random = codec.pretrained is not None and (
            (Path(codec.pretrained) / RANDOM_CODEC_FILE).is_file()
        )
        made_randomly = not codec.checkable or saved_random
        if not made_randomly or self.codec_config.pretrained == RANDOM_WEIGHTS:
            return None
        return (
            f"{self.train_dir} was tokenized with a random codec, whose tokens are not music: "
            "tokenize with a real one (--codec-dir), or set data.codec.pretrained: random to "
            "train on these shards on purpose"
        )

    def check_codec(self, identity: CodecIdentity, role: str) -> None:
        """Stop when `identity` is not the codec the shards were made with."""
        self._load()
        assert self.codec is not None
        if not self.codec.checkable:
            return  # shards written without a weights hash cannot be checked
        differing = self.codec.differences(identity)
        if differing:
            raise UserInputError(
                f"{role} is {identity.describe()}, but {self.train_dir} was tokenized "
                f"with {self.codec.describe()} (differs in {', '.join(differing)}); "
                f"point {role} at the codec of the shards, or tokenize again with this one"
            )

    def _shards_of(self, folder: ShardLocation) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The index's shards, each local one checked from its tar headers (a truncated or
        corrupt one would otherwise pass and crash at its first batch, hours in); a remote
        one is checked as it is read (retried, then skipped or failed by on_bad_shard)."""
        index = folder.read_json(INDEX_FILE)
        shards = []
        for entry in index["shards"]:
            path = folder.path(entry["shard"])
            problem = None if folder.remote else shard_problem(path, entry["num_samples"])
            if problem is None:
                shards.append({**entry, "path": path, "keys": None})
                continue
            if self.on_bad_shard == "fail":
                raise UserInputError(
                    f"shard {path} is {problem}; tokenize its audio again, or set "
                    "data.on_bad_shard=skip to train without it"
                )
            self.bad_shards[str(path)] = problem
            rank_zero_info(f"warning: shard {path} is {problem}; left out (on_bad_shard=skip)")
        return index, shards

    def _load(self) -> dict[str, SplitShards]:
        if self._splits is not None:
            return self._splits
        check_shard_folder(self.train_location, "data.train_dir")
        index, train = self._shards_of(self.train_location)
        if not train:
            raise UserInputError(
                f"data.train_dir {self.train_dir} has an index but no shards (every file was "
                f"rejected? see 'rejected' in {self.train_location.path(INDEX_FILE)})"
            )
        self.codec = CodecIdentity.from_dict(index["codec"])
        if self.load_latents and not index.get("has_latents", False):
            raise UserInputError(
                f"data.train_dir {self.train_dir} holds tokens but no latents: tokenize it "
                f"again with --latents (into a new folder) to train on latents"
            )
        whole = lambda shards: [f for s in shards for f in s["sample_frames"]]  # noqa: E731
        if self.val_location is not None:
            if self.val_location.same_as(self.train_location):
                raise UserInputError(
                    f"data.val_dir is data.train_dir ({self.val_dir}): validating on the "
                    "training shards measures nothing; give a separately tokenized folder, or "
                    "hold some of these out with data.val_fraction or data.holdout_shards"
                )
            check_shard_folder(self.val_location, "data.val_dir")
            val_index, val = self._shards_of(self.val_location)
            differing = self.codec.differences(CodecIdentity.from_dict(val_index["codec"]))
            if differing:
                raise UserInputError(
                    f"{self.val_dir} was tokenized with another codec than {self.train_dir} "
                    f"(differs in {', '.join(differing)})"
                )
            splits = {
                "train": SplitShards([s["path"] for s in train], whole(train)),
                "val": SplitShards([s["path"] for s in val], whole(val), None, str(self.val_dir)),
            }
        elif self.val_fraction:
            splits = self._split_by_key(train)
        elif self.holdout_shards:
            if self.holdout_shards >= len(train):
                raise UserInputError(
                    f"holdout_shards={self.holdout_shards} leaves no training shards of "
                    f"{len(train)}; hold out items instead with data.val_fraction (e.g. 0.05)"
                )
            kept, held = train[: -self.holdout_shards], train[-self.holdout_shards :]
            names = ", ".join(s["shard"] for s in held)
            splits = {
                "train": SplitShards([s["path"] for s in kept], whole(kept)),
                "val": SplitShards([s["path"] for s in held], whole(held), None, names),
            }
        else:
            splits = {
                "train": SplitShards([s["path"] for s in train], whole(train)),
                "val": SplitShards([], []),
            }
        self._splits = splits
        return splits

    def _split_by_key(self, shards: list[dict[str, Any]]) -> dict[str, SplitShards]:
        """Items held out by key hash: the keys come from the shards' sidecars."""
        sidecars = {s["shard"]: self._sidecar(s["shard"]) for s in shards}
        pairs = [
            (shard["path"], key, frames)
            for shard in shards
            for key, frames in zip(
                sidecars[shard["shard"]]["keys"], shard["sample_frames"], strict=True
            )
        ]
        try:
            split = KeySplit.over([key for _, key, _ in pairs], self.val_fraction)
        except ValueError as error:
            raise UserInputError(f"data.val_fraction: {error}") from error
        sides = {}
        for validation, name in ((False, "train"), (True, "val")):
            mine = [(path, key, f) for path, key, f in pairs if split.is_val(key) == validation]
            held = [key for _, key, _ in mine] if validation else []
            shown = ", ".join(held[:8]) + (f", ... ({len(held)} in all)" if len(held) > 8 else "")
            sides[name] = SplitShards(
                list(dict.fromkeys(path for path, _, _ in mine)),
                [f for _, _, f in mine],
                KeyFilter(split, validation),
                f"val_fraction={self.val_fraction} by key hash: {shown}" if validation else "",
            )
        return sides

    def _sidecar(self, shard: str) -> dict[str, Any]:
        """A shard's sidecar (its keys), from wherever the shards are."""
        try:
            return self.train_location.read_json(sidecar_name(shard))
        except Exception as error:  # local or remote, one line
            raise UserInputError(
                f"shard {self.train_location.path(shard)} has no readable sidecar "
                f"{sidecar_name(shard)} ({why(error)}); the shard folder is damaged"
            ) from error

    def summary(self) -> str:
        """Items, hours and batches per epoch of both splits, and what is held out."""
        splits = self._load()
        assert self.codec is not None
        rate = float(self.codec.frame_rate)
        world = self.trainer.world_size if self.trainer is not None else 1
        lines = [f"data: {self.train_dir} ({self.codec.describe()})"]
        if self.bad_shards:
            lines.append(f"  left out: {len(self.bad_shards)} damaged shards (listed above)")
        for name in ("train", "val"):
            side = splits[name]
            if not side.shards:
                lines.append(f"  {name}: none (set data.val_fraction, val_dir or holdout_shards)")
                continue
            seconds = sum(side.item_frames) / rate
            usable = self.usable_samples(name)
            batch = self.batch_size if name == "train" else self.val_batch_size
            batches = self._batches_per_rank(name, usable, world)
            line = (
                f"  {name}: {side.items} items ({duration_text(seconds)}), "
                f"{len(side.shards)} shards; "
                f"{usable} long enough for {self.segment_seconds:g} s crops; "
                f"{batches} batch{'es' if batches != 1 else ''} of {batch} per epoch"
                + (f" on each of {world} ranks" if world > 1 else "")
            )
            lines.append(line)
            if side.held_out:
                lines.append(f"    held out: {side.held_out}")
        return "\n".join(lines)

    @property
    def segment_frames(self) -> int:
        self._load()
        assert self.codec is not None, "the shards are read at setup"
        return round(self.segment_seconds * self.codec.frame_rate)

    @property
    def num_levels(self) -> int:
        self._load()
        assert self.codec is not None, "the shards are read at setup"
        return self.codec.num_codebooks

    def _crop(self, random_crop: bool) -> CropConfig:
        return CropConfig(self.segment_frames, self.min_segment_ratio, random_crop)

    def usable_samples(self, split: str) -> int:
        min_frames = self._crop(True).min_frames
        return sum(f >= min_frames for f in self._load()[split].item_frames)

    def _batches_per_rank(self, split: str, usable: int, world_size: int) -> int:
        if split == "train":
            return usable // (world_size * self.batch_size)
        # every sample once, the last batch of a rank filled by wrapping around
        return math.ceil(math.ceil(usable / world_size) / self.val_batch_size)

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def make_loader(self, split: str, rank: int, world_size: int) -> EpochDataLoader:
        """The loader one rank uses; public so ranks can be simulated without a cluster."""
        side = self._load()[split]
        problem = self._no_batches(split, world_size)
        if problem:
            raise UserInputError(problem)
        usable = self.usable_samples(split)
        training = split == "train"
        batch_size = self.batch_size if training else self.val_batch_size
        batches = self._batches_per_rank(split, usable, world_size)
        stream = ShardStream(
            side.shards,
            batch_size=batch_size,
            batches_per_rank=batches,
            crop_config=self._crop(random_crop=training),
            rank=rank,
            world_size=world_size,
            shuffle=training,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            load_latents=self.load_latents,
            key_filter=side.key_filter,
            skip_bad_shards=self.on_bad_shard == "skip",
            cache=self.cache,
            resample=self.resample_shards and training,
        )
        trainer = self.trainer
        epoch_source = (lambda: trainer.current_epoch) if trainer is not None else None
        workers = min(self.num_workers, batches)
        if side.key_filter is not None and not training:
            workers = min(workers, 1)  # every reader scans all shards: keep readers few
        return EpochDataLoader(
            stream,
            epoch_source=epoch_source,
            keep_workers=training,
            num_workers=workers,
            worker_init_fn=parent_led_worker,
        )

    def train_dataloader(self) -> EpochDataLoader:
        return self.make_loader("train", *self._rank_and_world())

    def val_dataloader(self) -> EpochDataLoader:
        return self.make_loader("val", *self._rank_and_world())
