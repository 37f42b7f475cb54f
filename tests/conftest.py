import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from transformers.utils import logging as transformers_logging

from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM

os.environ.setdefault("WANDB_MODE", "offline")
# As `lightning-sdm` runs for users (`quiet.py`): transformers' save and load bars off in
# every test, not only after some CLI test ran in the same worker (captured output checks).
transformers_logging.disable_progress_bar()
os.environ["LIGHTNING_SDM_CACHE"] = "off"  # no measured choice kept in the home folder
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the cores: one thread each, their subprocesses too, so neither
    # oversubscribes them (OpenMP threads spinning against each other).
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=40
)
settings.load_profile("default")


@pytest.fixture(autouse=True)
def pack_even_tiny_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding packs a weight shape only where a measurement finds packing faster; the
    tests' tiny models would rarely take that path, which real models decode through on
    many CPUs: here "auto" packs every shape."""
    from lightning_sdm.nn import packed_linear

    def pack_all(weights: list[torch.Tensor], rows: int) -> dict[str, str]:
        return {packed_linear.shape_name(weight): "packed" for weight in weights}

    monkeypatch.setattr(packed_linear, "fastest_paths", pack_all)


@pytest.fixture
def packed_layer_counts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many weights each decoding call packed, one entry per call that packed any."""
    from lightning_sdm.nn import cached_decoding, packed_linear

    counts: list[int] = []
    original = cached_decoding.projections_for

    def spy(pairs, rows, paths, *rest):
        packed = sum(paths.get(packed_linear.shape_name(weight)) == "packed" for weight, _ in pairs)
        if packed:
            counts.append(packed)
        return original(pairs, rows, paths, *rest)

    monkeypatch.setattr(cached_decoding, "projections_for", spy)
    return counts


# Every pattern with its interleave, as the tests enumerate them.
ALL_PATTERNS = [
    ("parallel", 1),
    ("delay", 1),
    ("flat", 1),
    ("stack", 1),
    ("stack_delay", 1),
    ("stack_delay", 2),
    ("stack_delay", 3),
    ("stack_delay", 4),
]


def tiny_config(
    pattern: str = "stack_delay",
    interleave: int = 3,
    schedule: str | None = None,
    num_levels: int = 4,
    cardinality: int = 16,
    dim: int = 32,
    num_layers: int = 2,
    cfg_dropout: float = 0.0,
    acoustic_delay: int = 0,
    weights_per_level: bool = False,
    token_positions: str = "step",
) -> TextToMusicConfig:
    return TextToMusicConfig(
        lm=LMConfig(
            dim=dim,
            num_layers=num_layers,
            num_heads=4,
            ffn_dim=2 * dim,
            num_levels=num_levels,
            cardinality=cardinality,
            pattern=pattern,
            interleave=interleave,
            schedule=schedule,
            depth_dim=dim // 2,
            depth_layers=2,
            depth_heads=2,
            depth_ffn_dim=dim,
            depth_acoustic_delay=acoustic_delay,
            depth_weights_per_level=weights_per_level,
            token_positions=token_positions,
        ),
        text=TextConditionerConfig(cfg_dropout=cfg_dropout),
    )


def tiny_model(*args, seed: int = 0, **kwargs) -> TextToMusicLM:
    torch.manual_seed(seed)
    return TextToMusicLM(tiny_config(*args, **kwargs)).eval()


def save_tiny_model_with_codec(directory: Path, pattern: str, interleave: int) -> Path:
    """A tiny LM over a random 32 kHz EnCodec's 4 x 2048 codes, with the codec inside."""
    from lightning_sdm.codecs import EncodecCodec

    tiny_model(pattern, interleave, cardinality=2048).save_pretrained(directory)
    torch.manual_seed(0)
    EncodecCodec().save_pretrained(directory / "codec")
    return directory


def save_tiny_dit_with_codec(directory: Path, wake: bool = False) -> Path:
    """A tiny DiT over the random codec's 16-channel latents, the codec inside. `wake`
    draws the zero-initialised layers too, so the text changes the output."""
    from lightning_sdm.codecs import EncodecCodec
    from lightning_sdm.models.dit import DiTConfig
    from lightning_sdm.models.text_to_audio_diffusion import (
        TextToAudioDiffusion,
        TextToAudioDiffusionConfig,
    )

    torch.manual_seed(0)
    dit = DiTConfig(latent_channels=16, dim=32, depth=2, num_heads=4, ada_rank=4, context_dim=32)
    config = TextToAudioDiffusionConfig(
        dit=dit, text=TextConditionerConfig(cfg_dropout=0.0), latent_mean=0.0, latent_std=1.0
    )
    model = TextToAudioDiffusion(config)
    if wake:
        for parameter in model.dit.parameters():
            torch.nn.init.normal_(parameter, std=0.05)
    model.save_pretrained(directory)
    EncodecCodec().save_pretrained(directory / "codec")
    return directory


@pytest.fixture
def make_tiny_model():
    return tiny_model
