"""`lightning-sdm tokenize`: audio + captions -> EnCodec token shards, as a Lightning predict loop.

Decoding and resampling run in DataLoader workers, encoding in the LightningModule, and
a prediction writer publishes shards; the same Trainer flags spread it over GPUs or nodes.
A killed run resumes: published shards are kept, their items skipped, the rest redone.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from torch.utils.data import DataLoader
from tqdm import tqdm

from lightning_sdm.codecs import (
    Codec,
    CodecConfig,
    CodecIdentity,
    load_codec,
    save_random_codec,
)
from lightning_sdm.data.audio_datamodule import AudioTokenizeDataModule
from lightning_sdm.data.shard_uploads import ShardUploader
from lightning_sdm.data.shards import (
    INDEX_FILE,
    ShardWriter,
    TokenizedItem,
    clean_incomplete,
    published_shards,
    shard_number,
    write_json_atomic,
)
from lightning_sdm.data.sources import Rejection, SourceItem
from lightning_sdm.data.stopping import SignalStop, StopRequested
from lightning_sdm.data.storage import ShardLocation
from lightning_sdm.errors import UserInputError, first_line
from lightning_sdm.folder_lock import LOCK_FILE, FolderBusy, folder_lock
from lightning_sdm.presets import RANDOM_WEIGHTS
from lightning_sdm.ranks import is_first_process

RANDOM_CODEC_DIR = "codec"  # where --random-codec saves its codec, inside the output folder
SHOWN_REJECTIONS = 50  # on the console; index.json lists every one


@dataclass
class TokenizeConfig:
    input: str
    output: str
    codec: CodecConfig = field(default_factory=CodecConfig)
    # A random codec from this seed, saved in OUTPUT/codec (demos, tests): instead of
    # `codec.pretrained`, never silently.
    random_codec_seed: int | None = None
    min_seconds: float = 1.0
    keep_latents: bool = False
    allow_missing_captions: bool = False
    max_shard_items: int = 1000
    max_shard_bytes: int = 512 * 1024 * 1024
    num_workers: int = 1
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    progress: bool = True


@dataclass
class TokenizeSummary:
    output: Path | str
    new_items: int
    already_present: int
    total_items: int
    total_shards: int
    total_hours: float
    rejected: list[dict[str, str]]
    reporting: bool = True  # False on ranks other than the one that wrote the index
    stopped_by: int | None = None  # the signal that stopped the run early, if one did
    # Items encoded as they are although they peak above full scale ({source, peak}).
    over_full_scale: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.total_items > 0

    def __str__(self) -> str:
        reasons = Counter(r["reason"].split(":")[0] for r in self.rejected)
        lines = [
            f"tokenized {self.new_items} new items; {self.already_present} were already present",
            f"output: {self.total_items} items, {self.total_hours:.3f} h of audio in "
            f"{self.total_shards} shards, index {ShardLocation(self.output).path(INDEX_FILE)}",
            f"rejected: {len(self.rejected)}"
            + "".join(f"\n  {count} x {reason}" for reason, count in reasons.most_common()),
        ]
        lines += [f"  {r['source']}: {r['reason']}" for r in self.rejected[:SHOWN_REJECTIONS]]
        if len(self.rejected) > SHOWN_REJECTIONS:
            hidden = len(self.rejected) - SHOWN_REJECTIONS
            lines.append(f"  ... and {hidden} more (all listed in {INDEX_FILE})")
        if self.over_full_scale:
            count = len(self.over_full_scale)
            items = "1 item peaks" if count == 1 else f"{count} items peak"
            lines.append(
                f"over full scale: {items} above 1.0, encoded as they are (the codec was "
                "trained on audio within ±1: normalise them if that was not meant)"
            )
            shown = self.over_full_scale[:SHOWN_REJECTIONS]
            lines += [f"  {loud['source']}: peak {_peak_text(loud['peak'])}" for loud in shown]
            if len(self.over_full_scale) > SHOWN_REJECTIONS:
                hidden = len(self.over_full_scale) - SHOWN_REJECTIONS
                lines.append(f"  ... and {hidden} more (all listed in {INDEX_FILE})")
        if self.stopped_by is not None:
            name = signal.Signals(self.stopped_by).name
            lines.append(f"stopped by {name}: run the same command again to continue")
        return "\n".join(lines)


def _peak_text(peak: float) -> str:
    return f"{peak:.2f} ({20 * math.log10(peak):+.1f} dB over full scale)"


@dataclass(frozen=True)
class LoudSource:
    """An item encoded as it is although its samples exceed ±1 (a float file mastered
    hot): said, not refused, since the loudness may be meant."""

    source: str
    peak: float

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "peak": round(self.peak, 4)}


class EncodeModule(L.LightningModule):
    """`stop_check` runs before each item and each encode chunk (a stop request raises)."""

    def __init__(
        self,
        codec: Codec,
        keep_latents: bool,
        stop_check: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self.codec = codec
        self.keep_latents = keep_latents
        self.stop_check = stop_check

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> list[Any]:
        results: list[Any] = []
        for record in batch:
            self.stop_check()
            item: SourceItem = record["item"]
            if record["problem"]:
                results.append(Rejection(str(item.path), record["problem"]))
                continue
            audio = record["audio"]
            wav = torch.from_numpy(audio.samples)[None]
            codes, latents = self.codec.encode_with_latents(
                wav, keep_latents=self.keep_latents, before_chunk=self.stop_check
            )
            results.append(
                TokenizedItem(
                    key=item.key,
                    codes=codes[0].to(torch.int16).cpu().numpy(),
                    latents=None if latents is None else latents[0].half().cpu().numpy(),
                    caption=item.caption or "",
                    metadata=item.metadata,
                    seconds=audio.seconds(self.codec.sample_rate),
                    source=str(item.path),
                    source_sample_rate=audio.source_sample_rate,
                    fingerprint=record.get("fingerprint"),
                )
            )
            if audio.peak > 1.0:
                results.append(LoudSource(str(item.path), audio.peak))
        return results


class ShardPublisher(BasePredictionWriter):
    """Each rank writes its own shard numbers: first, first + world, first + 2 world, ..."""

    def __init__(
        self,
        config: TokenizeConfig,
        first_number: int,
        codec_identity: CodecIdentity,
        uploader: ShardUploader | None = None,
    ):
        super().__init__(write_interval="batch")
        self.config = config
        self.uploader = uploader  # a URL output: shards go up as they are published
        self.folder = uploader.staging if uploader else Path(config.output)
        self.first_number = first_number
        self.codec_identity = codec_identity
        self.writer: ShardWriter | None = None
        self.rejections: list[Rejection] = []
        self.loud: list[LoudSource] = []
        self.new_items = 0

    def open(self, rank: int, world_size: int) -> None:
        self.writer = ShardWriter(
            self.folder,
            itertools.count(self.first_number + rank, world_size),
            self.config.max_shard_items,
            self.config.max_shard_bytes,
            self.codec_identity,
            on_publish=self.uploader,
        )

    def consume(self, results: list[Any]) -> None:
        assert self.writer is not None, "open() the publisher first"
        for result in results:
            if isinstance(result, Rejection):
                self.rejections.append(result)
            elif isinstance(result, LoudSource):
                self.loud.append(result)
            else:
                self.writer.write(result)
                self.new_items += 1

    def publish_open_shard(self) -> None:
        """Items in the open shard are complete: publish them rather than redo them."""
        if self.writer is not None:
            self.writer.finish()

    def close(self, rank: int) -> None:
        self.publish_open_shard()
        for name, found in (("rejections", self.rejections), ("over_full_scale", self.loud)):
            path = self.folder / f"{name}.rank{rank}.json"
            write_json_atomic(path, [r.to_dict() for r in found])
            if self.uploader is not None:
                self.uploader.put(path.name)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.open(trainer.global_rank, trainer.world_size)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        self.consume(prediction)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.close(trainer.global_rank)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # The full disk that failed a write fails this one too; raising here would skip
        # Lightning's teardown, whose decoding workers then kept the process alive.
        with contextlib.suppress(OSError):
            self.publish_open_shard()


class AudioThroughputBar(TQDMProgressBar):
    """Lightning's bar (items/s) plus audio seconds encoded per second."""

    def __init__(self) -> None:
        super().__init__()
        self._audio_seconds = 0.0
        self._started = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self._audio_seconds += sum(r.seconds for r in outputs if isinstance(r, TokenizedItem))
        rate = self._audio_seconds / max(time.perf_counter() - self._started, 1e-9)
        self.predict_progress_bar.set_postfix({"audio_s/s": f"{rate:.1f}"})


def _check_codec(output: Path, identity: CodecIdentity, shards: list[dict[str, Any]]) -> None:
    for shard in shards:
        found = shard.get("codec")
        if found is None:
            raise ValueError(f"{output} holds a shard ({shard['shard']}) that names no codec")
        found = CodecIdentity.from_dict(found)
        if identity.differences(found):
            raise ValueError(
                f"{output} holds shards made with another codec ({found.describe()}, "
                f"not {identity.describe()}); tokenize into a new folder"
            )


def _codec_config(config: TokenizeConfig, output: Path) -> CodecConfig:
    if config.random_codec_seed is not None:
        directory = save_random_codec(
            output / RANDOM_CODEC_DIR, config.random_codec_seed, config.codec
        )
        return CodecConfig(**{**config.codec.to_dict(), "pretrained": str(directory.resolve())})
    _require_codec(config)
    resolved = str(Path(str(config.codec.pretrained)).resolve())  # the index names it absolutely
    return CodecConfig(**{**config.codec.to_dict(), "pretrained": resolved})


def _require_codec(config: TokenizeConfig) -> None:
    if config.codec.pretrained == RANDOM_WEIGHTS:
        raise ValueError(
            "tokenize with a random codec through --random-codec SEED: it is saved beside "
            "the shards, so their tokens stay decodable"
        )
    if config.random_codec_seed is not None and config.codec.pretrained is not None:
        raise ValueError("choose one codec: codec.pretrained (--codec-dir) or --random-codec")
    if config.random_codec_seed is not None or config.codec.pretrained is not None:
        return
    raise ValueError(
        "no codec: give a local EnCodec directory (--codec-dir, codec.pretrained), or "
        "--random-codec SEED for a random codec saved beside the shards (its tokens are "
        "not music)"
    )


def tokenize(config: TokenizeConfig, use_trainer: bool = True) -> TokenizeSummary:
    """Tokenize `config.input` into `config.output` (a folder, or an s3:// or gs:// URL);
    resumes and skips what is done.

    `use_trainer=False` runs in this process without a Lightning Trainer, for use inside
    another Trainer's `prepare_data`.
    """
    _require_codec(config)
    location = ShardLocation(config.output)
    data = AudioTokenizeDataModule(
        config.input,
        config.output,
        min_seconds=config.min_seconds,
        allow_missing_captions=config.allow_missing_captions,
        num_workers=config.num_workers,
    )
    data.discover()  # before anything is written: a wrong input leaves no folder
    made_here = not location.remote and not Path(config.output).exists()
    try:
        with contextlib.ExitStack() as held:
            # In a fit's prepare_data each node's first process tokenizes: the later ones
            # wait for the first and then find its work done.
            uploader = _prepare_output(location, config, held, wait=not use_trainer)
            try:
                return _tokenize_into(config, location, data, uploader, use_trainer)
            finally:
                if uploader is not None:
                    uploader.remove_staging()
    except FolderBusy:
        raise  # the folder is the other run's: nothing of it is ours to remove
    except UserInputError:
        if made_here:  # refused settings (an accelerator it lacks) leave no empty folder
            with contextlib.suppress(OSError):
                (Path(config.output) / LOCK_FILE).unlink(missing_ok=True)
                Path(config.output).rmdir()
        raise


def _prepare_output(
    location: ShardLocation, config: TokenizeConfig, held: contextlib.ExitStack, wait: bool
) -> ShardUploader | None:
    """A local folder made writable, held against other runs (`folder_lock`) and cleared
    of unpublished files; for a URL, one line when it cannot be written, and the uploader
    of its shards. A launch's other ranks neither lock nor clear: its first does."""
    if not location.remote:
        output = Path(config.output)
        _make_writable_folder(output)
        if not wait and not is_first_process():
            return None
        held.enter_context(folder_lock(output, "tokenize", wait=wait, on_wait=_to_stderr))
        clean_incomplete(output)
        return None
    if config.random_codec_seed is not None:
        raise UserInputError(
            "--random-codec saves its codec beside the shards, in a local folder; "
            f"tokenize into a folder, not {location}"
        )
    problem = location.writable_problem()
    if problem:
        raise UserInputError(f"the output {location} {problem}")
    return ShardUploader(location)


def _tokenize_into(
    config: TokenizeConfig,
    location: ShardLocation,
    data: AudioTokenizeDataModule,
    uploader: ShardUploader | None,
    use_trainer: bool,
) -> TokenizeSummary:
    output = config.output if location.remote else Path(config.output)
    codec = load_codec(_codec_config(config, Path(config.output)))
    identity = codec.identity()
    data.sample_rate = codec.sample_rate
    data.setup("predict")
    _check_codec(output, identity, data.existing_shards)
    previously_stored = len(data.done_keys)
    stopped_by = None
    if data.todo:
        first = max((shard_number(s["shard"]) for s in data.existing_shards), default=-1) + 1
        publisher = ShardPublisher(config, first, identity, uploader)
        with SignalStop() as stop:
            module = EncodeModule(codec, config.keep_latents, stop.check)
            try:
                if use_trainer:
                    if not _predict_with_trainer(config, publisher, module, data):
                        return TokenizeSummary(
                            output, publisher.new_items, data.already_present, 0, 0, 0.0, [],
                            reporting=False,
                        )  # fmt: skip
                else:
                    _predict_in_process(config, publisher, module, data.loader_for(0, 1))
            except StopRequested as stopped:
                stopped_by = stopped.signum  # the open shard was published; index what is done
    rejections = data.rejections + [
        Rejection(**r) for r in _take_rank_files(location, "rejections")
    ]
    # Kept from earlier runs too: their items are in the shards, skipped by this one.
    loud = {entry["source"]: entry for entry in _indexed(location, "over_full_scale")}
    loud |= {entry["source"]: entry for entry in _take_rank_files(location, "over_full_scale")}
    summary = write_index(
        location, identity, rejections, previously_stored, data.already_present, config,
        sorted(loud.values(), key=lambda entry: entry["source"]),
    )  # fmt: skip
    summary.stopped_by = stopped_by
    return summary


def _take_rank_files(location: ShardLocation, kind: str) -> list[dict[str, Any]]:
    """The entries each rank wrote to KIND.rankN.json, the files removed."""
    entries: list[dict[str, Any]] = []
    for name in location.names(f"{kind}.rank*.json"):
        entries += location.read_json(name)
        if location.remote:
            location.delete(name)
        else:
            Path(location.path(name)).unlink()
    return entries


def _indexed(location: ShardLocation, key: str) -> list[dict[str, Any]]:
    """A list the existing index holds under `key` (none before a first index)."""
    try:
        return list(location.read_json(INDEX_FILE).get(key, []))
    except (OSError, ValueError):
        return []


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _make_writable_folder(output: Path) -> None:
    """One line when the output cannot be made or written (a file in the way, a read-only
    mount, no permission), before any encoding."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserInputError(
            f"the output folder {output} cannot be written: {error.strerror or error}"
        ) from None


def _predict_with_trainer(
    config: TokenizeConfig,
    publisher: ShardPublisher,
    module: EncodeModule,
    data: AudioTokenizeDataModule,
) -> bool:
    """Runs on every rank; returns True on the rank that writes the index."""
    callbacks: list[L.Callback] = [publisher]
    if config.progress:
        callbacks.append(AudioThroughputBar())
    try:
        trainer = L.Trainer(
            accelerator=config.accelerator,
            devices=config.devices,
            num_nodes=config.num_nodes,
            strategy=config.strategy,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=config.progress,
            callbacks=callbacks,
            use_distributed_sampler=False,  # the DataModule gives each rank its share
        )
    except (MisconfigurationException, ModuleNotFoundError) as error:  # hardware it lacks
        raise UserInputError(
            f"--accelerator {config.accelerator} --devices {config.devices} --strategy "
            f"{config.strategy}: {first_line(error)}"
        ) from error
    trainer.predict(module, datamodule=data, return_predictions=False)
    trainer.strategy.barrier()
    return trainer.is_global_zero


def _predict_in_process(
    config: TokenizeConfig, publisher: ShardPublisher, module: EncodeModule, loader: DataLoader
) -> None:
    publisher.open(rank=0, world_size=1)
    progress = tqdm(loader, desc="tokenize", unit="item", disable=not config.progress)
    audio_seconds, started = 0.0, time.perf_counter()
    try:
        with torch.inference_mode():
            for index, batch in enumerate(progress):
                results = module.predict_step(batch, index)
                publisher.consume(results)
                audio_seconds += sum(r.seconds for r in results if isinstance(r, TokenizedItem))
                rate = audio_seconds / max(time.perf_counter() - started, 1e-9)
                progress.set_postfix({"audio_s/s": f"{rate:.1f}"})
    except BaseException:
        publisher.publish_open_shard()
        raise
    publisher.close(rank=0)


def write_index(
    output: Path | ShardLocation,
    identity: CodecIdentity,
    rejections: list[Rejection],
    previously_stored: int,
    already: int,
    config: TokenizeConfig,
    over_full_scale: list[dict[str, Any]] | None = None,
) -> TokenizeSummary:
    """index.json over every published shard (at a URL: every shard whose upload finished)."""
    location = output if isinstance(output, ShardLocation) else ShardLocation(output)
    shards = published_shards(location)
    total_items = sum(s["num_samples"] for s in shards)
    hours = sum(s["audio_seconds"] for s in shards) / 3600
    rejected = sorted((r.to_dict() for r in rejections), key=lambda r: r["source"])
    index = {
            "codec": identity.to_dict(),
            "num_samples": total_items,
            "num_frames": sum(s["num_frames"] for s in shards),
            "audio_hours": hours,
            "has_latents": config.keep_latents,
            "shards": [
                {k: s[k] for k in ("shard", "num_samples", "num_frames", "sample_frames")}
                for s in shards
            ],
            "rejected": rejected,
            "over_full_scale": over_full_scale or [],
        }  # fmt: skip
    if location.remote:  # an object store writes an object whole: atomic as it stands
        location.write_bytes(INDEX_FILE, json.dumps(index, indent=2).encode("utf-8"))
    else:
        write_json_atomic(Path(location.location) / INDEX_FILE, index)
    new_items = total_items - previously_stored  # counted from the shards: right for any rank count
    shown = location.location if location.remote else Path(location.location)
    return TokenizeSummary(
        shown, new_items, already, total_items, len(shards), hours, rejected,
        over_full_scale=over_full_scale or [],
    )  # fmt: skip
