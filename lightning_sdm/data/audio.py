"""Read audio for the codec: decode, downmix to mono, resample, validate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr


class AudioRejected(Exception):
    """The file cannot become a training item; the message is the reason reported."""


@dataclass(frozen=True)
class LoadedAudio:
    samples: np.ndarray  # float32 [N], mono, at the target rate
    source_sample_rate: int
    source_channels: int

    def seconds(self, sample_rate: int) -> float:
        return self.samples.shape[0] / sample_rate


def load_mono(path: Path, sample_rate: int, min_seconds: float = 0.0) -> LoadedAudio:
    try:
        data, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for corrupt files
        raise AudioRejected(f"unreadable audio: {error}") from error
    if data.shape[0] == 0:
        raise AudioRejected("zero-length audio")
    finite = np.isfinite(data)
    if not finite.any():
        raise AudioRejected("all-NaN audio")
    if not finite.all():
        raise AudioRejected(f"{int((~finite).sum())} non-finite samples")
    mono = data.mean(axis=1)
    if source_rate != sample_rate:
        # soxr: a real band-limited resampler (HQ), not interpolation.
        mono = soxr.resample(mono, source_rate, sample_rate, quality="HQ").astype(np.float32)
    seconds = mono.shape[0] / sample_rate
    if seconds < min_seconds:
        raise AudioRejected(f"too short: {seconds:.2f} s < {min_seconds:.2f} s")
    return LoadedAudio(np.ascontiguousarray(mono), int(source_rate), int(data.shape[1]))
