"""The LightningModule that trains an EnCodec-shaped codec (transformers' `EncodecModel`).

For the CPU demo and for catalogues the public codec serves badly. The trained model is an
ordinary `EncodecModel`: `save_pretrained` gives a directory that tokenize, the token
DataModule, generate and the sample callback load like a copy of facebook/encodec_32khz.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import EncodecConfig, EncodecModel

from lightning_sdm.codecs.config import TINY_ENCODEC_32KHZ
from lightning_sdm.codecs.discriminator import DiscriminatorConfig
from lightning_sdm.codecs.rvq import (
    QuantizedLatents,
    QuantizerTraining,
    ResidualQuantizerTrainer,
    bits_per_second,
    codebook_usage,
)
from lightning_sdm.errors import UserInputError
from lightning_sdm.local_weights import load_whole
from lightning_sdm.nn.spectral import MultiScaleMelLoss
from lightning_sdm.tasks.autoencoder_task import AudioAutoencoderTask
from lightning_sdm.tasks.configs import config_from
from lightning_sdm.tasks.optim import OptimConfig


@dataclass(frozen=True)
class CodecLosses:
    """Weights of the reconstruction terms (the quantizer's commitment weight is with it).

    Args:
        waveform_l1: L1 distance of the waveforms.
        mel: Multi-scale mel loss (L1 of mel spectrograms + squared log-mel distance).
        mel_n_ffts: STFT sizes of the mel loss.
    """

    waveform_l1: float = 0.1
    mel: float = 1.0
    mel_n_ffts: tuple[int, ...] = (256, 512, 1024, 2048)


def build_encodec(encodec_config: dict[str, Any], init_from: str | None) -> EncodecModel:
    if init_from is None:
        return EncodecModel(EncodecConfig(**encodec_config))
    path = Path(init_from)
    if not (path / "config.json").is_file():
        raise UserInputError(f"model.init_from {path} is not a saved EncodecModel directory")
    return load_whole(EncodecModel, path, "model.init_from")


class CodecTask(AudioAutoencoderTask):
    """Reconstruction, quantizer and (optionally) adversarial training of an EncodecModel.

    Args:
        encodec_config: transformers EncodecConfig fields of a new codec (sample rate,
            strides, widths, codebook size and count via target_bandwidths).
        init_from: Continue from a saved EncodecModel directory instead (its codebooks
            are kept; encodec_config is ignored).
        quantizer: k-means initialisation, EMA decay, dead-code threshold, commitment
            weight and quantiser dropout.
        losses: Weights of the waveform and multi-scale mel losses.
        discriminator: EnCodec's multi-scale STFT discriminator and feature matching; None
            trains without (the CPU setting). With it, each batch takes two optimizer
            steps, and Lightning counts both in trainer.max_steps.
        optim: AdamW and the warm-up + cosine schedule of the codec.
        seed: Seed of the k-means initialisation and dead-code replacement.
    """

    family = "codec"  # recorded in its checkpoints: a codec, not a text-to-audio model
    saved_format = "EncodecModel"  # what save_codec writes

    def __init__(
        self,
        encodec_config: dict[str, Any] | None = None,
        init_from: str | None = None,
        quantizer: QuantizerTraining = QuantizerTraining(),  # noqa: B008 - frozen dataclasses
        losses: CodecLosses = CodecLosses(),
        discriminator: DiscriminatorConfig | None = None,
        optim: OptimConfig = OptimConfig(  # noqa: B008
            lr=3e-4, betas=(0.5, 0.9), weight_decay=0.0, warmup_steps=0, min_lr_ratio=0.1
        ),
        seed: int = 0,
    ) -> None:
        encodec_config = dict(encodec_config or TINY_ENCODEC_32KHZ)
        quantizer = config_from(quantizer, QuantizerTraining)
        losses = config_from(losses, CodecLosses)
        discriminator = config_from(discriminator, DiscriminatorConfig)
        optim = config_from(optim, OptimConfig)
        super().__init__(discriminator, optim)
        self.save_hyperparameters(
            {
                "encodec_config": encodec_config,
                "init_from": init_from,
                "quantizer": dataclasses.asdict(quantizer),
                "losses": dataclasses.asdict(losses),
                "discriminator": dataclasses.asdict(discriminator) if discriminator else None,
                "optim": dataclasses.asdict(optim),
                "seed": seed,
            }
        )
        self.model = build_encodec(encodec_config, init_from)
        config = self.model.config
        if config.normalize or config.chunk_length_s is not None or config.audio_channels != 1:
            raise UserInputError(
                "the codec task trains mono EncodecModels without input normalisation or "
                "chunking (set normalize: false, chunk_length_s: null, audio_channels: 1)"
            )
        if config.codebook_dim != config.hidden_size:
            raise UserInputError(
                "EncodecModel has no projection into its codebooks: codebook_dim must equal "
                f"hidden_size ({config.codebook_dim} != {config.hidden_size})"
            )
        self.quantizer_config = quantizer
        self.losses = losses
        self.rvq = ResidualQuantizerTrainer(
            self.model.quantizer, quantizer, list(config.target_bandwidths), seed
        )
        if init_from is None:
            self.rvq.reset()  # k-means on the first batch that reaches each level
        self.mel_loss = MultiScaleMelLoss(config.sampling_rate, losses.mel_n_ffts)
        self._val_codes: list[torch.Tensor] = []

    @property
    def autoencoder(self) -> EncodecModel:
        return self.model

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / math.prod(self.model.config.upsampling_ratios)

    def reconstruct(
        self,
        wav: torch.Tensor,
        levels: int | None = None,
        update: bool = False,
        bypass: bool = False,
    ) -> tuple[torch.Tensor, QuantizedLatents]:
        """wav [B, N] -> (decoded wav [B, N], quantizer output) with `levels` levels;
        `bypass` decodes the unquantized latents (the warm-up) and leaves codebooks alone."""
        latents = self.model.encoder(wav[:, None])
        quantized = self.rvq(latents, levels or self.rvq.full_levels, update=update and not bypass)
        decoded = self.model.decoder(latents if bypass else quantized.quantized)
        return decoded[:, 0, : wav.shape[-1]], quantized

    def _mel(self, decoded: torch.Tensor, wav: torch.Tensor) -> torch.Tensor:
        if self.losses.mel > 0:
            return self.mel_loss(decoded, wav)
        with torch.no_grad():  # reported, not trained on
            return self.mel_loss(decoded, wav)

    def _reconstruction_losses(
        self,
        wav: torch.Tensor,
        decoded: torch.Tensor,
        quantized: QuantizedLatents,
        bypassed: bool = False,
    ) -> dict[str, torch.Tensor]:
        terms = {
            "l1": (decoded - wav).abs().mean(),
            "mel": self._mel(decoded, wav),
            # no commitment while the quantizer is bypassed: its codebooks are not set yet
            "commitment": quantized.commitment_loss * (0.0 if bypassed else 1.0),
        }
        terms["loss"] = (
            self.losses.waveform_l1 * terms["l1"]
            + self.losses.mel * terms["mel"]
            + self.quantizer_config.commitment_weight * terms["commitment"]
        )
        return terms

    def training_terms(self, wav: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        levels = self.rvq.sample_levels(self.global_step)
        warming_up = self.global_step < self.quantizer_config.warmup_steps
        decoded, quantized = self.reconstruct(wav, levels, update=True, bypass=warming_up)
        terms = self._reconstruction_losses(wav, decoded, quantized, warming_up)
        terms["levels"] = torch.tensor(float(levels))
        terms["replaced_codes"] = torch.tensor(float(quantized.replaced_codes))
        return decoded, terms

    def validation_terms(self, wav: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        decoded, quantized = self.reconstruct(wav)
        self._val_codes.append(quantized.codes.detach().cpu())
        return decoded, self._reconstruction_losses(wav, decoded, quantized)

    def on_validation_epoch_end(self) -> None:
        """Codebook usage on the held-out audio, and the dead codes of training."""
        if not self._val_codes:
            return
        codes = torch.cat([c.flatten(1) for c in self._val_codes], dim=1)
        self._val_codes.clear()
        cardinality = int(self.model.config.codebook_size)
        perplexities, _ = codebook_usage(codes, cardinality)
        threshold = self.quantizer_config.dead_code_threshold
        for level, perplexity in enumerate(perplexities):
            self.log(f"codebook/perplexity_q{level}", perplexity, sync_dist=True)
            sizes = self.model.quantizer.layers[level].codebook.cluster_size
            self.log(f"codebook/dead_q{level}", float((sizes < max(threshold, 1e-3)).sum()))
        self.log(
            "val/kbps", bits_per_second(self.rvq.full_levels, cardinality, self.frame_rate) / 1e3
        )

    def save_codec(self, directory: str | Path) -> Path:
        """The codec alone, as transformers' save_pretrained directory."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        return directory
