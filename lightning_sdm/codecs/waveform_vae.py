"""A waveform VAE (diffusers' `AutoencoderOobleck`, Stable Audio's architecture): the latent
space of the EzAudio family. Continuous latents only, no codes.

Encoding gives the posterior's mean (what a diffusion model trains on); decoding maps
latents back to audio. The saved directory is diffusers' own `save_pretrained` layout.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.codecs.chunking import encode_in_chunks
from lightning_sdm.codecs.identity import CodecIdentity, weights_fingerprint
from lightning_sdm.local_weights import load_whole

# Shaped like a 32 kHz, 50 Hz VAE (hop 640) but tiny: for tests and the CPU demo.
# Oobleck's encoder ends in 2 x latent channels (the posterior's mean and scale), and its
# first width is that same number: encoder_hidden_size = 2 x decoder_input_channels.
TINY_VAE_32KHZ: dict[str, Any] = {
    "encoder_hidden_size": 32,
    "downsampling_ratios": [2, 4, 4, 5, 4],
    "channel_multiples": [1, 2, 2, 4, 4],
    "decoder_channels": 8,
    "decoder_input_channels": 16,
    "audio_channels": 1,
    "sampling_rate": 32000,
}
# EzAudio's latent space for real catalogues: 128 channels at 50 Hz from 32 kHz mono.
VAE_32KHZ_128: dict[str, Any] = {
    "encoder_hidden_size": 256,
    "downsampling_ratios": [2, 4, 4, 5, 4],
    "channel_multiples": [1, 2, 4, 4, 8],
    "decoder_channels": 128,
    "decoder_input_channels": 128,
    "audio_channels": 1,
    "sampling_rate": 32000,
}
VAE_CLASS_NAME = "AutoencoderOobleck"  # what diffusers writes as `_class_name`


def build_oobleck(config: dict[str, Any]) -> nn.Module:
    """A new AutoencoderOobleck (mono only)."""
    from diffusers import AutoencoderOobleck

    if int(config.get("audio_channels", 2)) != 1:
        raise ValueError("only mono waveform VAEs are supported (audio_channels: 1)")
    latent, hidden = (
        config.get("decoder_input_channels", 64),
        config.get("encoder_hidden_size", 128),
    )
    if 2 * int(latent) != int(hidden):
        raise ValueError(
            f"encoder_hidden_size ({hidden}) must be twice decoder_input_channels ({latent}): "
            "the encoder's output holds the latents' mean and scale"
        )
    with warnings.catch_warnings():  # diffusers builds it with the older weight_norm API
        warnings.simplefilter("ignore", FutureWarning)
        return AutoencoderOobleck(**config)


def load_oobleck(directory: str | Path) -> nn.Module:
    """A saved AutoencoderOobleck from a local directory (nothing is downloaded)."""
    from diffusers import AutoencoderOobleck

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = load_whole(AutoencoderOobleck, Path(directory), "waveform VAE directory")
    if int(model.config.audio_channels) != 1:
        raise ValueError(f"{directory}: only mono waveform VAEs are supported")
    return model


def with_copyable_weight_norms(model: nn.Module) -> nn.Module:
    """The model with its weight norms as parametrizations, in place. diffusers builds them
    with the older `weight_norm`, whose computed weights cannot be deep-copied, which the
    EMA callbacks do; the function computed is the same."""
    from torch.nn.utils import parametrizations, remove_weight_norm

    for module in model.modules():
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            remove_weight_norm(module)
            parametrizations.weight_norm(module)
    return model


def in_saved_form(model: nn.Module) -> nn.Module:
    """A copy with the older weight norms back (weight_g, weight_v): the parameter names
    diffusers' AutoencoderOobleck loads."""
    import copy

    from torch.nn.utils import parametrize, weight_norm

    saved = copy.deepcopy(model)
    for module in saved.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                weight_norm(module)
    return saved


def architecture(model: nn.Module) -> dict[str, Any]:
    """The AutoencoderOobleck fields that build `model` (diffusers' own keys left out)."""
    return {key: value for key, value in dict(model.config).items() if not key.startswith("_")}


def hop_length(model: nn.Module) -> int:
    return int(math.prod(model.config.downsampling_ratios))


def decode_to_length(model: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """latents [B, D, T] -> wav [B, T * hop]. Oobleck's transposed convolutions drop one
    sample per odd stride; the end is padded back so frames and samples stay aligned."""
    wav = model.decode(latents).sample[:, 0]
    expected = latents.shape[-1] * hop_length(model)
    if wav.shape[-1] < expected:
        wav = F.pad(wav, (0, expected - wav.shape[-1]))
    return wav[..., :expected]


class WaveformVAE(nn.Module):
    """A trained waveform VAE used as the diffusion family's codec: `encode_latents`,
    `decode_latents`, its rates and an identity shards record."""

    def __init__(self, model: nn.Module, pretrained: str | None = None) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.pretrained = pretrained
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> WaveformVAE:
        return cls(load_oobleck(directory), str(Path(directory).resolve()))

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        return hop_length(self.model)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def latent_dim(self) -> int:
        return int(self.model.config.decoder_input_channels)

    @property
    def num_codebooks(self) -> int:
        return 0  # latents only: no token grid for a codebook LM

    @property
    def cardinality(self) -> int:
        return 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    def fingerprint(self) -> str:
        """A hash of the weights (made once): two VAEs never pass for one another."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def identity(self) -> CodecIdentity:
        """No codebooks (0 x 0): latents are all a VAE gives."""
        return CodecIdentity(
            sample_rate=self.sample_rate,
            frame_rate=self.frame_rate,
            num_codebooks=self.num_codebooks,
            cardinality=self.cardinality,
            latent_dim=self.latent_dim,
            weights_sha256=self.fingerprint(),
            pretrained=self.pretrained,
        )

    @torch.no_grad()
    def encode_latents(
        self,
        wav: torch.Tensor,
        before_chunk: Callable[[], None] | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 1.0,
    ) -> torch.Tensor:
        """wav [B, N] (mono, the VAE's rate) -> posterior means [B, D, ceil(N / hop)],
        encoded in chunks with context on both sides (the encoder's activations of a
        whole track would not fit); `before_chunk` runs before each (a stop request
        raises from it)."""
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2:
            raise ValueError(f"expected mono audio [B, N], got shape {tuple(wav.shape)}")
        hop = self.hop_length

        def encode_window(window: torch.Tensor) -> tuple[torch.Tensor]:
            padded = F.pad(window, (0, -window.shape[-1] % hop))  # whole frames
            return (self.model.encode(padded[:, None]).latent_dist.mean,)

        rate = self.sample_rate
        (latents,) = encode_in_chunks(
            wav.to(self.device, torch.float32), hop, int(chunk_seconds * rate),
            int(context_seconds * rate), encode_window, before_chunk,
        )  # fmt: skip
        return latents

    @torch.no_grad()
    def encode_with_latents(
        self,
        wav: torch.Tensor,
        keep_latents: bool = True,
        before_chunk: Callable[[], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The codec interface: (codes [B, 0, T], no codebooks; latents [B, D, T]). A VAE
        has nothing but latents, so `keep_latents=False` is refused."""
        if not keep_latents:
            raise ValueError("a waveform VAE gives latents only: tokenize it with --latents")
        latents = self.encode_latents(wav, before_chunk)
        codes = torch.zeros(latents.shape[0], 0, latents.shape[-1], dtype=torch.long)
        return codes.to(latents.device), latents

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, D, T] -> wav [B, T * hop] at the VAE's rate."""
        if latents.dim() != 3 or latents.shape[1] != self.latent_dim:
            raise ValueError(
                f"expected latents [B, {self.latent_dim}, T], got shape {tuple(latents.shape)}"
            )
        return decode_to_length(self.model, latents.to(self.device, torch.float32))

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(Path(directory))

    display_name = "waveform VAE"
    random_audio_kind = "random latents through the VAE"

    def round_trip(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, N] -> the posterior mean, decoded, [B, N]."""
        return self.decode_latents(self.encode_latents(wav))[:, : wav.shape[-1]]

    def random_like(self) -> WaveformVAE:
        """A VAE of this architecture with random weights (seed with torch first)."""
        return WaveformVAE(build_oobleck(architecture(self.model)))

    def random_audio(
        self, count: int, frames: int, generator: torch.Generator, reference: torch.Tensor
    ) -> torch.Tensor:
        """[count, frames x hop]: Gaussian latents with the per-channel mean and spread of
        `reference` audio's latents [B, N], decoded."""
        real = self.encode_latents(reference)
        mean = real.mean(dim=(0, 2))[None, :, None]
        spread = real.std(dim=(0, 2))[None, :, None]
        noise = torch.randn(count, self.latent_dim, frames, generator=generator)
        return self.decode_latents(mean.cpu() + spread.cpu() * noise)
