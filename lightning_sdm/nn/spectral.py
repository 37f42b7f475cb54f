"""Spectral views of waveforms: STFT magnitudes, mel spectrograms and the multi-scale mel loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.audio_utils import mel_filter_bank


def stft_magnitude(
    wav: torch.Tensor, n_fft: int, hop: int, normalized: bool = False
) -> torch.Tensor:
    """wav [..., N] -> magnitude [..., n_fft // 2 + 1, frames] (Hann window, centred);
    `normalized` divides by sqrt(n_fft), so scales compare at one loudness."""
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1]).float()
    if flat.shape[-1] < n_fft:
        flat = nn.functional.pad(flat, (0, n_fft - flat.shape[-1]))
    window = torch.hann_window(n_fft, device=wav.device)
    spec = torch.stft(
        flat, n_fft, hop, window=window, normalized=normalized, return_complex=True
    ).abs()
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


class MelSpectrogram(nn.Module):
    """Mel spectrogram with the Slaney filterbank from transformers (the librosa default)."""

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop: int,
        n_mels: int,
        power: float = 2.0,
        normalized: bool = False,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop, self.power, self.normalized = n_fft, hop, power, normalized
        filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=sample_rate / 2,
            sampling_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("filters", torch.tensor(filters, dtype=torch.float32).T, False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [..., N] -> mel spectrogram [..., n_mels, frames] (power 2: energy)."""
        spec = stft_magnitude(wav, self.n_fft, self.hop, self.normalized).pow(self.power)
        return torch.einsum("mf,...ft->...mt", self.filters, spec)


class MultiScaleMelLoss(nn.Module):
    """EnCodec's reconstruction loss in frequency: at several STFT sizes, the L1 distance of
    mel magnitudes plus the L1 distance of their logs, averaged over scales.

    Large windows resolve pitch, small ones transients; together they pin down both. The
    STFT is normalised so every scale weighs the same for the same sound.
    """

    def __init__(
        self,
        sample_rate: int,
        n_ffts: Sequence[int] = (256, 512, 1024, 2048),
        n_mels: int = 64,
        floor: float = 1e-5,
    ) -> None:
        super().__init__()
        self.floor = floor
        self.scales = nn.ModuleList(
            MelSpectrogram(
                sample_rate, n_fft, n_fft // 4, min(n_mels, n_fft // 8), power=1.0, normalized=True
            )
            for n_fft in n_ffts
        )

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = estimate.new_zeros((), dtype=torch.float32)
        for mel in self.scales:
            a, b = mel(estimate), mel(target)
            total = total + (a - b).abs().mean()
            log_a, log_b = a.clamp(min=self.floor).log10(), b.clamp(min=self.floor).log10()
            total = total + (log_a - log_b).abs().mean()
        return total / len(self.scales)
