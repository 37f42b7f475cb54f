"""Measures of audio quality: signal-level comparisons and embedding metrics (FAD, KLD,
CLAP score) on backends loaded from local directories."""

from lightning_sdm.metrics.audio import (
    chroma_similarity,
    chromagram,
    log_mel_distance,
    pitch_clarity,
    si_snr,
)

__all__ = ["chroma_similarity", "chromagram", "log_mel_distance", "pitch_clarity", "si_snr"]
