"""The LightningModule that trains the T5-conditioned codebook LM on token shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Self

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import WeightAveraging

from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.data.interface import TrainingData
from lightning_sdm.errors import UserInputError
from lightning_sdm.models.adapters import (
    FROZEN_BASE_DTYPES,
    AdapterConfig,
    base_weights_digest,
    checkpoint_state,
    freeze_all_but_adapters,
    hold_frozen_projections_in,
    holds_adapter_only,
    is_adapter_parameter,
    refuse_other_base,
)
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM
from lightning_sdm.nn.transformer import DecoderLayer
from lightning_sdm.tasks.configs import config_from
from lightning_sdm.tasks.optim import OptimConfig
from lightning_sdm.tasks.stability import NonFiniteLossError, stop_if_not_finite
from lightning_sdm.tasks.text_conditioned import TextConditionedTask, start_from_directory

__all__ = ["NonFiniteLossError", "TextToMusicTask"]

ADAPTER_BASE_KEY = "adapter_base"  # the directory an adapter run started from
ADAPTER_BASE_WEIGHTS_KEY = "adapter_base_weights"  # and the digest of its weights then


def masked_level_mean(
    per_token: torch.Tensor, padding_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per level over real frames, and its mean over levels.

    per_token [B, C, T] losses, padding_mask [B, T] (True = real frame). The pattern
    predicts every grid token exactly once, so the grid is its loss mask.
    """
    weights = padding_mask[:, None, :].to(per_token.dtype).expand_as(per_token)
    per_level = (per_token * weights).sum(dim=(0, 2)) / weights.sum(dim=(0, 2)).clamp(min=1)
    return per_level.mean(), per_level


def masked_level_cross_entropy(
    logits: torch.Tensor, codes: torch.Tensor, padding_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`masked_level_mean` of the cross-entropy of logits [B, C, T, V] against codes."""
    per_token = F.cross_entropy(logits.float().flatten(0, 2), codes.flatten(), reduction="none")
    return masked_level_mean(per_token.view(codes.shape), padding_mask)


# What a fine-tuning config may change on a model it starts from; the rest is architecture.
TRAINING_OPTIONS = {
    "lm": ("dropout", "activation_checkpointing", "attention"),
    "text": ("cfg_dropout", "freeze", "max_length", "frozen_dtype"),
    # A resumed LoRA run keeps its adapter's rank, scale and targets (its weights' shapes
    # and meaning); it may change their dropout and the frozen base's precision.
    "adapter": ("dropout", "frozen_dtype"),
}


class TextToMusicTask(TextConditionedTask):
    """Loss, metrics, optimizer and schedule around `TextToMusicLM`.

    Configs may be given as dataclasses (YAML through LightningCLI) or plain dicts
    (checkpoints store dicts so they load with `weights_only=True`).

    Args:
        lm: The codebook LM: size, codebook pattern (delay, flat, stack, stack_delay),
            interleave k, levels and cardinality (must match the shards' codec).
        text: The T5 text conditioner: local weights (`pretrained`) or a small random T5,
            freezing, caption dropout for classifier-free guidance.
        optim: AdamW and the warm-up + cosine schedule.
        init_from: Start from a model directory (export, import-musicgen): its architecture
            and weights; `lm` and `text` may still change training options (dropout,
            activation_checkpointing, cfg_dropout, freeze, max_length, frozen_dtype).
        adapter: Train LoRA adapters on the decoder's projections instead of the model:
            everything else is frozen (and gets no optimizer state). `export --merge`
            folds them in; plain `export` writes the adapter alone.
        compile: Compile each decoder layer with torch.compile (`tasks.compiling`): the
            first steps wait for the compiler; measure before keeping it
            (`benchmarks/training_speed.py --variants compiled`).
    """

    shard_units = (DecoderLayer,)
    shard_entry_methods = ("token_losses",)  # the training loss enters the model there
    throughput_name = "train/tokens_per_s"
    training_options = TRAINING_OPTIONS

    def __init__(
        self,
        lm: LMConfig = LMConfig(),  # noqa: B008 - frozen dataclasses
        text: TextConditionerConfig = TextConditionerConfig(),  # noqa: B008
        optim: OptimConfig = OptimConfig(),  # noqa: B008
        init_from: str | None = None,
        adapter: AdapterConfig | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.compile_blocks = compile  # the decoder layers, in configure_model
        lm = config_from(lm, LMConfig)
        adapter = config_from(adapter, AdapterConfig)
        text = config_from(text, TextConditionerConfig)
        optim = config_from(optim, OptimConfig)
        if init_from is not None:
            given = {"lm": lm, "text": text}
            self.model = start_from_directory(init_from, TextToMusicLM, given, TRAINING_OPTIONS)
            lm, text = self.model.config.lm, self.model.config.text
        else:
            self.model = TextToMusicLM(TextToMusicConfig(lm=lm, text=text))
        if adapter is not None:
            self.model.add_adapter(adapter)
            freeze_all_but_adapters(self.model)
        self.init_from = init_from
        self.adapter_base = init_from if adapter is not None else None
        # What the adapter trains over, by content: a base replaced in place is refused.
        self.adapter_base_weights = (
            base_weights_digest(self.adapter_base) if self.adapter_base is not None else None
        )
        # The resolved configs, not init_from: export and resume rebuild from these and the
        # checkpoint's weights without reading the starting directory again.
        self.save_hyperparameters(
            {
                "lm": lm.to_dict(),
                "text": text.to_dict(),
                "optim": dataclasses.asdict(optim),
                "adapter": adapter.to_dict() if adapter is not None else None,
            }
        )
        self.optim_config = optim

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.lower_frozen_base_precision()
        super().setup(stage)

    def check_data(self, data: TrainingData) -> None:
        """Stop before training when the shards' codec does not fit the LM."""
        if data.codec is None:
            return
        lm = self.model.config.lm
        found = (data.codec.num_codebooks, data.codec.cardinality)
        if found != (lm.num_levels, lm.cardinality):
            raise UserInputError(
                f"the shards hold {found[0]} codebooks of {found[1]} codes, but the model is "
                f"configured for {lm.num_levels} of {lm.cardinality}: set model.lm.num_levels "
                "and model.lm.cardinality to the codec's"
            )

    def units_per_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["padding_mask"].sum() * batch["codes"].shape[1]

    def lower_frozen_base_precision(self) -> None:
        """`adapter.frozen_dtype`: hold the frozen decoder projections in low precision for
        training. Done when fitting starts (before the model moves to its device), so
        export and generation from the run's checkpoints merge into the base as saved."""
        adapter = self.model.config.adapter
        if adapter is not None and adapter.frozen_dtype != "fp32":
            hold_frozen_projections_in(
                self.model.lm.decoder, FROZEN_BASE_DTYPES[adapter.frozen_dtype]
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.adapter_base is not None:
            checkpoint[ADAPTER_BASE_KEY] = self.adapter_base
            checkpoint[ADAPTER_BASE_WEIGHTS_KEY] = self.adapter_base_weights
            # An adapter run keeps only what trains; the base is the init_from directory.
            # Not under Lightning's weight averaging, which restores a whole-model copy.
            if not self._averaging_whole_model():
                checkpoint["state_dict"] = checkpoint_state(checkpoint["state_dict"])

    def _averaging_whole_model(self) -> bool:
        try:
            callbacks = self.trainer.callbacks
        except RuntimeError:  # saved outside a Trainer
            return False
        return any(isinstance(callback, WeightAveraging) for callback in callbacks)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """An adapter run's checkpoints hold the adapter alone, to load over the base."""
        if self.adapter_base is None or not holds_adapter_only(state_dict):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [name for name in result.missing_keys if is_adapter_parameter(name)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"adapter weights do not fit: missing {missing}, "
                f"unexpected {result.unexpected_keys}"
            )
        return result

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Before the weights load (Lightning's resume calls it first): an adapter-only
        checkpoint over a base whose weights changed since is refused."""
        super().on_load_checkpoint(checkpoint)
        self.adapter_base = checkpoint.get(ADAPTER_BASE_KEY, self.adapter_base)
        trained_over = checkpoint.get(ADAPTER_BASE_WEIGHTS_KEY)
        whole = not holds_adapter_only(checkpoint.get("state_dict", {}))
        if self.adapter_base is not None and trained_over is not None and not whole:
            # The base this task loaded was digested when it was built: compare that.
            loaded_from = self.init_from or self.adapter_base
            loaded = self.adapter_base_weights or base_weights_digest(loaded_from)
            refuse_other_base(loaded_from, trained_over, loaded, "this checkpoint")
        self.adapter_base_weights = trained_over or self.adapter_base_weights

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> Self:
        """An adapter run's checkpoint loads over the directory it started from."""
        base = checkpoint.get(ADAPTER_BASE_KEY)
        if base is not None and not Path(base, "config.json").is_file():
            raise UserInputError(
                f"this checkpoint holds a LoRA adapter over {base}, which is not a model "
                "directory any more: put the base model back there"
            )
        task = cls(**checkpoint["hyper_parameters"], init_from=base)
        task.on_load_checkpoint(checkpoint)
        task.load_state_dict(checkpoint["state_dict"])
        return task

    def export_model(self, output: Path, merge: bool = False) -> Path:
        """The whole model, or a LoRA run's adapter alone over the directory it started
        from (`merge`: folded into the base and written whole)."""
        model = self.model
        if model.config.adapter is None:
            return super().export_model(output, merge)
        if merge:
            return model.merge_adapter().save_pretrained(output)
        if self.adapter_base is None:
            raise UserInputError(
                "this adapter run did not start from a model directory (model.init_from), "
                "so there is no base to load it over: export with --merge"
            )
        return model.save_adapter(output, self.adapter_base, self.adapter_base_weights)

    def _check_batch(self, codes: torch.Tensor) -> None:
        expected = self.model.num_levels
        if codes.shape[1] != expected:
            raise ValueError(
                f"the data has {codes.shape[1]} codebooks, the model expects {expected}"
            )
        if codes.min() < 0 or codes.max() >= self.model.cardinality:
            raise ValueError(f"codes must lie in [0, {self.model.cardinality})")

    def _loss(self, batch: dict[str, Any], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        codes = batch["codes"]
        if self.global_step == 0:  # a data/model mismatch shows at once; later checks would sync
            self._check_batch(codes)
        per_token = self.model.token_losses(codes, texts)
        return masked_level_mean(per_token, batch["padding_mask"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        texts = self.dropped_captions(batch["captions"])
        loss, per_level = self._loss(batch, texts)
        stop_if_not_finite(self, loss)
        batch_size = batch["codes"].shape[0]
        self.log("train/ce", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/ppl", loss.detach().exp(), batch_size=batch_size)
        for level, value in enumerate(per_level):
            self.log(f"train/ce_q{level}", value, batch_size=batch_size)
        self.log_learning_rate(batch_size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, per_level = self._loss(batch, batch["captions"])
        batch_size = batch["codes"].shape[0]
        self.log("val/ce", loss, prog_bar=True, sync_dist=True, batch_size=batch_size)
        self.log("val/ppl", loss.exp(), sync_dist=True, batch_size=batch_size)
        for level, value in enumerate(per_level):
            self.log(f"val/ce_q{level}", value, sync_dist=True, batch_size=batch_size)
        return loss
