"""The CPU demo: a tiny random-weight model per pattern, saved, reloaded and sampled.

Random weights make random tokens; the demo shows the machinery (save/load, cached
decoding along each pattern's plan, guidance) and its relative speed, not music.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.generation import FRAME_RATE_HZ, generate_to_file
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.sampling import SamplingConfig
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM

DEMO_CAPTIONS = [
    "gentle piano melody in c major at 80 bpm",
    "driving electronic bass line in a minor at 128 bpm",
]
DEMO_PATTERNS = [("delay", 1), ("flat", 1), ("stack", 1), ("stack_delay", 3)]


def demo_config(pattern: str, interleave: int) -> TextToMusicConfig:
    lm = LMConfig(
        dim=64, num_layers=2, num_heads=4, ffn_dim=128, num_levels=4, cardinality=2048,
        pattern=pattern, interleave=interleave,
    )  # fmt: skip
    return TextToMusicConfig(lm=lm, text=TextConditionerConfig())


def run_demo(output_dir: str | Path, num_timesteps: int, seed: int) -> None:
    output_dir = Path(output_dir)
    transformers_logging.disable_progress_bar()  # tiny T5 saves/loads in milliseconds
    torch.manual_seed(seed)
    print(
        f"Tiny random-weight models (T={num_timesteps}, "
        f"{num_timesteps / FRAME_RATE_HZ:.1f} s at 50 Hz):"
    )
    for pattern, interleave in DEMO_PATTERNS:
        model_dir = output_dir / f"{pattern}_k{interleave}"
        TextToMusicLM(demo_config(pattern, interleave)).save_pretrained(model_dir)
        report = generate_to_file(
            model_dir, DEMO_CAPTIONS, num_timesteps, SamplingConfig(), seed, model_dir / "codes.pt"
        )
        print(f"\n[{pattern} k={interleave}] model saved to and loaded from {model_dir}")
        print(report)
    print(
        "\nThese weights are random, so the tokens are too. Train with real data and an EnCodec "
        "32 kHz checkpoint to get music; `lightning-sdm patterns table` shows every pattern's plan."
    )
