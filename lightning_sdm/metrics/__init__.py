"""Measures of audio quality: signal-level comparisons (here) and, later, embedding metrics."""

from lightning_sdm.metrics.audio import (
    chroma_similarity,
    chromagram,
    log_mel_distance,
    pitch_clarity,
    si_snr,
)

__all__ = ["chroma_similarity", "chromagram", "log_mel_distance", "pitch_clarity", "si_snr"]
