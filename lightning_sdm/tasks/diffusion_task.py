"""The LightningModule that trains the latent diffusion family on the shards' latents."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_sdm.conditioning import EMPTY_CONDITION, TextConditionerConfig
from lightning_sdm.data.interface import LatentMoments, TrainingData, training_data
from lightning_sdm.data.latent_datamodule import latent_moments_of
from lightning_sdm.errors import UserInputError
from lightning_sdm.models.dit import DiTConfig
from lightning_sdm.models.masking import MaskingConfig
from lightning_sdm.models.text_to_audio_diffusion import (
    DiffusionConfig,
    TextToAudioDiffusion,
    TextToAudioDiffusionConfig,
)
from lightning_sdm.nn.dit_block import DiTBlock
from lightning_sdm.tasks.configs import config_from
from lightning_sdm.tasks.optim import OptimConfig
from lightning_sdm.tasks.stability import stop_if_not_finite
from lightning_sdm.tasks.text_conditioned import TextConditionedTask, start_from_directory

# What a stage may change on the model it starts from; the rest is architecture.
TRAINING_OPTIONS = {
    "dit": ("activation_checkpointing",),
    "text": ("cfg_dropout", "freeze", "max_length", "frozen_dtype"),
}


LATENT_STATS_BATCHES = 64  # training batches per rank that latent statistics are measured on


class TextToAudioDiffusionTask(TextConditionedTask):
    """Masked-modelling v-prediction loss, optimizer and schedule around the latent
    diffusion model (EzAudio-DiT).

    Args:
        dit: The transformer: latent channels (the codec's latent width), sizes, adaLN-SOLA
            rank, the text encoder's width, activation checkpointing.
        text: The T5 conditioner (its `cfg_dropout` is the text dropout for guidance).
        diffusion: The noise schedule (zero-terminal-SNR scaled-linear betas, v-prediction).
        masking: Span masking: span length, ratio range, fully masked share of a batch.
        optim: AdamW and the warm-up + cosine schedule.
        use_text: False trains on audio alone (EzAudio's stage 1): a new model is built
            without a text path; a later stage with init_from and use_text adds it fresh
            (output projections at zero, so it starts where stage 1 ended). A model that
            has a text path and trains with use_text false reads the empty caption.
        init_from: Start from a model directory (the previous stage's export).
        latent_mean: Standardise latents with this mean and `latent_std`; unset, both are
            measured over up to 64 training batches of every rank before the first step
            (the first batch, for data that cannot measure) and kept in the weights.
        latent_std: See latent_mean.
        compile: Compile each DiT block with torch.compile (`tasks.compiling`): the
            first steps wait for the compiler (~50 s on 2 CPU cores); measure what it
            buys on your hardware with `benchmarks/dit_speed.py --compile`.
    """

    shard_units = (DiTBlock,)
    training_options = TRAINING_OPTIONS
    shard_entry_methods = ("training_loss",)

    def __init__(
        self,
        dit: DiTConfig = DiTConfig(),  # noqa: B008 - frozen dataclasses
        text: TextConditionerConfig = TextConditionerConfig(),  # noqa: B008
        diffusion: DiffusionConfig = DiffusionConfig(),  # noqa: B008
        masking: MaskingConfig = MaskingConfig(),  # noqa: B008
        optim: OptimConfig = OptimConfig(),  # noqa: B008
        use_text: bool = True,
        init_from: str | None = None,
        latent_mean: float | None = None,
        latent_std: float | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.compile_blocks = compile  # the DiT blocks, in configure_model
        dit = config_from(dit, DiTConfig)
        text = config_from(text, TextConditionerConfig)
        diffusion = config_from(diffusion, DiffusionConfig)
        masking = config_from(masking, MaskingConfig)
        optim = config_from(optim, OptimConfig)
        if init_from is not None:
            more: dict[str, dict[str, Any]] = {"masking": masking.to_dict()}
            if use_text:  # a stage-1 model gets its text path here, fresh (EzAudio's stage 2)
                more["dit"] = {"text_path": True}
            self.model = start_from_directory(
                init_from, TextToAudioDiffusion, {"dit": dit, "text": text}, TRAINING_OPTIONS, more
            )
            dit, text, diffusion = (
                self.model.config.dit, self.model.config.text, self.model.config.diffusion
            )  # fmt: skip
        else:
            if not use_text:  # EzAudio's stage 1: no text path at all
                dit = dataclasses.replace(dit, text_path=False)
            elif not dit.text_path:
                raise UserInputError(
                    "model.dit.text_path: false leaves the model nothing to read the text "
                    "with: set model.use_text: false to train on audio alone"
                )
            config = TextToAudioDiffusionConfig(
                dit=dit, text=text, diffusion=diffusion, masking=masking,
                latent_mean=latent_mean, latent_std=latent_std,
            )  # fmt: skip
            self.model = TextToAudioDiffusion(config)
        self.init_from = init_from
        self.use_text = use_text
        self.save_hyperparameters(
            {
                "dit": dit.to_dict(),
                "text": text.to_dict(),
                "diffusion": dataclasses.asdict(diffusion),
                "masking": masking.to_dict(),
                "optim": dataclasses.asdict(optim),
                "use_text": use_text,
            }
        )
        self.optim_config = optim

    def check_data(self, data: TrainingData) -> None:
        """Stop before training when the shards' latents do not fit the model."""
        codec = data.codec
        if codec is not None and codec.latent_dim not in (None, self.model.latent_channels):
            raise UserInputError(
                f"the shards' codec has {codec.latent_dim}-channel latents, but the model "
                f"is configured for {self.model.latent_channels}: set model.dit.latent_channels"
            )

    def _texts(self, captions: list[str], training: bool) -> list[str]:
        if not self.use_text:
            return [EMPTY_CONDITION] * len(captions)
        if training:
            return self.dropped_captions(captions)
        return list(captions)

    def on_fit_start(self) -> None:
        """Unset latent statistics are measured over up to LATENT_STATS_BATCHES training
        batches of every rank before the first step (one batch can be far off)."""
        super().on_fit_start()
        data = training_data(self.trainer)
        if bool(self.model.latent_stats_known) or not isinstance(data, LatentMoments):
            return
        moments = data.latent_moments(LATENT_STATS_BATCHES).to(self.device, torch.float64)
        self._set_latent_stats(moments, "the training data")

    def _measure_latent_stats(self, latents: torch.Tensor, frame_mask: torch.Tensor) -> None:
        """Statistics of the first batch: for data that cannot measure more."""
        self._set_latent_stats(latent_moments_of(latents, frame_mask), "the first batch")

    def _set_latent_stats(self, moments: torch.Tensor, source: str) -> None:
        """Standardise with [sum, sum of squares, count] summed over ranks."""
        total, squares, count = (
            float(x) for x in self.trainer.strategy.reduce(moments, reduce_op="sum")
        )
        if count == 0:
            raise UserInputError("no latent frames to measure the latents' statistics on")
        mean = total / count
        std = max(squares / count - mean**2, 1e-12) ** 0.5
        self.model.set_latent_stats(mean, std)
        rank_zero_info(
            f"latent statistics over {source} ({int(count):,} values): mean {mean:.4g}, "
            f"std {std:.4g}"
        )

    def _latents(self, batch: dict[str, Any]) -> torch.Tensor:
        if "latents" not in batch:
            raise UserInputError(
                "the batches hold no latents: train the diffusion family on "
                "LatentShardsDataModule over shards tokenized with --latents"
            )
        return batch["latents"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        latents, frame_mask = self._latents(batch), batch["padding_mask"]
        if not bool(self.model.latent_stats_known):
            self._measure_latent_stats(latents, frame_mask)
        result = self.model.training_loss(
            latents, frame_mask, self._texts(batch["captions"], True), self.caption_rng
        )
        stop_if_not_finite(self, result.loss)
        size = latents.shape[0]
        self.log("train/mse", result.loss, prog_bar=True, batch_size=size)
        self.log("train/generated_share", result.generated_share, batch_size=size)
        self.log_learning_rate(size)
        return result.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """The same loss with a fixed generator per batch, so validations compare."""
        latents, frame_mask = self._latents(batch), batch["padding_mask"]
        if not bool(self.model.latent_stats_known):  # validating before any training
            self._measure_latent_stats(latents, frame_mask)
        generator = torch.Generator().manual_seed(batch_idx)
        result = self.model.training_loss(
            latents, frame_mask, self._texts(batch["captions"], False), generator
        )
        self.log("val/mse", result.loss, prog_bar=True, sync_dist=True, batch_size=len(latents))
        return result.loss
