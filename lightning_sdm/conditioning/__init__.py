"""Text conditioning for the generators."""

from lightning_sdm.conditioning.t5 import (
    EMPTY_CONDITION,
    T5Conditioner,
    TextCondition,
    TextConditionerConfig,
)

__all__ = ["EMPTY_CONDITION", "T5Conditioner", "TextCondition", "TextConditionerConfig"]
