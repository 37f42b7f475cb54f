import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM

os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=40
)
settings.load_profile("default")

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
        ),
        text=TextConditionerConfig(cfg_dropout=cfg_dropout),
    )


def tiny_model(*args, seed: int = 0, **kwargs) -> TextToMusicLM:
    torch.manual_seed(seed)
    return TextToMusicLM(tiny_config(*args, **kwargs)).eval()


@pytest.fixture
def make_tiny_model():
    return tiny_model
