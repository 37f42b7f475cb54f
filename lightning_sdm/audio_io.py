"""Writing generated audio and the pictures that go with it."""

from __future__ import annotations

import io
import re
import unicodedata
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from lightning_sdm.atomic import write_bytes_naming


def slug(text: str, limit: int = 40) -> str:
    """A file name from a caption: its letters and digits in any script ("café-crème",
    "雨の日のピアノ"), the rest one hyphen; "sample" when nothing is left (emoji alone)."""
    words = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFC", text).lower())
    return words.strip("-")[:limit].strip("-") or "sample"


def write_wav(path: Path, wav: torch.Tensor, sample_rate: int) -> Path:
    """Peak-safe 16-bit PCM; the parent folder is created. Encoded in memory and written by
    Python, so a full disk is the system's error naming the file (libsndfile says only
    "System error")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = wav.detach().float().cpu().numpy().reshape(-1)
    encoded = io.BytesIO()
    sf.write(encoded, np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    write_bytes_naming(path, encoded.getvalue())
    return path


def spectrogram_png(
    path: Path,
    wav: torch.Tensor,
    sample_rate: int,
    title: str = "",
    n_fft: int = 1024,
    hop: int = 256,
) -> Path:
    """Log-magnitude spectrogram with axes (time in s, frequency in Hz, dB colour bar)."""
    from lightning_sdm.runs.plots import plot_spectrogram  # matplotlib only when drawing

    signal = wav.detach().float().cpu().reshape(-1)
    if signal.numel() < n_fft:
        signal = torch.nn.functional.pad(signal, (0, n_fft - signal.numel()))
    window = torch.hann_window(n_fft)
    magnitude = torch.stft(signal, n_fft, hop, window=window, return_complex=True).abs()
    decibels = 20 * torch.log10(magnitude + 1e-5)
    return plot_spectrogram(path, decibels.numpy(), sample_rate, hop, title)
