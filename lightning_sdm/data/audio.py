"""Read audio for the codec: decode, downmix to mono, resample, validate."""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr


def duration_text(seconds: float) -> str:
    """An amount of audio as a data summary says it: 40 s, 12.5 min, 3.20 h."""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.2g} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


class AudioRejected(Exception):
    """The file cannot become a training item; the message is the reason reported."""


@dataclass(frozen=True)
class LoadedAudio:
    samples: np.ndarray  # float32 [N], mono, at the target rate
    source_sample_rate: int
    source_channels: int
    peak: float = 0.0  # the largest absolute sample of the file as read (1.0 = full scale)

    def seconds(self, sample_rate: int) -> float:
        return self.samples.shape[0] / sample_rate


def wav_declared_frames(path: Path) -> int | None:
    """Frames the RIFF `data` chunk header declares, or None when not a readable WAV header.

    libsndfile silently shortens a truncated WAV to the bytes present, so a cut-off copy
    would pass for a shorter piece; the header still says how long it should be.
    """
    try:
        with open(path, "rb") as handle:
            if handle.read(12)[8:12] != b"WAVE":
                return None
            block_align = None
            while header := handle.read(8):
                if len(header) < 8:
                    return None
                chunk, size = header[:4], struct.unpack("<I", header[4:])[0]
                if chunk == b"fmt ":
                    block_align = struct.unpack("<HHIIH", handle.read(14))[4]
                    handle.seek(size - 14 + size % 2, 1)
                elif chunk == b"data":
                    streamed = size in (0, 0xFFFFFFFF)  # writers that never patched the size
                    return size // block_align if block_align and not streamed else None
                else:
                    handle.seek(size + size % 2, 1)
    except (OSError, struct.error):
        return None
    return None


def _check_complete(path: Path, frames: int, rate: int) -> None:
    declared = wav_declared_frames(path) if path.suffix.lower() == ".wav" else None
    if declared is None:
        try:
            declared = soundfile.info(str(path)).frames
        except Exception:  # the read already succeeded; no header length to compare with
            return
    if declared > frames + rate // 100:  # more than 10 ms missing
        raise AudioRejected(
            f"truncated: header says {declared / rate:.1f} s, data holds {frames / rate:.1f} s"
        )


def _require_readable_file(path: Path) -> None:
    """A manifest can name a file that is gone, a folder or one we may not read, where
    libsndfile would say only "System error": say which. Asked of the file's status, not
    by opening it: a named pipe or a device would block or never end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as error:
        raise AudioRejected("missing audio file (no such file)") from error
    except OSError as error:
        raise AudioRejected(f"unreadable file: {error.strerror or error}") from error
    if stat.S_ISDIR(mode):
        raise AudioRejected("a folder, not an audio file")
    if not stat.S_ISREG(mode):  # its header and its data are read apart, so it must seek
        raise AudioRejected("not a regular file (a pipe or a device): save the audio to a file")
    if not os.access(path, os.R_OK):
        raise AudioRejected("unreadable file: permission denied")


def load_mono(path: Path, sample_rate: int, min_seconds: float = 0.0) -> LoadedAudio:
    _require_readable_file(Path(path))
    try:
        data, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for corrupt files
        raise AudioRejected(f"unreadable audio: {error}") from error
    if data.shape[0] == 0:
        raise AudioRejected("zero-length audio")
    _check_complete(Path(path), data.shape[0], int(source_rate))
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
    peak = float(np.abs(data).max())
    return LoadedAudio(np.ascontiguousarray(mono), int(source_rate), int(data.shape[1]), peak)
