"""What every text-to-audio task does the same way, whichever family it trains: the trained
crop length and the family recorded in checkpoints, per-rank caption dropout, throughput
and learning-rate logs, the data check before training, and building a task back from
its checkpoint. Each family's task keeps its loss, its metrics and its data check."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import torch

from lightning_sdm.codecs.identity import (
    TRAINED_CODEC_KEY,
    CodecIdentity,
    check_trained_codec,
    recorded_codec,
)
from lightning_sdm.convert.export import recorded_trained_codec
from lightning_sdm.data.interface import TrainingData, training_data
from lightning_sdm.errors import UserInputError
from lightning_sdm.models.saving import FAMILY_KEY
from lightning_sdm.tasks.configs import resume_changes, training_option_changes
from lightning_sdm.tasks.scheduled_task import ScheduledAdamWTask

TRAINED_FRAMES_KEY = "trained_segment_frames"
SHARDS_CODEC = "the codec of the training shards"


def caption_dropout_generator(rank: int) -> torch.Generator:
    """seed_everything gives every rank the same seed; caption dropout should differ per rank."""
    return torch.Generator().manual_seed(torch.initial_seed() + 1000 * rank)


def _saved_config(directory: str, model_class: Any) -> Any:
    """The config of the model directory `init_from` names, or one line saying what the
    folder is instead (missing, a Hugging Face MusicGen to import first, a codec, another
    family's model): such folders failed deep in reading the config, as a traceback."""
    from lightning_sdm.families import family_of, family_of_directory

    path = Path(directory)
    where_from = "a model directory from `lightning-sdm export` or `lightning-sdm import-musicgen`"
    if not path.is_dir():
        raise UserInputError(f"model.init_from: {path} not found ({where_from})")
    try:
        found, wanted = family_of_directory(path, f"give {where_from}"), family_of(model_class)
    except UserInputError as error:
        raise UserInputError(f"model.init_from: {error}") from error
    if found is not wanted:
        raise UserInputError(
            f"model.init_from: {path} holds {found.description}; this task trains "
            f"{wanted.description}"
        )
    try:
        return model_class.read_config(path)
    except FileNotFoundError as error:
        raise UserInputError(f"model.init_from: {error}") from error


def start_from_directory(
    directory: str,
    model_class: Any,
    given: Mapping[str, Any],
    training_options: Mapping[str, tuple[str, ...]],
    more_overrides: Mapping[str, dict[str, Any]] | None = None,
) -> Any:
    """The directory's model with the training options in `given` (config sections) set
    away from their defaults; an architecture option set away from its default and from
    the saved model's is an error, not silently ignored. A section's `pretrained` (where
    the base config reads the text encoder) gives way to the directory's own copy."""
    saved = _saved_config(directory, model_class)
    sections = {
        name: (_without_source(value), type(value)(), getattr(saved, name))
        for name, value in given.items()
    }
    overrides = training_option_changes(directory, sections, training_options)
    for section, values in (more_overrides or {}).items():
        overrides[section] = {**overrides.get(section, {}), **values}
    return model_class.from_pretrained(directory, overrides=overrides).train()


def _without_source(config: Any) -> Any:
    """`config` with `pretrained` at its default: weights come from the directory."""
    if dataclasses.is_dataclass(config) and hasattr(config, "pretrained"):
        return dataclasses.replace(config, pretrained=type(config)().pretrained)
    return config


class TextConditionedTask(ScheduledAdamWTask):
    """Subclasses build `self.model` (a model with a `family` and a T5 `conditioner`), set
    `self.init_from`, and say what a batch holds in `units_per_batch` and what the data
    must offer in `check_data`."""

    throughput_name = "train/frames_per_s"  # the log name of `units_per_batch` per second
    # The model's config sections and the options in each that may change when training
    # goes on from saved weights (init_from, a resume); the rest fix the architecture.
    training_options: Mapping[str, tuple[str, ...]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.init_from: str | None = None  # the sample callback also samples this model
        self.trained_segment_frames: int | None = None  # the crop length, kept for generate
        self.trained_codec: CodecIdentity | None = None  # the shards' codec, kept for generate
        self.caption_rng: torch.Generator | None = None
        self._previous_batch: tuple[float, torch.Tensor] | None = None  # (start, units)

    # -- what a family says ----------------------------------------------------------

    def check_data(self, data: TrainingData) -> None:
        """Raise UserInputError when the data cannot train this model (before any step)."""

    def units_per_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        """What throughput counts in a batch: real frames unless a family says otherwise."""
        return batch["padding_mask"].sum()

    def random_weights_unasked(self) -> list[str]:
        """Why this model would train on noise without anyone asking for it: a random text
        encoder that `text.pretrained` left unset (`random` asks for one)."""
        conditioner = getattr(self.model, "conditioner", None)
        if conditioner is None or conditioner.config.pretrained is not None:
            return []
        return [
            "model.text.pretrained is not set, so the text encoder would be a small random "
            "T5 and captions would mean nothing: point it at a local T5 (e.g. a copy of "
            "t5-base), or set it to random to train with one on purpose"
        ]

    # -- shared plumbing -------------------------------------------------------------

    def setup(self, stage: str) -> None:
        data = training_data(self.trainer)
        if data is None:
            return
        self.check_data(data)
        self.trained_segment_frames = data.segment_frames
        self.trained_codec = data.codec
        if self.init_from is not None and data.codec is not None:
            started = f"model.init_from {self.init_from}"
            check_trained_codec(
                recorded_trained_codec(self.init_from), data.codec, started, SHARDS_CODEC
            )

    def on_fit_start(self) -> None:
        self.caption_rng = caption_dropout_generator(self.global_rank)

    def dropped_captions(self, captions: list[str]) -> list[str]:
        """Captions with classifier-free guidance's dropout applied (training only)."""
        return self.model.conditioner.cfg_dropout(captions, self.caption_rng)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Throughput over whole steps: data, forward, backward and optimizer."""
        now = time.perf_counter()
        if self._previous_batch is not None:
            started, units = self._previous_batch
            self.log(self.throughput_name, units / max(now - started, 1e-9))
        self._previous_batch = (now, self.units_per_batch(batch).float())

    def log_learning_rate(self, batch_size: int) -> None:
        learning_rate = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", learning_rate, batch_size=batch_size)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[FAMILY_KEY] = self.model.family
        if self.trained_segment_frames is not None:
            checkpoint[TRAINED_FRAMES_KEY] = self.trained_segment_frames
        if self.trained_codec is not None:
            checkpoint[TRAINED_CODEC_KEY] = self.trained_codec.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        changed = resume_changes(
            checkpoint.get("hyper_parameters") or {}, self.hparams, self.training_options
        )
        if changed:  # the same weights under another pattern or size would train on silently
            raise UserInputError(
                f"this run's model differs from its checkpoint's: {'; '.join(changed[:4])}"
                + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
                + ". Resume with the run's own config (RUN/config.yaml), or export the "
                "checkpoint and start a new run from it with model.init_from"
            )
        self.trained_segment_frames = checkpoint.get(TRAINED_FRAMES_KEY)
        saved = recorded_codec(checkpoint)
        if saved is not None:
            if self.trained_codec is not None:  # resuming: the shards are read already
                check_trained_codec(
                    saved, self.trained_codec, "this run's checkpoint", SHARDS_CODEC
                )
            self.trained_codec = saved

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> Self:
        """The task a checkpoint was saved from, with its weights."""
        task = cls(**checkpoint["hyper_parameters"])
        task.load_state_dict(checkpoint["state_dict"])
        task.on_load_checkpoint(checkpoint)
        return task

    def export_model(self, output: Path, merge: bool = False) -> Path:
        """The model as a directory `generate` reads (a family with adapters overrides)."""
        if merge:
            raise UserInputError("this model has no adapter to merge: export it without --merge")
        return self.model.save_pretrained(output)
