"""Two systems' generated folders as generate writes them: a wav and a JSON sidecar each."""

import json
from pathlib import Path

import numpy as np
import soundfile

PROMPTS = ["calm piano", "fast drums", "warm strings", "slow organ", "bright flute"]


def write_system(folder: Path, prompts: list[str], frequency: float, rate: int = 16000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.5 * rate)) / rate
    for index, prompt in enumerate(prompts):
        name = f"{index:02d}-{prompt.replace(' ', '-')}"
        tone = 0.3 * np.sin(2 * np.pi * (frequency + 20 * index) * t)
        soundfile.write(folder / f"{name}.wav", tone, rate)
        (folder / f"{name}.json").write_text(json.dumps({"prompt": prompt, "seed": index}))
    return folder


def two_systems(root: Path, prompts: list[str] = PROMPTS) -> tuple[Path, Path]:
    return (
        write_system(root / "delay", prompts, 220.0),
        write_system(root / "stack_delay", list(reversed(prompts)), 440.0),
    )
