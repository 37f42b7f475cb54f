"""Files written before model directories and checkpoints recorded their family: the one
place that tells the families apart by what a file holds. New files never come here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def old_directory_family(config: Mapping[str, Any]) -> str:
    """A config.json without a family: the diffusion model's has a `dit` section."""
    return "diffusion" if "dit" in config else "lm"


def old_checkpoint_family(hyper_parameters: Mapping[str, Any]) -> str:
    """A checkpoint without a family: the codec task's hyper-parameters hold its EnCodec
    config, the diffusion task's a `dit` section, the LM task's neither."""
    if "encodec_config" in hyper_parameters:
        return "codec"
    return "diffusion" if "dit" in hyper_parameters else "lm"
