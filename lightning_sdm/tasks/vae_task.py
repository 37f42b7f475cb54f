"""The LightningModule that trains a waveform VAE (diffusers' `AutoencoderOobleck`): the
latent space of the EzAudio family, trained on a catalogue as the codec task trains EnCodec.

Reconstruction is a multi-resolution STFT loss (spectral convergence + log magnitude) and a
multi-scale mel loss on a sample of the posterior; the KL term to a unit Gaussian keeps
the latents smooth and at a known scale, which diffusion needs. The result is an ordinary
AutoencoderOobleck directory that tokenize and the diffusion family load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_sdm.codecs.discriminator import DiscriminatorConfig
from lightning_sdm.codecs.waveform_vae import (
    TINY_VAE_32KHZ,
    build_oobleck,
    decode_to_length,
    hop_length,
    in_saved_form,
    load_oobleck,
    with_copyable_weight_norms,
)
from lightning_sdm.errors import UserInputError
from lightning_sdm.nn.spectral import MultiScaleMelLoss, stft_magnitude
from lightning_sdm.tasks.autoencoder_task import AudioAutoencoderTask, Terms
from lightning_sdm.tasks.configs import config_from
from lightning_sdm.tasks.optim import OptimConfig


@dataclass(frozen=True)
class VAELosses:
    """Weights of the VAE's terms.

    Args:
        stft: Multi-resolution STFT loss (spectral convergence + L1 of log magnitudes).
        stft_n_ffts: Its STFT sizes (hop a quarter of each).
        mel: Multi-scale mel loss (L1 of mel spectrograms + squared log-mel distance).
        mel_n_ffts: STFT sizes of the mel loss.
        waveform_l1: L1 distance of the waveforms.
        kl: Weight of the KL divergence to N(0, I), per latent value (Stable Audio: 1e-4).
    """

    stft: float = 1.0
    stft_n_ffts: tuple[int, ...] = (256, 512, 1024, 2048)
    mel: float = 1.0
    mel_n_ffts: tuple[int, ...] = (256, 512, 1024, 2048)
    waveform_l1: float = 0.0
    kl: float = 1e-4

    def __post_init__(self) -> None:
        weights = {"stft": self.stft, "mel": self.mel, "waveform_l1": self.waveform_l1}
        if min(weights.values()) < 0 or self.kl < 0:
            raise UserInputError(f"VAE loss weights must be >= 0, got {dataclasses.asdict(self)}")
        if not any(weights.values()):
            raise UserInputError("the VAE needs a reconstruction loss: stft, mel or waveform_l1")


def multi_resolution_stft_loss(
    estimate: torch.Tensor, target: torch.Tensor, n_ffts: tuple[int, ...]
) -> torch.Tensor:
    """Mean over resolutions of spectral convergence (relative Frobenius error of the
    magnitudes) plus the L1 distance of log magnitudes (Yamamoto et al., 2020)."""
    total = estimate.new_zeros(())
    for n_fft in n_ffts:
        estimated = stft_magnitude(estimate, n_fft, n_fft // 4)
        wanted = stft_magnitude(target, n_fft, n_fft // 4)
        convergence = torch.linalg.norm(wanted - estimated) / torch.linalg.norm(wanted).clamp(
            min=1e-7
        )
        log_distance = torch.log(wanted.clamp(min=1e-5)) - torch.log(estimated.clamp(min=1e-5))
        total = total + convergence + log_distance.abs().mean()
    return total / len(n_ffts)


class WaveformVAETask(AudioAutoencoderTask):
    """Reconstruction, KL and (optionally) adversarial training of an AutoencoderOobleck.

    Args:
        vae_config: diffusers AutoencoderOobleck fields of a new VAE: sampling_rate,
            downsampling_ratios (their product is the hop: 640 at 32 kHz = 50 Hz),
            decoder_input_channels (the latent channels), widths. Mono only.
        init_from: Continue from a saved AutoencoderOobleck directory instead (vae_config
            is then ignored).
        losses: Weights of the STFT, mel, waveform and KL terms.
        discriminator: EnCodec's multi-scale STFT discriminator and feature matching; None
            trains without (the CPU setting). With it, each batch takes two optimizer
            steps, and Lightning counts both in trainer.max_steps.
        optim: AdamW and the warm-up + cosine schedule of the VAE.
    """

    family = "waveform_vae"
    saved_format = "AutoencoderOobleck"  # what save_codec writes

    def __init__(
        self,
        vae_config: dict[str, Any] | None = None,
        init_from: str | None = None,
        losses: VAELosses = VAELosses(),
        discriminator: DiscriminatorConfig | None = None,
        optim: OptimConfig = OptimConfig(  # noqa: B008
            lr=1e-4, betas=(0.8, 0.99), weight_decay=0.0, warmup_steps=0, min_lr_ratio=0.1
        ),
    ) -> None:
        vae_config = dict(vae_config or TINY_VAE_32KHZ)
        losses = config_from(losses, VAELosses)
        discriminator = config_from(discriminator, DiscriminatorConfig)
        optim = config_from(optim, OptimConfig)
        super().__init__(discriminator, optim)
        self.save_hyperparameters(
            {
                "vae_config": vae_config,
                "init_from": init_from,
                "losses": dataclasses.asdict(losses),
                "discriminator": dataclasses.asdict(discriminator) if discriminator else None,
                "optim": dataclasses.asdict(optim),
            }
        )
        try:
            model = load_oobleck(init_from) if init_from else build_oobleck(vae_config)
        except (OSError, ValueError, TypeError) as error:
            where = f"model.init_from {init_from}" if init_from else "model.vae_config"
            raise UserInputError(f"{where}: {error}") from error
        self.model = with_copyable_weight_norms(model)
        self.losses = losses
        self.mel_loss = MultiScaleMelLoss(self.sample_rate, losses.mel_n_ffts)

    @property
    def autoencoder(self) -> nn.Module:
        return self.model

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / hop_length(self.model)

    def _whole_frames(self, wav: torch.Tensor) -> torch.Tensor:
        """Crops are cut to whole frames (the decoder gives back frames x hop samples)."""
        hop = hop_length(self.model)
        usable = wav.shape[-1] // hop * hop
        if usable == 0:
            raise UserInputError(
                f"audio crops of {wav.shape[-1]} samples are shorter than one VAE frame "
                f"({hop} samples)"
            )
        return wav[..., :usable]

    def _terms(self, wav: torch.Tensor, sample: bool) -> tuple[torch.Tensor, Terms]:
        posterior = self.model.encode(wav[:, None]).latent_dist
        latents = posterior.sample() if sample else posterior.mean
        decoded = decode_to_length(self.model, latents)
        # KL per latent value (diffusers sums over channels and averages over the rest).
        kl = posterior.kl() / latents.shape[1]
        terms: Terms = {"kl": kl, "latent_std": posterior.mean.detach().std()}
        if self.losses.stft:
            terms["stft"] = multi_resolution_stft_loss(decoded, wav, self.losses.stft_n_ffts)
        terms["mel"] = self.mel_loss(decoded, wav)
        terms["l1"] = (decoded - wav).abs().mean()
        terms["loss"] = (
            self.losses.stft * terms.get("stft", kl.new_zeros(()))
            + self.losses.mel * terms["mel"]
            + self.losses.waveform_l1 * terms["l1"]
            + self.losses.kl * kl
        )
        return decoded, terms

    def training_terms(self, wav: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        wav = self._whole_frames(wav)
        return self._terms(wav, sample=True)

    def validation_terms(self, wav: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        """The posterior mean, as tokenize encodes and the diffusion model sees it."""
        cropped = self._whole_frames(wav)
        decoded, terms = self._terms(cropped, sample=False)
        padded = torch.nn.functional.pad(decoded, (0, wav.shape[-1] - cropped.shape[-1]))
        return padded, terms

    def save_codec(self, directory: str | Path) -> Path:
        """The VAE alone, as diffusers' save_pretrained directory."""
        directory = Path(directory)
        in_saved_form(self.model).save_pretrained(directory)
        return directory
