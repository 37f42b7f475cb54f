"""Real audio written by the tests: tones, chords and noise at several rates, mono and stereo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

CASES = [
    # name, sample rate, channels, seconds, kind, caption
    ("tone_16k", 16000, 1, 3.0, "tone", "a pure sine tone at 16 kHz"),
    ("chord_44k", 44100, 2, 2.5, "chord", "a c major chord, stereo"),
    ("noise_48k", 48000, 1, 2.0, "noise", "white noise burst"),
    ("chord_48k", 48000, 2, 3.5, "chord", "an a minor chord at 48 kHz"),
]


def synth(kind: str, sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    if kind == "tone":
        return 0.4 * np.sin(2 * np.pi * 440 * t)
    if kind == "chord":
        return sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    return 0.2 * np.random.default_rng(seed).standard_normal(t.shape[0])


def audio_path(folder: Path, name: str, kind: str) -> Path:
    return folder / f"{name}.flac" if kind == "noise" else folder / f"{name}.wav"


def write_case(
    folder: Path, name: str, rate: int, channels: int, seconds: float, kind: str
) -> Path:
    mono = synth(kind, rate, seconds)
    data = np.stack([mono, 0.5 * mono], axis=1) if channels == 2 else mono
    path = audio_path(folder, name, kind)
    sf.write(path, data, rate)
    return path


def make_folder(folder: Path, sidecar: str = "txt") -> dict[str, str]:
    """Writes CASES with caption sidecars; returns key -> caption."""
    folder.mkdir(parents=True, exist_ok=True)
    captions = {}
    for name, rate, channels, seconds, kind, caption in CASES:
        path = write_case(folder, name, rate, channels, seconds, kind)
        if sidecar == "txt":
            path.with_suffix(".txt").write_text(caption, encoding="utf-8")
        else:
            info = {"description": caption, "genre": "test", "bpm": 120}
            path.with_suffix(".json").write_text(json.dumps(info), encoding="utf-8")
        captions[name] = caption
    return captions
