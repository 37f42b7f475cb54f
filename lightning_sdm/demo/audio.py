"""A small music-like dataset made on the spot: melodies and chord progressions with captions.

Each clip's caption states what was synthesised (timbre, tempo, key, mode, texture), so a
model trained on it has something real to learn from text.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

NOTE_NAMES = ["c", "c#", "d", "eb", "e", "f", "f#", "g", "ab", "a", "bb", "b"]
MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]
TIMBRES = {
    "flute": "sine",
    "organ": "square",
    "strings": "saw",
    "harp": "pluck",
}
TEXTURES = ("melody", "chords")
TEMPO_WORDS = [(80, "slow"), (110, "relaxed"), (140, "lively"), (999, "fast")]


@dataclass(frozen=True)
class ClipSpec:
    timbre: str
    tonic: int  # semitones above C
    mode: str  # "major" | "minor"
    bpm: int
    texture: str  # "melody" | "chords"

    def caption(self) -> str:
        tempo = next(word for limit, word in TEMPO_WORDS if self.bpm < limit)
        texture = "melody" if self.texture == "melody" else "chord progression"
        key = f"{NOTE_NAMES[self.tonic]} {self.mode}"
        return f"a {tempo} {self.timbre} {texture} in {key} at {self.bpm} bpm"


def _oscillator(kind: str, frequency: float, t: np.ndarray) -> np.ndarray:
    phase = frequency * t
    if kind == "sine":
        return np.sin(2 * np.pi * phase)
    if kind == "square":
        return 0.6 * np.sign(np.sin(2 * np.pi * phase))
    if kind == "saw":
        return 0.6 * (2 * (phase % 1.0) - 1)
    return np.sin(2 * np.pi * phase) * np.exp(-4.0 * t)  # pluck: decaying sine


def _note(kind: str, midi: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    frequency = 440.0 * 2 ** ((midi - 69) / 12)
    envelope = np.minimum(1.0, t / 0.01) * np.minimum(1.0, (seconds - t) / 0.05).clip(0)
    return _oscillator(kind, frequency, t) * envelope


def render(spec: ClipSpec, seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    scale = MAJOR if spec.mode == "major" else MINOR
    kind = TIMBRES[spec.timbre]
    beat = 60.0 / spec.bpm
    root = 60 + spec.tonic
    out = np.zeros(int(seconds * rate))
    position = 0.0
    degree = 0
    while position < seconds:
        length = min(beat * (2 if spec.texture == "chords" else 1), seconds - position)
        if spec.texture == "melody":
            degree = int(np.clip(degree + rng.integers(-2, 3), -3, 9))
            octave, step = divmod(degree, 7)
            pitches = [root + 12 * octave + scale[step]]
        else:
            step = int(rng.choice([0, 3, 4, 5]))  # I, IV, V, vi
            pitches = [root + scale[(step + i) % 7] + 12 * ((step + i) // 7) for i in (0, 2, 4)]
        start = int(position * rate)
        for pitch in pitches:
            note = _note(kind, pitch, length, rate) / len(pitches)
            out[start : start + note.shape[0]] += note
        position += length
    return (0.5 * out / max(1e-6, float(np.abs(out).max()))).astype(np.float32)


def clip_specs(count: int, rng: np.random.Generator) -> list[ClipSpec]:
    """Every (instrument, mode, texture) combination equally often, in a shuffled order, so
    no caption word predicts another: a prompt like "an organ melody in a minor" is then
    in distribution, and the model has to read each word."""
    combinations = list(itertools.product(sorted(TIMBRES), ("major", "minor"), TEXTURES))
    order: list[tuple[str, str, str]] = []
    while len(order) < count:
        order.extend(combinations[i] for i in rng.permutation(len(combinations)))
    return [
        ClipSpec(
            timbre=timbre,
            tonic=int(rng.integers(0, 12)),
            mode=mode,
            bpm=int(rng.integers(70, 160)),
            texture=texture,
        )
        for timbre, mode, texture in order[:count]
    ]


def write_demo_clips(
    folder: Path, count: int, seconds: float = 6.0, rate: int = 32000, seed: int = 0
) -> int:
    """Write `count` clips with .txt captions into `folder`; returns how many were written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index, spec in enumerate(clip_specs(count, rng)):
        stem = folder / f"clip{index:04d}"
        sf.write(stem.with_suffix(".wav"), render(spec, seconds, rate, rng), rate)
        stem.with_suffix(".txt").write_text(spec.caption(), encoding="utf-8")
    return count


def ensure_demo_clips(folder: Path, count: int, seconds: float = 6.0) -> int:
    """Synthesise the demo's clips into `folder` unless it already holds audio; returns how
    many were written (0 when kept)."""
    if folder.is_dir() and any(folder.glob("*.wav")):
        return 0
    return write_demo_clips(folder, count, seconds)


def kind_of_caption(caption: str) -> tuple[str, str] | None:
    """(instrument, texture) a demo caption names, e.g. ("harp", "melody"); None for others."""
    words = caption.lower().split()
    timbre = next((t for t in TIMBRES if t in words), None)
    texture = "chords" if "chord" in words else "melody" if "melody" in words else None
    return (timbre, texture) if timbre and texture else None
