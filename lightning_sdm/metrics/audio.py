"""Signal-level measures of reconstructions and generations, on waveforms [B, N] or [N].

SI-SNR and the multi-scale mel distance say how close a reconstruction is to its source;
chroma similarity whether it keeps the notes; pitch clarity whether audio is pitched at all
(a tone concentrates its chroma in one pitch class, noise spreads it over twelve).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lightning_sdm.nn.spectral import MelSpectrogram, stft_magnitude

CHROMA_RANGE_HZ = (55.0, 4200.0)  # A1 to about C8: where the demo's and most music's pitch is


def _batch(wav: torch.Tensor) -> torch.Tensor:
    return wav.float()[None] if wav.dim() == 1 else wav.float()


def si_snr(estimate: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant signal-to-noise ratio in dB, per item."""
    estimate, target = _batch(estimate), _batch(target)
    length = min(estimate.shape[-1], target.shape[-1])
    estimate = estimate[..., :length] - estimate[..., :length].mean(-1, keepdim=True)
    target = target[..., :length] - target[..., :length].mean(-1, keepdim=True)
    scale = (estimate * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps)
    projection = scale * target
    noise = estimate - projection
    return 10 * torch.log10((projection.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def log_mel_distance(
    estimate: torch.Tensor,
    target: torch.Tensor,
    sample_rate: int,
    n_ffts: Sequence[int] = (512, 1024, 2048),
    n_mels: int = 64,
) -> torch.Tensor:
    """Mean absolute difference of log-mel spectrograms in dB, averaged over STFT sizes;
    both floored 80 dB below the target's loudest band, so silence compares as equal."""
    estimate, target = _batch(estimate), _batch(target)
    length = min(estimate.shape[-1], target.shape[-1])
    distances = []
    for n_fft in n_ffts:
        mel = MelSpectrogram(sample_rate, n_fft, n_fft // 4, n_mels).to(estimate.device)
        a = 10 * torch.log10(mel(estimate[..., :length]) + 1e-12)
        b = 10 * torch.log10(mel(target[..., :length]) + 1e-12)
        floor = b.amax(dim=(-2, -1), keepdim=True) - 80
        distances.append((a.maximum(floor) - b.maximum(floor)).abs().mean(dim=(-2, -1)))
    return torch.stack(distances).mean(0)


def chromagram(wav: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(chroma [B, 12, frames] of summed power per pitch class (C = 0), frame power [B, frames]).

    A window of about a quarter second resolves semitones down to the range's low end.
    """
    wav = _batch(wav)
    n_fft = 2 ** math.ceil(math.log2(sample_rate / 4))
    power = stft_magnitude(wav, n_fft, n_fft // 4).pow(2)
    frequencies = torch.arange(power.shape[-2], device=wav.device) * sample_rate / n_fft
    low, high = CHROMA_RANGE_HZ
    inside = (frequencies >= low) & (frequencies <= min(high, sample_rate / 2))
    semitones = torch.round(12 * torch.log2(frequencies[inside] / 440.0)).long() + 9
    classes = torch.nn.functional.one_hot(semitones % 12, 12).float()  # [bins, 12]
    chroma = torch.einsum("bft,fc->bct", power[:, inside], classes)
    return chroma, power.sum(-2)


def _active(frame_power: torch.Tensor, below_peak_db: float = 40.0) -> torch.Tensor:
    """Frames within `below_peak_db` of the loudest frame of their item (not silence)."""
    peak = frame_power.amax(-1, keepdim=True)
    return (frame_power > peak * 10 ** (-below_peak_db / 10)) & (frame_power > 1e-10)


def chroma_similarity(
    estimate: torch.Tensor, target: torch.Tensor, sample_rate: int
) -> torch.Tensor:
    """Mean cosine of the two chromagrams over the target's non-silent frames, per item."""
    estimate, target = _batch(estimate), _batch(target)
    length = min(estimate.shape[-1], target.shape[-1])
    a, _ = chromagram(estimate[..., :length], sample_rate)
    b, power = chromagram(target[..., :length], sample_rate)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
    active = _active(power).float()
    return (cosine * active).sum(-1) / active.sum(-1).clamp(min=1)


def pitch_clarity(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Chroma peak-to-mean ratio over non-silent frames, per item: 12 for one pitch class,
    about 3 for a triad of pure tones, near 1 for noise."""
    chroma, power = chromagram(wav, sample_rate)
    ratio = chroma.amax(1) / chroma.mean(1).clamp(min=1e-12)
    active = _active(power).float()
    return (ratio * active).sum(-1) / active.sum(-1).clamp(min=1)
