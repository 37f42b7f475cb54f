"""Text conditioning for the generators."""

from lightning_sdm.conditioning.t5 import (
    EMPTY_CONDITION,
    CaptionCutWarning,
    T5Conditioner,
    TextCondition,
    TextConditionerConfig,
)

__all__ = [
    "EMPTY_CONDITION",
    "CaptionCutWarning",
    "T5Conditioner",
    "TextCondition",
    "TextConditionerConfig",
]
