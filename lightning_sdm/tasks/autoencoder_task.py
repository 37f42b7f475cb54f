"""What every audio autoencoder's training shares (the EnCodec codec, the waveform VAE): the
data's sample rate checked, an optional multi-scale STFT discriminator with its own
optimizer, the held-out measures (SI-SNR, mel distance, chroma similarity), the family
recorded in checkpoints, and the model saved as a directory at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from lightning_sdm.codecs.discriminator import (
    DiscriminatorConfig,
    MultiScaleSTFTDiscriminator,
    discriminator_hinge_loss,
    generator_losses,
)
from lightning_sdm.errors import UserInputError
from lightning_sdm.metrics.audio import chroma_similarity, log_mel_distance, si_snr
from lightning_sdm.models.saving import FAMILY_KEY
from lightning_sdm.tasks.optim import (
    OptimConfig,
    build_optimizer,
    keep_optimizers_clippable,
    trainer_allows_fused,
)

Terms = dict[str, torch.Tensor]
_TASKS: dict[str, type[AudioAutoencoderTask]] = {}


class AudioAutoencoderTask(L.LightningModule):
    """Subclasses give `autoencoder` (the trained module), `sample_rate`, `training_terms`,
    `validation_terms` and `save_codec`; `family` names them in checkpoints."""

    family: ClassVar[str]
    saved_format: ClassVar[str]  # what `save_codec` writes, for the run's summary

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _TASKS[cls.family] = cls

    def __init__(self, discriminator: DiscriminatorConfig | None, optim: OptimConfig) -> None:
        super().__init__()
        self.optim_config = optim
        self.discriminator_config = discriminator
        self.discriminator = (
            MultiScaleSTFTDiscriminator(discriminator) if discriminator is not None else None
        )
        # Two optimizers (autoencoder, discriminator) take turns: stepped by hand.
        self.automatic_optimization = discriminator is None

    @property
    def autoencoder(self) -> nn.Module:
        raise NotImplementedError

    @property
    def sample_rate(self) -> int:
        raise NotImplementedError

    def training_terms(self, wav: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        """wav [B, N] -> (decoded [B, N], named terms; "loss" is what trains)."""
        raise NotImplementedError

    def validation_terms(self, wav: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        raise NotImplementedError

    def save_codec(self, directory: str | Path) -> Path:
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[FAMILY_KEY] = self.family

    def setup(self, stage: str) -> None:
        """Stop before training when the data's sample rate is not the model's."""
        datamodule = getattr(self.trainer, "datamodule", None)
        rate = getattr(datamodule, "sample_rate", None)
        if rate is not None and int(rate) != self.sample_rate:
            raise UserInputError(
                f"data.sample_rate is {rate} but the {self.family} runs at {self.sample_rate} "
                "Hz: set data.sample_rate to the model's"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        wav = batch["audio"]
        decoded, terms = self.training_terms(wav)
        if self.discriminator is not None:
            terms.update(self._adversarial_step(wav, decoded, terms["loss"]))
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=wav.shape[0])
        return terms["loss"]

    def _adversarial_step(
        self, wav: torch.Tensor, decoded: torch.Tensor, reconstruction: torch.Tensor
    ) -> Terms:
        """One discriminator step, then the autoencoder's step with the adversarial terms."""
        assert self.discriminator is not None and self.discriminator_config is not None
        autoencoder_optimizer, discriminator_optimizer = self.optimizers()
        d_loss = discriminator_hinge_loss(
            self.discriminator(wav), self.discriminator(decoded.detach())
        )
        discriminator_optimizer.zero_grad()
        self.manual_backward(d_loss)
        discriminator_optimizer.step()
        adversarial, matching = generator_losses(
            self.discriminator(wav), self.discriminator(decoded)
        )
        total = (
            reconstruction
            + self.discriminator_config.adversarial_weight * adversarial
            + self.discriminator_config.feature_weight * matching
        )
        autoencoder_optimizer.zero_grad()
        self.manual_backward(total)
        autoencoder_optimizer.step()
        schedule = self.lr_schedulers()
        schedule = schedule[0] if isinstance(schedule, list) else schedule
        schedule.step()
        return {
            "discriminator": d_loss.detach(),
            "adversarial": adversarial.detach(),
            "feature_matching": matching.detach(),
            "loss": total.detach(),
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        wav, lengths = batch["audio"], batch["lengths"]
        decoded, terms = self.validation_terms(wav)
        size = wav.shape[0]
        self.log("val/loss", terms["loss"], sync_dist=True, batch_size=size)
        measures: dict[str, list[torch.Tensor]] = {
            "val/si_snr_db": [], "val/mel_distance_db": [], "val/chroma_similarity": []
        }  # fmt: skip
        rate = self.sample_rate
        for index, length in enumerate(lengths.tolist()):
            estimate, target = decoded[index, :length], wav[index, :length]
            measures["val/si_snr_db"].append(si_snr(estimate, target)[0])
            measures["val/mel_distance_db"].append(log_mel_distance(estimate, target, rate)[0])
            measures["val/chroma_similarity"].append(chroma_similarity(estimate, target, rate)[0])
        for name, values in measures.items():
            shown = name == "val/si_snr_db"  # on the progress line
            self.log(
                name, torch.stack(values).mean(), sync_dist=True, batch_size=size, prog_bar=shown
            )

    def on_train_start(self) -> None:
        keep_optimizers_clippable(self.trainer)  # after a checkpoint restored its optimizer

    def configure_optimizers(self) -> Any:
        total = int(self.trainer.estimated_stepping_batches)
        fused = trainer_allows_fused(self.trainer)
        optimizer, schedule = build_optimizer(self.autoencoder, self.optim_config, total, fused)
        step = {"scheduler": schedule, "interval": "step"}
        if self.discriminator is None:
            return {"optimizer": optimizer, "lr_scheduler": step}
        assert self.discriminator_config is not None
        discriminator_optimizer = torch.optim.Adam(
            self.discriminator.parameters(),
            lr=self.discriminator_config.lr,
            betas=self.discriminator_config.betas,
        )
        return [optimizer, discriminator_optimizer], [step]


def autoencoder_task_named(family: str) -> type[AudioAutoencoderTask] | None:
    """The autoencoder task whose checkpoints record `family` (None: not an autoencoder's)."""
    import lightning_sdm.tasks.codec_task
    import lightning_sdm.tasks.vae_task  # noqa: F401

    return _TASKS.get(family)


def export_autoencoder(checkpoint: dict[str, Any], output: str | Path) -> Path | None:
    """An autoencoder task's checkpoint as its model directory (EMA weights where the
    checkpoint keeps them in its state); None when the checkpoint is not one."""
    from lightning_sdm.families import checkpoint_family_name

    task_class = autoencoder_task_named(checkpoint_family_name(checkpoint))
    if task_class is None:
        return None
    task = task_class(**checkpoint["hyper_parameters"])
    task.load_state_dict(checkpoint["state_dict"])
    return task.save_codec(output)
